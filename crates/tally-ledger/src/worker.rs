//! The worker of one stream: takes every command waiting, decides them one after
//! the other against the evolving state, appends their events in one atomic append,
//! and on a conflict with another process catches up and decides the batch again
//! (fairly: a loser retries at once, then backs off).

use super::*;

pub(crate) async fn run_worker<A: Aggregate>(
    inner: Arc<Inner<A>>,
    key: A::Key,
    mut jobs: mpsc::Receiver<Job<A>>,
) {
    let mut cached: Option<Loaded<A::State>> = None;
    let mut batch = Vec::with_capacity(BATCH_COMMANDS_MAX);
    // Until when this stream counts as written by another process too.
    let mut contended_until: Option<std::time::Instant> = None;
    loop {
        match tokio::time::timeout(WORKER_IDLE, jobs.recv_many(&mut batch, BATCH_COMMANDS_MAX))
            .await
        {
            Ok(0) => return,
            Ok(_) => {
                // As in group commit: let callers just answered enqueue their next
                // command so it joins this batch.
                tokio::task::yield_now().await;
                while batch.len() < BATCH_COMMANDS_MAX {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let hot = batch.len() >= HOT_BATCH_COMMANDS;
                if run_batch(&inner, &key, &mut cached, &mut batch).await {
                    contended_until = Some(std::time::Instant::now() + CONTENDED_FOR);
                }
                // A busy stream another process writes too: that process's worker must
                // read past this commit and append before the next one, so a short
                // pause after each batch leaves it the window (without it, a process
                // writing flat out makes the other lose every race). Only while races
                // are being lost here: a stream one process writes pays nothing, and
                // commands that queue meanwhile join the next batch.
                if hot && contended_until.is_some_and(|until| std::time::Instant::now() < until) {
                    tokio::time::sleep(HOT_STREAM_PAUSE).await;
                }
            }
            Err(_idle) => {
                // Close first, under the map's lock, then finish what slipped in: no
                // job is ever left in a queue nobody reads.
                {
                    let mut workers = inner.workers.lock().unwrap_or_else(|e| e.into_inner());
                    jobs.close();
                    if workers.get(&key).is_some_and(|s| s.is_closed()) {
                        workers.remove(&key);
                    }
                }
                while let Ok(job) = jobs.try_recv() {
                    batch.push(job);
                }
                if !batch.is_empty() {
                    run_batch(&inner, &key, &mut cached, &mut batch).await;
                }
                return;
            }
        }
    }
}

/// What deciding one job came to, before the append.
pub(crate) enum Decision<V> {
    /// New events at these indexes of the batch's events; the view after them.
    Append(std::ops::Range<usize>, V),
    /// Nothing to append; the view now.
    NoOp(V),
    /// Refused; maybe a replay, if the command has an id.
    Refused(DomainError),
    /// Answered already.
    Done(Result<Outcome<V>, LedgerError>),
    /// The same request as the batch's command at this index: answered as its replay.
    Repeat(usize),
}

/// Decides, appends and answers a batch; returns whether it lost a race for its
/// stream to another process on the way.
pub(crate) async fn run_batch<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    key: &A::Key,
    cached: &mut Option<Loaded<A::State>>,
    batch: &mut Vec<Job<A>>,
) -> bool {
    let mut raced = false;
    let results = decide_and_append(inner, key, cached, batch, &mut raced).await;
    for (job, result) in batch.drain(..).zip(results) {
        let _ = job.reply.send(result);
    }
    raced
}

/// `raced` is set when an append lost a race for the stream to another process.
pub(crate) async fn decide_and_append<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    key: &A::Key,
    cached: &mut Option<Loaded<A::State>>,
    batch: &[Job<A>],
    raced: &mut bool,
) -> Vec<Result<Outcome<A::View>, LedgerError>> {
    let stream_id = match Ledger::<A>::stream_id(key) {
        Ok(id) => id,
        Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
    };
    let mut attempt = 0;
    let mut spare: Option<Loaded<A::State>> = None;
    // Whether the state about to be decided on was read from the log after every
    // command of this batch was received (a worker's cached state may predate them).
    let mut current = false;
    loop {
        let loaded = match (cached.take(), spare.take()) {
            (Some(loaded), _) => loaded,
            // After a lost race: the state before the lost attempt's decisions, with
            // the winner's events folded in (one indexed read, not a whole load: the
            // shorter the loser's window, the likelier its next append wins).
            (None, Some(before)) => {
                current = true;
                match fold_tail::<A>(inner, &stream_id, before).await {
                    Ok((loaded, _)) => loaded,
                    Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
                }
            }
            (None, None) => {
                current = true;
                match load::<A>(inner, key).await {
                    Ok(loaded) => loaded,
                    Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
                }
            }
        };
        let now = inner.clock.now();
        // Decided in place: if the append fails, the state is reloaded from the log.
        // Once a race was lost, keep the state from before deciding: a further loss
        // folds the winner's events into it instead of loading the stream again.
        let kept = (attempt > 0).then(|| loaded.clone());
        let Loaded {
            mut state,
            version: loaded_version,
            position: loaded_position,
        } = loaded;
        let mut events: Vec<NewEvent> = Vec::new();
        let mut decisions = Vec::with_capacity(batch.len());
        let mut first_with_id: HashMap<String, usize> = HashMap::new();
        for (index, job) in batch.iter().enumerate() {
            let command = &job.request.command;
            // The same command id twice in one batch (a client retrying while its
            // first request waits): the second is answered as the first, or refused
            // as a conflict when it asks something else under that id.
            if let Some(command_id) = effective_command_id(&job.request) {
                match first_with_id.entry(command_id) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        let first = *first.get();
                        decisions.push(same_request(&batch[first].request, &job.request, first));
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(index);
                    }
                }
            }
            let wanted = A::recall(&state, command);
            let past = match wanted.is_empty() {
                true => Vec::new(),
                false => match recall::<A>(inner, &stream_id, &wanted, &events).await {
                    Ok(past) => past,
                    Err(e) => {
                        decisions.push(Decision::Done(Err(e)));
                        continue;
                    }
                },
            };
            decisions.push(
                match A::decide(&state, command, &past, now, &inner.config) {
                    Ok(decided) if decided.is_empty() => Decision::NoOp(A::view(&state, command)),
                    Ok(decided) => match encode(&stream_id, &job.request, &decided, now) {
                        Ok(encoded) => {
                            for event in &decided {
                                state = A::evolve(state, event, now);
                            }
                            let start = events.len();
                            events.extend(encoded);
                            Decision::Append(start..events.len(), A::view(&state, command))
                        }
                        Err(e) => Decision::Done(Err(e)),
                    },
                    Err(refusal) => Decision::Refused(refusal),
                },
            );
        }

        if events.is_empty() {
            // Nothing to append: every answer is a refusal, a no-op or a replay, and
            // none may rest on a state the log has moved past. Unless the state was
            // read after these commands arrived, read the stream past its version (an
            // indexed read that finds nothing in the common case):
            // - nothing there: the log's stream stood at exactly this version at the
            //   moment of that read, which lies inside every request's lifetime (after
            //   it was received, before it is answered). So each answer is the one the
            //   log gives at that moment. An event another process commits after the
            //   read is ordered after these answers, as if it had arrived later, which
            //   it could have: the answers stay linearizable. (Reads see every
            //   transaction committed before they start, on both backends.)
            // - newer events: fold them and decide the batch again on the newer state.
            // A batch that appends needs no such read: the append's expected version
            // proves, at its commit, that the state was the latest.
            if !current {
                let stale = Loaded {
                    state,
                    version: loaded_version,
                    position: loaded_position,
                };
                match fold_tail::<A>(inner, &stream_id, stale).await {
                    Ok((fresh, 0)) => {
                        state = fresh.state;
                    }
                    Ok((fresh, _newer)) => {
                        inner.refreshes.fetch_add(1, Ordering::Relaxed);
                        *cached = Some(fresh);
                        current = true;
                        continue;
                    }
                    Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
                }
            }
            let answers = answer(
                inner,
                &stream_id,
                batch,
                decisions,
                &state,
                loaded_version,
                loaded_position,
                &[],
            )
            .await;
            *cached = Some(Loaded {
                state,
                version: loaded_version,
                position: loaded_position,
            });
            return answers;
        }
        let started = std::time::Instant::now();
        let appended = inner
            .store
            .append(&stream_id, ExpectedVersion::Exact(loaded_version), events)
            .await;
        metrics::histogram!("tally_append_seconds", "aggregate" => A::STREAM_PREFIX)
            .record(started.elapsed().as_secs_f64());
        match appended {
            Ok(result) if !result.replayed => {
                let version = result.stream_version(&stream_id).unwrap_or(loaded_version);
                let position = result.position();
                maybe_snapshot::<A>(inner, &stream_id, loaded_version, version, &state, position);
                let positions: Vec<u64> = result.events.iter().map(|e| e.position).collect();
                let answers = answer(
                    inner, &stream_id, batch, decisions, &state, version, position, &positions,
                )
                .await;
                *cached = Some(Loaded {
                    state,
                    version,
                    position,
                });
                return answers;
            }
            // Another process wrote the stream: reload and decide the batch again.
            Err(StoreError::WrongExpectedVersion { .. }) => {
                attempt += 1;
                if attempt >= COMMAND_ATTEMPTS_MAX {
                    return batch
                        .iter()
                        .map(|_| {
                            Err(LedgerError::Contention {
                                stream_id: stream_id.to_string(),
                                attempts: COMMAND_ATTEMPTS_MAX,
                            })
                        })
                        .collect();
                }
                inner.retries.fetch_add(1, Ordering::Relaxed);
                *raced = true;
                spare = kept;
                // First catch up and try again at once (the winner pauses after a hot
                // batch: that is the window); losing again, pause, growing, so two
                // losers do not keep colliding.
                if attempt > 2 {
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
            // The log holds these derived event ids already: commands applied before
            // (re-sent, or run by another process), or an id re-used for something
            // else. The state decided here is not the log's (and is never cached or
            // snapshotted). Decide the commands one at a time, so only those are
            // answered from the log: as a replay when the digest matches, else refused.
            Ok(_) | Err(StoreError::IdempotencyConflict { .. }) => {
                if batch.len() > 1 {
                    let mut answers: Vec<Result<Outcome<A::View>, LedgerError>> =
                        Vec::with_capacity(batch.len());
                    let mut first_with_id: HashMap<String, usize> = HashMap::new();
                    for (index, job) in batch.iter().enumerate() {
                        // A repeat within the batch is answered as its first, as above.
                        if let Some(command_id) = effective_command_id(&job.request) {
                            if let Some(&first) = first_with_id.get(&command_id) {
                                let repeat = match same_request(
                                    &batch[first].request,
                                    &job.request,
                                    first,
                                ) {
                                    Decision::Repeat(first) => as_replay(&answers[first]),
                                    Decision::Done(result) => result,
                                    _ => unreachable!("same_request repeats or refuses"),
                                };
                                answers.push(repeat);
                                continue;
                            }
                            first_with_id.insert(command_id, index);
                        }
                        let one = std::slice::from_ref(job);
                        answers.extend(
                            Box::pin(decide_and_append(inner, key, cached, one, raced)).await,
                        );
                    }
                    return answers;
                }
                let fresh = match load::<A>(inner, key).await {
                    Ok(fresh) => fresh,
                    Err(e) => return vec![Err(e)],
                };
                let refusal = DomainError::IdempotencyConflict(
                    "this id was already used for a different request".into(),
                );
                let answer = replay(
                    inner,
                    &stream_id,
                    &batch[0].request,
                    refusal,
                    &fresh.state,
                    fresh.version,
                )
                .await;
                *cached = Some(fresh);
                return vec![answer];
            }
            Err(e) => {
                return batch
                    .iter()
                    .map(|_| Err(LedgerError::Store(e.clone())))
                    .collect();
            }
        }
    }
}
