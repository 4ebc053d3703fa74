//! Ad slots: at most one successful post per slot, destination and cycle, and only
//! while the owner's subscription covers the slot.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use tally_domain::slot::{
    self, Attempt, Destination, Outcome, Slot, SlotCommand as C, SlotConfig, SlotCoverage,
    SlotEvent as E,
};
use tally_domain::values::UserId;

fn dest(chat: i64, topic: Option<i64>) -> Destination {
    Destination {
        chat_id: chat,
        topic_id: topic,
    }
}

fn configured() -> Slot {
    let config = SlotConfig {
        user_id: UserId::new(42).unwrap(),
        content: "Buy my course".into(),
        destinations: vec![dest(-1_001, None), dest(-1_002, Some(7))],
        photo: None,
        buttons: Vec::new(),
    };
    let events = slot::decide(&Slot::default(), &C::Configure(config)).unwrap();
    events.iter().fold(Slot::default(), slot::evolve)
}

fn attempt(id: &str, cycle: u64, d: Destination, outcome: Outcome) -> C {
    C::RecordAttempt {
        attempt: Attempt {
            attempt_id: id.into(),
            cycle,
            destination: d,
            attempt: 0,
            outcome,
            message_id: None,
            error_kind: (outcome == Outcome::Failed).then(|| "rate_limited".into()),
            retry_after: (outcome == Outcome::Failed).then_some(30),
        },
        coverage: SlotCoverage::Covered,
    }
}

fn apply(state: Slot, command: &C) -> Slot {
    slot::decide(&state, command)
        .unwrap()
        .iter()
        .fold(state, slot::evolve)
}

#[test]
fn attempts_are_numbered_per_cycle_and_destination() {
    let state = apply(
        configured(),
        &attempt("a-1", 1, dest(-1_002, Some(7)), Outcome::Failed),
    );
    let events = slot::decide(
        &state,
        &attempt("a-2", 1, dest(-1_002, Some(7)), Outcome::Succeeded),
    )
    .unwrap();
    assert!(matches!(&events[..], [E::PostAttempted(a)] if a.attempt == 2));
    let other = slot::decide(
        &state,
        &attempt("a-3", 1, dest(-1_001, None), Outcome::Succeeded),
    )
    .unwrap();
    assert!(matches!(&other[..], [E::PostAttempted(a)] if a.attempt == 1));
}

#[test]
fn a_second_successful_post_in_one_cycle_is_refused() {
    let state = apply(
        configured(),
        &attempt("a-1", 1, dest(-1_001, None), Outcome::Succeeded),
    );
    let err = slot::decide(
        &state,
        &attempt("a-2", 1, dest(-1_001, None), Outcome::Succeeded),
    )
    .unwrap_err();
    assert_eq!(err.code(), "already_posted");
    assert!(
        slot::decide(
            &state,
            &attempt("a-3", 2, dest(-1_001, None), Outcome::Succeeded)
        )
        .is_ok()
    );
    assert_eq!(
        slot::decide(
            &state,
            &attempt("a-1", 1, dest(-1_001, None), Outcome::Succeeded)
        )
        .unwrap(),
        vec![],
        "the same attempt id again is a no-op"
    );
}

#[test]
fn only_a_covered_slot_may_post() {
    for coverage in [SlotCoverage::NoSubscription, SlotCoverage::BeyondPlan] {
        let mut command = attempt("a-1", 1, dest(-1_001, None), Outcome::Succeeded);
        if let C::RecordAttempt { coverage: c, .. } = &mut command {
            *c = coverage;
        }
        assert_eq!(
            slot::decide(&configured(), &command).unwrap_err().code(),
            "slot_not_active"
        );
    }
}

#[test]
fn a_slot_posts_only_to_its_destinations_and_needs_content() {
    let err = slot::decide(
        &configured(),
        &attempt("a-1", 1, dest(-999, None), Outcome::Succeeded),
    )
    .unwrap_err();
    // Well-formed, but not a destination of this slot: the slot's state refuses it.
    assert_eq!(err.code(), "conflict");
    let empty = SlotConfig {
        user_id: UserId::new(42).unwrap(),
        content: " ".into(),
        destinations: vec![dest(-1, None)],
        photo: None,
        buttons: Vec::new(),
    };
    assert_eq!(
        slot::decide(&Slot::default(), &C::Configure(empty))
            .unwrap_err()
            .code(),
        "validation"
    );
}

#[test]
fn an_error_kind_is_a_short_class_name() {
    let state = configured();
    for kind in ["x".repeat(65), String::new(), "chat not found!".into()] {
        let mut command = attempt("a-kind", 1, dest(-1_001, None), Outcome::Failed);
        if let C::RecordAttempt { attempt, .. } = &mut command {
            attempt.error_kind = Some(kind.clone());
        }
        let refused = slot::decide(&state, &command).unwrap_err();
        assert_eq!(refused.code(), "validation", "{kind:?}: {refused}");
    }
    let fine = attempt("a-kind", 1, dest(-1_001, None), Outcome::Failed);
    assert!(slot::decide(&state, &fine).is_ok());
}

#[test]
fn a_long_running_slot_keeps_a_small_state() {
    let mut state = configured();
    for n in 0..400u64 {
        let cycle = 1 + n / 10;
        let command = attempt(
            &format!("a-{n}"),
            cycle,
            dest(-1_001, None),
            Outcome::Failed,
        );
        state = apply(state, &command);
    }
    assert_eq!(state.attempt_ids.len(), slot::ATTEMPT_IDS_KEPT);
    assert_eq!(state.latest_cycle, 40);
    assert!(
        state
            .attempts
            .keys()
            .all(|(cycle, _)| *cycle + slot::CYCLES_KEPT >= 40),
        "{:?}",
        state.attempts.keys().map(|k| k.0).collect::<Vec<_>>()
    );
    // A cycle past the window is over; a recent one still counts attempts.
    let late = attempt("late", 3, dest(-1_001, None), Outcome::Succeeded);
    assert_eq!(slot::decide(&state, &late).unwrap_err().code(), "conflict");
    let recent = attempt("recent", 40, dest(-1_001, None), Outcome::Succeeded);
    assert!(matches!(
        &slot::decide(&state, &recent).unwrap()[..],
        [E::PostAttempted(a)] if a.attempt == 11
    ));
}

fn start(id: &str, cycle: u64, d: Destination) -> C {
    C::StartPost {
        attempt_id: id.into(),
        cycle,
        destination: d,
        coverage: SlotCoverage::Covered,
    }
}

/// A post whose outcome is unknown (started, never recorded: the poster died between
/// sending and recording) is not sent again in its cycle; a recorded failure frees the
/// destination for the next attempt; a success closes it for the cycle; the next
/// cycle starts afresh.
#[test]
fn a_post_with_an_unknown_outcome_is_not_sent_again_in_its_cycle() {
    let d = dest(-1_001, None);
    let state = apply(configured(), &start("p-1", 3, d));
    assert_eq!(state.started.get(&(3, d)).map(String::as_str), Some("p-1"));
    // The same start again (a redelivery): nothing new.
    assert_eq!(slot::decide(&state, &start("p-1", 3, d)).unwrap(), vec![]);
    // Another start while the first has no outcome: refused, says why.
    let unknown = slot::decide(&state, &start("p-2", 3, d)).unwrap_err();
    assert_eq!(unknown.code(), "conflict", "{unknown}");
    assert!(
        unknown.to_string().contains("no recorded outcome"),
        "{unknown}"
    );
    // Other destinations and the next cycle are not held back.
    assert!(slot::decide(&state, &start("p-3", 3, dest(-1_002, Some(7)))).is_ok());
    assert!(slot::decide(&state, &start("p-4", 4, d)).is_ok());
    // Its failure recorded: the destination is free for another attempt.
    let failed = apply(state, &attempt("p-1", 3, d, Outcome::Failed));
    assert!(failed.started.is_empty());
    let retried = apply(failed, &start("p-5", 3, d));
    let posted = apply(retried, &attempt("p-5", 3, d, Outcome::Succeeded));
    // Posted: no other start in the cycle.
    let again = slot::decide(&posted, &start("p-6", 3, d)).unwrap_err();
    assert_eq!(again.code(), "already_posted", "{again}");
}

/// A start is checked like an attempt: the slot's own destination, a covered plan.
#[test]
fn a_start_is_refused_where_an_attempt_would_be() {
    let state = configured();
    let elsewhere = slot::decide(&state, &start("p-1", 1, dest(-9, None))).unwrap_err();
    assert_eq!(elsewhere.code(), "conflict", "{elsewhere}");
    let uncovered = C::StartPost {
        attempt_id: "p-2".into(),
        cycle: 1,
        destination: dest(-1_001, None),
        coverage: SlotCoverage::NoSubscription,
    };
    assert_eq!(
        slot::decide(&state, &uncovered).unwrap_err().code(),
        "slot_not_active"
    );
}

/// A slot's state saved before starts existed (a snapshot) still loads.
#[test]
fn a_state_from_before_starts_loads() {
    let mut saved = serde_json::to_value(configured()).unwrap();
    saved.as_object_mut().unwrap().remove("started");
    let loaded: Slot = serde_json::from_value(saved).unwrap();
    assert!(loaded.started.is_empty());
}

/// A slot with attempts can be snapshotted (its maps are keyed by (cycle,
/// destination), which JSON objects cannot be), and reads back the same.
#[test]
fn a_slot_with_attempts_round_trips_through_json() {
    let d = dest(-1_002, Some(7));
    let state = apply(configured(), &attempt("a-1", 2, d, Outcome::Failed));
    let state = apply(state, &start("p-1", 2, d));
    let bytes = serde_json::to_vec(&state).expect("a slot with attempts serialises");
    let back: Slot = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.attempts.get(&(2, d)), Some(&1));
}

/// A paused destination takes no post until the owner configures the slot again;
/// the other destinations go on.
#[test]
fn a_paused_destination_takes_no_post_until_the_slot_is_configured_again() {
    let d = dest(-1_001, None);
    let pause = C::PauseDestination {
        destination: d,
        reason: "no_rights".into(),
    };
    let state = apply(configured(), &pause);
    assert_eq!(state.paused.get(&d).map(String::as_str), Some("no_rights"));
    assert_eq!(slot::decide(&state, &pause).unwrap(), vec![], "once");
    let refused = slot::decide(&state, &start("p-1", 1, d)).unwrap_err();
    assert_eq!(refused.code(), "conflict");
    assert!(refused.to_string().contains("paused"), "{refused}");
    assert!(slot::decide(&state, &start("p-2", 1, dest(-1_002, Some(7)))).is_ok());
    let config = state.config.clone().unwrap();
    let resumed = apply(state, &C::Configure(config.clone()));
    assert!(resumed.paused.is_empty());
    assert!(slot::decide(&resumed, &start("p-3", 1, d)).is_ok());
    // Without a pause, the same configuration again is still a no-op.
    assert_eq!(
        slot::decide(&resumed, &C::Configure(config)).unwrap(),
        vec![]
    );
}

/// A destination whose chat moved is the new chat from then on (its pause with it);
/// moving it again is a no-op; a move onto another destination is refused.
#[test]
fn a_moved_destination_is_the_new_chat() {
    let from = dest(-1_001, None);
    let to = dest(-2_001, None);
    let state = apply(configured(), &moved(from, to));
    let destinations = &state.config.as_ref().unwrap().destinations;
    assert!(destinations.contains(&to) && !destinations.contains(&from));
    assert_eq!(slot::decide(&state, &moved(from, to)).unwrap(), vec![]);
    let onto_other = moved(to, dest(-1_002, Some(7)));
    assert_eq!(
        slot::decide(&state, &onto_other).unwrap_err().code(),
        "conflict"
    );
    assert!(slot::decide(&state, &start("p-1", 1, to)).is_ok());
}

fn moved(from: Destination, to: Destination) -> C {
    C::MoveDestination {
        from,
        to,
        reason: "chat_migrated".into(),
    }
}

/// A post recorded as `unknown` (sent, but Telegram's answer never came) keeps the
/// destination closed for the cycle, as a start with no outcome does; the next cycle
/// is open.
#[test]
fn an_unknown_outcome_closes_the_destination_for_its_cycle() {
    let d = dest(-1_001, None);
    let state = apply(configured(), &start("p-1", 3, d));
    let state = apply(state, &attempt("p-1", 3, d, Outcome::Unknown));
    assert_eq!(
        slot::decide(&state, &start("p-2", 3, d))
            .unwrap_err()
            .code(),
        "conflict"
    );
    assert!(!state.posted.contains(&(3, d)));
    assert!(slot::decide(&state, &start("p-3", 4, d)).is_ok());
    // A failed outcome, by contrast, frees it for the next attempt.
    let failed = apply(
        apply(configured(), &start("p-1", 3, d)),
        &attempt("p-1", 3, d, Outcome::Failed),
    );
    assert!(slot::decide(&failed, &start("p-2", 3, d)).is_ok());
}

/// A deleted topic falls back to the forum's General topic: the destination moves to
/// the chat without a topic id, with the reason on record.
#[test]
fn a_deleted_topic_moves_the_destination_to_general() {
    let from = dest(-1_002, Some(7));
    let to = dest(-1_002, None);
    let command = C::MoveDestination {
        from,
        to,
        reason: "topic_deleted".into(),
    };
    let events = slot::decide(&configured(), &command).unwrap();
    assert!(
        matches!(&events[..], [E::DestinationMoved { reason: Some(r), .. }] if r == "topic_deleted")
    );
    let state = events.iter().fold(configured(), slot::evolve);
    assert!(state.config.unwrap().destinations.contains(&to));
}

/// Events as the log stores them (`data` an object, `{}` when there is nothing to
/// say) read back: pause, resume and delete of a slot.
#[test]
fn slot_lifecycle_events_read_back_as_stored() {
    for (kind, data) in [
        ("slot.paused", serde_json::json!({"reason": "owner"})),
        ("slot.resumed", serde_json::json!({})),
        ("slot.removed", serde_json::json!({})),
    ] {
        let event: E = serde_json::from_value(serde_json::json!({"type": kind, "data": data}))
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let back = serde_json::to_value(&event).unwrap();
        assert_eq!(back["data"], data, "{kind}");
    }
}

/// Paused: no post starts; resumed: posts again; deleted: nothing but configuring it
/// again; the outcome of a post started before a pause is still recorded.
#[test]
fn a_paused_or_deleted_slot_does_not_post() {
    let d = dest(-1_001, None);
    let started = apply(configured(), &start("p-1", 3, d));
    let paused = apply(
        started,
        &C::Pause {
            reason: "owner".into(),
        },
    );
    assert_eq!(
        slot::decide(&paused, &start("p-2", 3, dest(-1_002, Some(7))))
            .unwrap_err()
            .code(),
        "slot_not_active"
    );
    let recorded = apply(paused.clone(), &attempt("p-1", 3, d, Outcome::Succeeded));
    assert!(recorded.posted.contains(&(3, d)));
    let resumed = apply(paused, &C::Resume);
    assert!(slot::decide(&resumed, &start("p-3", 4, d)).is_ok());
    let removed = apply(resumed, &C::Remove);
    assert_eq!(
        slot::decide(&removed, &C::Resume).unwrap_err().code(),
        "conflict"
    );
    assert_eq!(
        slot::decide(&removed, &start("p-4", 5, d))
            .unwrap_err()
            .code(),
        "slot_not_active"
    );
    let again = apply(removed, &C::Configure(configured().config.unwrap()));
    assert!(slot::decide(&again, &start("p-5", 5, d)).is_ok());
}
