//! The account's rules, as specifications: given these past events, when this command,
//! then these new events or this error.
//!
//! One file: the account's rules as given/when/then specifications, in the order of the
//! rule book (`src/account.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use tally_domain::account::{
    self, Account, AccountCommand as C, AccountEvent as E, Context, HoldState,
};
use tally_domain::config::{Config, RefundWindow};
use tally_domain::values::{
    AdjustmentId, AdminId, Amount, DebitId, GrantId, HoldId, PaymentId, Reason, RefundId,
    SignedAmount, UserId,
};
use tally_domain::{DomainError, codec, postings};

const USER: i64 = 7_172_873_873;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
}

fn user() -> UserId {
    UserId::new(USER).unwrap()
}

fn amount(text: &str) -> Amount {
    text.parse().unwrap()
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn reason(text: &str) -> Reason {
    Reason::new(text).unwrap()
}

fn hold(id: &str) -> HoldId {
    HoldId::new(id).unwrap()
}

fn admin() -> AdminId {
    AdminId::new("ops-alice").unwrap()
}

fn opened() -> E {
    E::Opened {
        user_id: user(),
        username: Some("seed_user".into()),
        language: Some("ru".into()),
    }
}

fn deposited(credits: &str) -> E {
    E::Deposited {
        payment_id: PaymentId::new(format!("pay-{credits}")).unwrap(),
        amount: amount(credits),
    }
}

fn hold_placed(id: &str, credits: &str, ttl_minutes: i64) -> E {
    E::HoldPlaced {
        hold_id: hold(id),
        amount: amount(credits),
        expires_at: t0() + Duration::minutes(ttl_minutes),
        reason: reason("render job"),
    }
}

/// An account as its past events made it, with those events (all at t0): `when`
/// recalls from them what the command service recalls from the log.
#[derive(Clone, Debug)]
struct Given {
    state: Account,
    history: Vec<(E, DateTime<Utc>)>,
}

impl std::ops::Deref for Given {
    type Target = Account;
    fn deref(&self) -> &Account {
        &self.state
    }
}

impl Given {
    /// The past events of these command ids, as the log would hand them over.
    fn recall(&self, ids: &[String]) -> Vec<(E, DateTime<Utc>)> {
        self.history
            .iter()
            .filter(|(e, _)| account::event_command_id(e).is_some_and(|id| ids.contains(&id)))
            .cloned()
            .collect()
    }
}

fn given(events: &[E]) -> Given {
    apply(
        Given {
            state: Account::new(user()),
            history: vec![],
        },
        events,
    )
}

fn apply(mut given: Given, events: &[E]) -> Given {
    for e in events {
        given.state = account::evolve(given.state, e);
        given.history.push((e.clone(), t0()));
    }
    given
}

fn when_at(state: &Given, command: C, now: DateTime<Utc>) -> Result<Vec<E>, DomainError> {
    let config = Config::default();
    let past = state.recall(&account::recall(state, &command));
    account::decide(
        state,
        &command,
        &Context {
            now,
            config: &config,
            past: &past,
        },
    )
}

fn when(state: &Given, command: C) -> Result<Vec<E>, DomainError> {
    when_at(state, command, t0())
}

fn refundable(
    state: &Given,
    reference: &str,
    now: DateTime<Utc>,
    config: &Config,
) -> Result<Decimal, DomainError> {
    let ids: Vec<String> = account::spend_command_id(reference).into_iter().collect();
    state.refundable(reference, &state.recall(&ids), now, config)
}

fn place(id: &str, credits: &str, ttl_seconds: u64) -> C {
    C::PlaceHold {
        hold_id: hold(id),
        amount: amount(credits),
        ttl_seconds,
        reason: reason("render job"),
    }
}

fn capture(id: &str, credits: Option<&str>) -> C {
    C::CaptureHold {
        hold_id: hold(id),
        amount: credits.map(amount),
    }
}

fn release(id: &str) -> C {
    C::ReleaseHold {
        hold_id: hold(id),
        reason: reason("job failed"),
    }
}

fn debit(id: &str, credits: &str) -> C {
    C::Debit {
        debit_id: DebitId::new(id).unwrap(),
        amount: amount(credits),
        reason: reason("post"),
    }
}

#[test]
fn an_account_is_opened_once() {
    let fresh = given(&[]);
    let events = when(
        &fresh,
        C::Open {
            username: None,
            language: None,
        },
    )
    .unwrap();
    assert_eq!(events.len(), 1);
    assert!(matches!(events[0], E::Opened { user_id, .. } if user_id == user()));

    let open = given(&[opened()]);
    assert_eq!(
        when(
            &open,
            C::Open {
                username: None,
                language: None
            }
        )
        .unwrap(),
        vec![]
    );
}

#[test]
fn commands_on_an_account_never_opened_are_account_not_found() {
    let fresh = given(&[]);
    let err = when(&fresh, debit("d-1", "1")).unwrap_err();
    assert_eq!(err, DomainError::AccountNotFound { user_id: user() });
    assert_eq!(err.code(), "account_not_found");
}

#[test]
fn deposits_and_grants_add_to_available() {
    let state = given(&[opened(), deposited("20")]);
    let events = when(
        &state,
        C::Grant {
            grant_id: GrantId::new("promo-1").unwrap(),
            amount: amount("5.50"),
            reason: reason("welcome bonus"),
        },
    )
    .unwrap();
    let state = apply(state, &events);
    assert_eq!(state.available, dec("25.5"));
    assert_eq!(state.held, Decimal::ZERO);
}

#[test]
fn a_debit_beyond_available_is_insufficient_credits() {
    let state = given(&[opened(), deposited("5")]);
    let err = when(&state, debit("d-1", "5.01")).unwrap_err();
    assert_eq!(
        err,
        DomainError::InsufficientCredits {
            available: dec("5"),
            requested: dec("5.01")
        }
    );
    let events = when(&state, debit("d-1", "5")).unwrap();
    assert_eq!(apply(state, &events).available, Decimal::ZERO);
}

#[test]
fn every_command_id_is_the_id_of_its_events_and_kinds_never_share_one() {
    // The log refuses a second event under a command id (tally-ledger derives event ids
    // from it), so "the same debit id is not spent twice" rests on these ids.
    let state = given(&[opened(), deposited("10"), hold_placed("x", "1", 10)]);
    let commands = [
        C::Deposit {
            payment_id: PaymentId::new("x").unwrap(),
            amount: amount("1"),
        },
        C::Grant {
            grant_id: GrantId::new("x").unwrap(),
            amount: amount("1"),
            reason: reason("promo"),
        },
        debit("x", "1"),
        C::Adjust {
            adjustment_id: AdjustmentId::new("x").unwrap(),
            amount: "1".parse().unwrap(),
            reason: reason("fix"),
            admin: admin(),
            allow_negative: false,
        },
        place("y", "1", 60),
        capture("x", None),
        release("x"),
        C::ExpireHold { hold_id: hold("x") },
    ];
    let mut ids = std::collections::BTreeSet::new();
    for command in commands {
        let id = account::command_id(&command).expect("every credit command has an id");
        let now = match command {
            C::ExpireHold { .. } => t0() + Duration::minutes(10),
            _ => t0(),
        };
        for event in when_at(&state, command, now).unwrap() {
            assert_eq!(account::event_command_id(&event).as_ref(), Some(&id));
        }
        assert!(ids.insert(id.clone()), "{id} is shared by two kinds");
    }
    assert_eq!(
        account::command_id(&debit("d-1", "2")).unwrap(),
        "debit:d-1"
    );
}

#[test]
fn a_blocked_account_takes_no_holds_or_debits_but_still_takes_money_in() {
    let state = given(&[
        opened(),
        deposited("10"),
        E::Blocked {
            reason: reason("chargeback"),
            admin: admin(),
        },
    ]);
    assert_eq!(
        when(&state, place("h-1", "1", 60)).unwrap_err().code(),
        "account_blocked"
    );
    assert_eq!(
        when(&state, debit("d-1", "1")).unwrap_err().code(),
        "account_blocked"
    );
    assert!(
        when(
            &state,
            C::Deposit {
                payment_id: PaymentId::new("pay-2").unwrap(),
                amount: amount("1"),
            }
        )
        .is_ok()
    );
    assert!(
        when(
            &state,
            C::Adjust {
                adjustment_id: AdjustmentId::new("adj-1").unwrap(),
                amount: "-3".parse::<SignedAmount>().unwrap(),
                reason: reason("fraud clawback"),
                admin: admin(),
                allow_negative: false,
            }
        )
        .is_ok()
    );
    let unblocked = when(
        &state,
        C::Unblock {
            reason: reason("resolved"),
            admin: admin(),
        },
    )
    .unwrap();
    let state = apply(state, &unblocked);
    assert!(when(&state, place("h-1", "1", 60)).is_ok());
}

#[test]
fn placing_a_hold_moves_credits_from_available_to_held() {
    let state = given(&[opened(), deposited("10")]);
    let events = when(&state, place("job-1", "4", 900)).unwrap();
    assert_eq!(events, vec![hold_placed("job-1", "4", 15)]);
    let state = apply(state, &events);
    assert_eq!((state.available, state.held), (dec("6"), dec("4")));
}

#[test]
fn a_hold_ttl_must_be_between_one_second_and_seven_days() {
    let state = given(&[opened(), deposited("10")]);
    assert_eq!(
        when(&state, place("h", "1", 0)).unwrap_err().code(),
        "validation"
    );
    assert_eq!(
        when(&state, place("h", "1", 7 * 86_400 + 1))
            .unwrap_err()
            .code(),
        "validation"
    );
    assert!(when(&state, place("h", "1", 1)).is_ok());
    assert!(when(&state, place("h", "1", 7 * 86_400)).is_ok());
}

#[test]
fn a_hold_beyond_available_is_insufficient_credits() {
    let state = given(&[opened(), deposited("3"), hold_placed("h-1", "2", 10)]);
    let err = when(&state, place("h-2", "1.01", 60)).unwrap_err();
    assert_eq!(err.code(), "insufficient_credits");
}

#[test]
fn a_hold_id_is_placed_once() {
    let state = given(&[opened(), deposited("10"), hold_placed("h-1", "2", 10)]);
    assert_eq!(
        when(&state, place("h-1", "2", 600)).unwrap_err().code(),
        "idempotency_conflict"
    );
}

#[test]
fn a_partial_capture_spends_part_and_returns_the_rest() {
    let state = given(&[opened(), deposited("10"), hold_placed("h-1", "4", 10)]);
    let events = when(&state, capture("h-1", Some("1.5"))).unwrap();
    assert_eq!(
        events,
        vec![E::HoldCaptured {
            hold_id: hold("h-1"),
            captured: amount("1.5"),
            released: dec("2.5"),
        }]
    );
    let state = apply(state, &events);
    assert_eq!((state.available, state.held), (dec("8.5"), Decimal::ZERO));
    assert_eq!(state.holds[&hold("h-1")].state, HoldState::Captured);
}

#[test]
fn a_capture_without_amount_takes_the_whole_hold() {
    let state = given(&[opened(), deposited("10"), hold_placed("h-1", "4", 10)]);
    let state = apply(state.clone(), &when(&state, capture("h-1", None)).unwrap());
    assert_eq!((state.available, state.held), (dec("6"), Decimal::ZERO));
}

#[test]
fn capture_more_than_held_is_rejected() {
    let state = given(&[opened(), deposited("10"), hold_placed("h-1", "4", 10)]);
    let err = when(&state, capture("h-1", Some("4.01"))).unwrap_err();
    assert_eq!(
        err,
        DomainError::CaptureExceedsHold {
            hold_id: hold("h-1"),
            held: dec("4"),
            requested: dec("4.01")
        }
    );
    assert_eq!(err.code(), "capture_exceeds_hold");
}

#[test]
fn a_release_returns_everything() {
    let state = given(&[opened(), deposited("10"), hold_placed("h-1", "4", 10)]);
    let state = apply(state.clone(), &when(&state, release("h-1")).unwrap());
    assert_eq!((state.available, state.held), (dec("10"), Decimal::ZERO));
    assert_eq!(state.holds[&hold("h-1")].state, HoldState::Released);
}

#[test]
fn a_closed_hold_rejects_capture_and_release_naming_its_state() {
    let base = [opened(), deposited("10"), hold_placed("h-1", "4", 10)];
    let closers = [
        (capture("h-1", None), HoldState::Captured),
        (release("h-1"), HoldState::Released),
    ];
    for (closer, closed_state) in closers {
        let state = given(&base);
        let state = apply(state.clone(), &when(&state, closer).unwrap());
        for again in [capture("h-1", None), release("h-1")] {
            let err = when(&state, again).unwrap_err();
            assert_eq!(
                err,
                DomainError::HoldNotOpen {
                    hold_id: hold("h-1"),
                    state: closed_state
                }
            );
            assert!(err.to_string().contains(&closed_state.to_string()), "{err}");
        }
    }
    let err = when(&given(&base), capture("h-9", None)).unwrap_err();
    assert_eq!(err.code(), "hold_not_found");
}

#[test]
fn a_hold_past_its_ttl_cannot_be_captured_and_expires_returning_everything() {
    let state = given(&[opened(), deposited("10"), hold_placed("h-1", "4", 15)]);
    let late = t0() + Duration::minutes(15);
    let err = when_at(&state, capture("h-1", None), late).unwrap_err();
    assert_eq!(
        err,
        DomainError::HoldNotOpen {
            hold_id: hold("h-1"),
            state: HoldState::Expired
        }
    );
    let early = when_at(
        &state,
        C::ExpireHold {
            hold_id: hold("h-1"),
        },
        late - Duration::seconds(1),
    );
    assert_eq!(early.unwrap_err().code(), "validation");

    let events = when_at(
        &state,
        C::ExpireHold {
            hold_id: hold("h-1"),
        },
        late,
    )
    .unwrap();
    let state = apply(state, &events);
    assert_eq!((state.available, state.held), (dec("10"), Decimal::ZERO));
    assert_eq!(state.holds[&hold("h-1")].state, HoldState::Expired);
    let again = when_at(
        &state,
        C::ExpireHold {
            hold_id: hold("h-1"),
        },
        late,
    )
    .unwrap();
    assert_eq!(again, vec![], "expiring an expired hold changes nothing");
}

#[test]
fn a_negative_adjustment_cannot_overdraw_unless_it_says_so() {
    let state = given(&[opened(), deposited("2")]);
    let adjust = |allow_negative| C::Adjust {
        adjustment_id: AdjustmentId::new("adj-1").unwrap(),
        amount: "-5".parse().unwrap(),
        reason: reason("duplicate top-up reversed"),
        admin: admin(),
        allow_negative,
    };
    assert_eq!(
        when(&state, adjust(false)).unwrap_err().code(),
        "insufficient_credits"
    );
    let events = when(&state, adjust(true)).unwrap();
    assert!(matches!(&events[0], E::Adjusted { admin: a, .. } if *a == admin()));
    assert_eq!(apply(state, &events).available, dec("-3"));
}

#[test]
fn a_refund_returns_at_most_what_the_spend_has_left() {
    let state = given(&[
        opened(),
        deposited("10"),
        hold_placed("h-1", "4", 10),
        E::HoldCaptured {
            hold_id: hold("h-1"),
            captured: amount("3"),
            released: dec("1"),
        },
    ]);
    let refund = |id: &str, credits: &str| C::Refund {
        refund_id: RefundId::new(id).unwrap(),
        reference: account::hold_ref(&hold("h-1")),
        amount: amount(credits),
    };
    assert_eq!(
        when(&state, refund("r-1", "3.01")).unwrap_err().code(),
        "refund_not_allowed"
    );
    let state = apply(state.clone(), &when(&state, refund("r-1", "2")).unwrap());
    assert_eq!(state.available, dec("9"));
    let err = when(&state, refund("r-2", "1.5")).unwrap_err();
    assert!(err.to_string().contains("1 left to refund"), "{err}");
    assert!(when(&state, refund("r-2", "1")).is_ok());
    let unknown = C::Refund {
        refund_id: RefundId::new("r-3").unwrap(),
        reference: "debit:nope".into(),
        amount: amount("1"),
    };
    assert_eq!(
        when(&state, unknown).unwrap_err().code(),
        "refund_not_allowed"
    );
}

#[test]
fn the_refund_window_is_configuration() {
    let state = given(&[opened(), deposited("10")]);
    let state = apply(state.clone(), &when(&state, debit("d-1", "4")).unwrap());
    let reference = account::debit_ref(&DebitId::new("d-1").unwrap());
    let state = &state;
    // The seeds' rule: only spends older than 5 days.
    let config = Config {
        refund_window: RefundWindow {
            min_age_days: 5,
            max_age_days: 30,
        },
        ..Config::default()
    };
    let at = |days| t0() + Duration::days(days);
    assert_eq!(
        refundable(state, &reference, at(4), &config)
            .unwrap_err()
            .code(),
        "refund_not_allowed"
    );
    assert_eq!(
        refundable(state, &reference, at(5), &config).unwrap(),
        dec("4")
    );
    assert_eq!(
        refundable(state, &reference, at(31), &config)
            .unwrap_err()
            .code(),
        "refund_not_allowed"
    );
    assert_eq!(
        refundable(state, &reference, at(0), &Config::default()).unwrap(),
        dec("4")
    );
}

#[test]
fn every_credit_moving_event_posts_a_balanced_pair() {
    let events = [
        opened(),
        deposited("10"),
        hold_placed("h-1", "4", 10),
        E::HoldCaptured {
            hold_id: hold("h-1"),
            captured: amount("3"),
            released: dec("1"),
        },
        E::Debited {
            debit_id: DebitId::new("d-1").unwrap(),
            amount: amount("2"),
            reason: reason("post"),
        },
        E::Refunded {
            refund_id: RefundId::new("r-1").unwrap(),
            reference: "hold:h-1".into(),
            amount: amount("1"),
        },
        E::Adjusted {
            adjustment_id: AdjustmentId::new("adj-1").unwrap(),
            amount: "-0.5".parse().unwrap(),
            reason: reason("fix"),
            admin: admin(),
        },
    ];
    let mut user_total = Decimal::ZERO;
    for event in &events {
        let lines = postings(user(), event);
        let sum: Decimal = lines.iter().map(|p| p.amount).sum();
        assert_eq!(sum, Decimal::ZERO, "{event:?} posts {lines:?}");
        user_total += lines
            .iter()
            .filter(|p| p.account.to_string().starts_with("user:"))
            .map(|p| p.amount)
            .sum::<Decimal>();
    }
    let state = given(&events);
    assert_eq!(
        user_total,
        state.available + state.held,
        "postings agree with the state"
    );
}

#[test]
fn events_travel_as_type_version_and_payload_and_come_back_equal() {
    let event = hold_placed("h-1", "4.5", 10);
    let (event_type, version, payload) = codec::encode(&event);
    assert_eq!(event_type, "credits.hold_placed");
    assert_eq!(version, 1);
    assert_eq!(payload["amount"], "4.5", "amounts are strings in payloads");
    let back: E = codec::decode(&event_type, version, payload.clone()).unwrap();
    assert_eq!(back, event);

    let future = codec::decode::<E>(&event_type, 2, payload).unwrap_err();
    assert!(future.detail.contains("newer Tally"), "{future}");
    let unknown = codec::decode::<E>("credits.unknown", 1, serde_json::json!({})).unwrap_err();
    assert!(unknown.to_string().contains("credits.unknown"), "{unknown}");
}

#[test]
fn a_hold_the_state_forgot_is_recalled_from_the_log() {
    // h-0 is captured, then more holds close than the state keeps.
    let mut events = vec![
        opened(),
        deposited("1000"),
        hold_placed("h-0", "2", 10),
        E::HoldCaptured {
            hold_id: hold("h-0"),
            captured: amount("2"),
            released: Decimal::ZERO,
        },
    ];
    for i in 1..=account::CLOSED_HOLDS_KEPT {
        let id = format!("h-{i}");
        events.push(hold_placed(&id, "1", 10));
        events.push(E::HoldReleased {
            hold_id: hold(&id),
            amount: amount("1"),
            reason: reason("job failed"),
        });
    }
    let state = given(&events);
    assert!(!state.holds.contains_key(&hold("h-0")), "h-0 is forgotten");
    assert_eq!(state.holds.len(), account::CLOSED_HOLDS_KEPT);
    assert_eq!(
        account::recall(&state, &capture("h-0", None)),
        ["hold:h-0", "capture:h-0", "release:h-0", "expire:h-0"]
    );
    assert_eq!(
        when(&state, release("h-0")).unwrap_err(),
        DomainError::HoldNotOpen {
            hold_id: hold("h-0"),
            state: HoldState::Captured
        }
    );
    let expire = C::ExpireHold {
        hold_id: hold("h-0"),
    };
    assert_eq!(
        when_at(&state, expire, t0() + Duration::hours(1)).unwrap(),
        vec![]
    );
    // Its spend is still refundable: the capture is recalled too.
    assert_eq!(
        refundable(&state, "hold:h-0", t0(), &Config::default()).unwrap(),
        dec("2")
    );
    // Without the log's answer the decider does not guess.
    let blind = account::decide(
        &state,
        &release("h-0"),
        &Context {
            now: t0(),
            config: &Config::default(),
            past: &[],
        },
    );
    assert_eq!(blind.unwrap_err().code(), "hold_not_found");
}
