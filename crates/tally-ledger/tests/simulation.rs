//! A deterministic simulation in the spirit of TigerBeetle's VOPR: several independent
//! command services (each with its own store handle, as separate processes would be)
//! over one log, a seeded random mix of commands and retries on a few hot accounts,
//! holds expired by a "reactor" service, refunds approved through the workflow; every
//! answer compared with a sequential model.
//!
//! - Sequential phase: one command at a time, each through a service picked at
//!   random, so the model's answer at that point is exact: a refusal only where the
//!   model refuses, an application only where it applies, a re-send always a replay.
//!   This is what a worker answering from a cached state it did not know was stale
//!   fails.
//! - Burst phase: commands (and their duplicates, in one batch or across services)
//!   sent at once; a refusal for credits is only allowed where even the least
//!   favourable order of the burst's applied spends leaves too little; duplicates get
//!   one answer; nothing is applied twice.
//! - At the end: every account's state loaded fresh equals the model, and the log
//!   holds each applied command's events exactly once.
//!
//! A failing run prints its seed; `TALLY_SIM_SEED=<seed>` runs that seed alone, and a
//! seed that once failed goes into [`REGRESSION_SEEDS`].
//!
//! One file: one seeded simulation (its model, its workload and its checks belong
//! together).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tally_domain::account::{AccountCommand as C, HoldState};
use tally_domain::refund::{RefundAsk, RefundStatus};
use tally_domain::values::{AdminId, Amount, DebitId, GrantId, HoldId, Reason, RefundId, UserId};
use tally_domain::{Config, DomainError};
use tally_ledger::aggregate::AccountView;
use tally_ledger::workflows::{approve_refund, request_refund};
use tally_ledger::{LedgerError, Ledgers, Outcome, Request};
use tally_store::testing::TestDatabase;
use tally_store::{Actor, ActorKind, EventStore, Metadata, PostgresOptions};

/// Seeds that once failed: run on every test run.
const REGRESSION_SEEDS: &[u64] = &[];
/// Fresh seeds per run (derived from the clock, printed).
const FRESH_SEEDS: usize = 2;
/// Independent command services ("processes").
const SERVICES: usize = 3;
/// Hot accounts.
const ACCOUNTS: i64 = 3;
/// Sequential steps per seed.
const STEPS: usize = 260;
/// Bursts per seed, and commands per burst.
const BURSTS: usize = 6;
const BURST_COMMANDS: usize = 12;

/// splitmix64: small, seedable, good enough to pick commands.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        match items.len() {
            0 => None,
            n => items.get(self.below(n as u64) as usize),
        }
    }
}

#[derive(Clone, Debug)]
struct ModelHold {
    user: i64,
    amount: Decimal,
    state: HoldState,
    expires_at: DateTime<Utc>,
    short: bool,
}

/// The sequential model: what the log must say, kept by the test on its own.
#[derive(Default)]
struct Model {
    available: BTreeMap<i64, Decimal>,
    held: BTreeMap<i64, Decimal>,
    holds: BTreeMap<String, ModelHold>,
    /// Debits: id → (user, amount, refunded so far).
    debits: BTreeMap<String, (i64, Decimal, Decimal)>,
    /// Applied commands by kind and id (each must be in the log once).
    applied: BTreeMap<&'static str, Vec<String>>,
    /// Commands applied, to re-send later: (service-independent) requests.
    sent: Vec<(i64, C)>,
}

impl Model {
    fn avail(&self, user: i64) -> Decimal {
        self.available.get(&user).copied().unwrap_or_default()
    }

    fn apply(&mut self, user: i64, command: &C, now: DateTime<Utc>) {
        let available = self.available.entry(user).or_default();
        let held = self.held.entry(user).or_default();
        match command {
            C::Grant {
                grant_id, amount, ..
            } => {
                *available += amount.get();
                self.applied
                    .entry("grant")
                    .or_default()
                    .push(grant_id.to_string());
            }
            C::Debit {
                debit_id, amount, ..
            } => {
                *available -= amount.get();
                self.debits
                    .insert(debit_id.to_string(), (user, amount.get(), Decimal::ZERO));
                self.applied
                    .entry("debit")
                    .or_default()
                    .push(debit_id.to_string());
            }
            C::PlaceHold {
                hold_id,
                amount,
                ttl_seconds,
                ..
            } => {
                *available -= amount.get();
                *held += amount.get();
                self.holds.insert(
                    hold_id.to_string(),
                    ModelHold {
                        user,
                        amount: amount.get(),
                        state: HoldState::Open,
                        expires_at: now + chrono::Duration::seconds(*ttl_seconds as i64),
                        short: *ttl_seconds == 1,
                    },
                );
                self.applied
                    .entry("hold")
                    .or_default()
                    .push(hold_id.to_string());
            }
            C::CaptureHold { hold_id, amount } => {
                let hold = self.holds.get_mut(hold_id.as_str()).expect("model hold");
                let captured = amount.map(|a| a.get()).unwrap_or(hold.amount);
                *held -= hold.amount;
                *available += hold.amount - captured;
                hold.state = HoldState::Captured;
            }
            C::ReleaseHold { hold_id, .. } => {
                let hold = self.holds.get_mut(hold_id.as_str()).expect("model hold");
                *held -= hold.amount;
                *available += hold.amount;
                hold.state = HoldState::Released;
            }
            C::ExpireHold { hold_id } => {
                let hold = self.holds.get_mut(hold_id.as_str()).expect("model hold");
                *held -= hold.amount;
                *available += hold.amount;
                hold.state = HoldState::Expired;
            }
            other => panic!("the model does not run {other:?}"),
        }
        self.sent.push((user, command.clone()));
    }

    /// Whether the model applies `command` now (else: the code it refuses with).
    fn decide(&self, user: i64, command: &C, now: DateTime<Utc>) -> Result<(), &'static str> {
        let spend = |amount: &Amount| match amount.get() > self.avail(user) {
            true => Err("insufficient_credits"),
            false => Ok(()),
        };
        match command {
            C::Grant { .. } => Ok(()),
            C::Debit { amount, .. } => spend(amount),
            C::PlaceHold { amount, .. } => spend(amount),
            C::CaptureHold { hold_id, amount } => {
                let hold = &self.holds[hold_id.as_str()];
                if hold.state != HoldState::Open || now >= hold.expires_at {
                    return Err("hold_not_open");
                }
                match amount {
                    Some(a) if a.get() > hold.amount => Err("validation"),
                    _ => Ok(()),
                }
            }
            C::ReleaseHold { hold_id, .. } | C::ExpireHold { hold_id } => {
                let hold = &self.holds[hold_id.as_str()];
                match hold.state == HoldState::Open && (now < hold.expires_at || hold.short) {
                    true => Ok(()),
                    false => Err("hold_not_open"),
                }
            }
            other => panic!("the model does not decide {other:?}"),
        }
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    services: Vec<Ledgers>,
    stores: Vec<Arc<dyn EventStore>>,
    model: Model,
    next_id: u64,
    log: Vec<String>,
}

fn meta() -> Metadata {
    Metadata::by(Actor::new(ActorKind::Service, "sim"))
}

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn credits(units: u64) -> Amount {
    Amount::new(Decimal::from(units)).unwrap()
}

fn code(result: &Result<Outcome<AccountView>, LedgerError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

impl Sim {
    async fn new(seed: u64, url: &str) -> Self {
        let mut services = Vec::new();
        let mut stores = Vec::new();
        for _ in 0..SERVICES {
            let store = tally_store::open(
                url,
                PostgresOptions {
                    max_connections: 4,
                    ..PostgresOptions::default()
                },
            )
            .await
            .expect("open store");
            services.push(Ledgers::new(store.clone(), Arc::new(Config::default())));
            stores.push(store);
        }
        Self {
            seed,
            rng: Rng(seed),
            services,
            stores,
            model: Model::default(),
            next_id: 0,
            log: Vec::new(),
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    fn service(&mut self) -> usize {
        self.rng.below(SERVICES as u64) as usize
    }

    fn fail(&self, what: String) -> ! {
        let tail: Vec<&String> = self.log.iter().rev().take(12).collect();
        panic!(
            "seed {}: {what}\n(run it alone: TALLY_SIM_SEED={})\nlast steps, newest first:\n{tail:#?}",
            self.seed, self.seed
        );
    }

    async fn send(
        &self,
        service: usize,
        account: i64,
        command: C,
    ) -> Result<Outcome<AccountView>, LedgerError> {
        self.services[service]
            .accounts
            .execute(Request {
                key: user(account),
                command,
                command_id: None,
                metadata: meta(),
            })
            .await
    }

    /// Sends one command through a random service and holds the answer to the model.
    async fn step_command(&mut self, account: i64, command: C) {
        let service = self.service();
        let before = Utc::now();
        let expected = self.model.decide(account, &command, before);
        let result = self.send(service, account, command.clone()).await;
        self.log.push(format!(
            "service {service} account {account}: {command:?} -> {} (model: {expected:?})",
            code(&result)
        ));
        match (&result, expected) {
            (Ok(outcome), Ok(())) if !outcome.replayed => {
                self.model.apply(account, &command, before);
                let (available, held) = (self.model.avail(account), self.model.held[&account]);
                if outcome.view.available != available || outcome.view.held != held {
                    self.fail(format!(
                        "answered available {} held {}, the model has {available} and {held}",
                        outcome.view.available, outcome.view.held
                    ));
                }
            }
            (Err(error), Err(refused)) if error.code() == refused => {}
            _ => self.fail(format!(
                "{command:?} through service {service} answered {} ({:?}); the model says {expected:?}",
                code(&result),
                result.as_ref().err()
            )),
        }
    }

    async fn sequential_step(&mut self) {
        let account = 1 + self.rng.below(ACCOUNTS as u64) as i64;
        let now = Utc::now();
        let open_long: Vec<String> = self
            .model
            .holds
            .iter()
            .filter(|(_, h)| h.state == HoldState::Open && !h.short && h.expires_at > now)
            .map(|(id, _)| id.clone())
            .collect();
        // Short holds well past their expiry: the reactor's work.
        let overdue: Vec<String> = self
            .model
            .holds
            .iter()
            .filter(|(_, h)| {
                h.state == HoldState::Open
                    && h.short
                    && h.expires_at + chrono::Duration::milliseconds(300) < now
            })
            .map(|(id, _)| id.clone())
            .collect();
        match self.rng.below(100) {
            0..=14 => {
                let id = self.id("g");
                let amount = credits(1 + self.rng.below(6));
                self.step_command(
                    account,
                    C::Grant {
                        grant_id: GrantId::new(id).unwrap(),
                        amount,
                        reason: Reason::new("sim").unwrap(),
                    },
                )
                .await;
            }
            15..=34 => {
                let id = self.id("d");
                let amount = credits(1 + self.rng.below(8));
                self.step_command(
                    account,
                    C::Debit {
                        debit_id: DebitId::new(id).unwrap(),
                        amount,
                        reason: Reason::new("sim").unwrap(),
                    },
                )
                .await;
            }
            35..=49 => {
                let short = self.rng.below(3) == 0;
                let id = self.id(if short { "hs" } else { "h" });
                let amount = credits(1 + self.rng.below(if short { 3 } else { 6 }));
                self.step_command(
                    account,
                    C::PlaceHold {
                        hold_id: HoldId::new(id).unwrap(),
                        amount,
                        ttl_seconds: if short { 1 } else { 3600 },
                        reason: Reason::new("sim").unwrap(),
                    },
                )
                .await;
            }
            50..=59 => {
                if let Some(id) = self.rng.pick(&open_long).cloned() {
                    let hold = self.model.holds[&id].clone();
                    let amount = match self.rng.below(2) {
                        0 => None,
                        _ => Some(credits(
                            1 + self.rng.below(hold.amount.try_into().unwrap_or(1)),
                        )),
                    };
                    let command = C::CaptureHold {
                        hold_id: HoldId::new(id).unwrap(),
                        amount,
                    };
                    self.step_command(hold.user, command).await;
                }
            }
            60..=66 => {
                if let Some(id) = self.rng.pick(&open_long).cloned() {
                    let hold = self.model.holds[&id].clone();
                    let command = C::ReleaseHold {
                        hold_id: HoldId::new(id).unwrap(),
                        reason: Reason::new("job failed").unwrap(),
                    };
                    self.step_command(hold.user, command).await;
                }
            }
            67..=76 => {
                // The reactor (service 0) expires what is overdue, then the freed
                // credits must be spendable through any service at once.
                for id in overdue {
                    let hold = self.model.holds[&id].clone();
                    let command = C::ExpireHold {
                        hold_id: HoldId::new(id.clone()).unwrap(),
                    };
                    let result = self.send(0, hold.user, command.clone()).await;
                    self.log
                        .push(format!("reactor: expire {id} -> {}", code(&result)));
                    match result {
                        Ok(outcome) if !outcome.replayed => {
                            self.model.apply(hold.user, &command, Utc::now())
                        }
                        other => self.fail(format!("expiring {id} answered {other:?}")),
                    }
                    let spend = self.model.avail(hold.user).min(hold.amount);
                    if spend > Decimal::ZERO {
                        let debit = self.id("d");
                        self.step_command(
                            hold.user,
                            C::Debit {
                                debit_id: DebitId::new(debit).unwrap(),
                                amount: Amount::new(spend).unwrap(),
                                reason: Reason::new("right after expiry").unwrap(),
                            },
                        )
                        .await;
                    }
                }
            }
            77..=86 => {
                // A re-send of an applied command, through any service: a replay.
                let sent = self.model.sent.clone();
                if let Some((account, command)) = self.rng.pick(&sent).cloned() {
                    let service = self.service();
                    let result = self.send(service, account, command.clone()).await;
                    self.log.push(format!(
                        "service {service}: re-send {command:?} -> {}",
                        code(&result)
                    ));
                    match result {
                        Ok(outcome) if outcome.replayed => {
                            if let C::PlaceHold { hold_id, .. }
                            | C::CaptureHold { hold_id, .. }
                            | C::ReleaseHold { hold_id, .. }
                            | C::ExpireHold { hold_id } = &command
                                && outcome.view.hold.as_ref().map(|(id, _)| id) != Some(hold_id)
                            {
                                self.fail(format!("the replay of {command:?} lost its hold"));
                            }
                        }
                        other => self.fail(format!(
                            "the re-send of {command:?} through service {service} answered {other:?}"
                        )),
                    }
                }
            }
            87..=91 => {
                // A hold id placed on another account: refused, nothing appended.
                let holds: Vec<(String, i64)> = self
                    .model
                    .holds
                    .iter()
                    .map(|(id, h)| (id.clone(), h.user))
                    .collect();
                if let Some((id, owner)) = self.rng.pick(&holds).cloned() {
                    let other = 1 + (owner % ACCOUNTS);
                    let service = self.service();
                    let result = self
                        .send(
                            service,
                            other,
                            C::PlaceHold {
                                hold_id: HoldId::new(id.clone()).unwrap(),
                                amount: credits(1),
                                ttl_seconds: 3600,
                                reason: Reason::new("reused id").unwrap(),
                            },
                        )
                        .await;
                    self.log.push(format!(
                        "service {service}: hold {id} of {owner} on {other} -> {}",
                        code(&result)
                    ));
                    if code(&result) != "idempotency_conflict" {
                        self.fail(format!(
                            "hold {id} of account {owner} placed again on {other}: {result:?}"
                        ));
                    }
                }
            }
            _ => self.refund_step().await,
        }
    }

    /// Two requests over one spend, both for all of it: the first approval returns the
    /// credits, the second is refused with nothing appended and stays requested.
    async fn refund_step(&mut self) {
        let fresh: Vec<String> = self
            .model
            .debits
            .iter()
            .filter(|(_, (_, _, refunded))| refunded.is_zero())
            .map(|(id, _)| id.clone())
            .collect();
        let Some(debit) = self.rng.pick(&fresh).cloned() else {
            return;
        };
        let (owner, amount, _) = self.model.debits[&debit];
        let ids = [self.id("r"), self.id("r")];
        for id in &ids {
            let service = self.service();
            let ledgers = &self.services[service];
            let ask = RefundAsk {
                user_id: user(owner),
                reference: format!("debit:{debit}"),
                amount: Amount::new(amount).unwrap(),
                reason: Reason::new("did not work").unwrap(),
                requested_by: format!("user-{owner}"),
            };
            let requested = request_refund(
                &ledgers.accounts,
                &ledgers.refunds,
                &Config::default(),
                RefundId::new(id.clone()).unwrap(),
                ask,
                meta(),
            )
            .await;
            if let Err(error) = requested {
                self.fail(format!("refund request {id} over {debit}: {error}"));
            }
        }
        for (n, id) in ids.iter().enumerate() {
            let service = self.service();
            let ledgers = &self.services[service];
            let approved = approve_refund(
                &ledgers.accounts,
                &ledgers.refunds,
                RefundId::new(id.clone()).unwrap(),
                AdminId::new("admin-sim").unwrap(),
                Reason::new("ok").unwrap(),
                meta(),
            )
            .await;
            self.log.push(format!(
                "service {service}: approve {id} over {debit} -> {}",
                code(&approved)
            ));
            match (n, approved) {
                (0, Ok(outcome)) => {
                    *self.model.available.get_mut(&owner).unwrap() += amount;
                    self.model.debits.get_mut(&debit).unwrap().2 = amount;
                    if outcome.view.available != self.model.avail(owner) {
                        self.fail(format!("refund {id} answered {:?}", outcome.view));
                    }
                }
                (1, Err(LedgerError::Domain(DomainError::RefundNotAllowed(_)))) => {
                    let request = ledgers
                        .refunds
                        .load(&RefundId::new(id.clone()).unwrap())
                        .await
                        .unwrap()
                        .state;
                    if request.status != Some(RefundStatus::Requested) {
                        self.fail(format!(
                            "refund {id} refused its credits but is {:?}",
                            request.status
                        ));
                    }
                }
                (n, other) => self.fail(format!("approval {n} of {debit}'s refunds: {other:?}")),
            }
        }
    }

    /// Commands sent at once (some twice: the same request in one batch or through
    /// another service).
    async fn burst(&mut self) {
        let mut planned = Vec::new();
        for _ in 0..BURST_COMMANDS {
            let account = 1 + self.rng.below(ACCOUNTS as u64) as i64;
            let command = match self.rng.below(3) {
                0 => C::Grant {
                    grant_id: GrantId::new(self.id("bg")).unwrap(),
                    amount: credits(1 + self.rng.below(4)),
                    reason: Reason::new("burst").unwrap(),
                },
                1 => C::Debit {
                    debit_id: DebitId::new(self.id("bd")).unwrap(),
                    amount: credits(1 + self.rng.below(6)),
                    reason: Reason::new("burst").unwrap(),
                },
                _ => C::PlaceHold {
                    hold_id: HoldId::new(self.id("bh")).unwrap(),
                    amount: credits(1 + self.rng.below(4)),
                    ttl_seconds: 3600,
                    reason: Reason::new("burst").unwrap(),
                },
            };
            let copies = 1 + self.rng.below(2) as usize;
            let services: Vec<usize> = (0..copies).map(|_| self.service()).collect();
            planned.push((account, command, services));
        }
        let start: BTreeMap<i64, Decimal> = self.model.available.clone();
        let mut sends = Vec::new();
        for (index, (account, command, services)) in planned.iter().enumerate() {
            for &service in services {
                let ledgers = self.services[service].clone();
                let (account, command) = (*account, command.clone());
                sends.push(async move {
                    let result = ledgers
                        .accounts
                        .execute(Request {
                            key: user(account),
                            command,
                            command_id: None,
                            metadata: meta(),
                        })
                        .await;
                    (index, service, result)
                });
            }
        }
        let results = futures_join_all(sends).await;
        let mut answers: HashMap<usize, Vec<Result<Outcome<AccountView>, LedgerError>>> =
            HashMap::new();
        for (index, service, result) in results {
            self.log.push(format!(
                "burst: {:?} via {service} -> {}",
                planned[index].1,
                code(&result)
            ));
            answers.entry(index).or_default().push(result);
        }
        // Each command: applied at most once, its other copies answered as replays,
        // or refused for credits (a copy decided before credits arrived); nothing else.
        let mut spent: BTreeMap<i64, Decimal> = BTreeMap::new();
        let mut refused = Vec::new();
        for (index, (account, command, _)) in planned.iter().enumerate() {
            let got = &answers[&index];
            let applied = got
                .iter()
                .filter(|r| matches!(r, Ok(o) if !o.replayed))
                .count();
            let replays = got
                .iter()
                .filter(|r| matches!(r, Ok(o) if o.replayed))
                .count();
            let codes: Vec<&str> = got.iter().map(code).collect();
            let short = codes
                .iter()
                .filter(|c| **c == "insufficient_credits")
                .count();
            if applied > 1
                || applied + replays + short != got.len()
                || (applied == 0 && replays > 0)
            {
                self.fail(format!(
                    "{command:?} sent {} times answered {codes:?}",
                    got.len()
                ));
            }
            if applied == 1 {
                self.model.apply(*account, command, Utc::now());
                if let C::Debit { amount, .. } | C::PlaceHold { amount, .. } = command {
                    *spent.entry(*account).or_default() += amount.get();
                }
            }
            if short > 0 {
                refused.push((*account, command.clone()));
            }
        }
        // A refusal for credits is fair only if even the least favourable order of the
        // burst's applied spends left too little.
        for (account, command) in refused {
            let (C::Debit { amount, .. } | C::PlaceHold { amount, .. }) = &command else {
                continue;
            };
            let least = start.get(&account).copied().unwrap_or_default()
                - spent.get(&account).copied().unwrap_or_default();
            if amount.get() <= least {
                self.fail(format!(
                    "{command:?} refused for credits though at least {least} was available throughout"
                ));
            }
        }
    }

    /// Every account loaded fresh equals the model; the log holds each applied
    /// command's events once.
    async fn check_log(&self) {
        let store = &self.stores[0];
        for account in 1..=ACCOUNTS {
            let loaded = self.services[0]
                .accounts
                .load(&user(account))
                .await
                .unwrap();
            let (available, held) = (
                self.model.avail(account),
                self.model.held.get(&account).copied().unwrap_or_default(),
            );
            if loaded.state.available != available || loaded.state.held != held {
                self.fail(format!(
                    "account {account} is {} available, {} held in the log; the model says {available}, {held}",
                    loaded.state.available, loaded.state.held
                ));
            }
        }
        let mut counts: HashMap<(String, String), usize> = HashMap::new();
        let mut after = 0;
        loop {
            let page = store.read_all(after, 1_000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.position;
            for event in page {
                let id = ["grant_id", "debit_id", "hold_id"]
                    .iter()
                    .find_map(|field| event.payload.get(field).and_then(|v| v.as_str()))
                    .map(str::to_string);
                if let Some(id) = id {
                    *counts.entry((event.event_type.clone(), id)).or_default() += 1;
                }
            }
        }
        for ((kind, event_type), ids) in [
            (
                ("grant", "credits.granted"),
                self.model.applied.get("grant"),
            ),
            (
                ("debit", "credits.debited"),
                self.model.applied.get("debit"),
            ),
            (
                ("hold", "credits.hold_placed"),
                self.model.applied.get("hold"),
            ),
        ] {
            let ids = ids.cloned().unwrap_or_default();
            let in_log = counts.iter().filter(|((t, _), _)| t == event_type).count();
            if in_log != ids.len() {
                self.fail(format!(
                    "{} {kind}s applied, the log has {in_log} {event_type}",
                    ids.len()
                ));
            }
            for id in ids {
                let n = counts
                    .get(&(event_type.to_string(), id.clone()))
                    .copied()
                    .unwrap_or(0);
                if n != 1 {
                    self.fail(format!("{kind} {id} is in the log {n} times"));
                }
            }
        }
    }
}

/// Runs futures concurrently and collects their outputs (no extra crate for one
/// `join_all`).
async fn futures_join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("a burst task"));
    }
    outputs
}

async fn run_seed(seed: u64, postgres: bool) {
    let database = if postgres {
        TestDatabase::postgres().await
    } else {
        TestDatabase::sqlite()
    };
    let mut sim = Sim::new(seed, &database.url).await;
    for account in 1..=ACCOUNTS {
        let opened = sim
            .send(
                0,
                account,
                C::Open {
                    username: None,
                    language: None,
                },
            )
            .await;
        assert!(opened.is_ok(), "seed {seed}: opening {account}: {opened:?}");
        sim.model.available.insert(account, Decimal::ZERO);
        sim.model.held.insert(account, Decimal::ZERO);
        let id = sim.id("g");
        sim.step_command(
            account,
            C::Grant {
                grant_id: GrantId::new(id).unwrap(),
                amount: credits(20),
                reason: Reason::new("start").unwrap(),
            },
        )
        .await;
    }
    for step in 0..STEPS {
        sim.sequential_step().await;
        if step % (STEPS / BURSTS) == 0 {
            sim.burst().await;
        }
        if step % 40 == 0 {
            // Let short holds run out now and then.
            tokio::time::sleep(Duration::from_millis(350)).await;
        }
    }
    sim.check_log().await;
    for store in sim.stores.drain(..) {
        drop(store);
    }
    drop(sim);
    database.drop_database().await;
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("TALLY_SIM_SEED") {
        return vec![seed.parse().expect("TALLY_SIM_SEED is a number")];
    }
    let clock = Utc::now().timestamp_micros() as u64;
    let mut seeds: Vec<u64> = REGRESSION_SEEDS.to_vec();
    seeds.extend((0..FRESH_SEEDS as u64).map(|n| clock.wrapping_mul(31).wrapping_add(n)));
    seeds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_services_agree_with_the_sequential_model() {
    for seed in seeds() {
        eprintln!("simulation seed {seed} (SQLite)");
        run_seed(seed, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_services_agree_with_the_sequential_model() {
    for seed in seeds() {
        eprintln!("simulation seed {seed} (Postgres)");
        run_seed(seed, true).await;
    }
}
