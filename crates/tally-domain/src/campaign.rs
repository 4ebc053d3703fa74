//! The operator's own campaigns (`campaign-<id>`): a rotation of posts (promos,
//! guides) to the operator's channels, one post per cycle, and every click on their
//! call-to-action buttons.
//!
//! A campaign's posts are posted like ad slots (each post is the slot
//! `cmp.<campaign>.<post>`, owned by the operator, posted in the cycles where it is
//! the rotation's turn: post `k` of `n` in cycle `c` when `c mod n = k`), so every
//! post has the poster's exactly-once guarantees. What a campaign adds is
//! attribution: a button press (a callback button) or a `/start <code>` deep link is
//! a click (`campaign.clicked`), recorded once per callback query or message; a
//! payment of the same user within the attribution window after a click is counted
//! as the conversion of that campaign post (by the campaigns read model, at query
//! time, so the window can change without rewriting anything).

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::slot::{self, Destination, LinkButton, SlotConfig};
use crate::values::UserId;

/// Most posts in one campaign's rotation.
pub const POSTS_MAX: usize = 20;

/// Longest campaign id, in bytes (it travels in callback data, at most 64 bytes).
pub const CAMPAIGN_ID_BYTES_MAX: usize = 24;

/// Longest post id, in bytes.
pub const POST_ID_BYTES_MAX: usize = 16;

/// Where a call-to-action button takes the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CtaTarget {
    /// A web page: the press is recorded (a callback button), then the bot sends
    /// the user the link.
    Url(String),
    /// The bot itself: a `t.me/<bot>?start=<code>` link; the click is recorded when
    /// the user's `/start <code>` arrives.
    Start,
}

/// A call-to-action button under a campaign post.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtaButton {
    /// What it says.
    pub label: String,
    /// Where it goes.
    pub target: CtaTarget,
}

/// One post of a campaign's rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignPost {
    /// Its id within the campaign (letters, digits, `_`).
    pub post_id: String,
    /// Its text (the caption, with a photo).
    pub content: String,
    /// A photo: a Telegram file id or an `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo: Option<String>,
    /// Call-to-action buttons, one per row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<CtaButton>,
}

/// A campaign as the operator defines it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignDef {
    /// A name for people.
    pub name: String,
    /// Who is told when a channel cannot be posted to (the operator's Telegram id).
    pub operator: UserId,
    /// The rotation, in order.
    pub posts: Vec<CampaignPost>,
    /// Where every post goes.
    pub channels: Vec<Destination>,
}

/// A campaign as its events made it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    /// The definition, once defined.
    pub def: Option<CampaignDef>,
    /// Clicks recorded.
    pub clicks: u64,
}

/// What can be asked of a campaign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignCommand {
    /// Define it, or define it anew (the same again: a no-op).
    Define(CampaignDef),
    /// A user clicked (idempotent by the command id: the callback query's id, or the
    /// `/start` message's).
    Click {
        /// The user.
        user_id: UserId,
        /// Which post.
        post_id: String,
        /// Which button (by position), or none for a `/start` deep link.
        button: Option<u8>,
    },
}

/// What happened to a campaign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CampaignEvent {
    /// Defined or redefined.
    #[serde(rename = "campaign.defined")]
    Defined(CampaignDef),
    /// A click on one of its posts.
    #[serde(rename = "campaign.clicked")]
    Clicked {
        /// The user.
        user_id: UserId,
        /// Which post.
        post_id: String,
        /// Which button, or none for a deep link.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        button: Option<u8>,
    },
}

/// The slot that posts `post_id` of `campaign` (ids are letters, digits and `_`, so
/// the dots separate them).
pub fn post_slot_id(campaign: &str, post_id: &str) -> String {
    format!("cmp.{campaign}.{post_id}")
}

/// The `/start` code of a campaign post's deep link.
pub fn start_code(campaign: &str, post_id: &str) -> String {
    format!("c-{campaign}-{post_id}")
}

/// The campaign and post a `/start` code names, if it names one.
pub fn parse_start_code(code: &str) -> Option<(&str, &str)> {
    let rest = code.strip_prefix("c-")?;
    let (campaign, post) = rest.split_once('-')?;
    (short_id(campaign, CAMPAIGN_ID_BYTES_MAX) && short_id(post, POST_ID_BYTES_MAX))
        .then_some((campaign, post))
}

/// The callback data of a post's button: `cta:<campaign>:<post>:<button>` (at most
/// 64 bytes, by the id limits).
pub fn callback_data(campaign: &str, post_id: &str, button: usize) -> String {
    format!("cta:{campaign}:{post_id}:{button}")
}

fn short_id(id: &str, max: usize) -> bool {
    (1..=max).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a campaign id: 1 to [`CAMPAIGN_ID_BYTES_MAX`] letters, digits or `_`.
pub fn check_campaign_id(id: &str) -> Result<(), DomainError> {
    match short_id(id, CAMPAIGN_ID_BYTES_MAX) {
        true => Ok(()),
        false => Err(DomainError::Validation(format!(
            "campaign id {id:?} must be 1 to {CAMPAIGN_ID_BYTES_MAX} letters, digits or '_'"
        ))),
    }
}

/// The slot configuration that posts `post` (its buttons as the poster sends them:
/// a callback button for a URL target, a deep link for a `/start` target; `{bot}` is
/// the bot's username, filled in when sent).
pub fn post_slot_config(campaign: &str, def: &CampaignDef, post: &CampaignPost) -> SlotConfig {
    let buttons = post
        .buttons
        .iter()
        .enumerate()
        .map(|(i, b)| match &b.target {
            CtaTarget::Url(url) => LinkButton {
                label: b.label.clone(),
                url: url.clone(),
                callback: Some(callback_data(campaign, &post.post_id, i)),
            },
            CtaTarget::Start => LinkButton {
                label: b.label.clone(),
                url: format!(
                    "https://t.me/{{bot}}?start={}",
                    start_code(campaign, &post.post_id)
                ),
                callback: None,
            },
        })
        .collect();
    SlotConfig {
        photo: post.photo.clone(),
        buttons,
        ..SlotConfig::text(def.operator, post.content.clone(), def.channels.clone())
    }
}

/// Decides what a command does to a campaign (its id is checked by
/// [`check_campaign_id`] where the stream is named).
pub fn decide(
    state: &Campaign,
    command: &CampaignCommand,
) -> Result<Vec<CampaignEvent>, DomainError> {
    // Posts are checked as posted, with the longest id a campaign may have.
    let id = "x".repeat(CAMPAIGN_ID_BYTES_MAX);
    let id = id.as_str();
    match command {
        CampaignCommand::Define(def) => {
            if def.name.trim().is_empty() || def.name.chars().count() > 64 {
                return Err(DomainError::Validation(
                    "a campaign's name must be 1 to 64 characters".into(),
                ));
            }
            crate::values::check_text_chars("campaign name", &def.name)?;
            if def.posts.is_empty() || def.posts.len() > POSTS_MAX {
                return Err(DomainError::Validation(format!(
                    "a campaign has 1 to {POSTS_MAX} posts, got {}",
                    def.posts.len()
                )));
            }
            let mut seen = std::collections::BTreeSet::new();
            for post in &def.posts {
                if !short_id(&post.post_id, POST_ID_BYTES_MAX) {
                    return Err(DomainError::Validation(format!(
                        "post id {:?} must be 1 to {POST_ID_BYTES_MAX} letters, digits or '_'",
                        post.post_id
                    )));
                }
                if !seen.insert(post.post_id.as_str()) {
                    return Err(DomainError::Validation(format!(
                        "post id {:?} is used twice",
                        post.post_id
                    )));
                }
                let config = post_slot_config(id, def, post);
                if def.channels.is_empty() || def.channels.len() > slot::DESTINATIONS_MAX {
                    return Err(DomainError::Validation(format!(
                        "a campaign needs 1 to {} channels",
                        slot::DESTINATIONS_MAX
                    )));
                }
                slot::check_content(&config).map_err(|e| {
                    DomainError::Validation(format!("post {:?}: {e}", post.post_id))
                })?;
            }
            match &state.def {
                Some(existing) if existing == def => Ok(vec![]),
                _ => Ok(vec![CampaignEvent::Defined(def.clone())]),
            }
        }
        CampaignCommand::Click {
            user_id,
            post_id,
            button,
        } => {
            let def = state
                .def
                .as_ref()
                .ok_or_else(|| DomainError::Validation("the campaign is not defined".into()))?;
            let Some(post) = def.posts.iter().find(|p| &p.post_id == post_id) else {
                return Err(DomainError::Validation(format!(
                    "the campaign has no post {post_id:?}"
                )));
            };
            if let Some(b) = button
                && usize::from(*b) >= post.buttons.len()
            {
                return Err(DomainError::Validation(format!(
                    "post {post_id:?} has no button {b}"
                )));
            }
            Ok(vec![CampaignEvent::Clicked {
                user_id: *user_id,
                post_id: post_id.clone(),
                button: *button,
            }])
        }
    }
}

/// Folds one event into a campaign.
pub fn evolve(mut state: Campaign, event: &CampaignEvent) -> Campaign {
    match event {
        CampaignEvent::Defined(def) => state.def = Some(def.clone()),
        CampaignEvent::Clicked { .. } => state.clicks += 1,
    }
    state
}
