//! The shard thread: the I/O shell around the pure core for the SKUs one shard owns.
//!
//! Loop: block for a message, drain more without blocking up to `BATCH_EVENTS_MAX` events,
//! look up their idempotency keys, read the clock once, `apply`, commit the batch's log
//! records with one flush and one `fdatasync` (group commit), then answer every request of
//! the batch. Nothing is answered before its events are durable. The store writes the
//! state rows the log implies at its checkpoints (`store/disk.rs`).
//!
//! A failed commit (a write or `fdatasync` that failed, a full disk) leaves memory ahead
//! of disk: the shard refuses work with the error, and reopens its storage on its own
//! (`Shard::reopen`: the journals written again and synced, the database reopened, the
//! refused batch removed from the log, the state recovered from disk), retrying with a
//! growing wait until it succeeds. See `docs/durability.md`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use crate::clock::{now_micros, Micros, MICROS_PER_SECOND};
use crate::core::event::{Event, EventResult};
use crate::core::{
    apply, next_settlement, pushes_for, settlements_due, CoreConfig, Input, ShardState,
};
use crate::engine::movements::{load_for_batch, unload_after_batch};
use crate::engine::recovery::{recover, RecoveryReport};
use crate::engine::{EngineError, MAILBOX_EVENTS_MAX, MAILBOX_MSGS_MAX};
use crate::store::{DiskStore, ShardStore, StoreError};

/// Most events one batch applies. Bounds the latency one batch adds to the next and the
/// size of one log write; large enough that a flush is shared by hundreds of requests.
pub const BATCH_EVENTS_MAX: usize = 4_096;
/// The wait before the first attempt to reopen failed storage; doubled after each
/// attempt that fails, up to `REOPEN_WAIT_MAX`.
const REOPEN_WAIT_FIRST: Duration = Duration::from_secs(1);
const REOPEN_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long a reopen waits for readers to let go of the old store (fjall locks its
/// directory until the last handle is gone); the next attempt tries again.
const READERS_WAIT_MAX: Duration = Duration::from_secs(5);
/// How often the idle shard forgets expired idempotency keys.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Most stored runs of keys one sweep looks at, so a sweep never stalls the shard for long.
const SWEEP_RUNS_MAX: usize = 64;

/// Where a shard hands the pushes its commits call for. The engine owns the trait and
/// the outboxes above it implement it (`propagate::outbox::Outboxes`), so the engine
/// never reaches up; only durable state is ever offered.
pub trait PushSink: Send + Sync {
    fn offer(&self, pushes: &[crate::core::PushWanted]);
    /// Channels an acknowledged change left showing their target (`Effects::caught_up`):
    /// whatever is still queued for those SKUs is out of date, unless it is a repair.
    fn caught_up(&self, shown: &[(crate::core::ChannelId, String)]);
}

/// Where a shard's store is found, by the shard for each batch and by HTTP readers;
/// empty while the shard reopens it after a storage failure.
pub type StoreSlot = Arc<RwLock<Option<Arc<dyn ShardStore>>>>;

/// What a shard's mailbox holds, in messages and events, reserved by a sender before it
/// sends and released by the shard as it takes (`MAILBOX_MSGS_MAX`,
/// `MAILBOX_EVENTS_MAX`): a request is given room on every shard it touches before any
/// of them gets its part, so a full mailbox refuses it whole.
#[derive(Debug, Default)]
pub struct Queued {
    msgs: AtomicUsize,
    events: AtomicUsize,
}

impl Queued {
    /// Reserves room for one message of `events` events; `false` (nothing reserved) when
    /// the mailbox is full. An empty mailbox takes a message of any size.
    pub fn reserve(&self, events: usize) -> bool {
        let msgs = self.msgs.fetch_add(1, Ordering::AcqRel);
        let before = self.events.fetch_add(events, Ordering::AcqRel);
        let full = msgs >= MAILBOX_MSGS_MAX || (before > 0 && before + events > MAILBOX_EVENTS_MAX);
        if full {
            self.release(1, events);
        }
        !full
    }

    /// Gives back room: messages taken by the shard, or reserved and never sent.
    pub fn release(&self, msgs: usize, events: usize) {
        self.msgs.fetch_sub(msgs, Ordering::AcqRel);
        self.events.fetch_sub(events, Ordering::AcqRel);
    }
}

/// A shard whose storage failed: why, and when it next tries to reopen it.
struct Failed {
    reason: String,
    attempts: u32,
    next: Instant,
}

impl Failed {
    fn new(reason: String) -> Failed {
        Failed {
            reason,
            attempts: 0,
            next: Instant::now() + REOPEN_WAIT_FIRST,
        }
    }

    /// What requests and `/healthz` are told while it lasts.
    fn describe(&self, last_attempt: Option<&str>) -> String {
        let wait = self.next.saturating_duration_since(Instant::now());
        let tried = match last_attempt {
            Some(e) => format!(" (reopen attempt {} failed: {e})", self.attempts),
            None => String::new(),
        };
        format!(
            "{}; the shard reopens its storage on its own, next attempt in {} ms{tried}",
            self.reason,
            wait.as_millis()
        )
    }
}

/// A request to a shard: apply these events (all owned by this shard), then answer.
pub struct ShardMsg {
    pub events: Vec<Event>,
    pub reply: oneshot::Sender<Result<Vec<EventResult>, EngineError>>,
}

/// What a shard's mailbox carries: events to apply, or a question about its SKUs.
pub enum Mail {
    Apply(ShardMsg),
    Find(FindSkus),
}

/// The SKUs of this shard whose name contains `needle` (ASCII letters in either case),
/// after `after` in SKU order, at most `limit`, in SKU order. Asked of the shard because
/// only the shard holds every name: a question costs it one walk over its names, and no
/// second copy of a million names is kept for the console's search.
pub struct FindSkus {
    pub needle: String,
    pub after: String,
    pub limit: usize,
    pub reply: oneshot::Sender<Vec<String>>,
}

impl FindSkus {
    fn answer(self, state: &ShardState) {
        let needle = self.needle.as_bytes();
        let contains = |name: &str| {
            needle.is_empty()
                || name
                    .as_bytes()
                    .windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle))
        };
        // The `limit` smallest matches, the largest on top to be pushed out.
        let mut found: std::collections::BinaryHeap<&str> =
            std::collections::BinaryHeap::with_capacity(self.limit + 1);
        for (name, _) in state.iter() {
            if name <= self.after.as_str()
                || found.len() == self.limit && found.peek().is_some_and(|top| name >= *top)
                || !contains(name)
            {
                continue;
            }
            found.push(name);
            if found.len() > self.limit {
                found.pop();
            }
        }
        let found: Vec<String> = found
            .into_sorted_vec()
            .into_iter()
            .map(str::to_string)
            .collect();
        let _ = self.reply.send(found);
    }
}

/// Everything a shard thread owns.
pub struct Shard {
    pub id: usize,
    pub state: ShardState,
    pub store: StoreSlot,
    /// The shard's directory, reopened after a storage failure.
    pub dir: PathBuf,
    /// The last sequence number the shard's log holds durably (what was acknowledged):
    /// a reopen removes anything above it, a batch whose commit failed.
    pub durable_seq: u64,
    pub mailbox: Receiver<Mail>,
    /// What the mailbox holds, reserved by senders: the shard subtracts what it takes.
    pub queued: Arc<Queued>,
    pub core: CoreConfig,
    pub key_retention_us: Micros,
    /// The last sequence number handed out, shared by all shards so that numbers are
    /// unique across the engine and audit pages merge by number.
    pub seq: Arc<AtomicU64>,
    /// Where pushes go once their batch is durable (the channels' outboxes).
    pub pushes: Arc<dyn PushSink>,
    /// Where committed records go for live audit readers; copied only when one listens.
    pub audit_feed: crate::engine::AuditFeed,
    /// Stock events and oversells per second, for the console.
    pub activity: Arc<crate::engine::activity::Activity>,
    /// Pending `delta`-mode levels by when they settle.
    pub settling: BTreeSet<(Micros, String)>,
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

    /// The shard's store, unless it is being reopened.
    fn store(&self) -> Result<Arc<dyn ShardStore>, String> {
        self.store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| format!("shard {}'s storage is closed for reopening", self.id))
    }

    /// Marks the shard failed with `reason` and tells the log.
    fn failed(&self, reason: String) -> Failed {
        tracing::error!(shard = self.id, %reason, "storage failed; the shard refuses work and reopens its storage");
        let failed = Failed::new(reason);
        self.fail(&failed.describe(None));
        failed
    }

    /// One attempt to reopen failed storage, when it is due: on success the shard serves
    /// again; on failure the next attempt waits twice as long.
    fn try_reopen(&mut self, failed: &mut Option<Failed>) {
        let Some(f) = failed.as_mut() else {
            return;
        };
        if Instant::now() < f.next {
            return;
        }
        f.attempts += 1;
        match self.reopen() {
            Ok(report) => {
                tracing::info!(
                    shard = self.id,
                    attempts = f.attempts,
                    skus = report.skus,
                    replayed = report.replayed,
                    "storage reopened; the shard serves again"
                );
                metrics::counter!("lockstep_storage_reopened_total", "shard" => self.id.to_string())
                    .increment(1);
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
                metrics::gauge!("lockstep_shard_up", "shard" => self.id.to_string()).set(1.0);
                *failed = None;
            }
            Err(e) => {
                let wait = REOPEN_WAIT_FIRST
                    .saturating_mul(1 << f.attempts.min(5))
                    .min(REOPEN_WAIT_MAX);
                f.next = Instant::now() + wait;
                tracing::warn!(shard = self.id, attempt = f.attempts, error = %e, "reopening storage failed; trying again later");
                self.fail(&f.describe(Some(&e)));
            }
        }
    }

    /// Closes the shard's storage and opens it again, as a restart would, but first writes
    /// its journals again (`DiskStore::resync_journals`), so nothing is appended behind a
    /// page the failed sync may have left only in memory. The batch whose commit failed
    /// was refused to its senders: it is removed from the log if it reached it, and the
    /// state comes back from disk, so memory and disk agree again. Every SKU is offered
    /// to the outboxes, as at a start.
    fn reopen(&mut self) -> Result<RecoveryReport, String> {
        let old = self.store.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(old) = old {
            let readers = Arc::downgrade(&old);
            drop(old);
            let since = Instant::now();
            while readers.strong_count() > 0 && since.elapsed() < READERS_WAIT_MAX {
                std::thread::sleep(Duration::from_millis(10));
            }
            // Still open: nothing of its files is touched; the next attempt tries again.
            if let Some(old) = readers.upgrade() {
                *self.store.write().unwrap_or_else(|e| e.into_inner()) = Some(old);
                return Err("readers still hold the failed store; tried again later".into());
            }
        }
        let err = |e: crate::store::StoreError| e.to_string();
        DiskStore::resync_journals(&self.dir).map_err(err)?;
        let store = DiskStore::open(&self.dir).map_err(err)?;
        let removed = store.truncate_log_from(self.durable_seq + 1).map_err(err)?;
        if removed > 0 {
            tracing::info!(
                shard = self.id,
                chunks = removed,
                after = self.durable_seq,
                "removed the refused batch from the log"
            );
        }
        let (state, report) = recover(&store, &self.core).map_err(err)?;
        self.state = state;
        self.settling.clear();
        for (sku, state) in &self.state {
            if let Some(due) = next_settlement(state) {
                self.settling.insert((due, sku.to_string()));
            }
            self.pushes
                .offer(&pushes_for(sku, state, &self.core.channels));
        }
        *self.store.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(store));
        Ok(report)
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
        // further work until it has reopened its storage (`reopen`).
        let mut failed: Option<Failed> = None;
        let mut last_sweep = Instant::now();
        for (sku, state) in &self.state {
            if let Some(due) = next_settlement(state) {
                self.settling.insert((due, sku.to_string()));
            }
        }
        loop {
            self.try_reopen(&mut failed);
            if failed.is_none() {
                if let Err(reason) = self.settle_due() {
                    failed = Some(self.failed(reason));
                }
            }
            let wait = match (&failed, self.settling.first()) {
                // Failed: settlements wait for the storage, so only the next attempt counts.
                (Some(f), _) => f.next.saturating_duration_since(Instant::now()),
                (None, Some((due, _))) => {
                    let until_due = (*due - now_micros()).max(0) as u64;
                    SWEEP_INTERVAL.min(Duration::from_micros(until_due))
                }
                (None, None) => SWEEP_INTERVAL,
            };
            let first = match self.mailbox.recv_timeout(wait) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    // An idle shard still writes its pending rows within seconds.
                    if failed.is_none() {
                        if let Err(e) = self
                            .store()
                            .and_then(|s| s.checkpoint_if_due().map_err(|e| e.to_string()))
                        {
                            tracing::warn!(shard = self.id, error = %e, "checkpoint failed; retried later");
                        }
                        if last_sweep.elapsed() >= SWEEP_INTERVAL {
                            self.sweep(&mut last_sweep);
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut msgs = Vec::new();
            let (mut taken, mut events) = (0, 0);
            let mut next = Some(first);
            while let Some(mail) = next.take() {
                taken += 1;
                match mail {
                    Mail::Apply(msg) => {
                        events += msg.events.len();
                        msgs.push(msg);
                    }
                    // Answered from memory at once, between batches.
                    Mail::Find(find) => find.answer(&self.state),
                }
                if events < BATCH_EVENTS_MAX {
                    next = self.mailbox.try_recv().ok();
                }
            }
            self.queued.release(taken, events);
            depth.set(self.mailbox.len() as f64);
            if msgs.is_empty() {
                continue;
            }
            if let Some(f) = &failed {
                let reason = f.describe(None);
                for msg in msgs {
                    let _ = msg.reply.send(Err(EngineError::Storage(reason.clone())));
                }
                continue;
            }
            if let Err(f) = self.process(msgs) {
                failed = Some(f);
            }
            if failed.is_none() && last_sweep.elapsed() >= SWEEP_INTERVAL {
                self.sweep(&mut last_sweep);
            }
        }
        // A clean stop stores the rows past the last checkpoint: the next start then
        // replays nothing.
        if failed.is_none() {
            if let Err(e) = self
                .store()
                .and_then(|s| s.checkpoint().map_err(|e| e.to_string()))
            {
                tracing::warn!(shard = self.id, error = %e, "final checkpoint failed; the next start replays the log");
            }
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    /// Applies and commits one batch, then answers it. On a storage error every request
    /// of the batch is answered with it; one that leaves memory ahead of disk fails the
    /// shard (returned).
    fn process(&mut self, msgs: Vec<ShardMsg>) -> Result<(), Failed> {
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
                // Marked failed before anyone hears of it: a client told 503 that then
                // asks /healthz must see why.
                let failed = fatal.then(|| self.failed(reason.clone()));
                let told = failed.as_ref().map_or(reason, |f| f.describe(None));
                for (_, reply) in replies {
                    let _ = reply.send(Err(EngineError::Storage(told.clone())));
                }
                failed.map_or(Ok(()), Err)
            }
        }
    }

    /// Looks up keys, applies, commits durably, then hands pushes to the outboxes.
    /// An error says whether memory is now ahead of disk (fatal) or nothing was applied.
    fn apply_and_commit(&mut self, events: Vec<Event>) -> Result<Vec<EventResult>, (String, bool)> {
        let store = self.store().map_err(|e| (e, false))?;
        let mut inputs = Vec::with_capacity(events.len());
        for event in events {
            // Acknowledgements carry no idempotency key worth a read: skip the lookup.
            let lookup = if event.kind.is_acknowledgement() {
                Ok(None)
            } else {
                store.lookup(&event.sku, &event.source, &event.key)
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
        if let Err(e) = load_for_batch(
            &mut self.state,
            &inputs,
            store.as_ref(),
            &self.core,
            Some(now),
        ) {
            // Nothing was applied yet: refuse the batch and keep serving.
            unload_after_batch(&mut self.state, &inputs, &[], false);
            return Err((e.to_string(), false));
        }
        // Taken from outside and new (a redelivery seen in an earlier batch is not).
        let stock_events = inputs
            .iter()
            .filter(|i| i.event.kind.changes_stock() && i.prior.is_none())
            .count() as u64;
        let first_seq = self.seq.fetch_add(inputs.len() as u64, Ordering::SeqCst) + 1;
        self.core.forgotten_before = self.keys_forgotten_before(store.as_ref());
        let effects = apply(&mut self.state, &inputs, now, first_seq, &self.core);
        unload_after_batch(&mut self.state, &inputs, &effects.writes, true);
        if let Err(e) = store.commit(&effects) {
            // Durable but not absorbed: a reopen keeps the batch (and recovers it), so
            // a retry is answered as the duplicate it is.
            if let (StoreError::AfterDurable(_), Some(last)) = (&e, effects.records.last()) {
                self.durable_seq = last.seq;
            }
            return Err((e.to_string(), true));
        }
        if let Some(last) = effects.records.last() {
            self.durable_seq = last.seq;
        }
        // Only durable state leaves the engine: pushes are offered after the commit.
        self.pushes.offer(&effects.pushes);
        self.pushes.caught_up(&effects.caught_up);
        if self.audit_feed.receiver_count() > 0 && !effects.records.is_empty() {
            let _ = self.audit_feed.send(Arc::new(effects.records.clone()));
        }
        for (due, sku) in &effects.settlements {
            self.settling.insert((*due, sku.clone()));
        }
        if effects.oversells > 0 {
            metrics::counter!("lockstep_oversells_total").increment(effects.oversells);
        }
        self.activity
            .committed(now, stock_events, effects.oversells);
        Ok(effects.results)
    }

    /// Applies the settlements whose window has closed (`delta` mode).
    fn settle_due(&mut self) -> Result<(), String> {
        let now = now_micros();
        let mut events = Vec::new();
        let mut taken = Vec::new();
        while let Some((due, sku)) = self.settling.first().cloned() {
            if due > now || events.len() >= BATCH_EVENTS_MAX {
                break;
            }
            self.settling.pop_first();
            if let Some(state) = self.state.get(sku.as_str()) {
                events.extend(settlements_due(&sku, state, &self.core.channels, now));
            }
            taken.push(sku);
        }
        if events.is_empty() {
            return Ok(());
        }
        match self.apply_and_commit(events) {
            Ok(_) => Ok(()),
            Err((reason, true)) => Err(reason),
            Err((reason, false)) => {
                // Nothing was applied: the same settlements are tried again in a second.
                tracing::warn!(shard = self.id, %reason, "settlement postponed");
                for sku in taken {
                    self.settling.insert((now + MICROS_PER_SECOND, sku));
                }
                Ok(())
            }
        }
    }

    /// Keys first seen before this expire now: the key-expiry clock less the retention.
    fn keys_expire_before(&self) -> Micros {
        crate::clock::expiry_now(self.expiry_base.0, self.expiry_base.1)
            .saturating_sub(self.key_retention_us)
    }

    /// Keys first seen before this may be gone: those expiring now, and those the sweep
    /// forgot already, which a retention raised since would not have kept so long.
    fn keys_forgotten_before(&self, store: &dyn ShardStore) -> Micros {
        self.keys_expire_before().max(store.keys_swept_to())
    }

    fn sweep(&self, last_sweep: &mut Instant) {
        *last_sweep = Instant::now();
        let before = self.keys_expire_before();
        match self.store().and_then(|s| {
            s.sweep_expired_keys(before, SWEEP_RUNS_MAX)
                .map_err(|e| e.to_string())
        }) {
            Ok(0) => {}
            Ok(swept) => tracing::debug!(shard = self.id, swept, "forgot expired idempotency keys"),
            Err(e) => tracing::warn!(shard = self.id, error = %e, "idempotency sweep failed"),
        }
    }
}
