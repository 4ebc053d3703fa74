//! The account's command ids (what makes each command idempotent and each old fact
//! findable in the log) and what a decision must recall by them.

use chrono::{DateTime, Utc};

use super::*;

/// The id a command is idempotent by, unique in the account's stream across kinds of
/// command (`deposit:<payment id>`, `grant:<id>`, `debit:<id>`, `adjustment:<id>`,
/// `hold:<id>`, `capture:<hold id>`, `release:<hold id>`, `expire:<hold id>`,
/// `refund:<refund id>`). Commands without one (open, block, unblock) are idempotent by
/// the state: repeating them is a no-op.
pub fn command_id(command: &AccountCommand) -> Option<String> {
    use AccountCommand as C;
    match command {
        C::Open { .. } | C::Block { .. } | C::Unblock { .. } | C::SetAlert { .. } => None,
        C::Deposit { payment_id, .. } => Some(format!("deposit:{payment_id}")),
        C::Grant { grant_id, .. } => Some(format!("grant:{grant_id}")),
        C::Debit { debit_id, .. } => Some(debit_ref(debit_id)),
        C::Adjust { adjustment_id, .. } => Some(format!("adjustment:{adjustment_id}")),
        C::PlaceHold { hold_id, .. } => Some(hold_ref(hold_id)),
        C::CaptureHold { hold_id, .. } => Some(format!("capture:{hold_id}")),
        C::ReleaseHold { hold_id, .. } => Some(format!("release:{hold_id}")),
        C::ExpireHold { hold_id } => Some(format!("expire:{hold_id}")),
        C::Refund { refund_id, .. } => Some(format!("refund:{refund_id}")),
    }
}

/// The command id an event was decided under: [`command_id`] of its command.
pub fn event_command_id(event: &AccountEvent) -> Option<String> {
    use AccountEvent as E;
    match event {
        E::Opened { .. } | E::Blocked { .. } | E::Unblocked { .. } | E::AlertSet { .. } => None,
        E::BalanceLow { cause, .. } | E::AlertRearmed { cause, .. } => cause.clone(),
        E::Deposited { payment_id, .. } => Some(format!("deposit:{payment_id}")),
        E::Granted { grant_id, .. } => Some(format!("grant:{grant_id}")),
        E::Debited { debit_id, .. } => Some(debit_ref(debit_id)),
        E::Adjusted { adjustment_id, .. } => Some(format!("adjustment:{adjustment_id}")),
        E::HoldPlaced { hold_id, .. } => Some(hold_ref(hold_id)),
        E::HoldCaptured { hold_id, .. } => Some(format!("capture:{hold_id}")),
        E::HoldReleased { hold_id, .. } => Some(format!("release:{hold_id}")),
        E::HoldExpired { hold_id, .. } => Some(format!("expire:{hold_id}")),
        E::Refunded { refund_id, .. } => Some(format!("refund:{refund_id}")),
    }
}

/// The command whose events record the spend `reference`: the debit itself, or the
/// capture of the hold. `None` for a reference that names no spend.
pub fn spend_command_id(reference: &str) -> Option<String> {
    if let Some(id) = reference.strip_prefix("debit:") {
        return Some(format!("debit:{id}"));
    }
    reference
        .strip_prefix("hold:")
        .map(|id| format!("capture:{id}"))
}

/// Every command id that files events about a hold: its placing and its closing.
pub fn hold_command_ids(hold_id: &HoldId) -> Vec<String> {
    vec![
        hold_ref(hold_id),
        format!("capture:{hold_id}"),
        format!("release:{hold_id}"),
        format!("expire:{hold_id}"),
    ]
}

/// A hold as its events in `past` left it (`None` if they do not place it): for the
/// answer to a command about a hold the state has forgotten.
pub fn hold_from_past(hold_id: &HoldId, past: &[(AccountEvent, DateTime<Utc>)]) -> Option<Hold> {
    use AccountEvent as E;
    let mut hold: Option<Hold> = None;
    for (event, _) in past {
        match (event, hold.as_mut()) {
            (
                E::HoldPlaced {
                    hold_id: id,
                    amount,
                    expires_at,
                    ..
                },
                _,
            ) if id == hold_id => {
                hold = Some(Hold {
                    amount: *amount,
                    captured: Decimal::ZERO,
                    state: HoldState::Open,
                    expires_at: *expires_at,
                });
            }
            (
                E::HoldCaptured {
                    hold_id: id,
                    captured,
                    ..
                },
                Some(hold),
            ) if id == hold_id => {
                hold.captured = captured.get();
                hold.state = HoldState::Captured;
            }
            (E::HoldReleased { hold_id: id, .. }, Some(hold)) if id == hold_id => {
                hold.state = HoldState::Released;
            }
            (E::HoldExpired { hold_id: id, .. }, Some(hold)) if id == hold_id => {
                hold.state = HoldState::Expired;
            }
            _ => {}
        }
    }
    hold
}

/// The command ids whose events `decide` needs in [`Context::past`] for this command on
/// this state (empty when the state knows enough).
pub fn recall(state: &Account, command: &AccountCommand) -> Vec<String> {
    use AccountCommand as C;
    match command {
        C::CaptureHold { hold_id, .. }
        | C::ReleaseHold { hold_id, .. }
        | C::ExpireHold { hold_id } => match state.holds.contains_key(hold_id) {
            true => vec![],
            false => hold_command_ids(hold_id),
        },
        C::Refund { reference, .. } => spend_command_id(reference).into_iter().collect(),
        _ => vec![],
    }
}
