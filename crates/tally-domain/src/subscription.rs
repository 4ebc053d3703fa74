//! The subscription stream (`subscription-<user id>`): which plan a user has, how many
//! ad slots it gives, until when.
//!
//! A plan is paid per period; renewing extends the period from its end (or from now,
//! if it had lapsed). An admin may correct the plan — the seeds' `/fix_user_slots
//! 7172873873 basic` — and the correction records plan and slots before and after,
//! who made it and why, so nobody has to guess later what happened.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::DomainError;
use crate::values::{AdminId, PaymentId, PlanId, Reason, UserId};

/// Where a subscription is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Paid up to `period_end`, renewing.
    Active,
    /// Paid up to `period_end`, not renewing.
    Cancelled,
    /// Past its period.
    Expired,
}

/// A user's subscription as its events made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The owner.
    pub user_id: UserId,
    /// The plan, once started.
    pub plan: Option<PlanId>,
    /// Ad slots the plan (or a correction) gives.
    pub slots: u32,
    /// End of the paid period.
    pub period_end: Option<DateTime<Utc>>,
    /// Where it is, once started.
    pub status: Option<SubscriptionStatus>,
    /// Payments applied, so none is applied twice.
    pub payments: std::collections::BTreeSet<PaymentId>,
    /// Payments refunded, whose period was taken back (once each).
    #[serde(default)]
    pub taken_back: std::collections::BTreeSet<PaymentId>,
}

impl Subscription {
    /// The state before any event.
    pub fn new(user_id: UserId) -> Self {
        Self {
            user_id,
            plan: None,
            slots: 0,
            period_end: None,
            status: None,
            payments: Default::default(),
            taken_back: Default::default(),
        }
    }

    /// Whether its slots may post now.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        matches!(
            self.status,
            Some(SubscriptionStatus::Active | SubscriptionStatus::Cancelled)
        ) && self.period_end.is_some_and(|end| now < end)
    }
}

/// What can be asked of a subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionCommand {
    /// A payment for a plan succeeded: start it, or extend it if it is the same plan.
    Pay {
        /// The payment.
        payment_id: PaymentId,
        /// The plan paid for.
        plan: PlanId,
    },
    /// Stop renewing; slots stay until the period ends.
    Cancel {
        /// Why.
        reason: Reason,
    },
    /// The period is over.
    Expire,
    /// An admin sets the plan (and so the slots).
    CorrectPlan {
        /// The plan to set.
        plan: PlanId,
        /// Who.
        admin: AdminId,
        /// Why.
        reason: Reason,
    },
    /// A plan payment was refunded: the period it paid for is taken back (the
    /// period's end moves back by one period of the plan; a period that then lies
    /// in the past expires).
    TakeBack {
        /// The refunded payment.
        payment_id: PaymentId,
        /// The plan it paid for.
        plan: PlanId,
    },
}

/// What happened to a subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SubscriptionEvent {
    /// A plan started (a new subscription, or a change of plan).
    #[serde(rename = "subscription.started")]
    Started {
        /// The payment.
        payment_id: PaymentId,
        /// The plan.
        plan: PlanId,
        /// Its slots.
        slots: u32,
        /// End of the first period.
        period_end: DateTime<Utc>,
    },
    /// The same plan was paid again: the period is extended.
    #[serde(rename = "subscription.renewed")]
    Renewed {
        /// The payment.
        payment_id: PaymentId,
        /// New end of the period.
        period_end: DateTime<Utc>,
    },
    /// Renewal stopped.
    #[serde(rename = "subscription.cancelled")]
    Cancelled {
        /// Why.
        reason: Reason,
    },
    /// The period ended.
    #[serde(rename = "subscription.expired")]
    Expired,
    /// A refunded payment's period was taken back.
    #[serde(rename = "subscription.period_taken_back")]
    PeriodTakenBack {
        /// The refunded payment.
        payment_id: PaymentId,
        /// New end of the period.
        period_end: DateTime<Utc>,
    },
    /// An admin changed the plan and slots.
    #[serde(rename = "subscription.slots_corrected")]
    SlotsCorrected {
        /// Plan before.
        plan_before: Option<PlanId>,
        /// Slots before.
        slots_before: u32,
        /// Plan after.
        plan_after: PlanId,
        /// Slots after.
        slots_after: u32,
        /// Who.
        admin: AdminId,
        /// Why.
        reason: Reason,
    },
}

fn period(config: &Config, plan: &PlanId) -> Result<(u32, Duration), DomainError> {
    let found = config
        .plans
        .get(plan)
        .ok_or_else(|| DomainError::Validation(format!("there is no plan {plan}")))?;
    Ok((found.slots, Duration::days(i64::from(found.period_days))))
}

/// Decides what a command does to a subscription.
pub fn decide(
    state: &Subscription,
    command: &SubscriptionCommand,
    now: DateTime<Utc>,
    config: &Config,
) -> Result<Vec<SubscriptionEvent>, DomainError> {
    use SubscriptionCommand as C;
    use SubscriptionEvent as E;
    match command {
        C::Pay { payment_id, plan } => {
            if state.payments.contains(payment_id) {
                return Ok(vec![]);
            }
            let (slots, length) = period(config, plan)?;
            let running = state.is_active(now) && state.plan.as_ref() == Some(plan);
            Ok(vec![match (running, state.period_end) {
                (true, Some(end)) => E::Renewed {
                    payment_id: payment_id.clone(),
                    period_end: end + length,
                },
                _ => E::Started {
                    payment_id: payment_id.clone(),
                    plan: plan.clone(),
                    slots,
                    period_end: now + length,
                },
            }])
        }
        C::TakeBack { payment_id, plan } => {
            if state.taken_back.contains(payment_id) {
                return Ok(vec![]);
            }
            let (Some(end), true) = (state.period_end, state.payments.contains(payment_id)) else {
                return Err(DomainError::Conflict(format!(
                    "payment {payment_id} paid for no period of this subscription"
                )));
            };
            let (_, length) = period(config, plan)?;
            Ok(vec![E::PeriodTakenBack {
                payment_id: payment_id.clone(),
                period_end: end - length,
            }])
        }
        C::Cancel { reason } => match state.status {
            None => Err(DomainError::SubscriptionNotFound),
            Some(SubscriptionStatus::Active) => Ok(vec![E::Cancelled {
                reason: reason.clone(),
            }]),
            Some(_) => Ok(vec![]),
        },
        C::Expire => match (state.status, state.period_end) {
            (None, _) | (_, None) => Err(DomainError::SubscriptionNotFound),
            (Some(SubscriptionStatus::Expired), _) => Ok(vec![]),
            (Some(_), Some(end)) if now < end => Err(DomainError::Validation(format!(
                "the subscription runs until {end}"
            ))),
            (Some(_), Some(_)) => Ok(vec![E::Expired]),
        },
        C::CorrectPlan {
            plan,
            admin,
            reason,
        } => {
            let (slots, _) = period(config, plan)?;
            if state.status.is_none() {
                return Err(DomainError::SubscriptionNotFound);
            }
            if state.plan.as_ref() == Some(plan) && state.slots == slots {
                return Ok(vec![]);
            }
            Ok(vec![E::SlotsCorrected {
                plan_before: state.plan.clone(),
                slots_before: state.slots,
                plan_after: plan.clone(),
                slots_after: slots,
                admin: admin.clone(),
                reason: reason.clone(),
            }])
        }
    }
}

/// Folds one event into a subscription.
pub fn evolve(mut state: Subscription, event: &SubscriptionEvent) -> Subscription {
    use SubscriptionEvent as E;
    match event {
        E::Started {
            payment_id,
            plan,
            slots,
            period_end,
        } => {
            state.payments.insert(payment_id.clone());
            state.plan = Some(plan.clone());
            state.slots = *slots;
            state.period_end = Some(*period_end);
            state.status = Some(SubscriptionStatus::Active);
        }
        E::Renewed {
            payment_id,
            period_end,
        } => {
            state.payments.insert(payment_id.clone());
            state.period_end = Some(*period_end);
            state.status = Some(SubscriptionStatus::Active);
        }
        E::PeriodTakenBack {
            payment_id,
            period_end,
        } => {
            state.taken_back.insert(payment_id.clone());
            state.period_end = Some(*period_end);
        }
        E::Cancelled { .. } => state.status = Some(SubscriptionStatus::Cancelled),
        E::Expired => state.status = Some(SubscriptionStatus::Expired),
        E::SlotsCorrected {
            plan_after,
            slots_after,
            ..
        } => {
            state.plan = Some(plan_after.clone());
            state.slots = *slots_after;
        }
    }
    state
}
