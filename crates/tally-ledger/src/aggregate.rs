//! What the command service needs to know about a kind of stream: its name, its
//! initial state, and the domain's decide and evolve for it. One impl per stream kind;
//! the rules themselves stay in `tally-domain`.

use std::fmt::Display;
use std::hash::Hash;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_domain::account::{
    self, Account, AccountCommand, AccountEvent, AccountStatus, Context, Hold,
};
use tally_domain::values::{HoldId, UserId};
use tally_domain::{Config, DomainError};

/// A kind of stream the command service runs commands against.
pub trait Aggregate: Send + Sync + 'static {
    /// What identifies one stream of this kind (a user id, a payment id …).
    type Key: Clone + Eq + Hash + Display + Send + Sync + 'static;
    /// The folded state.
    type State: Clone + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What can be asked.
    type Command: Serialize + Send + Sync + 'static;
    /// What happens.
    type Event: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What a caller is told after a command: a small part of the state, taken right
    /// after the command's own events (copying the whole state per command would cost
    /// a hot stream time in proportion to its history).
    type View: Clone + Send + Sync + 'static;

    /// Stream names are `<prefix>-<key>`, e.g. `account-42`.
    const STREAM_PREFIX: &'static str;

    /// The state before any event.
    fn initial(key: &Self::Key) -> Self::State;

    /// The domain's decision.
    fn decide(
        state: &Self::State,
        command: &Self::Command,
        now: DateTime<Utc>,
        config: &Config,
    ) -> Result<Vec<Self::Event>, DomainError>;

    /// The domain's fold.
    fn evolve(state: Self::State, event: &Self::Event, occurred_at: DateTime<Utc>) -> Self::State;

    /// What to tell the sender of `command` about `state`.
    fn view(state: &Self::State, command: &Self::Command) -> Self::View;
}

/// What an account command's sender is told: the balance, and the hold it touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountView {
    /// Whose account.
    pub user_id: UserId,
    /// Whether it is open.
    pub opened: bool,
    /// Open or blocked.
    pub status: AccountStatus,
    /// Credits free to spend.
    pub available: Decimal,
    /// Credits under open holds.
    pub held: Decimal,
    /// The hold the command was about, if any.
    pub hold: Option<(HoldId, Hold)>,
}

/// Accounts: credits and holds (`account-<user id>`).
pub struct Accounts;

impl Aggregate for Accounts {
    type Key = UserId;
    type State = Account;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type View = AccountView;

    const STREAM_PREFIX: &'static str = "account";

    fn initial(key: &UserId) -> Account {
        Account::new(*key)
    }

    fn decide(
        state: &Account,
        command: &AccountCommand,
        now: DateTime<Utc>,
        config: &Config,
    ) -> Result<Vec<AccountEvent>, DomainError> {
        account::decide(state, command, &Context { now, config })
    }

    fn evolve(state: Account, event: &AccountEvent, occurred_at: DateTime<Utc>) -> Account {
        account::evolve(state, event, occurred_at)
    }

    fn view(state: &Account, command: &AccountCommand) -> AccountView {
        let hold_id = match command {
            AccountCommand::PlaceHold { hold_id, .. }
            | AccountCommand::CaptureHold { hold_id, .. }
            | AccountCommand::ReleaseHold { hold_id, .. }
            | AccountCommand::ExpireHold { hold_id } => Some(hold_id),
            _ => None,
        };
        AccountView {
            user_id: state.user_id,
            opened: state.opened,
            status: state.status,
            available: state.available,
            held: state.held,
            hold: hold_id.and_then(|id| state.holds.get(id).map(|h| (id.clone(), h.clone()))),
        }
    }
}
