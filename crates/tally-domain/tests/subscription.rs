//! Subscriptions: paid per period, extended by renewal, corrected by admins on record.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use chrono::{DateTime, Duration, TimeZone, Utc};
use tally_domain::subscription::{
    self, Subscription, SubscriptionCommand as C, SubscriptionEvent as E, SubscriptionStatus,
};
use tally_domain::values::{AdminId, PaymentId, PlanId, Reason, UserId};
use tally_domain::{Config, DomainError};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

fn plan(id: &str) -> PlanId {
    PlanId::new(id).unwrap()
}

fn pay(payment: &str, plan_id: &str) -> C {
    C::Pay {
        payment_id: PaymentId::new(payment).unwrap(),
        plan: plan(plan_id),
    }
}

fn run(commands: &[(C, DateTime<Utc>)]) -> Result<Subscription, DomainError> {
    let config = Config::default();
    let mut state = Subscription::new(UserId::new(7_172_873_873).unwrap());
    for (command, now) in commands {
        for event in subscription::decide(&state, command, *now, &config)? {
            state = subscription::evolve(state, &event);
        }
    }
    Ok(state)
}

#[test]
fn paying_for_a_plan_starts_it_with_its_slots_for_thirty_days() {
    let state = run(&[(pay("p-1", "pro"), t0())]).unwrap();
    assert_eq!(state.plan, Some(plan("pro")));
    assert_eq!(state.slots, 3);
    assert_eq!(state.period_end, Some(t0() + Duration::days(30)));
    assert!(state.is_active(t0() + Duration::days(29)));
    assert!(!state.is_active(t0() + Duration::days(30)));
}

#[test]
fn paying_the_same_plan_again_extends_the_period_from_its_end() {
    let state = run(&[
        (pay("p-1", "basic"), t0()),
        (pay("p-2", "basic"), t0() + Duration::days(10)),
    ])
    .unwrap();
    assert_eq!(state.period_end, Some(t0() + Duration::days(60)));
}

#[test]
fn a_payment_is_applied_to_a_subscription_once() {
    let state = run(&[
        (pay("p-1", "basic"), t0()),
        (pay("p-1", "basic"), t0() + Duration::days(1)),
    ])
    .unwrap();
    assert_eq!(state.period_end, Some(t0() + Duration::days(30)));
}

#[test]
fn a_lapsed_subscription_paid_again_starts_from_now() {
    let later = t0() + Duration::days(45);
    let state = run(&[(pay("p-1", "basic"), t0()), (pay("p-2", "basic"), later)]).unwrap();
    assert_eq!(state.period_end, Some(later + Duration::days(30)));
}

#[test]
fn a_subscription_expires_only_after_its_period() {
    let early = run(&[
        (pay("p-1", "basic"), t0()),
        (C::Expire, t0() + Duration::days(29)),
    ]);
    assert_eq!(early.unwrap_err().code(), "validation");
    let state = run(&[
        (pay("p-1", "basic"), t0()),
        (C::Expire, t0() + Duration::days(30)),
    ])
    .unwrap();
    assert_eq!(state.status, Some(SubscriptionStatus::Expired));
}

#[test]
fn an_admin_correction_records_plan_and_slots_before_and_after() {
    // The seeds' `/fix_user_slots 7172873873 basic`: enterprise (5 slots) -> basic (1).
    let config = Config::default();
    let state = run(&[(pay("p-1", "enterprise"), t0())]).unwrap();
    let command = C::CorrectPlan {
        plan: plan("basic"),
        admin: AdminId::new("421337").unwrap(),
        reason: Reason::new("paid for basic, got enterprise").unwrap(),
    };
    let events = subscription::decide(&state, &command, t0(), &config).unwrap();
    assert_eq!(
        events,
        vec![E::SlotsCorrected {
            plan_before: Some(plan("enterprise")),
            slots_before: 5,
            plan_after: plan("basic"),
            slots_after: 1,
            admin: AdminId::new("421337").unwrap(),
            reason: Reason::new("paid for basic, got enterprise").unwrap(),
        }]
    );
    let state = subscription::evolve(state, &events[0]);
    assert_eq!((state.plan, state.slots), (Some(plan("basic")), 1));
}

#[test]
fn correcting_a_subscription_that_does_not_exist_is_not_found() {
    let err = run(&[(
        C::CorrectPlan {
            plan: plan("basic"),
            admin: AdminId::new("a").unwrap(),
            reason: Reason::new("x").unwrap(),
        },
        t0(),
    )])
    .unwrap_err();
    assert_eq!(err, DomainError::SubscriptionNotFound);
}
