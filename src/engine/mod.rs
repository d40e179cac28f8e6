//! The engine: the router, the shard threads and their stores, behind one handle. It
//! runs the pure core (`crate::core`) over the store (`crate::store`) and imports
//! nothing above them: shards hand the pushes their commits call for to a `PushSink`
//! (`shard.rs`) that the outboxes implement.
//!
//! - `router.rs`: `ahash(sku) % shards`.
//! - `shard.rs`: the thread that owns a shard's SKUs and does its I/O.
//! - `movements.rs`: which SKUs' stored movements a batch loads (counts, folds).
//! - `recovery.rs`: loading state on start, and `replay`.
//! - `settings.rs`: the settings that decide stock, stored with the data by era.
//! - `activity.rs`: stock events per second and oversells today, for the console.
//!
//! A shard's mailbox also takes questions about its SKUs (`Engine::find_skus`: names
//! containing a text), answered from memory between two batches.
//!
//! `Engine::submit` splits a request's events by shard and puts each part in its shard's
//! bounded mailbox without waiting; a full mailbox is `EngineError::Busy` at once (the
//! HTTP edge turns it into 503 + Retry-After), never a blocked tokio worker.

pub mod activity;
pub mod movements;
pub mod recovery;
pub mod router;
pub mod settings;
pub mod shard;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender, TrySendError};
use tokio::sync::oneshot;

use self::router::Router;
use self::shard::{FindSkus, Mail, PushSink, Queued, Shard, ShardMsg, StoreSlot};
use crate::clock::{now_micros, Micros};
use crate::config::Config;
use crate::core::event::{self, Event, EventResult};
use crate::core::records::{HeadRecord, LogRecord};
use crate::core::{CoreConfig, ShardState};
use crate::store::{DiskStore, ShardStore, StoreError};

/// Requests a shard's mailbox holds before the edge answers 503.
pub const MAILBOX_MSGS_MAX: usize = 1_024;
/// Events a shard's mailbox holds before the edge answers 503: eight of the shard's
/// largest batches (`shard::BATCH_EVENTS_MAX`), so queued work is a few flushes' worth
/// whatever the requests' sizes. Counting requests alone let 1,024 requests of 1,000
/// events (about 1.4 GB) wait in one mailbox. Each event is bounded in size at ingest,
/// so this bounds the mailbox's bytes too.
pub const MAILBOX_EVENTS_MAX: usize = 32_768;
/// Seconds a refused client is asked to wait (Retry-After): a full mailbox drains in
/// well under a second, and channels retry on their own schedule anyway.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Why the engine could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// A shard's mailbox is full; retry after `RETRY_AFTER_SECS`.
    #[error("shard {shard} is busy")]
    Busy { shard: usize },
    /// Storage failed; the shard refuses work until it has reopened its storage.
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
    /// Each shard thread pinned to a core (`ServerConfig::pin_shards`).
    pub pin_shards: bool,
    pub core: CoreConfig,
    pub key_retention_us: Micros,
}

impl EngineConfig {
    /// The engine a config describes: the data directory (relative paths taken from the
    /// working directory, as `serve` without a config does), its shards, and the
    /// settings that decide stock.
    pub fn of(config: &Config) -> EngineConfig {
        EngineConfig {
            data_dir: config.server.data_dir.clone(),
            shards: config.server.shards,
            pin_shards: config.server.pin_shards,
            core: config.core_config(),
            key_retention_us: config.key_retention_us(),
        }
    }
}

/// Where shards publish their committed records for live audit readers.
pub type AuditFeed = tokio::sync::broadcast::Sender<Arc<Vec<LogRecord>>>;

/// Batches the audit feed keeps for a slow reader before it lags.
const AUDIT_FEED_BATCHES: usize = 4_096;

/// A running engine.
pub struct Engine {
    router: Router,
    /// Cleared by `shutdown`; read-locked only around `try_send`, never across an await.
    senders: RwLock<Vec<Sender<Mail>>>,
    /// Per shard, what its mailbox holds (`MAILBOX_MSGS_MAX`, `MAILBOX_EVENTS_MAX`).
    queued: Vec<Arc<Queued>>,
    /// Per shard, its store (empty while the shard reopens it after a storage failure).
    stores: Vec<StoreSlot>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Per shard, why it refuses work (set by the shard when its storage fails).
    failures: Vec<Arc<Mutex<Option<String>>>>,
    /// The settings of every era of this data directory, the current one last.
    history: settings::History,
    /// Every committed batch's records, for live audit readers (`subscribe_audit`).
    audit_feed: AuditFeed,
    /// Stock events per second and oversells today, for the console.
    activity: Arc<activity::Activity>,
    /// Held for the engine's lifetime: no other process writes this data directory.
    _lock: DirLock,
}

/// One shard's state, for `/healthz`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ShardHealth {
    pub shard: usize,
    /// `ok`, `failed` (storage failed: it refuses work until it has reopened its
    /// storage, which it retries on its own), `dead` (its
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
/// Format 2: fjall 3's files (format 1 was fjall 2's, which this build cannot read) and
/// the settings history (`lockstep.settings`). Format 3: each shard's log tail (`wal`)
/// holds the batches since its last checkpoint, which a build of format 2 would not
/// read: after a crash it would start without them. A directory of format 2 (no tail
/// yet) is read as it is, and `serve` marks it 3 before any shard writes a tail.
const META_FORMAT: u32 = 3;
/// Formats this build reads.
const META_FORMATS_READ: [u32; 2] = [2, META_FORMAT];

/// Whether `data_dir` holds any shard directory.
fn has_shard_dirs(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("shard-"))
    })
}

/// Reads or creates the data directory's meta file and settles the shard count, for a
/// command that only reads: a directory of an older format this build reads is left as
/// it is.
pub fn open_data_dir(data_dir: &Path, shards_wanted: usize) -> Result<Router, EngineError> {
    open_meta(data_dir, shards_wanted, false)
}

/// `open_data_dir`, and with `claim` a directory of an older format this build reads is
/// marked as this build's before anything of the new format is written (`serve`).
fn open_meta(data_dir: &Path, shards_wanted: usize, claim: bool) -> Result<Router, EngineError> {
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
        Some(meta) if meta.format == 1 => {
            return Err(EngineError::DataDir(format!(
                "{} has data format 1 (fjall 2's storage), which this build (format {META_FORMAT}, \
                 fjall 3) cannot read: run the lockstep that wrote it, or start this one on a new \
                 data_dir and set the counts again",
                data_dir.display()
            )))
        }
        Some(meta) if !META_FORMATS_READ.contains(&meta.format) => {
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
        Some(meta) if claim && meta.format != META_FORMAT => {
            tracing::info!(
                data_dir = %data_dir.display(),
                from = meta.format,
                to = META_FORMAT,
                "data format marked as this build's (each shard's log tail, `wal`)"
            );
            write_meta(data_dir, shards, &router)?;
        }
        Some(_) => {}
        None => write_meta(data_dir, shards, &router)?,
    }
    Ok(router)
}

/// Writes `lockstep.meta` of this build's format, durably (a temp file renamed over the
/// old one, the directory synced).
fn write_meta(data_dir: &Path, shards: usize, router: &Router) -> Result<(), EngineError> {
    let meta_path = data_dir.join(META_FILE);
    let meta = DataMeta {
        format: META_FORMAT,
        shards,
        router_fingerprint: router.fingerprint(),
    };
    let text = serde_json::to_string_pretty(&meta).expect("meta serializes");
    crate::store::small_file::write_durably(&meta_path, text.as_bytes(), false)
        .map_err(|e| EngineError::DataDir(format!("{}: {e}", meta_path.display())))
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

/// A recovered shard: its state, its store, the newest `applied_at` of its log, its last
/// sequence number and its directory.
type Recovered = (ShardState, Arc<dyn ShardStore>, Micros, u64, PathBuf);

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
    /// Opens the data directory, recovers every shard, offers `pushes` every SKU whose
    /// channels do not show their target, and starts the shard threads.
    pub fn start(config: &EngineConfig, pushes: Arc<dyn PushSink>) -> Result<Engine, EngineError> {
        let lock = lock_data_dir(&config.data_dir)?;
        let router = open_meta(&config.data_dir, config.shards, true)?;
        // Read the core ids once, before any thread pins itself (pinning narrows what a
        // later call would report); none when shards are not pinned.
        let core_ids = if config.pin_shards {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        // The log's tail was written under the stored settings: it is re-applied under
        // them, and the config's take effect after it (`settings.rs`).
        let mut history = settings::History::read(&config.data_dir)?;
        let written_under = history.current().map(|era| era.core());
        let recover_under = written_under.as_ref().unwrap_or(&config.core);
        let changed = written_under
            .as_ref()
            .is_some_and(|was| was.channels != config.core.channels);
        // Every shard recovers on a thread of its own, all at once: they share nothing,
        // and at a million SKUs each spends seconds reading its rows and building its
        // states, which a restart would otherwise wait for one shard after another.
        let recover_shard = |i: usize| -> Result<Recovered, EngineError> {
            let dir = shard_dir(&config.data_dir, i);
            let store = DiskStore::open(&dir)
                .map_err(|e| EngineError::DataDir(format!("cannot open {}: {e}", dir.display())))?;
            let last = store.last_seq()?;
            if written_under.is_none() && last > 0 {
                return Err(settings::missing(&config.data_dir));
            }
            let (mut state, report) = recovery::recover(&store, recover_under)
                .map_err(|e| recovery_refused(i, &dir, e))?;
            tracing::info!(
                shard = i,
                skus = report.skus,
                checkpoint = report.checkpoint,
                replayed = report.replayed,
                "shard recovered"
            );
            if changed {
                // Recovery checkpointed everything: the state as the new channels see it.
                state = store
                    .load_state(&config.core.channels)
                    .map_err(|e| recovery_refused(i, &dir, e))?
                    .skus;
            }
            let newest = newest_applied_at(&store)?;
            Ok((
                state,
                Arc::new(store) as Arc<dyn ShardStore>,
                newest,
                last,
                dir,
            ))
        };
        let recovered: Vec<Result<Recovered, EngineError>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..router.shards())
                .map(|i| {
                    std::thread::Builder::new()
                        .name(format!("recover-{i}"))
                        .spawn_scoped(scope, move || recover_shard(i))
                })
                .collect();
            threads
                .into_iter()
                .enumerate()
                .map(|(i, thread)| {
                    let failed =
                        |why: String| EngineError::DataDir(format!("recovery of shard {i} {why}"));
                    thread
                        .map_err(|e| failed(format!("could not start: {e}")))?
                        .join()
                        .map_err(|_| failed("panicked".to_string()))?
                })
                .collect()
        });
        let mut shards = Vec::new();
        let mut last_seqs = Vec::new();
        for shard in recovered {
            let shard = shard?;
            last_seqs.push(shard.3);
            crate::clock::not_before(shard.2);
            shards.push(shard);
        }
        let before = history.current().cloned();
        if let Some(era) =
            history.begin(&config.data_dir, &config.core, &last_seqs, now_micros())?
        {
            for change in era.changes_from(before.as_ref()) {
                tracing::info!(change = %change, "settings: {change}");
            }
        }
        // What the shards judge an order sent again after its keys expired by
        // (`core::forgotten`): when each channel's keys began to be kept.
        let mut core = config.core.clone();
        core.channels_since = core
            .channels
            .iter()
            .map(|(_, rule)| history.channel_since(&rule.name).unwrap_or_else(now_micros))
            .collect();
        for (state, ..) in &shards {
            // Nothing is dropped across a restart: the shard knows what every channel last
            // acknowledged, so whatever differs from its target is pushed again.
            for (sku, sku_state) in state {
                let wanted = crate::core::pushes_for(sku, sku_state, &config.core.channels);
                pushes.offer(&wanted);
            }
        }
        let last_seq = last_seqs.iter().copied().max().unwrap_or(0);
        let seq = Arc::new(AtomicU64::new(last_seq));
        let mut senders = Vec::new();
        let mut stores = Vec::new();
        let mut threads = Vec::new();
        let mut failures = Vec::new();
        let mut queued = Vec::new();
        let (audit_feed, _) = tokio::sync::broadcast::channel(AUDIT_FEED_BATCHES);
        let activity = Arc::new(activity::Activity::default());
        for (i, (state, store, newest, durable_seq, dir)) in shards.into_iter().enumerate() {
            let store: StoreSlot = Arc::new(RwLock::new(Some(store)));
            let waiting = Arc::new(Queued::default());
            queued.push(waiting.clone());
            let failure = Arc::new(Mutex::new(None));
            failures.push(failure.clone());
            metrics::gauge!("lockstep_shard_up", "shard" => i.to_string()).set(1.0);
            let (tx, rx) = bounded(MAILBOX_MSGS_MAX);
            let shard = Shard {
                id: i,
                state,
                store: store.clone(),
                dir,
                durable_seq,
                mailbox: rx,
                queued: waiting,
                core: core.clone(),
                key_retention_us: config.key_retention_us,
                seq: seq.clone(),
                pushes: pushes.clone(),
                audit_feed: audit_feed.clone(),
                activity: activity.clone(),
                settling: Default::default(),
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
            queued,
            stores,
            threads: Mutex::new(threads),
            failures,
            history,
            audit_feed,
            activity,
            _lock: lock,
        })
    }

    /// Every batch of records committed from now on, as the shards commit them (a
    /// reader that falls `AUDIT_FEED_BATCHES` behind is told how many it missed).
    pub fn subscribe_audit(&self) -> tokio::sync::broadcast::Receiver<Arc<Vec<LogRecord>>> {
        self.audit_feed.subscribe()
    }

    /// Stock events per second and oversells today (`activity.rs`), as JSON.
    pub fn activity(&self) -> serde_json::Value {
        self.activity.json(now_micros())
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
    /// request that live on several shards are applied by each shard in parallel. Room
    /// is reserved on every shard before any gets its part: if any is busy the whole
    /// request fails with `Busy` and nothing of it is applied. (A storage failure on one
    /// shard fails only that shard's part; a retry's other parts are duplicates.)
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
            let parts: Vec<(usize, Vec<usize>, Vec<Event>)> = parts
                .into_iter()
                .enumerate()
                .filter(|(_, (_, events))| !events.is_empty())
                .map(|(shard, (indices, events))| (shard, indices, events))
                .collect();
            // Room on every shard first, so a full mailbox refuses the request whole and
            // no shard has applied a part of it.
            for (at, (shard, _, events)) in parts.iter().enumerate() {
                if !self.queued[*shard].reserve(events.len()) {
                    for (reserved, _, events) in &parts[..at] {
                        self.queued[*reserved].release(1, events.len());
                    }
                    return Err(EngineError::Busy { shard: *shard });
                }
            }
            let mut parts = parts.into_iter();
            while let Some((shard, indices, events)) = parts.next() {
                let (reply, answer) = oneshot::channel();
                let n = events.len();
                if let Err(e) = senders[shard].try_send(Mail::Apply(ShardMsg { events, reply })) {
                    // Only when the engine is stopping: the reservations bound the
                    // mailbox below its capacity. Parts already sent are applied.
                    self.queued[shard].release(1, n);
                    for (unsent, _, events) in parts {
                        self.queued[unsent].release(1, events.len());
                    }
                    return Err(match e {
                        TrySendError::Full(_) => EngineError::Busy { shard },
                        TrySendError::Disconnected(_) => EngineError::Stopped,
                    });
                }
                pending.push((indices, answer));
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

    /// Up to `limit` SKUs whose name contains `needle` (ASCII letters in either case),
    /// those after `after`, in SKU order: each shard's first `limit`, merged. Every
    /// shard walks its names in memory, between batches.
    pub async fn find_skus(
        &self,
        needle: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, EngineError> {
        let mut answers = Vec::new();
        {
            let senders = self.senders.read().unwrap_or_else(|e| e.into_inner());
            if senders.is_empty() {
                return Err(EngineError::Stopped);
            }
            for (shard, sender) in senders.iter().enumerate() {
                // A question takes a place in the mailbox like any request.
                if !self.queued[shard].reserve(0) {
                    return Err(EngineError::Busy { shard });
                }
                let (reply, answer) = oneshot::channel();
                let find = FindSkus {
                    needle: needle.to_string(),
                    after: after.to_string(),
                    limit,
                    reply,
                };
                if let Err(e) = sender.try_send(Mail::Find(find)) {
                    self.queued[shard].release(1, 0);
                    return Err(match e {
                        TrySendError::Full(_) => EngineError::Busy { shard },
                        TrySendError::Disconnected(_) => EngineError::Stopped,
                    });
                }
                answers.push(answer);
            }
        }
        let mut found = Vec::new();
        for answer in answers {
            found.extend(answer.await.map_err(|_| EngineError::Stopped)?);
        }
        found.sort_unstable();
        found.truncate(limit);
        Ok(found)
    }

    /// Shard `i`'s store, unless the shard is reopening it.
    fn store(&self, i: usize) -> Result<Arc<dyn ShardStore>, EngineError> {
        self.stores[i]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                EngineError::Storage(format!("shard {i} is reopening its storage (see /healthz)"))
            })
    }

    /// Every shard's store, or the error of one that is reopening its storage.
    fn all_stores(&self) -> Result<Vec<Arc<dyn ShardStore>>, EngineError> {
        (0..self.shards()).map(|i| self.store(i)).collect()
    }

    /// A SKU's stock as of the last durable batch.
    pub fn head(&self, sku: &str) -> Result<Option<HeadRecord>, EngineError> {
        Ok(self.store(self.router.shard_of(sku))?.head(sku)?)
    }

    /// Up to `limit` heads in SKU order across the shards, those after `after`, as of
    /// their last durable batches: each shard's first `limit`, merged.
    pub fn heads_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, HeadRecord)>, EngineError> {
        let mut all = Vec::new();
        for store in self.all_stores()? {
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
        audit_across(&self.all_stores()?, &self.router, sku, since, limit)
    }

    /// The settings eras of the data directory (`settings.rs`), for the audit.
    pub fn settings_history(&self) -> &settings::History {
        &self.history
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
