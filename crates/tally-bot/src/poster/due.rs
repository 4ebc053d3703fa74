//! What a cycle posts: every due ad slot's destinations not yet reached (slots the
//! owner's plan covers, from the posts read model, a page at a time), and the
//! operator's campaigns, each the rotation's post for the cycle to its channels.

use tally_domain::slot::Destination;
use tally_domain::values::SlotId;

use crate::{BotError, Context};

/// Most due slots read per page.
const DUE_PAGE: i64 = 100;

/// The (slot, destination) pairs to post in `cycle`, by slot id, campaigns last.
pub(super) async fn posts(
    context: &Context,
    cycle: u64,
) -> Result<Vec<(String, Destination)>, BotError> {
    let now = context.ledgers.now();
    let mut after = String::new();
    let mut due = Vec::new();
    loop {
        let page = tally_projections::due_slots(
            context.pool(),
            now.timestamp_micros(),
            i64::try_from(cycle).unwrap_or(i64::MAX),
            &after,
            DUE_PAGE,
        )
        .await?;
        let Some(last) = page.last() else { break };
        after = last.slot_id.clone();
        let full = page.len() as i64 == DUE_PAGE;
        due.extend(page);
        if !full {
            break;
        }
    }
    let mut posts: Vec<(String, Destination)> = due
        .into_iter()
        .flat_map(|slot| {
            slot.destinations
                .into_iter()
                .map(move |(chat_id, topic_id)| {
                    (slot.slot_id.clone(), Destination { chat_id, topic_id })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // The operator's campaigns: the rotation's post for this cycle, to each of the
    // campaign's channels (not posted there in the cycle yet).
    for (_, rotation) in tally_projections::campaign_rotations(context.pool()).await? {
        let Some(slot_id) = rotation.get((cycle % rotation.len().max(1) as u64) as usize) else {
            continue;
        };
        let slot = context
            .ledgers
            .slots
            .load(&SlotId::new(slot_id.clone())?)
            .await?
            .state;
        let Some(config) = slot.config else { continue };
        for destination in config.destinations {
            if !slot.posted.contains(&(cycle, destination)) {
                posts.push((slot_id.clone(), destination));
            }
        }
    }
    Ok(posts)
}
