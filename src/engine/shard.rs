//! The shard thread: the I/O shell around the pure core for the SKUs one shard owns.
//!
//! Loop: block for a message, drain more without blocking up to `BATCH_EVENTS_MAX` events,
//! look up their idempotency keys, read the clock once, `apply`, commit the batch's log
//! records with one flush and one `fdatasync` (group commit), then answer every request of
//! the batch. Nothing is answered before its events are durable. The store writes the
//! state rows the log implies at its checkpoints (`store/disk.rs`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use crate::clock::{now_micros, Micros};
use crate::engine::core::{apply, next_settlement, settlements_due, CoreConfig, Input, ShardState};
use crate::engine::event::{Event, EventKind, EventResult};
use crate::engine::movements::{load_for_batch, unload_after_batch, OldestMovements};
use crate::engine::EngineError;
use crate::propagate::outbox::Outbox;
use crate::store::ShardStore;

/// Most events one batch applies. Bounds the latency one batch adds to the next and the
/// size of one log write; large enough that a flush is shared by hundreds of requests.
pub const BATCH_EVENTS_MAX: usize = 4_096;
/// How often the idle shard forgets expired idempotency keys.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Most stored runs of keys one sweep looks at, so a sweep never stalls the shard for long.
const SWEEP_RUNS_MAX: usize = 64;

/// A request to a shard: apply these events (all owned by this shard), then answer.
pub struct ShardMsg {
    pub events: Vec<Event>,
    pub reply: oneshot::Sender<Result<Vec<EventResult>, EngineError>>,
}

/// Everything a shard thread owns.
pub struct Shard {
    pub id: usize,
    pub state: ShardState,
    pub store: Arc<dyn ShardStore>,
    pub mailbox: Receiver<ShardMsg>,
    pub core: CoreConfig,
    pub key_retention_us: Micros,
    /// The last sequence number handed out, shared by all shards so that numbers are
    /// unique across the engine and audit pages merge by number.
    pub seq: Arc<AtomicU64>,
    /// Each channel's outbox, aligned with the core's channels (`None`: no adapter).
    pub outboxes: Arc<[Option<Arc<Outbox>>]>,
    /// Pending `delta`-mode levels by when they settle.
    pub settling: BTreeSet<(Micros, String)>,
    /// When each SKU's oldest stored movement is due a fold (`movements.rs`).
    pub oldest: OldestMovements,
    /// Why this shard refuses work, when it does: read by `/healthz`.
    pub failure: Arc<std::sync::Mutex<Option<String>>>,
    /// The log's newest time at start and when the shard started: keys expire against
    /// `clock::expiry_now`, so a forward step of the wall clock forgets none early.
    pub expiry_base: (Micros, Instant),
}

impl Shard {
    /// Records why the shard refuses work from now on.
    fn fail(&self, reason: &str) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
        metrics::gauge!("lockstep_shard_up", "shard" => self.id.to_string()).set(0.0);
    }

    /// Runs until every sender of the mailbox is gone.
    pub fn run(mut self, core_id: Option<core_affinity::CoreId>) {
        if let Some(core_id) = core_id {
            if !core_affinity::set_for_current(core_id) {
                tracing::warn!(
                    shard = self.id,
                    core = core_id.id,
                    "could not pin shard thread; running unpinned"
                );
            }
        }
        let depth = metrics::gauge!("lockstep_shard_mailbox_depth", "shard" => self.id.to_string());
        // Set when a commit fails: memory is then ahead of disk, so the shard refuses all
        // further work until a restart recovers from disk.
        let mut failed: Option<String> = None;
        let mut last_sweep = Instant::now();
        for (sku, state) in &self.state {
            if let Some(due) = next_settlement(state) {
                self.settling.insert((due, sku.clone()));
            }
        }
        loop {
            if failed.is_none() {
                if let Err(reason) = self.settle_due() {
                    tracing::error!(shard = self.id, %reason, "storage failed; shard refuses work until restart");
                    self.fail(&reason);
                    failed = Some(reason);
                }
            }
            let wait = match self.settling.first() {
                Some((due, _)) => {
                    let until_due = (*due - now_micros()).max(0) as u64;
                    SWEEP_INTERVAL.min(Duration::from_micros(until_due))
                }
                None => SWEEP_INTERVAL,
            };
            let first = match self.mailbox.recv_timeout(wait) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    // An idle shard still writes its pending rows within seconds.
                    if failed.is_none() {
                        if let Err(e) = self.store.checkpoint_if_due() {
                            tracing::warn!(shard = self.id, error = %e, "checkpoint failed; retried later");
                        }
                    }
                    if last_sweep.elapsed() >= SWEEP_INTERVAL {
                        self.sweep(&mut last_sweep);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut msgs = vec![first];
            let mut events = msgs[0].events.len();
            while events < BATCH_EVENTS_MAX {
                match self.mailbox.try_recv() {
                    Ok(msg) => {
                        events += msg.events.len();
                        msgs.push(msg);
                    }
                    Err(_) => break,
                }
            }
            depth.set(self.mailbox.len() as f64);
            if let Some(reason) = &failed {
                for msg in msgs {
                    let _ = msg.reply.send(Err(EngineError::Storage(reason.clone())));
                }
                continue;
            }
            if let Err(reason) = self.process(msgs) {
                tracing::error!(shard = self.id, %reason, "storage failed; shard refuses work until restart");
                failed = Some(reason);
            }
            if last_sweep.elapsed() >= SWEEP_INTERVAL {
                self.sweep(&mut last_sweep);
            }
        }
        // A clean stop stores the rows past the last checkpoint: the next start then
        // replays nothing.
        if failed.is_none() {
            if let Err(e) = self.store.checkpoint() {
                tracing::warn!(shard = self.id, error = %e, "final checkpoint failed; the next start replays the log");
            }
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    /// Applies and commits one batch, then answers it. On a storage error every request
    /// of the batch is answered with it, and the error is returned.
    fn process(&mut self, msgs: Vec<ShardMsg>) -> Result<(), String> {
        let mut events = Vec::with_capacity(msgs.iter().map(|m| m.events.len()).sum());
        let mut replies = Vec::with_capacity(msgs.len());
        for msg in msgs {
            replies.push((msg.events.len(), msg.reply));
            events.extend(msg.events);
        }
        match self.apply_and_commit(events) {
            Ok(results) => {
                let mut results = results.into_iter();
                for (count, reply) in replies {
                    let answer: Vec<EventResult> = results.by_ref().take(count).collect();
                    // A requester that went away (client hung up) is no error: its events
                    // are durable.
                    let _ = reply.send(Ok(answer));
                }
                Ok(())
            }
            Err((reason, fatal)) => {
                // Marked failed before anyone hears of it: a client told 500 that then
                // asks /healthz must see why.
                if fatal {
                    self.fail(&reason);
                }
                for (_, reply) in replies {
                    let _ = reply.send(Err(EngineError::Storage(reason.clone())));
                }
                if fatal {
                    Err(reason)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Looks up keys, applies, commits durably, then hands pushes to the outboxes.
    /// An error says whether memory is now ahead of disk (fatal) or nothing was applied.
    fn apply_and_commit(&mut self, events: Vec<Event>) -> Result<Vec<EventResult>, (String, bool)> {
        let mut inputs = Vec::with_capacity(events.len());
        for event in events {
            // Acknowledgements carry no idempotency key worth a read: skip the lookup.
            let lookup = match event.kind {
                EventKind::Pushed => Ok(None),
                _ => self.store.lookup(&event.sku, &event.key),
            };
            let prior = match lookup {
                Ok(prior) => prior,
                // Nothing was applied yet: refuse the batch and keep serving.
                Err(e) => return Err((e.to_string(), false)),
            };
            inputs.push(Input { event, prior });
        }
        let now = now_micros();
        // Movements are on disk: a count or a fold needs its SKU's in memory.
        let store = self.store.as_ref();
        let oldest = Some((&mut self.oldest, now));
        if let Err(e) = load_for_batch(&mut self.state, &inputs, store, &self.core, oldest) {
            // Nothing was applied yet: refuse the batch and keep serving.
            unload_after_batch(&mut self.state, &inputs, &[], None);
            return Err((e.to_string(), false));
        }
        let first_seq = self.seq.fetch_add(inputs.len() as u64, Ordering::SeqCst) + 1;
        let effects = apply(&mut self.state, &inputs, now, first_seq, &self.core);
        unload_after_batch(
            &mut self.state,
            &inputs,
            &effects.writes,
            Some(&mut self.oldest),
        );
        if let Err(e) = self.store.commit(&effects) {
            return Err((e.to_string(), true));
        }
        // Only durable state leaves the engine: pushes are offered after the commit.
        Outbox::offer_all(&self.outboxes, &effects.pushes);
        for (due, sku) in &effects.settlements {
            self.settling.insert((*due, sku.clone()));
        }
        if effects.oversells > 0 {
            metrics::counter!("lockstep_oversells_total").increment(effects.oversells);
        }
        Ok(effects.results)
    }

    /// Applies the settlements whose window has closed (`delta` mode).
    fn settle_due(&mut self) -> Result<(), String> {
        let now = now_micros();
        let mut events = Vec::new();
        while let Some((due, sku)) = self.settling.first().cloned() {
            if due > now || events.len() >= BATCH_EVENTS_MAX {
                break;
            }
            self.settling.pop_first();
            if let Some(state) = self.state.get(&sku) {
                events.extend(settlements_due(&sku, state, &self.core.channels, now));
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        match self.apply_and_commit(events) {
            Ok(_) => Ok(()),
            Err((reason, true)) => Err(reason),
            Err((reason, false)) => {
                tracing::warn!(shard = self.id, %reason, "settlement postponed");
                Ok(())
            }
        }
    }

    fn sweep(&self, last_sweep: &mut Instant) {
        *last_sweep = Instant::now();
        match self.store.sweep_expired_keys(
            crate::clock::expiry_now(self.expiry_base.0, self.expiry_base.1)
                - self.key_retention_us,
            SWEEP_RUNS_MAX,
        ) {
            Ok(0) => {}
            Ok(swept) => tracing::debug!(shard = self.id, swept, "forgot expired idempotency keys"),
            Err(e) => tracing::warn!(shard = self.id, error = %e, "idempotency sweep failed"),
        }
    }
}
