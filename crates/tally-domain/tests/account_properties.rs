//! Properties of the account over random command sequences: whatever users, jobs and
//! admins do, in whatever order, with ids re-used on purpose, the books stay right.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use tally_domain::account::{self, Account, AccountCommand as C, AccountEvent, Context, HoldState};
use tally_domain::values::{
    AdjustmentId, AdminId, Amount, DebitId, GrantId, HoldId, PaymentId, Reason, RefundId,
    SignedAmount, UserId,
};
use tally_domain::{Config, postings};

#[derive(Clone, Debug)]
enum Op {
    Deposit(u8, i64),
    Grant(u8, i64),
    Debit(u8, i64),
    Adjust(u8, i64),
    Place(u8, i64, u64),
    Capture(u8, Option<i64>),
    Release(u8),
    Expire(u8),
    Block,
    Unblock,
    RefundHold(u8, u8, i64),
    Wait(i64),
}

fn cents() -> impl Strategy<Value = i64> {
    1i64..5_000
}

fn op() -> impl Strategy<Value = Op> {
    // Few ids, so the same id comes back often.
    let id = 0u8..4;
    prop_oneof![
        3 => (id.clone(), cents()).prop_map(|(i, c)| Op::Deposit(i, c)),
        1 => (id.clone(), cents()).prop_map(|(i, c)| Op::Grant(i, c)),
        2 => (id.clone(), cents()).prop_map(|(i, c)| Op::Debit(i, c)),
        1 => (id.clone(), -3_000i64..3_000).prop_map(|(i, c)| Op::Adjust(i, c)),
        3 => (id.clone(), cents(), 1u64..1_200).prop_map(|(i, c, t)| Op::Place(i, c, t)),
        2 => (id.clone(), proptest::option::of(cents())).prop_map(|(i, c)| Op::Capture(i, c)),
        1 => id.clone().prop_map(Op::Release),
        1 => id.clone().prop_map(Op::Expire),
        1 => Just(Op::Block),
        1 => Just(Op::Unblock),
        1 => (id.clone(), id, cents()).prop_map(|(r, h, c)| Op::RefundHold(r, h, c)),
        2 => (1i64..900).prop_map(Op::Wait),
    ]
}

fn money(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

fn amount(cents: i64) -> Amount {
    Amount::new(money(cents)).unwrap()
}

fn reason() -> Reason {
    Reason::new("property").unwrap()
}

fn command(op: &Op) -> Option<C> {
    Some(match op {
        Op::Deposit(i, c) => C::Deposit {
            payment_id: PaymentId::new(format!("p{i}")).unwrap(),
            amount: amount(*c),
        },
        Op::Grant(i, c) => C::Grant {
            grant_id: GrantId::new(format!("g{i}")).unwrap(),
            amount: amount(*c),
            reason: reason(),
        },
        Op::Debit(i, c) => C::Debit {
            debit_id: DebitId::new(format!("d{i}")).unwrap(),
            amount: amount(*c),
            reason: reason(),
        },
        Op::Adjust(i, c) => C::Adjust {
            adjustment_id: AdjustmentId::new(format!("a{i}")).unwrap(),
            amount: SignedAmount::new(money(*c)).ok()?,
            reason: reason(),
            admin: AdminId::new("prop-admin").unwrap(),
            allow_negative: false,
        },
        Op::Place(i, c, ttl) => C::PlaceHold {
            hold_id: HoldId::new(format!("h{i}")).unwrap(),
            amount: amount(*c),
            ttl_seconds: *ttl,
            reason: reason(),
        },
        Op::Capture(i, c) => C::CaptureHold {
            hold_id: HoldId::new(format!("h{i}")).unwrap(),
            amount: c.map(amount),
        },
        Op::Release(i) => C::ReleaseHold {
            hold_id: HoldId::new(format!("h{i}")).unwrap(),
            reason: reason(),
        },
        Op::Expire(i) => C::ExpireHold {
            hold_id: HoldId::new(format!("h{i}")).unwrap(),
        },
        Op::Block => C::Block {
            reason: reason(),
            admin: AdminId::new("prop-admin").unwrap(),
        },
        Op::Unblock => C::Unblock {
            reason: reason(),
            admin: AdminId::new("prop-admin").unwrap(),
        },
        Op::RefundHold(r, h, c) => C::Refund {
            refund_id: RefundId::new(format!("r{r}")).unwrap(),
            reference: format!("hold:h{h}"),
            amount: amount(*c),
        },
        Op::Wait(_) => return None,
    })
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_books_stay_right_whatever_the_commands(ops in proptest::collection::vec(op(), 1..80)) {
        let config = Config::default();
        let user = UserId::new(42).unwrap();
        let mut now = t0();
        let mut state = Account::new(user);
        let mut log: Vec<(AccountEvent, DateTime<Utc>)> = Vec::new();
        let open = account::decide(&state, &C::Open { username: None, language: None },
            &Context { now, config: &config, past: &[] }).unwrap();
        for e in open {
            state = account::evolve(state, &e);
            log.push((e, now));
        }
        // What the command service recalls from the log: the events of these command ids.
        let recall = |log: &[(AccountEvent, DateTime<Utc>)], ids: &[String]| -> Vec<_> {
            log.iter()
                .filter(|(e, _)| account::event_command_id(e).is_some_and(|id| ids.contains(&id)))
                .cloned()
                .collect()
        };

        for op in &ops {
            if let Op::Wait(seconds) = op {
                now += Duration::seconds(*seconds);
                continue;
            }
            let Some(command) = command(op) else { continue };
            let id = account::command_id(&command);
            // The log refuses a command id a second time (tested for real in tally-ledger).
            if id.as_ref().is_some_and(|id| log.iter().any(|(e, _)| account::event_command_id(e).as_ref() == Some(id))) {
                continue;
            }
            let past = recall(&log, &account::recall(&state, &command));
            let ctx = Context { now, config: &config, past: &past };
            let Ok(events) = account::decide(&state, &command, &ctx) else { continue };
            for e in &events {
                prop_assert_eq!(account::event_command_id(e), id.clone(), "an event is filed under its command's id");
                state = account::evolve(state, e);
                log.push((e.clone(), now));
            }

            // Available never goes below zero (no command here says it may).
            prop_assert!(state.available >= Decimal::ZERO, "available {} after {op:?}", state.available);
            // Held is exactly what open holds hold.
            let open_holds: Decimal = state.holds.values()
                .filter(|h| h.state == HoldState::Open)
                .map(|h| h.amount.get())
                .sum();
            prop_assert_eq!(state.held, open_holds);
            // Re-executing the command just applied changes nothing: the log refuses
            // its id, or (commands without one) the state makes it a no-op.
            if id.is_none() {
                let past = recall(&log, &account::recall(&state, &command));
                let again = account::decide(&state, &command, &Context { now, config: &config, past: &past });
                prop_assert!(again.is_err() || again.as_ref().is_ok_and(Vec::is_empty),
                    "{op:?} applied twice: {again:?}");
            }
            // The state stays bounded: open holds plus the closed ones it keeps.
            prop_assert!(state.closed_holds.len() <= account::CLOSED_HOLDS_KEPT);
        }

        // Trial balance: all postings sum to zero, and the user's side is the state.
        let lines: Vec<_> = log.iter().flat_map(|(e, _)| postings(user, e)).collect();
        prop_assert_eq!(lines.iter().map(|p| p.amount).sum::<Decimal>(), Decimal::ZERO);
        let user_side: Decimal = lines.iter()
            .filter(|p| p.account.to_string().starts_with("user:"))
            .map(|p| p.amount)
            .sum();
        prop_assert_eq!(user_side, state.available + state.held);
        // Replaying the log rebuilds the same state.
        let replayed = log.iter().fold(Account::new(user), |s, (e, _)| account::evolve(s, e));
        prop_assert_eq!(replayed, state);
    }
}
