//! The low-balance alert, as a specification: a change that leaves the credits below
//! the threshold fires it once; it re-arms when the credits are back; a balance going
//! up and down around the threshold fires at most once per period; an account's own
//! setting overrides the configured default.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use chrono::{DateTime, Duration, TimeZone, Utc};
use tally_domain::account::{
    self, Account, AccountCommand as C, AccountEvent as E, AlertSetting, Context,
};
use tally_domain::config::Config;
use tally_domain::values::{Amount, DebitId, GrantId, Reason, UserId};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap()
}

fn config(threshold: Option<&str>) -> Config {
    Config {
        low_balance_threshold: threshold.map(|t| t.parse().unwrap()),
        low_balance_alert_period_seconds: 3_600,
        ..Config::default()
    }
}

/// An account fed command by command, as the command service would.
struct Book {
    state: Account,
    config: Config,
    n: u32,
}

impl Book {
    fn open(config: Config) -> Self {
        let mut book = Self {
            state: Account::new(UserId::new(77).unwrap()),
            config,
            n: 0,
        };
        book.run(
            C::Open {
                username: None,
                language: None,
            },
            t0(),
        );
        book
    }

    fn run(&mut self, command: C, now: DateTime<Utc>) -> Vec<E> {
        let ctx = Context {
            now,
            config: &self.config,
            past: &[],
        };
        let events = account::decide(&self.state, &command, &ctx).unwrap();
        for event in &events {
            self.state = account::evolve(self.state.clone(), event);
        }
        events
    }

    fn grant(&mut self, credits: &str, now: DateTime<Utc>) -> Vec<&'static str> {
        self.n += 1;
        let command = C::Grant {
            grant_id: GrantId::new(format!("g{}", self.n)).unwrap(),
            amount: credits.parse::<Amount>().unwrap(),
            reason: Reason::new("top up").unwrap(),
        };
        kinds(&self.run(command, now))
    }

    fn debit(&mut self, credits: &str, now: DateTime<Utc>) -> Vec<&'static str> {
        self.n += 1;
        let command = C::Debit {
            debit_id: DebitId::new(format!("d{}", self.n)).unwrap(),
            amount: credits.parse::<Amount>().unwrap(),
            reason: Reason::new("sms").unwrap(),
        };
        kinds(&self.run(command, now))
    }
}

fn kinds(events: &[E]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            E::Granted { .. } => "granted",
            E::Debited { .. } => "debited",
            E::BalanceLow { .. } => "balance.low",
            E::AlertRearmed { .. } => "rearmed",
            E::AlertSet { .. } => "set",
            _ => "other",
        })
        .collect()
}

#[test]
fn crossing_below_alerts_once_and_a_top_up_rearms_it() {
    let mut book = Book::open(config(Some("5")));
    assert_eq!(book.grant("10", t0()), ["granted"]);
    assert_eq!(
        book.debit("6", t0()),
        ["debited", "balance.low"],
        "10 → 4 < 5"
    );
    assert_eq!(book.debit("1", t0()), ["debited"], "told once");
    let after_period = t0() + Duration::hours(2);
    assert_eq!(
        book.grant("10", after_period),
        ["granted", "rearmed"],
        "13 ≥ 5"
    );
    assert_eq!(
        book.debit("9", after_period),
        ["debited", "balance.low"],
        "re-armed"
    );
}

#[test]
fn oscillation_within_the_period_alerts_once() {
    let mut book = Book::open(config(Some("5")));
    book.grant("6", t0());
    let mut fired = 0;
    for minute in 0..20 {
        let now = t0() + Duration::minutes(minute);
        fired += book.debit("2", now).contains(&"balance.low") as usize;
        book.grant("2", now);
    }
    assert_eq!(fired, 1, "once per hour however often it dips");
    // The period over: the next dip is told again.
    let later = t0() + Duration::minutes(61);
    assert_eq!(book.debit("2", later), ["debited", "balance.low"]);
}

#[test]
fn an_accounts_own_setting_overrides_the_default() {
    let mut book = Book::open(config(None));
    book.grant("100", t0());
    assert_eq!(book.debit("95", t0()), ["debited"], "no default: off");
    let set = book.run(
        C::SetAlert {
            setting: AlertSetting::Below("20".parse().unwrap()),
        },
        t0(),
    );
    assert_eq!(kinds(&set), ["set"]);
    assert_eq!(
        book.grant("20", t0()),
        ["granted"],
        "25 ≥ 20, armed already"
    );
    assert_eq!(book.debit("6", t0()), ["debited", "balance.low"], "19 < 20");
    let again = book.run(
        C::SetAlert {
            setting: AlertSetting::Below("20".parse().unwrap()),
        },
        t0(),
    );
    assert!(again.is_empty(), "the same setting: nothing");
    book.run(
        C::SetAlert {
            setting: AlertSetting::Off,
        },
        t0(),
    );
    assert_eq!(
        book.debit("10", t0() + Duration::days(1)),
        ["debited"],
        "off"
    );
}

#[test]
fn alert_events_are_filed_under_their_change_and_move_no_credits() {
    let mut book = Book::open(config(Some("5")));
    book.grant("10", t0());
    book.n += 1;
    let events = book.run(
        C::Debit {
            debit_id: DebitId::new("sms-1").unwrap(),
            amount: "8".parse().unwrap(),
            reason: Reason::new("sms").unwrap(),
        },
        t0(),
    );
    let low = events.last().unwrap();
    assert_eq!(
        account::event_command_id(low).as_deref(),
        Some("debit:sms-1")
    );
    assert!(tally_domain::postings::postings(UserId::new(77).unwrap(), low).is_empty());
}
