//! Idempotency and recall: event ids derived from (stream, command id), the digest
//! of a request kept in its events' metadata, the original outcome found again for a
//! repeat, and the older facts a decision asks for fetched by their derived ids.

use super::*;

/// A command whose id an earlier command of the same batch carries: a repeat of it
/// when the request is the same, else a conflict.
pub(crate) fn same_request<A: Aggregate>(
    first: &Request<A>,
    again: &Request<A>,
    first_index: usize,
) -> Decision<A::View> {
    let Some(command_id) = effective_command_id(again) else {
        return Decision::Repeat(first_index);
    };
    let keys = (
        idempotency_key::<A>(&command_id, &first.command),
        idempotency_key::<A>(&command_id, &again.command),
    );
    match keys {
        (Ok(first), Ok(again)) if first == again => Decision::Repeat(first_index),
        (Ok(_), Ok(_)) => Decision::Done(Err(DomainError::IdempotencyConflict(format!(
            "{command_id} was already used for a different request"
        ))
        .into())),
        (Err(e), _) | (_, Err(e)) => Decision::Done(Err(e)),
    }
}

/// The answer to a repeat: the first's, as a replay.
pub(crate) fn as_replay<V: Clone>(
    first: &Result<Outcome<V>, LedgerError>,
) -> Result<Outcome<V>, LedgerError> {
    first.clone().map(|outcome| Outcome {
        replayed: true,
        ..outcome
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn answer<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    batch: &[Job<A>],
    decisions: Vec<Decision<A::View>>,
    state: &A::State,
    version: u64,
    position: u64,
    positions: &[u64],
) -> Vec<Result<Outcome<A::View>, LedgerError>> {
    let outcome = |view, position| Outcome {
        view,
        version,
        position,
        replayed: false,
    };
    let mut answers: Vec<Result<Outcome<A::View>, LedgerError>> = Vec::with_capacity(batch.len());
    for (job, decision) in batch.iter().zip(decisions) {
        let answered = match decision {
            Decision::Append(range, view) => Ok(outcome(
                view,
                range
                    .end
                    .checked_sub(1)
                    .and_then(|i| positions.get(i))
                    .copied()
                    .unwrap_or(position),
            )),
            Decision::NoOp(view) => match applied_before(inner, stream_id, &job.request).await {
                Ok(Some(original)) => {
                    match replayed_view(inner, stream_id, state, &job.request.command).await {
                        Ok(recalled) => Ok(Outcome {
                            view: recalled.unwrap_or(view),
                            version,
                            position: original,
                            replayed: true,
                        }),
                        Err(e) => Err(e),
                    }
                }
                Ok(None) => Ok(outcome(view, position)),
                Err(e) => Err(e),
            },
            Decision::Done(result) => result,
            Decision::Repeat(first) => as_replay(&answers[first]),
            Decision::Refused(refusal) => {
                replay(inner, stream_id, &job.request, refusal, state, version).await
            }
        };
        answers.push(answered);
    }
    answers
}

/// The events a command id filed in this stream, and what a replay's answer needs
/// to show ([`Aggregate::replay_recall`]). An id the log holds in another stream (a
/// ledger-wide id, like a hold id, used on another account) is a conflict.
pub(crate) async fn original<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    request: &Request<A>,
    command_id: &str,
) -> Result<Vec<RecordedEvent>, LedgerError> {
    let ids = event_ids::<A>(stream_id, &[command_id.to_string()]);
    let found = inner.store.find_events(&ids).await?;
    if found.iter().any(|e| e.stream_id != *stream_id) {
        return Err(DomainError::IdempotencyConflict(format!(
            "{command_id} was already used by another {}",
            A::STREAM_PREFIX
        ))
        .into());
    }
    if found.is_empty() {
        return Ok(found);
    }
    let key = idempotency_key::<A>(command_id, &request.command)?;
    if found
        .iter()
        .any(|e| e.metadata.idempotency_key.as_deref() != Some(key.as_str()))
    {
        return Err(DomainError::IdempotencyConflict(format!(
            "{command_id} was already used for a different request"
        ))
        .into());
    }
    Ok(found)
}

/// A command with an id that changes nothing may be a re-send of one applied before
/// (the domain answers the same request again with no events): if the log holds
/// events filed under its id, it is a replay and answers with the original's position;
/// if those came from another request under the same id, it is a conflict.
pub(crate) async fn applied_before<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    request: &Request<A>,
) -> Result<Option<u64>, LedgerError> {
    let Some(command_id) = effective_command_id(request) else {
        return Ok(None);
    };
    let found = original(inner, stream_id, request, &command_id).await?;
    Ok(found.last().map(|last| last.position))
}

/// What a replayed command's answer shows when the state no longer holds what the
/// command did (a hold closed long ago): rebuilt from the log. `None`: the state's
/// own view shows it.
pub(crate) async fn replayed_view<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    state: &A::State,
    command: &A::Command,
) -> Result<Option<A::View>, LedgerError> {
    let wanted = A::replay_recall(state, command);
    if wanted.is_empty() {
        return Ok(None);
    }
    let past = recall_from_log::<A>(inner, stream_id, &wanted).await?;
    Ok(Some(A::replay_view(state, command, &past)))
}

/// A refused command that has an id may have been applied before: find its events by
/// their derived ids and compare digests. The answer shows what the command did, from
/// the log when the state no longer holds it (a hold closed long ago).
pub(crate) async fn replay<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    request: &Request<A>,
    refusal: DomainError,
    state: &A::State,
    version: u64,
) -> Result<Outcome<A::View>, LedgerError> {
    let Some(command_id) = effective_command_id(request) else {
        return Err(refusal.into());
    };
    let found = match original(inner, stream_id, request, &command_id).await {
        // The id was used for another request, and the rules refuse this one as a
        // conflict of their own (a provider's charge reported with another amount):
        // their word is the more precise.
        Err(LedgerError::Domain(DomainError::IdempotencyConflict(_)))
            if matches!(refusal, DomainError::PaymentConflict(_)) =>
        {
            return Err(refusal.into());
        }
        found => found?,
    };
    let Some(last) = found.last() else {
        return Err(refusal.into());
    };
    let view = replayed_view(inner, stream_id, state, &request.command)
        .await?
        .unwrap_or_else(|| A::view(state, &request.command));
    Ok(Outcome {
        view,
        version,
        position: last.position,
        replayed: true,
    })
}
pub(crate) fn encode<A: Aggregate>(
    stream_id: &StreamId,
    request: &Request<A>,
    events: &[A::Event],
    now: DateTime<Utc>,
) -> Result<Vec<NewEvent>, LedgerError> {
    if events.len() > EVENTS_PER_COMMAND_MAX as usize {
        return Err(DomainError::Validation("a command produced too many events".into()).into());
    }
    let mut metadata = request.metadata.clone();
    let command_id = effective_command_id(request);
    if let Some(command_id) = &command_id {
        metadata.idempotency_key = Some(idempotency_key::<A>(command_id, &request.command)?);
    }
    Ok(events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let (event_type, schema_version, payload) = codec::encode(event);
            let event_id = match &command_id {
                Some(command_id) => derived_event_id::<A>(stream_id, command_id, i as u32),
                None => Uuid::now_v7(),
            };
            NewEvent {
                event_id,
                event_type,
                schema_version,
                payload,
                metadata: metadata.clone(),
                occurred_at: now,
            }
        })
        .collect())
}

/// The id a request is idempotent by: the command's own, else the request's.
pub(crate) fn effective_command_id<A: Aggregate>(request: &Request<A>) -> Option<String> {
    A::command_id(&request.command).or_else(|| request.command_id.clone())
}

/// Every event id the commands `command_ids` may have produced.
pub(crate) fn event_ids<A: Aggregate>(stream_id: &StreamId, command_ids: &[String]) -> Vec<Uuid> {
    command_ids
        .iter()
        .flat_map(|id| {
            (0..EVENTS_PER_COMMAND_MAX).map(move |i| derived_event_id::<A>(stream_id, id, i))
        })
        .collect()
}

/// The id of the `index`-th event of a command: derived from the stream and the
/// command id, or, for an id unique in the whole ledger ([`Aggregate::ledger_wide`]),
/// from the kind of stream and the command id, so the log refuses it in a second
/// stream as it refuses it twice in one.
pub(crate) fn derived_event_id<A: Aggregate>(
    stream_id: &StreamId,
    command_id: &str,
    index: u32,
) -> Uuid {
    match A::ledger_wide(command_id) {
        true => event_id_in(A::STREAM_PREFIX, command_id, index),
        false => event_id(stream_id, command_id, index),
    }
}

/// The events of earlier commands, for a decision: those already in the log, then those
/// decided earlier in this batch (`pending`, not appended yet).
pub(crate) async fn recall<A: Aggregate>(
    inner: &Inner<A>,
    stream_id: &StreamId,
    command_ids: &[String],
    pending: &[NewEvent],
) -> Result<Vec<(A::Event, DateTime<Utc>)>, LedgerError> {
    let mut past = recall_from_log::<A>(inner, stream_id, command_ids).await?;
    if !pending.is_empty() {
        let ids = event_ids::<A>(stream_id, command_ids);
        for event in pending.iter().filter(|e| ids.contains(&e.event_id)) {
            let decoded =
                codec::decode_ref(&event.event_type, event.schema_version, &event.payload)?;
            past.push((decoded, event.occurred_at));
        }
    }
    Ok(past)
}

pub(crate) async fn recall_from_log<A: Aggregate>(
    inner: &Inner<A>,
    stream_id: &StreamId,
    command_ids: &[String],
) -> Result<Vec<(A::Event, DateTime<Utc>)>, LedgerError> {
    let found = inner
        .store
        .find_events(&event_ids::<A>(stream_id, command_ids))
        .await?;
    // A ledger-wide id is found in the one stream that holds it: not this one's past.
    found
        .into_iter()
        .filter(|recorded| recorded.stream_id == *stream_id)
        .map(|recorded| {
            let event = codec::decode(
                &recorded.event_type,
                recorded.schema_version,
                recorded.payload,
            )?;
            Ok((event, recorded.occurred_at))
        })
        .collect()
}

/// A random pause, growing with the attempt, at most [`RETRY_BACKOFF_MAX`].
pub(crate) fn backoff(attempt: u32) -> Duration {
    // The random bits of a UUIDv7 are random enough to spread two processes apart.
    let random = u64::from(Uuid::now_v7().as_bytes()[15]) + 1;
    let ceiling = (1u64 << attempt.min(6)).saturating_mul(1_000);
    Duration::from_micros(ceiling * random / 256).min(RETRY_BACKOFF_MAX)
}

/// The id of the `index`-th event of a command in a stream: the same for every retry
/// of it.
pub fn event_id(stream_id: &StreamId, command_id: &str, index: u32) -> Uuid {
    event_id_in(stream_id.as_str(), command_id, index)
}

/// The id of the `index`-th event of a command whose id is unique within `scope` (a
/// stream's name, or a kind of stream for ledger-wide ids: `account` never names a
/// stream, `account-42` does).
pub(crate) fn event_id_in(scope: &str, command_id: &str, index: u32) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"tally.command.v1\0");
    h.update(scope.as_bytes());
    h.update(b"\0");
    h.update(command_id.as_bytes());
    h.update(b"\0");
    h.update(index.to_be_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// `<command id>:<sha256 of the command>`: what tells a replay from a re-used id.
pub(crate) fn idempotency_key<A: Aggregate>(
    command_id: &str,
    command: &A::Command,
) -> Result<String, LedgerError> {
    let body = A::request_digest(command)
        .map_err(|e| DomainError::Validation(format!("command does not serialise: {e}")))?;
    let digest = Sha256::digest(&body);
    let mut key = String::with_capacity(command_id.len() + 65);
    key.push_str(command_id);
    key.push(':');
    for byte in digest {
        let _ = write!(key, "{byte:02x}");
    }
    Ok(key)
}
