//! Refund requests: within what the spend has left, approved by someone else.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use rust_decimal::Decimal;
use tally_domain::refund::{self, RefundAsk, RefundCommand as C, RefundEvent as E, RefundRequest};
use tally_domain::values::{AdminId, Reason, UserId};
use tally_domain::{Config, DomainError};

fn ask(amount: &str, by: &str) -> RefundAsk {
    RefundAsk {
        user_id: UserId::new(42).unwrap(),
        reference: "hold:job-7".into(),
        amount: amount.parse().unwrap(),
        reason: Reason::new("the render never arrived").unwrap(),
        requested_by: by.into(),
    }
}

fn given(events: &[E]) -> RefundRequest {
    events.iter().fold(RefundRequest::default(), refund::evolve)
}

fn approve(admin: &str) -> C {
    C::Approve {
        admin: AdminId::new(admin).unwrap(),
        reason: Reason::new("checked the job log").unwrap(),
    }
}

#[test]
fn a_request_may_ask_at_most_what_the_spend_has_left() {
    let too_much = C::Request {
        ask: ask("3.01", "42"),
        refundable: Decimal::from(3),
    };
    assert_eq!(
        refund::decide(&given(&[]), &too_much, &Config::default())
            .unwrap_err()
            .code(),
        "refund_not_allowed"
    );
    let fine = C::Request {
        ask: ask("3", "42"),
        refundable: Decimal::from(3),
    };
    assert_eq!(
        refund::decide(&given(&[]), &fine, &Config::default()).unwrap(),
        vec![E::Requested(ask("3", "42"))]
    );
}

#[test]
fn an_admin_cannot_approve_a_request_they_made() {
    let state = given(&[E::Requested(ask("3", "ops-alice"))]);
    let err = refund::decide(&state, &approve("ops-alice"), &Config::default()).unwrap_err();
    assert_eq!(err, DomainError::SelfApproval("ops-alice".into()));
    assert_eq!(err.code(), "self_approval");
    assert!(matches!(
        refund::decide(&state, &approve("ops-bob"), &Config::default()).unwrap()[..],
        [E::Approved { .. }]
    ));
}

#[test]
fn a_decided_request_is_not_decided_again() {
    let approved = given(&[
        E::Requested(ask("3", "42")),
        E::Approved {
            admin: AdminId::new("ops-bob").unwrap(),
            reason: Reason::new("ok").unwrap(),
        },
    ]);
    assert_eq!(
        refund::decide(&approved, &approve("ops-bob"), &Config::default()).unwrap(),
        vec![],
        "approving twice changes nothing"
    );
    let reject = C::Reject {
        admin: AdminId::new("ops-carol").unwrap(),
        reason: Reason::new("no").unwrap(),
    };
    assert_eq!(
        refund::decide(&approved, &reject, &Config::default())
            .unwrap_err()
            .code(),
        "refund_not_allowed"
    );
    assert_eq!(
        refund::decide(&given(&[]), &approve("ops-bob"), &Config::default()).unwrap_err(),
        DomainError::RefundNotFound
    );
}

#[test]
fn an_admin_linked_to_a_telegram_id_is_one_person_in_both_namespaces() {
    let config = Config {
        admin_links: tally_domain::config::AdminLinks::parse("ops-alice:9001, ops-bob : 9002")
            .unwrap(),
        ..Config::default()
    };
    // Requested in the bot by Alice's Telegram id, approved through the API with her key.
    let by_telegram = given(&[E::Requested(ask("3", "9001"))]);
    assert_eq!(
        refund::decide(&by_telegram, &approve("ops-alice"), &config)
            .unwrap_err()
            .code(),
        "self_approval"
    );
    assert!(refund::decide(&by_telegram, &approve("ops-bob"), &config).is_ok());
    // Requested through the API with her key, approved in the bot by her Telegram id.
    let by_key = given(&[E::Requested(ask("3", "ops-alice"))]);
    assert_eq!(
        refund::decide(&by_key, &approve("9001"), &config)
            .unwrap_err()
            .code(),
        "self_approval"
    );
    assert!(refund::decide(&by_key, &approve("9002"), &config).is_ok());
    assert!(tally_domain::config::AdminLinks::parse("ops-alice=9001").is_err());
    assert!(tally_domain::config::AdminLinks::parse("ops-alice:-4").is_err());
}
