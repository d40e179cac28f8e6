//! The engine: the router, the shard threads and their stores, behind one handle.
//!
//! - `event.rs`: the vocabulary (events, outcomes, results).
//! - `core.rs`: the pure core, `apply(state, batch, now) -> effects`.
//! - `router.rs`: `ahash(sku) % shards`.
//! - `shard.rs`: the thread that owns a shard's SKUs and does its I/O.
//! - `movements.rs`: which SKUs' stored movements a batch loads (counts, folds).
//! - `recovery.rs`: loading state on start, and `replay`.
//!
//! `Engine::submit` splits a request's events by shard and puts each part in its shard's
//! bounded mailbox without waiting; a full mailbox is `EngineError::Busy` at once (the
//! HTTP edge turns it into 503 + Retry-After), never a blocked tokio worker.

pub mod core;
pub mod event;
pub mod movements;
pub mod recovery;
pub mod router;
pub mod shard;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender, TrySendError};
use tokio::sync::oneshot;

use self::core::CoreConfig;
use self::event::{Event, EventResult};
use self::router::Router;
use self::shard::{Shard, ShardMsg};
use crate::clock::{now_micros, Micros};
use crate::propagate::outbox::Outbox;
use crate::store::records::{HeadRecord, LogRecord};
use crate::store::{DiskStore, ShardStore, StoreError};

/// Requests a shard's mailbox holds before the edge answers 503. At up to 1,000 events a
/// request this bounds queued work to a few batches' worth of flushes.
pub const MAILBOX_MSGS_MAX: usize = 1_024;
/// Seconds a refused client is asked to wait (Retry-After): a full mailbox drains in
/// well under a second, and channels retry on their own schedule anyway.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Why the engine could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// A shard's mailbox is full; retry after `RETRY_AFTER_SECS`.
    #[error("shard {shard} is busy")]
    Busy { shard: usize },
    /// Storage failed; the shard refuses work until a restart recovers it.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The engine is shutting down.
    #[error("engine is stopping")]
    Stopped,
    /// The data directory does not fit this configuration or build.
    #[error("data directory: {0}")]
    DataDir(String),
    /// An event no shard may apply (`event::problem`); nothing of the request was taken.
    #[error("event {index} (SKU {sku:?}): {problem}")]
    Invalid {
        index: usize,
        sku: String,
        problem: String,
    },
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        EngineError::Storage(e.to_string())
    }
}

/// How to start an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// 0: one per core, or what the data directory already has.
    pub shards: usize,
    pub core: CoreConfig,
    pub key_retention_us: Micros,
}

/// A running engine.
pub struct Engine {
    router: Router,
    /// Cleared by `shutdown`; read-locked only around `try_send`, never across an await.
    senders: RwLock<Vec<Sender<ShardMsg>>>,
    stores: Vec<Arc<dyn ShardStore>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Per shard, why it refuses work (set by the shard when its storage fails).
    failures: Vec<Arc<Mutex<Option<String>>>>,
    /// Held for the engine's lifetime: no other process writes this data directory.
    _lock: DirLock,
}

/// One shard's state, for `/healthz`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ShardHealth {
    pub shard: usize,
    /// `ok`, `failed` (storage failed: it refuses work until a restart), `dead` (its
    /// thread ended), or `stopped` (shutting down).
    pub state: &'static str,
    pub reason: Option<String>,
    /// Requests waiting in its mailbox.
    pub mailbox: usize,
}

/// The lock of a data directory (`lockstep.lock`, an advisory `flock`), held by whoever
/// has it open: two processes writing one journal lose acknowledged events. The kernel
/// releases it when the process ends, however it ends.
pub struct DirLock {
    _file: std::fs::File,
}

const LOCK_FILE: &str = "lockstep.lock";

/// Takes the lock of `data_dir` for this process, or says which process has it.
pub fn lock_data_dir(data_dir: &Path) -> Result<DirLock, EngineError> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(data_dir)
        .map_err(|e| EngineError::DataDir(format!("cannot create {}: {e}", data_dir.display())))?;
    let path = data_dir.join(LOCK_FILE);
    let io = |e: std::io::Error| EngineError::DataDir(format!("{}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(EngineError::DataDir(format!(
                "{} is in use by another lockstep process{}: stop it first (or use another data_dir)",
                data_dir.display(),
                if holder.is_empty() { String::new() } else { format!(" (pid {holder})") }
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    // Who holds it, for the next process's message (not needed for the lock itself).
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DirLock { _file: file })
}

/// What the data directory records about its own layout (`lockstep.meta`).
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Eq)]
struct DataMeta {
    format: u32,
    shards: usize,
    router_fingerprint: u64,
}

const META_FILE: &str = "lockstep.meta";
/// The layout `lockstep.meta` describes; another one is refused, never guessed at.
const META_FORMAT: u32 = 1;

/// Whether `data_dir` holds any shard directory.
fn has_shard_dirs(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("shard-"))
    })
}

/// Reads or creates the data directory's meta file and settles the shard count.
pub fn open_data_dir(data_dir: &Path, shards_wanted: usize) -> Result<Router, EngineError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| EngineError::DataDir(format!("cannot create {}: {e}", data_dir.display())))?;
    let meta_path = data_dir.join(META_FILE);
    let existing = match std::fs::read_to_string(&meta_path) {
        Ok(text) => Some(serde_json::from_str::<DataMeta>(&text).map_err(|e| {
            EngineError::DataDir(format!("{} is unreadable: {e}", meta_path.display()))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(EngineError::DataDir(format!(
                "{}: {e}",
                meta_path.display()
            )))
        }
    };
    match &existing {
        Some(meta) if meta.format != META_FORMAT => {
            return Err(EngineError::DataDir(format!(
                "{} has data format {}, this build reads format {META_FORMAT}: run the lockstep that wrote it",
                data_dir.display(),
                meta.format
            )))
        }
        // Shards without their meta file: the shard count, and so where each SKU lives,
        // is unknown; guessing it would hide half the SKUs.
        None if has_shard_dirs(data_dir) => {
            return Err(EngineError::DataDir(format!(
                "{} holds shard directories but no {META_FILE}: restore it (it records the shard count) instead of starting over it",
                data_dir.display()
            )))
        }
        _ => {}
    }
    let shards = match (&existing, shards_wanted) {
        (Some(meta), 0) => meta.shards,
        (Some(meta), wanted) if wanted != meta.shards => {
            return Err(EngineError::DataDir(format!(
                "{} holds {} shards but the config asks for {wanted}; SKUs are placed by hash, \
                 so the count cannot change on existing data (set shards = 0 or {})",
                data_dir.display(),
                meta.shards,
                meta.shards
            )))
        }
        (_, 0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        (_, wanted) => wanted,
    };
    let router = Router::new(shards);
    match existing {
        Some(meta) if meta.router_fingerprint != router.fingerprint() => {
            return Err(EngineError::DataDir(format!(
                "{} was written by a build whose SKU hashing differs from this one's; \
                 its SKUs would be looked for on the wrong shards",
                data_dir.display()
            )))
        }
        Some(_) => {}
        None => {
            let meta = DataMeta {
                format: META_FORMAT,
                shards,
                router_fingerprint: router.fingerprint(),
            };
            let text = serde_json::to_string_pretty(&meta).expect("meta serializes");
            std::fs::write(&meta_path, text)
                .and_then(|_| std::fs::File::open(&meta_path)?.sync_all())
                .map_err(|e| EngineError::DataDir(format!("{}: {e}", meta_path.display())))?;
        }
    }
    Ok(router)
}

/// The newest `applied_at` in a shard's log (0 when it is empty): its last chunk's.
fn newest_applied_at(store: &dyn ShardStore) -> Result<Micros, EngineError> {
    let last = store.last_seq()?;
    let mut newest = 0;
    for chunk in store.log_after(last.saturating_sub(1)) {
        for record in chunk? {
            newest = newest.max(record.applied_at);
        }
    }
    Ok(newest)
}

/// Why shard `i` cannot start: a damaged log chunk is named, and nothing was deleted.
pub fn recovery_refused(i: usize, dir: &Path, e: StoreError) -> EngineError {
    match e {
        StoreError::Corrupt { key, seq, source } => EngineError::DataDir(format!(
            "shard {i} ({}): the log chunk {key}{} fails its check ({source}); refusing to start, \
             as it may hold acknowledged events, and nothing was deleted. If a newer lockstep \
             wrote it, run that version; otherwise restore the data directory from a backup",
            dir.display(),
            seq.map_or(String::new(), |s| format!(" (records up to {s})")),
        )),
        other => EngineError::DataDir(format!("recovery of {} failed: {other}", dir.display())),
    }
}

/// The directory of shard `i`.
pub fn shard_dir(data_dir: &Path, i: usize) -> PathBuf {
    data_dir.join(format!("shard-{i:03}"))
}

impl Engine {
    /// Opens the data directory, recovers every shard, offers every SKU whose channels do
    /// not show their target to the outboxes (aligned with `config.core.channels`; `None`
    /// for a channel without an adapter), and starts the shard threads.
    pub fn start(
        config: &EngineConfig,
        outboxes: Vec<Option<Arc<Outbox>>>,
    ) -> Result<Engine, EngineError> {
        let outboxes: Arc<[Option<Arc<Outbox>>]> = Arc::from(outboxes);
        let lock = lock_data_dir(&config.data_dir)?;
        let router = open_data_dir(&config.data_dir, config.shards)?;
        // Read the core ids once, before any thread pins itself (pinning narrows what a
        // later call would report).
        let core_ids = core_affinity::get_core_ids().unwrap_or_default();
        let mut shards = Vec::new();
        let mut last_seq = 0;
        for i in 0..router.shards() {
            let dir = shard_dir(&config.data_dir, i);
            let store = DiskStore::open(&dir)
                .map_err(|e| EngineError::DataDir(format!("cannot open {}: {e}", dir.display())))?;
            let (state, report) = recovery::recover(&store, &config.core)
                .map_err(|e| recovery_refused(i, &dir, e))?;
            tracing::info!(
                shard = i,
                skus = report.skus,
                checkpoint = report.checkpoint,
                replayed = report.replayed,
                "shard recovered"
            );
            last_seq = last_seq.max(store.last_seq()?);
            let newest = newest_applied_at(&store)?;
            crate::clock::not_before(newest);
            // Nothing is dropped across a restart: the shard knows what every channel last
            // acknowledged, so whatever differs from its target is pushed again.
            for (sku, sku_state) in &state {
                let pushes = self::core::pushes_for(sku, sku_state, &config.core.channels);
                Outbox::offer_all(&outboxes, &pushes);
            }
            shards.push((state, Arc::new(store) as Arc<dyn ShardStore>, newest));
        }
        let seq = Arc::new(AtomicU64::new(last_seq));
        let mut senders = Vec::new();
        let mut stores = Vec::new();
        let mut threads = Vec::new();
        let mut failures = Vec::new();
        for (i, (state, store, newest)) in shards.into_iter().enumerate() {
            let failure = Arc::new(Mutex::new(None));
            failures.push(failure.clone());
            metrics::gauge!("lockstep_shard_up", "shard" => i.to_string()).set(1.0);
            let (tx, rx) = bounded(MAILBOX_MSGS_MAX);
            let shard = Shard {
                id: i,
                state,
                store: store.clone(),
                mailbox: rx,
                core: config.core.clone(),
                key_retention_us: config.key_retention_us,
                seq: seq.clone(),
                outboxes: outboxes.clone(),
                settling: Default::default(),
                oldest: Default::default(),
                failure,
                // A shard with an empty log has no keys to expire early.
                expiry_base: (
                    if newest > 0 { newest } else { now_micros() },
                    std::time::Instant::now(),
                ),
            };
            let core_id = (!core_ids.is_empty()).then(|| core_ids[i % core_ids.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || shard.run(core_id))
                .map_err(|e| EngineError::DataDir(format!("cannot start shard thread: {e}")))?;
            senders.push(tx);
            stores.push(store);
            threads.push(thread);
        }
        Ok(Engine {
            router,
            senders: RwLock::new(senders),
            stores,
            threads: Mutex::new(threads),
            failures,
            _lock: lock,
        })
    }

    /// Each shard's state: whether it can accept and durably apply events now.
    pub fn health(&self) -> Vec<ShardHealth> {
        let senders = self.senders.read().unwrap_or_else(|e| e.into_inner());
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        (0..self.shards())
            .map(|i| {
                let reason = self.failures[i]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let dead = threads.get(i).is_some_and(|t| t.is_finished());
                let state = match (senders.get(i), dead, &reason) {
                    (None, _, _) => "stopped",
                    (_, true, _) => "dead",
                    (_, _, Some(_)) => "failed",
                    _ => "ok",
                };
                ShardHealth {
                    shard: i,
                    state,
                    reason: reason.or_else(|| dead.then(|| "the shard thread ended".to_string())),
                    mailbox: senders.get(i).map_or(0, |s| s.len()),
                }
            })
            .collect()
    }

    pub fn shards(&self) -> usize {
        self.router.shards()
    }

    /// The shard that owns `sku`.
    pub fn shard_of(&self, sku: &str) -> usize {
        self.router.shard_of(sku)
    }

    /// Whether `shutdown` has begun.
    pub fn is_stopped(&self) -> bool {
        self.senders
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Applies events durably; answers one result per event, in order. Events of one
    /// request that live on several shards are applied by each shard in parallel; if any
    /// shard is busy the whole request fails with `Busy`, and the parts that did go
    /// through are deduplicated when the client retries.
    pub async fn submit(&self, mut events: Vec<Event>) -> Result<Vec<EventResult>, EngineError> {
        // Nothing happened after we received it: a source time ahead of that (a count
        // stamped up to an hour ahead, a channel's clock running fast) is taken as the
        // time received. Ordered later, it would make every movement before it change
        // nothing.
        for event in &mut events {
            event.source_ts = event.source_ts.min(event.received_at);
        }
        // One gate for every path in (native, a channel's deliveries, polls, queues, our
        // own acknowledgements): a shard never sees an event it cannot apply.
        if let Some((index, event, problem)) = events
            .iter()
            .enumerate()
            .find_map(|(i, e)| event::problem(e).map(|p| (i, e, p)))
        {
            return Err(EngineError::Invalid {
                index,
                sku: event.sku.chars().take(64).collect(),
                problem,
            });
        }
        let total = events.len();
        let mut parts: Vec<(Vec<usize>, Vec<Event>)> =
            vec![(Vec::new(), Vec::new()); self.shards()];
        for (i, event) in events.into_iter().enumerate() {
            let part = &mut parts[self.router.shard_of(&event.sku)];
            part.0.push(i);
            part.1.push(event);
        }
        let mut pending = Vec::new();
        {
            let senders = self.senders.read().unwrap_or_else(|e| e.into_inner());
            if senders.is_empty() {
                return Err(EngineError::Stopped);
            }
            for (shard, (indices, events)) in parts.into_iter().enumerate() {
                if events.is_empty() {
                    continue;
                }
                let (reply, answer) = oneshot::channel();
                match senders[shard].try_send(ShardMsg { events, reply }) {
                    Ok(()) => pending.push((indices, answer)),
                    Err(TrySendError::Full(_)) => return Err(EngineError::Busy { shard }),
                    Err(TrySendError::Disconnected(_)) => return Err(EngineError::Stopped),
                }
            }
        }
        let mut results: Vec<Option<EventResult>> = vec![None; total];
        for (indices, answer) in pending {
            let answers = answer.await.map_err(|_| EngineError::Stopped)??;
            for (i, result) in indices.into_iter().zip(answers) {
                results[i] = Some(result);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every event answered"))
            .collect())
    }

    /// A SKU's stock as of the last durable batch.
    pub fn head(&self, sku: &str) -> Result<Option<HeadRecord>, EngineError> {
        Ok(self.stores[self.router.shard_of(sku)].head(sku)?)
    }

    /// Up to `limit` heads in SKU order across the shards, those after `after`, as of
    /// their last durable batches: each shard's first `limit`, merged.
    pub fn heads_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, HeadRecord)>, EngineError> {
        let mut all = Vec::new();
        for store in &self.stores {
            all.extend(store.heads_after(after, limit)?);
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.truncate(limit);
        Ok(all)
    }

    /// Audit records newest first, `seq > since`, at most `limit`.
    pub fn audit(
        &self,
        sku: Option<&str>,
        since: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, EngineError> {
        audit_across(&self.stores, &self.router, sku, since, limit)
    }

    /// Stops accepting work, lets every shard finish its mailbox, and joins the threads.
    pub fn shutdown(&self) {
        self.senders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// The audit query over a set of shard stores (shared by the server and the CLI).
pub fn audit_across(
    stores: &[Arc<dyn ShardStore>],
    router: &Router,
    sku: Option<&str>,
    since: u64,
    limit: usize,
) -> Result<Vec<LogRecord>, EngineError> {
    if let Some(sku) = sku {
        return Ok(stores[router.shard_of(sku)].audit(Some(sku), since, limit)?);
    }
    // Every shard's newest `limit`, merged: sequence numbers are global.
    let mut all = Vec::new();
    for store in stores {
        all.extend(store.audit(None, since, limit)?);
    }
    all.sort_unstable_by_key(|r| std::cmp::Reverse(r.seq));
    all.truncate(limit);
    Ok(all)
}
