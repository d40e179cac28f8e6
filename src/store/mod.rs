//! Storage: where a shard's log, state and idempotency keys live, behind a small trait so
//! the backend can be replaced when its durability or space use fails our tests (sled's
//! space use did: everything moved to fjall, see `disk.rs`).
//!
//! It stores what the core decides (`crate::core::records`: the rkyv record types) and
//! imports nothing above it.
//!
//! - `envelope.rs`: magic, schema version, length and CRC32C around every record.
//! - `keys.rs`: the idempotency keys, by hash, in an fjall LSM tree.
//! - `wal.rs`: the log's durable tail, one synchronous direct write per batch.
//! - `disk.rs`: a shard's storage: the tail, and in fjall the log up to the last
//!   checkpoint, the keys, and the state rows written at checkpoints (see
//!   `docs/durability.md`).
//! - `small_file.rs`: state kept beside the log (watermarks, rotated tokens), synced.

pub mod disk;
pub mod envelope;
pub mod keys;
pub mod small_file;
pub mod wal;

use crate::clock::Micros;
use crate::core::event::FirstResult;
use crate::core::records::{HeadRecord, LogRecord};
use crate::core::{ChannelRules, Effects, ShardState};

/// A SKU's on_hand movements by (source time, sequence number).
pub use crate::core::Movements;

pub use disk::DiskStore;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// fjall (the log, the keys, the state rows) refused or failed an operation.
    #[error("fjall: {0}")]
    Fjall(#[from] fjall::Error),
    /// A file operation (open, fdatasync) failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record failed its envelope check.
    #[error("corrupt record at {key}: {source}")]
    Corrupt {
        key: String,
        /// The log sequence number, when the record is a log record.
        seq: Option<u64>,
        source: envelope::EnvelopeError,
    },
    /// The log ends before the last record known acknowledged (`acknowledged`, written
    /// at each checkpoint): something below it was lost, a damaged journal batch most
    /// likely (fjall's reader stops at one).
    #[error(
        "the log ends at record {have} but records up to {acknowledged} were acknowledged: \
         records {} to {acknowledged} are missing (a damaged journal?); refusing to start \
         rather than serve less. Restore the data directory from a backup",
        have + 1
    )]
    Lost { have: u64, acknowledged: u64 },
    /// A commit whose log chunk is durable failed afterwards (writing its keys or a
    /// checkpoint): the batch is in the log, and a recovery applies it.
    #[error("{0} (after the batch was made durable)")]
    AfterDurable(Box<StoreError>),
    /// A write to a store opened only to be read (`DiskStore::open_read_only`).
    #[error("the store was opened read-only")]
    ReadOnly,
    /// Stored parts disagree with each other (a cached sum with its sources).
    #[error("inconsistent state for SKU {sku:?}: {detail}")]
    Inconsistent { sku: String, detail: String },
}

/// What recovery loads: every SKU's state and the last sequence number they include.
pub struct LoadedState {
    pub skus: ShardState,
    /// The sequence number of the last record whose effects the state includes.
    pub checkpoint: u64,
}

/// One shard's storage. Methods take `&self`: the shard thread writes, HTTP handlers read
/// at the same time, and the backend serializes internally.
pub trait ShardStore: Send + Sync + 'static {
    /// Loads every SKU's state as of the checkpoint (checking each record's envelope and
    /// each head's committed against its lines), movements left in storage; recovery
    /// replays the log past it.
    fn load_state(&self, channels: &ChannelRules) -> Result<LoadedState, StoreError>;
    /// A SKU's on_hand movements still kept, as of the last durable batch.
    fn movements(&self, sku: &str) -> Result<Movements, StoreError>;
    /// The source time of a SKU's oldest movement still kept, as of the last durable batch.
    fn oldest_movement(&self, sku: &str) -> Result<Option<Micros>, StoreError>;
    /// Log records with sequence numbers above `after`, in order. A damaged chunk of the
    /// log is reported as `StoreError::Corrupt` with the chunk's `seq` (its last record's),
    /// and iteration stops there.
    fn log_after(
        &self,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<Vec<LogRecord>, StoreError>> + '_>;
    /// Removes the log chunks whose last record is `from` or later; returns how many went.
    fn truncate_log_from(&self, from: u64) -> Result<usize, StoreError>;
    /// The highest sequence number in the log (0 when it is empty).
    fn last_seq(&self) -> Result<u64, StoreError>;
    /// The first result of an idempotency key a source gave for a SKU, while it is kept.
    fn lookup(&self, sku: &str, source: &str, key: &str)
        -> Result<Option<FirstResult>, StoreError>;
    /// Makes a batch's log records durable before returning; its state rows and new keys
    /// are then visible to readers and lookups, and reach storage at a checkpoint. An
    /// error after the records are durable is `StoreError::AfterDurable`.
    fn commit(&self, effects: &Effects) -> Result<(), StoreError>;
    /// Takes the effects of log records already stored (recovery's replay of the tail).
    fn reapply(&self, effects: &Effects) -> Result<(), StoreError>;
    /// Writes every pending state row and key now, with the checkpoint.
    fn checkpoint(&self) -> Result<(), StoreError>;
    /// Writes a checkpoint if enough records or time have gone by since the last.
    fn checkpoint_if_due(&self) -> Result<(), StoreError>;
    /// Forgets the idempotency keys of events applied before `applied_before`, a stored
    /// run of keys at a time, looking at no more than `max_runs` runs; returns how many
    /// keys went.
    fn sweep_expired_keys(
        &self,
        applied_before: Micros,
        max_runs: usize,
    ) -> Result<usize, StoreError>;
    /// The newest `applied_at` of the keys the sweep has forgotten (`Micros::MIN` when
    /// none): a fact first seen after it still has its keys. Kept across starts, so a
    /// retention raised since still knows what a shorter one forgot.
    fn keys_swept_to(&self) -> Micros;
    /// Up to `limit` SKUs' heads in SKU order, those after `after` (from the first when
    /// `None`), as of the last durable batch: reconciliation pages through them.
    fn heads_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, HeadRecord)>, StoreError>;
    /// A SKU's head, as of the last durable batch.
    fn head(&self, sku: &str) -> Result<Option<HeadRecord>, StoreError>;
    /// Log records newest first with `seq > since`, for one SKU or all, at most `limit`.
    fn audit(
        &self,
        sku: Option<&str>,
        since: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError>;
}
