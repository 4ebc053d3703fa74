//! Payments: created once, succeeded once, whatever the provider re-sends.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use tally_domain::payment::{
    self, Payment, PaymentCommand as C, PaymentEvent as E, Purpose, Terms,
};
use tally_domain::values::{PlanId, Reason, UserId};
use tally_domain::{Config, DomainError};

fn terms(amount: &str) -> Terms {
    Terms {
        user_id: UserId::new(42).unwrap(),
        provider: "stars".into(),
        amount: amount.parse().unwrap(),
        currency: "XTR".into(),
        purpose: Purpose::Credits("20".parse().unwrap()),
    }
}

fn given(events: &[E]) -> Payment {
    events.iter().fold(Payment::default(), payment::evolve)
}

fn when(state: &Payment, command: C) -> Result<Vec<E>, DomainError> {
    payment::decide(state, &command, &Config::default())
}

fn succeed(charge: &str, amount: &str, currency: &str) -> C {
    C::Succeed {
        provider: "stars".into(),
        provider_payment_id: charge.into(),
        amount: amount.parse().unwrap(),
        currency: currency.into(),
    }
}

fn succeeded(charge: &str) -> E {
    E::Succeeded {
        user_id: UserId::new(42).unwrap(),
        provider_payment_id: charge.into(),
        purpose: Purpose::Credits("20".parse().unwrap()),
    }
}

#[test]
fn a_payment_is_created_once_and_the_same_terms_again_change_nothing() {
    assert_eq!(
        when(&given(&[]), C::Create(terms("180"))).unwrap(),
        vec![E::Created(terms("180"))]
    );
    let created = given(&[E::Created(terms("180"))]);
    assert_eq!(when(&created, C::Create(terms("180"))).unwrap(), vec![]);
    assert_eq!(
        when(&created, C::Create(terms("181"))).unwrap_err().code(),
        "idempotency_conflict"
    );
}

#[test]
fn a_plan_purchase_must_name_a_plan_of_the_catalog() {
    let mut t = terms("250");
    t.purpose = Purpose::Plan(PlanId::new("platinum").unwrap());
    let err = when(&given(&[]), C::Create(t.clone())).unwrap_err();
    assert!(err.to_string().contains("basic"), "{err}");
    t.purpose = Purpose::Plan(PlanId::new("pro").unwrap());
    assert!(when(&given(&[]), C::Create(t)).is_ok());
}

#[test]
fn a_success_is_applied_once_however_often_the_provider_sends_it() {
    let pending = given(&[E::Created(terms("180"))]);
    assert_eq!(
        when(&pending, succeed("ch-1", "180", "XTR")).unwrap(),
        vec![succeeded("ch-1")]
    );
    let paid = given(&[E::Created(terms("180")), succeeded("ch-1")]);
    for _ in 0..100 {
        assert_eq!(when(&paid, succeed("ch-1", "180", "XTR")).unwrap(), vec![]);
    }
}

#[test]
fn a_success_that_disagrees_with_the_payment_is_a_payment_conflict() {
    let pending = given(&[E::Created(terms("180"))]);
    assert_eq!(
        when(&pending, succeed("ch-1", "18", "XTR"))
            .unwrap_err()
            .code(),
        "payment_conflict"
    );
    assert_eq!(
        when(&pending, succeed("ch-1", "180", "USD"))
            .unwrap_err()
            .code(),
        "payment_conflict"
    );
    let paid = given(&[E::Created(terms("180")), succeeded("ch-1")]);
    // Another real charge for a paid payment is money received: on record, not
    // credited, not refused.
    assert_eq!(
        when(&paid, succeed("ch-2", "180", "XTR")).unwrap(),
        [E::DuplicateCharge {
            user_id: UserId::new(42).unwrap(),
            provider_payment_id: "ch-2".into(),
            amount: "180".parse().unwrap(),
            currency: "XTR".into(),
        }]
    );
    assert_eq!(
        when(&paid, succeed("ch-1", "200", "XTR"))
            .unwrap_err()
            .code(),
        "payment_conflict"
    );
}

#[test]
fn only_a_pending_payment_fails_and_only_a_paid_one_is_reversed() {
    let reason = || Reason::new("provider said so").unwrap();
    let pending = given(&[E::Created(terms("180"))]);
    assert!(matches!(
        when(
            &pending,
            C::Fail {
                provider: "stars".into(),
                reason: reason(),
            }
        )
        .unwrap()[..],
        [E::Failed { .. }]
    ));
    assert_eq!(
        when(&pending, C::Reverse { reason: reason() })
            .unwrap_err()
            .code(),
        "payment_conflict"
    );
    let paid = given(&[E::Created(terms("180")), succeeded("ch-1")]);
    assert_eq!(
        when(
            &paid,
            C::Fail {
                provider: "stars".into(),
                reason: reason(),
            }
        )
        .unwrap_err()
        .code(),
        "payment_conflict"
    );
    let reversed = when(&paid, C::Reverse { reason: reason() }).unwrap();
    assert!(matches!(&reversed[..], [E::Reversed { user_id, .. }] if user_id.get() == 42));
    // Money that arrives for a failed payment bought nothing: a duplicate charge.
    let failed = given(&[E::Created(terms("180")), E::Failed { reason: reason() }]);
    assert!(matches!(
        &when(&failed, succeed("ch-1", "180", "XTR")).unwrap()[..],
        [E::DuplicateCharge { .. }]
    ));
}

#[test]
fn an_unknown_payment_is_not_found() {
    assert_eq!(
        when(&given(&[]), succeed("ch-1", "1", "XTR")).unwrap_err(),
        DomainError::PaymentNotFound
    );
}

#[test]
fn a_payment_is_settled_only_by_its_own_provider() {
    let pending = given(&[E::Created(terms("100"))]);
    for command in [
        C::Succeed {
            provider: "oxapay".into(),
            provider_payment_id: "charge-1".into(),
            amount: "100".parse().unwrap(),
            currency: "XTR".into(),
        },
        C::Fail {
            provider: "acme".into(),
            reason: Reason::new("declined").unwrap(),
        },
    ] {
        let refused = when(&pending, command).unwrap_err();
        assert_eq!(refused.code(), "provider_mismatch", "{refused}");
        assert!(refused.to_string().contains("stars payment"), "{refused}");
    }
}
