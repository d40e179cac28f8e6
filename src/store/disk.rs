//! A shard's storage: the log's durable tail (`wal`, `wal.rs`) and one fjall database
//! (`lsm/` of the shard's directory: LSM trees sharing one journal) with three keyspaces.
//!
//! | keyspace  | key                                  | value        |
//! |-----------|--------------------------------------|--------------|
//! | `log`     | `L`, last seq of the chunk (u64 BE)  | LogChunk: one batch's records |
//! | `keys`    | key hash (u64 BE)                    | first records' seqs (`keys.rs`) |
//! | `state`   | `H`, sku                             | HeadRecord   |
//! | `state`   | `N`, sku, 0, line identity           | LineRecord   |
//! | `state`   | `D`, sku, 0, ts (sortable), seq      | DeltaRecord: one on_hand movement |
//! | `state`   | `K`, last seq of the checkpoint (u64 BE) | KeyRun: that checkpoint's new keys, for expiry |
//! | `state`   | `Mcheckpoint`                        | u64 LE: last seq the state rows include |
//! | `state`   | `Mlegacy_keys_through`               | u64 LE: last seq whose keys may be legacy |
//! | `state`   | `Mkeys_with_source_through`          | u64 LE: the last checkpoint this build wrote |
//!
//! **Legacy keys.** Builds before 2026-12-05 hashed a key with its SKU alone; since then
//! the event's source is part of the hash (`keys.rs`), so two senders' equal keys are
//! two keys. Keys stored the old way are still answered: an open that finds the last
//! checkpoint written by an older build (after an upgrade, or a rollback and back)
//! records it as `Mlegacy_keys_through`, and while a key run at or below it is kept, a
//! lookup that misses tries the old hash too. The expiry sweep forgets those
//! runs within the key retention, and the second read stops with them. (Until then, an
//! old key still stands for every source, as it did when it was stored.)
//!
//! **Per batch, one write: the log's tail.** A batch's records go in as one chunk,
//! written to the tail with one synchronous direct write before any of them is
//! acknowledged; that is the durable fact. The chunk stays in memory (`Pending`, which
//! log readers see after the `log` partition). The state rows (`H`, `N`, `D`) and the new
//! keys are the log's consequences: they stay in memory too (lookups see the keys there
//! first) and go to the `state` and `keys` partitions together at a checkpoint, every
//! `CHECKPOINT_RECORDS` records or `CHECKPOINT_AGE` (or when the tail is full), in one
//! atomic batch with the pending chunks and `Mcheckpoint`; then the journal is synced
//! and the tail starts over. On start, the tail's chunks past the partition's come back
//! into memory, and recovery loads the rows and replays the log past `Mcheckpoint`. At a
//! checkpoint a SKU's head is written once however many events changed it, and a line
//! opened and closed in between not at all.
//!
//! **Movements stay on disk.** Each on_hand movement newer than the SKU's count is a `D`
//! row for the horizon (72 h by default): every shipment is one, so a busy seller has
//! millions. Memory holds only their sum per SKU; the shard reads a SKU's rows
//! (`movements`) for the rare batch that needs them (a count, a fold).
//!
//! Why not sled, which held all of this at first: sled 0.34 copies the leaf each write
//! lands in, and keeps memory for every key it holds whatever its cache size; with a
//! row per shipment, its memory grew for as long as movements were kept (a heap profile:
//! sled's structures were 83 of the 144 MB heap peak after four minutes at 30,000 orders a
//! minute, and growing), and
//! a log or key write per event made ingest CPU-bound in sled (docs/durability.md has the
//! figures). sled's flush is not what an ack needs either: it uses `sync_file_range`,
//! which neither commits metadata nor empties the device's cache.
//!
//! The audit by SKU follows each record's `prev_seq` from the SKU's head instead of an
//! index. SKUs never contain NUL (ingest rejects control characters), so `sku, 0` is an
//! exact prefix.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use fjall::config::FilterPolicy;
use fjall::PersistMode;

use super::envelope::{self, decode, encode, read_archived};
use super::keys::{
    key_check, key_hash, legacy_key_check, legacy_key_hash, open_database, partition_options,
    KeyEntry, KeyRun, KeyStore, ANSWER_BYTES,
};
use super::wal::Wal;
use super::Movements;
use super::{LoadedState, ShardStore, StoreError};
use crate::clock::Micros;
use crate::core::event::{FirstResult, Outcome};
use crate::core::records::{DeltaRecord, HeadRecord, LineRecord, LogChunk, LogRecord};
use crate::core::{ChannelRules, Effects, ShardState, SkuState, StateWrite};

const CHECKPOINT_KEY: &[u8] = b"Mcheckpoint";
/// The last sequence number whose keys may be stored under their legacy hash (SKU and
/// key, without the source): the checkpoint's when a build that hashes the source opened
/// a directory whose last checkpoint an older build wrote, 0 when it never held such keys.
const LEGACY_KEYS_KEY: &[u8] = b"Mlegacy_keys_through";
/// The checkpoint as a build that hashes keys with their source last wrote it, in the
/// same atomic batch as `Mcheckpoint`: when the two differ at open, an older build
/// checkpointed since (a rollback and back), and its keys are legacy too.
const SOURCED_CHECKPOINT_KEY: &[u8] = b"Mkeys_with_source_through";
/// The newest `applied_at` of the key runs the sweep has forgotten (`keys_swept_to`).
const KEYS_SWEPT_KEY: &[u8] = b"Mkeys_swept_to";

/// A checkpoint is written once this many records are past the last one. Bounds the
/// replay on start (well under a second) and the memory `Pending` holds.
const CHECKPOINT_RECORDS: usize = 20_000;
/// ... or once the oldest pending record is this old, so a slow shard's replay stays short
/// and its rows reach the `state` partition within seconds.
const CHECKPOINT_AGE: Duration = Duration::from_secs(10);

/// One shard's storage: log, idempotency keys and state rows in one fjall keyspace.
pub struct DiskStore {
    /// The journal every partition shares; syncing it makes a batch's log durable.
    database: fjall::Database,
    /// Opened by a command that only inspects: nothing is written.
    read_only: bool,
    /// The log: one value per batch, keyed by its last sequence number (big-endian).
    log: fjall::Keyspace,
    /// The state rows, as of the last checkpoint.
    state: fjall::Keyspace,
    path: PathBuf,
    /// What the log holds beyond the last checkpoint; readers look here first.
    pending: Mutex<Pending>,
    /// Every idempotency key within retention (`keys.rs`), in the same keyspace.
    keys: KeyStore,
    /// The log's durable tail (`wal.rs`): what each commit waits for. `None` when only
    /// read. Locked after `pending`, never before.
    wal: Option<Mutex<Wal>>,
    /// `LEGACY_KEYS_KEY`'s value.
    legacy_through: u64,
    /// Whether a key run at or below `legacy_through` is still kept: a lookup that finds
    /// nothing under a key's hash then tries its legacy hash. Cleared once the sweep has
    /// forgotten them all, within the key retention of the upgrade.
    legacy_keys: AtomicBool,
    /// `KEYS_SWEPT_KEY`'s value: keys of events applied up to this time may be gone.
    keys_swept_to: std::sync::atomic::AtomicI64,
}

/// State rows and keys of the batches since the last checkpoint, newest value per row.
#[derive(Default)]
struct Pending {
    /// The log chunks since the last checkpoint, by their last sequence number: durable
    /// in the tail (`wal.rs`), stored in the `log` partition at the next checkpoint. All
    /// are newer than any chunk in the partition.
    log: BTreeMap<u64, Vec<u8>>,
    heads: AHashMap<String, HeadRecord>,
    lines: AHashMap<Vec<u8>, Option<LineRecord>>,
    /// Ordered, so that one SKU's movements are a range.
    deltas: BTreeMap<Vec<u8>, Option<DeltaRecord>>,
    /// The new keys, stored as this checkpoint's run.
    keys: KeyRun,
    /// The new keys' entries by hash, written to the `keys` partition at the checkpoint;
    /// lookups look here first.
    new_keys: AHashMap<u64, Vec<KeyEntry>>,
    /// The last sequence number whose effects are here (0: nothing pending).
    last_seq: u64,
    records: usize,
    since: Option<Instant>,
}

impl Pending {
    fn due(&self) -> bool {
        self.records >= CHECKPOINT_RECORDS
            || self.since.is_some_and(|t| t.elapsed() >= CHECKPOINT_AGE)
    }
}

/// A first result's answer as a key entry keeps it: a byte of outcome and oversell, then
/// on_hand, committed and available (i64, little-endian).
fn answer_of(first: &FirstResult) -> [u8; ANSWER_BYTES] {
    let mut out = [0u8; ANSWER_BYTES];
    out[0] = outcome_code(first.outcome) | if first.oversell { 0x80 } else { 0 };
    out[1..9].copy_from_slice(&first.on_hand.to_le_bytes());
    out[9..17].copy_from_slice(&first.committed.to_le_bytes());
    out[17..25].copy_from_slice(&first.available.to_le_bytes());
    out
}

/// The first result an entry keeps; `None` for an outcome code no build wrote.
fn first_result_from(entry: &KeyEntry) -> Option<FirstResult> {
    let a = &entry.answer;
    let i64_at = |at: usize| i64::from_le_bytes(a[at..at + 8].try_into().expect("8 bytes"));
    Some(FirstResult {
        outcome: outcome_of_code(a[0] & 0x7f)?,
        oversell: a[0] & 0x80 != 0,
        on_hand: i64_at(1),
        committed: i64_at(9),
        available: i64_at(17),
        seq: entry.seq,
    })
}

/// Outcome codes on disk: fixed, whatever the enum's order becomes.
const OUTCOME_CODES: [(Outcome, u8); 7] = [
    (Outcome::Applied, 1),
    (Outcome::Duplicate, 2),
    (Outcome::Stale, 3),
    (Outcome::Held, 4),
    (Outcome::Pushed, 5),
    (Outcome::Echo, 6),
    (Outcome::Drift, 7),
];

fn outcome_code(outcome: Outcome) -> u8 {
    OUTCOME_CODES
        .iter()
        .find(|(o, _)| *o == outcome)
        .map_or(0, |(_, c)| *c)
}

fn outcome_of_code(code: u8) -> Option<Outcome> {
    OUTCOME_CODES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(o, _)| *o)
}

/// The file that holds the shard's acknowledged high-water mark (a sequence number).
const ACKNOWLEDGED_FILE: &str = "acknowledged";

/// The acknowledged high-water mark, when a checkpoint has written one.
fn read_acknowledged(dir: &Path) -> Result<Option<u64>, StoreError> {
    let path = dir.join(ACKNOWLEDGED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    text.trim().parse().map(Some).map_err(|_| {
        StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} does not hold a sequence number: {text:?}",
                path.display()
            ),
        ))
    })
}

impl DiskStore {
    /// Opens (or creates) the shard database in `dir`.
    pub fn open(dir: &Path) -> Result<DiskStore, StoreError> {
        std::fs::create_dir_all(dir)?;
        Self::open_in(dir, false)
    }

    /// Opens an existing shard database to be read by a command that only inspects
    /// (`replay`, `audit`): what recovery re-applies stays in memory, and nothing of
    /// lockstep's is written (no checkpoint, no keys, no acknowledged mark); every write
    /// is `StoreError::ReadOnly`.
    pub fn open_read_only(dir: &Path) -> Result<DiskStore, StoreError> {
        if !dir.is_dir() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} does not exist", dir.display()),
            )));
        }
        Self::open_in(dir, true)
    }

    fn open_in(dir: &Path, read_only: bool) -> Result<DiskStore, StoreError> {
        let database = open_database(&dir.join("lsm"))?;
        // The log is read by ranges only: a Bloom filter would never be asked.
        let unfiltered = || partition_options().filter_policy(FilterPolicy::disabled());
        let log = database.keyspace("log", unfiltered)?;
        // The state rows are read by ranges (movements, key runs, reconciliation's pages)
        // or for SKUs that exist (heads): a Bloom filter, which only rules out absent
        // keys, would cost memory for every row version on disk and save no read.
        let state = database.keyspace("state", unfiltered)?;
        let keys = KeyStore::open(&database)?;
        // The directory entries must be durable too; they exist from here on.
        File::open(dir)?.sync_all()?;
        let stored = match log.last_key_value() {
            Some(item) => seq_of_log_key(&item.key()?),
            None => 0,
        };
        // The chunks after the partition's are in the tail (`wal.rs`), durable.
        let (wal, tail) = if read_only {
            (None, Wal::read_only(dir, stored)?)
        } else {
            let (wal, tail) = Wal::open(dir, stored)?;
            (Some(Mutex::new(wal)), tail)
        };
        // What was acknowledged must still be there: fjall's journal reader stops at a
        // damaged batch and serves what came before, silently. The mark is written after
        // a checkpoint stored every chunk up to it in the partition, so the partition
        // alone must reach it (the tail's chunks are past it, and cannot fill a gap).
        if let Some(acknowledged) = read_acknowledged(dir)? {
            let have = stored;
            if have < acknowledged {
                return Err(StoreError::Lost { have, acknowledged });
            }
        }
        if dir.join("db").exists() && state.is_empty()? {
            // An earlier build kept the state rows in sled (`db`, `conf`, `blobs/`,
            // `snap.*`): they are rebuilt from the log on this start.
            tracing::warn!(
                dir = %dir.display(),
                "state rows from an earlier version (sled) are rebuilt from the log; its files can be deleted"
            );
        }
        let legacy_through = legacy_keys_through(&database, &state, read_only)?;
        let keys_swept_to =
            stored_u64(&state, KEYS_SWEPT_KEY)?.map_or(Micros::MIN, |t| t as Micros);
        let store = DiskStore {
            database,
            read_only,
            log,
            state,
            path: dir.to_path_buf(),
            pending: Mutex::new(Pending {
                log: tail.into_iter().collect(),
                ..Pending::default()
            }),
            keys,
            wal,
            legacy_through,
            legacy_keys: AtomicBool::new(false),
            keys_swept_to: std::sync::atomic::AtomicI64::new(keys_swept_to),
        };
        store.note_legacy_keys()?;
        Ok(store)
    }

    /// Whether key runs stored under the legacy hash are still kept (`legacy_keys`).
    fn note_legacy_keys(&self) -> Result<(), StoreError> {
        let kept = match self.state.prefix(b"K").next() {
            Some(oldest) => {
                let key = oldest.key()?;
                if key.len() != 9 {
                    return Err(bad_key(&key));
                }
                seq_of_log_key(&key) <= self.legacy_through
            }
            None => false,
        };
        let was = self.legacy_keys.swap(kept, Ordering::Relaxed);
        if kept && !was {
            tracing::info!(
                dir = %self.path.display(),
                through_seq = self.legacy_through,
                "idempotency keys stored before 2026-12-05 are also looked up by their old hash until they expire"
            );
        } else if was && !kept {
            tracing::info!(
                dir = %self.path.display(),
                "the idempotency keys stored before 2026-12-05 have expired: lookups use one hash again"
            );
        }
        Ok(())
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding it leaves plain maps behind, still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a durable batch's state rows into `Pending` and its new keys into the key
    /// store (and `Pending`'s run), and writes a checkpoint when one is due.
    fn absorb(&self, effects: &Effects) -> Result<(), StoreError> {
        let Some(last) = effects.records.last() else {
            return Ok(());
        };
        let mut pending = self.pending();
        for new in &effects.first_results {
            let hash = key_hash(&new.sku, &new.source, &new.key);
            let entry = KeyEntry {
                seq: new.first.seq,
                check: key_check(&new.sku, &new.source, &new.key),
                answer: answer_of(&new.first),
            };
            let entries = pending.new_keys.entry(hash).or_default();
            if !entries.iter().any(|e| e.seq == entry.seq) {
                entries.push(entry);
            }
            pending.keys.entries.push((hash, new.first.seq));
        }
        for write in &effects.writes {
            match write {
                StateWrite::Head { sku, head } => {
                    pending.heads.insert(sku.clone(), head.clone());
                }
                StateWrite::Line { sku, id, line } => {
                    pending.lines.insert(line_key(sku, id), line.clone());
                }
                StateWrite::Delta {
                    sku,
                    ts,
                    seq,
                    delta,
                } => {
                    pending
                        .deltas
                        .insert(delta_key(sku, *ts, *seq), delta.clone());
                }
            }
        }
        // A batch's records share its `now` as `applied_at`.
        pending.keys.newest_applied_at = pending.keys.newest_applied_at.max(last.applied_at);
        pending.last_seq = last.seq;
        pending.records += effects.records.len();
        pending.since.get_or_insert_with(Instant::now);
        if pending.due() {
            self.write_checkpoint(&mut pending)?;
        }
        Ok(())
    }

    /// Writes every pending row and key with `Mcheckpoint` in one atomic batch. Readers
    /// wait on the lock meanwhile, so they never miss a row between memory and storage.
    fn write_checkpoint(&self, pending: &mut Pending) -> Result<(), StoreError> {
        // Read-only: the rows stay pending, in memory, where readers see them.
        if self.read_only {
            return Ok(());
        }
        // Chunks read back from the tail whose rows are not replayed yet: no checkpoint
        // can say they are included, but they can be stored.
        if pending.last_seq == 0 {
            return self.store_log(pending, u64::MAX).map(|_| ());
        }
        let state = &self.state;
        let mut batch = self.database.batch();
        for (sku, head) in &pending.heads {
            batch.insert(state, head_key(sku), encode(head));
        }
        let rows = pending
            .lines
            .iter()
            .map(|(k, v)| (k, v.as_ref().map(encode)));
        let deltas = pending
            .deltas
            .iter()
            .map(|(k, v)| (k, v.as_ref().map(encode)));
        for (key, value) in rows.chain(deltas) {
            match value {
                Some(value) => batch.insert(state, key.as_slice(), value),
                None => batch.remove(state, key.as_slice()),
            }
        }
        if !pending.keys.entries.is_empty() {
            batch.insert(state, run_key(pending.last_seq), encode(&pending.keys));
        }
        for (hash, entries) in &pending.new_keys {
            self.keys.stage(&mut batch, *hash, entries)?;
        }
        for (last_seq, chunk) in &pending.log {
            batch.insert(&self.log, log_key(*last_seq), chunk.as_slice());
        }
        batch.insert(state, CHECKPOINT_KEY, pending.last_seq.to_le_bytes());
        batch.insert(
            state,
            SOURCED_CHECKPOINT_KEY,
            pending.last_seq.to_le_bytes(),
        );
        // On an error everything stays pending: a later checkpoint then writes these rows
        // too (rewriting a row is harmless), never a checkpoint past rows it skipped.
        batch.commit()?;
        self.database.persist(PersistMode::SyncData)?;
        // The tail's chunks are all in the partition now, synced.
        self.reset_wal()?;
        // The high-water mark of what was acknowledged, outside fjall: checked at open.
        crate::store::small_file::write_durably(
            &self.path.join(ACKNOWLEDGED_FILE),
            pending.last_seq.to_string().as_bytes(),
            false,
        )?;
        *pending = Pending::default();
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes every journal of the closed shard database in `dir` again, byte for byte as
    /// it reads back, and syncs it; returns the bytes written. For after a failed write
    /// or `fdatasync`: Linux marks the pages of a failed writeback clean, so the page
    /// cache may hold a batch the disk does not, and anything appended after it would sit
    /// behind a hole that fjall's reader stops at after a power cut. Written again, the
    /// disk holds what the reopened database reads. Pages already evicted read back as
    /// what the disk holds, so writing them again changes nothing; the batch there was
    /// never acknowledged (its sync failed) and the reopened journal drops or keeps it
    /// whole.
    pub fn resync_journals(dir: &Path) -> Result<u64, StoreError> {
        use std::os::unix::fs::FileExt;
        let lsm = dir.join("lsm");
        let mut written = 0u64;
        // 64 KiB at a time; a chunk that reads as zeros is not written back: fjall sizes a
        // new journal ahead of its data, and writing that unwritten tail would allocate
        // it (up to the whole journal's size, on a disk that may have just been full).
        let mut buf = vec![0u8; 1 << 16];
        for entry in std::fs::read_dir(&lsm)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "jnl") {
                continue;
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?;
            let mut at = 0u64;
            loop {
                let n = file.read_at(&mut buf, at)?;
                if n == 0 {
                    break;
                }
                if buf[..n].iter().any(|b| *b != 0) {
                    file.write_all_at(&buf[..n], at)?;
                }
                at += n as u64;
            }
            file.sync_data()?;
            written += at;
        }
        File::open(&lsm)?.sync_all()?;
        Ok(written)
    }

    /// Moves the pending log chunks to the `log` partition and syncs it, leaving the rows
    /// pending and the checkpoint where it is, and removes every chunk, stored or
    /// pending, whose last record is `from` or later; returns how many were removed.
    /// The tail is then redundant and starts again: a removed chunk never comes back.
    fn store_log(&self, pending: &mut Pending, from: u64) -> Result<usize, StoreError> {
        self.writable()?;
        let mut batch = self.database.batch();
        let mut removed = 0;
        for item in self.log.range(log_key(from)..) {
            batch.remove(&self.log, item.key()?);
            removed += 1;
        }
        let dropped = pending.log.split_off(&from);
        removed += dropped.len();
        for (last_seq, chunk) in &pending.log {
            batch.insert(&self.log, log_key(*last_seq), chunk.as_slice());
        }
        batch.commit()?;
        self.database.persist(PersistMode::SyncData)?;
        pending.log.clear();
        self.reset_wal()?;
        Ok(removed)
    }

    /// The tail's chunks are stored in the partition (synced), or removed: writing
    /// starts over.
    fn reset_wal(&self) -> Result<(), StoreError> {
        match &self.wal {
            Some(wal) => wal.lock().unwrap_or_else(|e| e.into_inner()).reset(),
            None => Ok(()),
        }
    }

    /// Writes raw bytes as the log chunk ending at `last_seq`, bypassing the envelope.
    /// Only for tests that damage the log on purpose to exercise recovery.
    pub fn put_raw_log_chunk(&self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.writable()?;
        self.log.insert(log_key(last_seq), bytes)?;
        self.database.persist(PersistMode::SyncData)?;
        Ok(())
    }

    fn corrupt(key: &[u8], source: envelope::EnvelopeError) -> StoreError {
        StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            seq: (key.first() == Some(&b'L') && key.len() == 9).then(|| seq_of_log_key(key)),
            source,
        }
    }

    fn decode_at<T>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        decode::<T>(bytes).map_err(|source| Self::corrupt(key, source))
    }

    /// The record with sequence number `seq`, read out of its chunk without decoding the
    /// rest of the chunk. `None` if no chunk holds it.
    fn record_at(&self, seq: u64) -> Result<Option<LogRecord>, StoreError> {
        {
            // Pending chunks are newer than stored ones: one of them holds `seq`, or
            // none does.
            let pending = self.pending();
            if let Some((last_seq, chunk)) = pending.log.range(seq..).next() {
                let found = Self::record_in(&log_key(*last_seq), chunk, seq)?;
                if found.is_some() {
                    return Ok(found);
                }
            }
        }
        let Some(item) = self.log.range(log_key(seq)..).next() else {
            return Ok(None);
        };
        let (key, value) = item.into_inner()?;
        Self::record_in(&key, &value, seq)
    }

    /// The record `seq` out of the chunk stored under `key`, if the chunk holds it.
    fn record_in(key: &[u8], chunk: &[u8], seq: u64) -> Result<Option<LogRecord>, StoreError> {
        let found = read_archived::<LogChunk, _>(chunk, |chunk| {
            let first = chunk.first()?.seq.to_native();
            let record = chunk.get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
            rkyv::deserialize::<LogRecord, rkyv::rancor::Error>(record).ok()
        })
        .map_err(|source| Self::corrupt(key, source))?;
        Ok(found.filter(|record| record.seq == seq))
    }

    /// The record `seq`, which `by` (something of `sku`'s) names: missing is inconsistent.
    fn named_record(
        &self,
        seq: u64,
        sku: &str,
        by: impl FnOnce() -> String,
    ) -> Result<LogRecord, StoreError> {
        self.record_at(seq)?
            .ok_or_else(|| StoreError::Inconsistent {
                sku: sku.to_string(),
                detail: format!("{} names record {seq}, which the log does not hold", by()),
            })
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        Ok(())
    }

    fn read_u64(&self, key: &[u8]) -> Result<u64, StoreError> {
        Ok(stored_u64(&self.state, key)?.unwrap_or(0))
    }
}

/// `Mlegacy_keys_through` at open, written (and synced) when it changes: raised to the
/// checkpoint when the directory holds key runs and an older build wrote its last
/// checkpoint (`Mkeys_with_source_through` is not it: the first open after an upgrade,
/// or after a rollback and back); 0 for a new directory.
fn legacy_keys_through(
    database: &fjall::Database,
    state: &fjall::Keyspace,
    read_only: bool,
) -> Result<u64, StoreError> {
    let recorded = stored_u64(state, LEGACY_KEYS_KEY)?;
    let checkpoint = stored_u64(state, CHECKPOINT_KEY)?.unwrap_or(0);
    let older_build_last = stored_u64(state, SOURCED_CHECKPOINT_KEY)? != Some(checkpoint);
    let mut through = recorded.unwrap_or(0);
    if older_build_last && state.prefix(b"K").next().is_some() {
        through = through.max(checkpoint);
    }
    if !read_only && recorded != Some(through) {
        state.insert(LEGACY_KEYS_KEY, through.to_le_bytes())?;
        database.persist(PersistMode::SyncData)?;
    }
    Ok(through)
}

/// A `state` row holding a u64 (little-endian), if it is there.
fn stored_u64(state: &fjall::Keyspace, key: &[u8]) -> Result<Option<u64>, StoreError> {
    match state.get(key)? {
        Some(bytes) if bytes.len() == 8 => Ok(Some(u64::from_le_bytes(
            bytes[..].try_into().expect("8 bytes"),
        ))),
        Some(_) => Err(bad_key(key)),
        None => Ok(None),
    }
}

fn log_key(last_seq: u64) -> [u8; 9] {
    let mut key = [b'L'; 9];
    key[1..].copy_from_slice(&last_seq.to_be_bytes());
    key
}

fn run_key(last_seq: u64) -> [u8; 9] {
    let mut key = [b'K'; 9];
    key[1..].copy_from_slice(&last_seq.to_be_bytes());
    key
}

fn seq_of_log_key(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[1..9].try_into().expect("log keys are 9 bytes"))
}

/// `prefix, sku, 0`: the start of every per-SKU key.
fn sku_prefix(prefix: u8, sku: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(sku.len() + 2 + 24);
    key.push(prefix);
    key.extend_from_slice(sku.as_bytes());
    key.push(0);
    key
}

/// Maps i64 onto u64 so that big-endian bytes sort like the signed values.
fn sortable(ts: Micros) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

fn unsortable(bytes: &[u8]) -> Micros {
    (u64::from_be_bytes(bytes.try_into().expect("8 bytes")) ^ (1 << 63)) as Micros
}

fn head_key(sku: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(sku.len() + 1);
    key.push(b'H');
    key.extend_from_slice(sku.as_bytes());
    key
}

fn line_key(sku: &str, id: &str) -> Vec<u8> {
    let mut key = sku_prefix(b'N', sku);
    key.extend_from_slice(id.as_bytes());
    key
}

fn delta_key(sku: &str, ts: Micros, seq: u64) -> Vec<u8> {
    let mut key = sku_prefix(b'D', sku);
    key.extend_from_slice(&sortable(ts));
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The pending movement rows (new or removed) whose keys start with `prefix`, in order.
fn pending_deltas<'a>(
    pending: &'a Pending,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Option<DeltaRecord>)> + 'a {
    pending
        .deltas
        .range(prefix.to_vec()..)
        .take_while(move |(key, _)| key.starts_with(prefix))
}

/// The (ts, seq) of a `D` row's key.
fn delta_position(key: &[u8]) -> Result<(Micros, u64), StoreError> {
    match split_sku_key(key) {
        Some((_, rest)) if rest.len() == 16 => Ok((
            unsortable(&rest[..8]),
            u64::from_be_bytes(rest[8..].try_into().expect("8 bytes")),
        )),
        _ => Err(bad_key(key)),
    }
}

/// Splits `prefix, sku, 0, rest` into (sku, rest).
fn split_sku_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let body = &key[1..];
    let nul = body.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&body[..nul]).ok()?, &body[nul + 1..]))
}

impl ShardStore for DiskStore {
    fn load_state(&self, channels: &ChannelRules) -> Result<LoadedState, StoreError> {
        // The open lines first (few), then each head made a state as it is read: a
        // million heads are never held decoded all at once beside their states.
        let mut lines: AHashMap<String, AHashMap<String, LineRecord>> = AHashMap::new();
        for item in self.state.prefix(b"N") {
            let (key, value) = item.into_inner()?;
            let (sku, id) = split_sku_key(&key).ok_or_else(|| bad_key(&key))?;
            let line = Self::decode_at(&key, &value)?;
            lines
                .entry(sku.to_string())
                .or_default()
                .insert(String::from_utf8_lossy(id).into_owned(), line);
        }
        // Movements stay on disk (see the module doc): the shard reads a SKU's when a
        // batch needs them, and checks them against the head then.
        let mut skus = ShardState::default();
        for item in self.state.prefix(b"H") {
            let (key, value) = item.into_inner()?;
            let sku = String::from_utf8_lossy(&key[1..]);
            let head = Self::decode_at(&key, &value)?;
            let state =
                SkuState::from_parts(head, lines.remove(&*sku).unwrap_or_default(), channels)
                    .map_err(|detail| StoreError::Inconsistent {
                        sku: sku.to_string(),
                        detail,
                    })?;
            skus.insert(&sku, state);
        }
        if let Some(sku) = lines.keys().next() {
            return Err(StoreError::Inconsistent {
                sku: sku.clone(),
                detail: "order lines are stored without a head".into(),
            });
        }
        let checkpoint = self.read_u64(CHECKPOINT_KEY)?;
        Ok(LoadedState { skus, checkpoint })
    }

    fn movements(&self, sku: &str) -> Result<Movements, StoreError> {
        let prefix = sku_prefix(b'D', sku);
        // Held across the read, so a checkpoint cannot move rows out from under it.
        let pending = self.pending();
        let mut out = Movements::new();
        for item in self.state.prefix(&prefix) {
            let (key, value) = item.into_inner()?;
            out.insert(delta_position(&key)?, Self::decode_at(&key, &value)?);
        }
        for (key, delta) in pending_deltas(&pending, &prefix) {
            let at = delta_position(key)?;
            match delta {
                Some(delta) => out.insert(at, delta.clone()),
                None => out.remove(&at),
            };
        }
        Ok(out)
    }

    fn oldest_movement(&self, sku: &str) -> Result<Option<Micros>, StoreError> {
        let prefix = sku_prefix(b'D', sku);
        let pending = self.pending();
        // The oldest stored row that no pending change removed...
        let mut stored = None;
        for item in self.state.prefix(&prefix) {
            let key = item.key()?;
            if !matches!(pending.deltas.get(&*key), Some(None)) {
                stored = Some(delta_position(&key)?.0);
                break;
            }
        }
        // ... or the oldest pending new row, whichever is older.
        let added = pending_deltas(&pending, &prefix).find(|(_, delta)| delta.is_some());
        let added = added.map(|(key, _)| delta_position(key)).transpose()?;
        Ok(stored.into_iter().chain(added.map(|(ts, _)| ts)).min())
    }

    fn log_after(
        &self,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<Vec<LogRecord>, StoreError>> + '_> {
        let from = after.saturating_add(1);
        // Both read under the lock, so a checkpoint moving chunks from memory to the
        // partition cannot make one appear twice or not at all.
        let (stored, pending) = {
            let pending = self.pending();
            let stored = self.log.range(log_key(from)..);
            let newer: Vec<(u64, Vec<u8>)> = pending
                .log
                .range(from..)
                .map(|(seq, chunk)| (*seq, chunk.clone()))
                .collect();
            (stored, newer)
        };
        let stored = stored.map(|item| item.into_inner().map_err(StoreError::from));
        let pending = pending
            .into_iter()
            .map(|(seq, chunk)| Ok((log_key(seq).into(), chunk.into())));
        let mut failed = false;
        Box::new(
            stored
                .chain(pending)
                .map(
                    move |item: Result<(fjall::Slice, fjall::Slice), StoreError>| {
                        let (key, value) = item?;
                        let mut chunk = Self::decode_at::<LogChunk>(&key, &value)?;
                        chunk.retain(|r| r.seq > after);
                        Ok(chunk)
                    },
                )
                .take_while(move |item| {
                    let go_on = !failed;
                    failed |= item.is_err();
                    go_on
                }),
        )
    }

    fn truncate_log_from(&self, from: u64) -> Result<usize, StoreError> {
        let mut pending = self.pending();
        self.store_log(&mut pending, from)
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        if let Some(seq) = self.pending().log.keys().next_back() {
            return Ok(*seq);
        }
        match self.log.last_key_value() {
            Some(item) => Ok(seq_of_log_key(&item.key()?)),
            None => Ok(0),
        }
    }

    fn lookup(
        &self,
        sku: &str,
        source: &str,
        key: &str,
    ) -> Result<Option<FirstResult>, StoreError> {
        let check = key_check(sku, source, key);
        let hash = key_hash(sku, source, key);
        // Since the last checkpoint, else stored. Another key with the same hash has
        // another check: look at the next candidate.
        let new = self
            .pending()
            .new_keys
            .get(&hash)
            .and_then(|entries| entries.iter().find(|e| e.check == check).cloned());
        let mut found = match new {
            Some(entry) => Some(entry),
            None => self
                .keys
                .candidates(hash)?
                .into_iter()
                .find(|e| e.check == check),
        };
        if found.is_none() && self.legacy_keys.load(Ordering::Relaxed) {
            let check = legacy_key_check(sku, key);
            found = self
                .keys
                .stored(legacy_key_hash(sku, key))?
                .into_iter()
                .find(|e| e.check == check);
        }
        let Some(entry) = found else {
            return Ok(None);
        };
        first_result_from(&entry)
            .map(Some)
            .ok_or_else(|| StoreError::Inconsistent {
                sku: sku.to_string(),
                detail: format!(
                    "idempotency key {key:?}: its entry has an unknown outcome code {}",
                    entry.answer[0] & 0x7f
                ),
            })
    }

    fn commit(&self, effects: &Effects) -> Result<(), StoreError> {
        let Some(last) = effects.records.last() else {
            return Ok(());
        };
        // Only a store opened read-only has no tail.
        let wal = self.wal.as_ref().ok_or(StoreError::ReadOnly)?;
        let chunk = encode::<LogChunk>(&effects.records);
        {
            let mut pending = self.pending();
            // A full tail: the checkpoint stores what it holds, and it starts over.
            if !wal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .fits(chunk.len())
            {
                self.write_checkpoint(&mut pending)?;
            }
            let started = Instant::now();
            // One `O_DIRECT | O_DSYNC` write: durable when it returns.
            wal.lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(last.seq, &chunk)?;
            metrics::histogram!("lockstep_log_flush_seconds")
                .record(started.elapsed().as_secs_f64());
            pending.log.insert(last.seq, chunk);
        }
        // The batch is in the log from here on: a failure after it is not one that
        // leaves it out.
        self.absorb(effects)
            .map_err(|e| StoreError::AfterDurable(Box::new(e)))
    }

    fn reapply(&self, effects: &Effects) -> Result<(), StoreError> {
        self.absorb(effects)
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        let mut pending = self.pending();
        self.write_checkpoint(&mut pending)
    }

    fn checkpoint_if_due(&self) -> Result<(), StoreError> {
        let mut pending = self.pending();
        if pending.due() {
            self.write_checkpoint(&mut pending)?;
        }
        Ok(())
    }

    fn sweep_expired_keys(
        &self,
        applied_before: Micros,
        max_runs: usize,
    ) -> Result<usize, StoreError> {
        // Runs are keyed by sequence number, so the oldest come first; a run goes whole,
        // once even its newest key is past retention.
        self.writable()?;
        let mut batch = self.database.batch();
        let mut expired = Vec::new();
        for item in self.state.prefix(b"K").take(max_runs) {
            let (key, value) = item.into_inner()?;
            let run: KeyRun = Self::decode_at(&key, &value)?;
            if run.newest_applied_at >= applied_before {
                break;
            }
            batch.remove(&self.state, key);
            expired.push(run);
        }
        if expired.is_empty() {
            return Ok(0);
        }
        // Runs go oldest first, so the newest time among them is where forgetting stands.
        let swept_to = expired
            .iter()
            .map(|r| r.newest_applied_at)
            .max()
            .unwrap_or(Micros::MIN)
            .max(self.keys_swept_to());
        batch.insert(&self.state, KEYS_SWEPT_KEY, (swept_to as u64).to_le_bytes());
        // Keys first, then the runs: a crash in between leaves runs whose keys are gone,
        // and forgetting them again is harmless. Not synced on purpose, for that reason
        // (a lost `KEYS_SWEPT_KEY` is written again when those runs are swept again).
        let mut forgotten = 0;
        for run in &expired {
            forgotten += run.entries.len();
            for (hash, seq) in &run.entries {
                self.keys.remove(*hash, *seq)?;
            }
        }
        batch.commit()?;
        self.keys_swept_to.fetch_max(swept_to, Ordering::Relaxed);
        if self.legacy_keys.load(Ordering::Relaxed) {
            self.note_legacy_keys()?;
        }
        Ok(forgotten)
    }

    fn keys_swept_to(&self) -> Micros {
        self.keys_swept_to.load(Ordering::Relaxed)
    }

    fn heads_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, HeadRecord)>, StoreError> {
        use std::ops::Bound;
        // Held across the read, so a checkpoint cannot move rows out from under it.
        let pending = self.pending();
        let start = match after {
            Some(sku) => Bound::Excluded(head_key(sku)),
            None => Bound::Included(b"H".to_vec()),
        };
        // The first `limit` stored heads past `after`, and every pending head past it
        // (newer, so it wins): the page is the first `limit` of their union.
        let mut page: BTreeMap<String, HeadRecord> = BTreeMap::new();
        for item in self
            .state
            .range((start, Bound::Excluded(b"I".to_vec())))
            .take(limit)
        {
            let (key, value) = item.into_inner()?;
            page.insert(
                String::from_utf8_lossy(&key[1..]).into_owned(),
                Self::decode_at(&key, &value)?,
            );
        }
        // With `limit` stored heads, a pending head past the last of them cannot make
        // the page: only those up to it are copied, not every pending head per page.
        let last = (page.len() == limit)
            .then(|| page.keys().next_back().cloned())
            .flatten();
        for (sku, head) in &pending.heads {
            let past_after = after.is_none_or(|a| sku.as_str() > a);
            if past_after && last.as_ref().is_none_or(|last| sku <= last) {
                page.insert(sku.clone(), head.clone());
            }
        }
        Ok(page.into_iter().take(limit).collect())
    }

    fn head(&self, sku: &str) -> Result<Option<HeadRecord>, StoreError> {
        if let Some(head) = self.pending().heads.get(sku) {
            return Ok(Some(head.clone()));
        }
        let key = head_key(sku);
        match self.state.get(&key)? {
            Some(bytes) => Ok(Some(Self::decode_at(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    fn audit(
        &self,
        sku: Option<&str>,
        since: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let mut out = Vec::new();
        match sku {
            Some(sku) => {
                // Walk the SKU's chain from its newest record.
                let mut next = self.head(sku)?.map_or(0, |h| h.last_seq);
                while next > since && out.len() < limit {
                    let record = self.named_record(next, sku, || "its audit chain".to_string())?;
                    if record.sku != sku {
                        return Err(StoreError::Inconsistent {
                            sku: sku.to_string(),
                            detail: format!(
                                "its audit chain reached record {next} of SKU {:?}",
                                record.sku
                            ),
                        });
                    }
                    next = record.prev_seq;
                    out.push(record);
                }
            }
            None => {
                let from = since.saturating_add(1);
                // Newest first: the pending chunks, then the stored ones. The stored ones'
                // iterator is opened under the lock, so a checkpoint moving chunks from
                // memory to the partition cannot make one appear twice or not at all;
                // the lock is let go before they are read (the shard commits under it).
                let take = |key: &[u8], chunk: &[u8], out: &mut Vec<LogRecord>| {
                    let chunk = Self::decode_at::<LogChunk>(key, chunk)?;
                    for record in chunk.into_iter().rev() {
                        if record.seq <= since || out.len() >= limit {
                            return Ok::<bool, StoreError>(false);
                        }
                        out.push(record);
                    }
                    Ok(true)
                };
                let stored = {
                    let pending = self.pending();
                    for (seq, chunk) in pending.log.range(from..).rev() {
                        if !take(&log_key(*seq), chunk, &mut out)? {
                            return Ok(out);
                        }
                    }
                    self.log.range(log_key(from)..).rev()
                };
                for item in stored {
                    let (key, value) = item.into_inner()?;
                    if !take(&key, &value, &mut out)? {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }
}

fn bad_key(key: &[u8]) -> StoreError {
    StoreError::Inconsistent {
        sku: String::new(),
        detail: format!("malformed key {:?}", String::from_utf8_lossy(key)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// `state` with every SKU's stored movements loaded (recovery leaves them on disk).
    pub(crate) fn with_movements(store: &DiskStore, mut state: ShardState) -> ShardState {
        for (sku, sku_state) in state.iter_mut() {
            sku_state
                .load_movements(store.movements(sku).unwrap())
                .unwrap();
        }
        state
    }

    use super::*;
    use crate::clock::MICROS_PER_HOUR;
    use crate::core::event::{Event, EventKind};
    use crate::core::{apply, CoreConfig, Input, ShardState};

    fn adjust(key: &str, at: Micros) -> Input {
        Input {
            event: Event {
                sku: "SKU".into(),
                kind: EventKind::Adjusted,
                qty: 1,
                source: "test".into(),
                source_ts: at,
                received_at: at,
                key: key.into(),
                line: None,
                origin: None,
            },
            prior: None,
        }
    }

    #[test]
    fn the_sweep_forgets_only_keys_older_than_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(&dir.path().join("shard")).unwrap();
        let mut state = ShardState::default();
        let config = CoreConfig::default();
        let old = 1_800_000_000_000_000;
        let new = old + 200 * MICROS_PER_HOUR;
        store
            .commit(&apply(
                &mut state,
                &[adjust("old-1", old), adjust("old-2", old)],
                old,
                1,
                &config,
            ))
            .unwrap();
        // Each checkpoint stores its new keys as one run.
        store.checkpoint().unwrap();
        store
            .commit(&apply(&mut state, &[adjust("new-1", new)], new, 3, &config))
            .unwrap();
        store.checkpoint().unwrap();

        let forgotten = store
            .sweep_expired_keys(new - 168 * MICROS_PER_HOUR, 64)
            .unwrap();
        assert_eq!(forgotten, 2);
        assert_eq!(store.lookup("SKU", "test", "old-1").unwrap(), None);
        assert_eq!(store.lookup("SKU", "test", "old-2").unwrap(), None);
        assert!(
            store.lookup("SKU", "test", "new-1").unwrap().is_some(),
            "a key within retention is kept"
        );
        assert_eq!(
            store
                .sweep_expired_keys(new - 168 * MICROS_PER_HOUR, 64)
                .unwrap(),
            0,
            "a chunk is swept once"
        );
        // The log itself stays: the audit and replay still have every event.
        assert_eq!(store.audit(Some("SKU"), 0, 10).unwrap().len(), 3);
        // Where forgetting stands (the newest time among the runs swept), kept across a
        // start: a retention raised since would otherwise take those keys for kept.
        assert_eq!(store.keys_swept_to(), old);
        drop(store);
        let store = DiskStore::open(&dir.path().join("shard")).unwrap();
        assert_eq!(store.keys_swept_to(), old);
        let fresh = DiskStore::open(&dir.path().join("other")).unwrap();
        assert_eq!(fresh.keys_swept_to(), Micros::MIN, "nothing swept yet");
    }

    /// What a build before 2026-12-05 writes when it checkpoints one key of SKU `SKU`:
    /// the key under its legacy hash, answering `first`, its run (applied at `at`) and the
    /// checkpoint at `first.seq`; it knows nothing of the rows this build keeps.
    fn checkpoint_as_an_older_build(store: &DiskStore, key: &str, first: FirstResult, at: Micros) {
        let hash = legacy_key_hash("SKU", key);
        let entry = KeyEntry {
            seq: first.seq,
            check: legacy_key_check("SKU", key),
            answer: answer_of(&first),
        };
        store.keys.insert(hash, entry).unwrap();
        let run = KeyRun {
            newest_applied_at: at,
            entries: vec![(hash, first.seq)],
        };
        store
            .state
            .insert(run_key(first.seq), encode(&run))
            .unwrap();
        store
            .state
            .insert(CHECKPOINT_KEY, first.seq.to_le_bytes())
            .unwrap();
        store.database.persist(PersistMode::SyncAll).unwrap();
    }

    /// The first result of an adjustment to `on_hand`, logged at `seq`.
    fn first_at(seq: u64, on_hand: i64) -> FirstResult {
        FirstResult {
            outcome: Outcome::Applied,
            oversell: false,
            on_hand,
            committed: 0,
            available: on_hand,
            seq,
        }
    }

    /// A directory an older build left (keys hashed without their source, no
    /// `Mlegacy_keys_through`): its keys still answer, for any source, until the sweep
    /// forgets their run; a new directory never reads the legacy hash.
    #[test]
    fn keys_stored_before_the_source_was_hashed_answer_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let at = 1_800_000_000_000_000;
        let first = first_at(5, 4);
        {
            let store = DiskStore::open(&path).unwrap();
            assert!(
                !store.legacy_keys.load(Ordering::Relaxed),
                "a new directory"
            );
            checkpoint_as_an_older_build(&store, "delivery-1", first, at);
            // An older build never wrote it.
            store.state.remove(LEGACY_KEYS_KEY).unwrap();
            store.database.persist(PersistMode::SyncAll).unwrap();
        }
        let store = DiskStore::open(&path).unwrap();
        assert_eq!(store.read_u64(LEGACY_KEYS_KEY).unwrap(), 5);
        assert_eq!(
            store.lookup("SKU", "erp", "delivery-1").unwrap(),
            Some(first),
            "a redelivery of an event acknowledged before the upgrade is a duplicate"
        );
        assert_eq!(store.lookup("SKU", "erp", "delivery-2").unwrap(), None);
        assert_eq!(store.sweep_expired_keys(at + 1, 64).unwrap(), 1);
        assert!(!store.legacy_keys.load(Ordering::Relaxed));
        assert_eq!(store.lookup("SKU", "erp", "delivery-1").unwrap(), None);
        drop(store);
        let store = DiskStore::open(&path).unwrap();
        assert_eq!(store.read_u64(LEGACY_KEYS_KEY).unwrap(), 5, "written once");
        assert!(!store.legacy_keys.load(Ordering::Relaxed));
    }

    /// A rollback to an older build and back: keys the older build checkpointed in
    /// between are legacy too, though this build had opened the directory before.
    #[test]
    fn keys_an_older_build_stored_after_a_rollback_still_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let at = 1_800_000_000_000_000;
        let first = first_at(2, 2);
        {
            let store = DiskStore::open(&path).unwrap();
            let mut state = ShardState::default();
            let effects = apply(
                &mut state,
                &[adjust("new-1", at)],
                at,
                1,
                &CoreConfig::default(),
            );
            store.commit(&effects).unwrap();
            store.checkpoint().unwrap();
            assert_eq!(store.read_u64(SOURCED_CHECKPOINT_KEY).unwrap(), 1);
            checkpoint_as_an_older_build(&store, "rolled-back", first, at);
        }
        let store = DiskStore::open(&path).unwrap();
        assert_eq!(store.read_u64(LEGACY_KEYS_KEY).unwrap(), 2);
        assert_eq!(
            store.lookup("SKU", "erp", "rolled-back").unwrap(),
            Some(first)
        );
        assert!(store.lookup("SKU", "test", "new-1").unwrap().is_some());
    }

    /// A mixed batch on a few SKUs: counts, placements (some overselling), shipments,
    /// cancellations and a duplicate, keyed `{tag}-{i}`.
    pub(crate) fn mixed(tag: &str, at: Micros) -> Vec<Input> {
        use crate::core::event::LineRef;
        let kinds = [
            (EventKind::Counted, 3),
            (EventKind::OrderPlaced, 2),
            (EventKind::OrderPlaced, 5),
            (EventKind::OrderShipped, 2),
            (EventKind::OrderCancelled, 5),
            (EventKind::Adjusted, -1),
        ];
        let mut inputs = Vec::new();
        for (i, (kind, qty)) in kinds.iter().enumerate() {
            for sku in ["A", "B"] {
                let mut input = adjust(&format!("{tag}-{i}"), at + i as Micros);
                input.event.sku = sku.into();
                input.event.kind = *kind;
                input.event.qty = *qty;
                if !matches!(kind, EventKind::Counted | EventKind::Adjusted) {
                    let line = if i == 2 || i == 4 { "2" } else { "1" };
                    input.event.line = Some(LineRef {
                        order_id: format!("{tag}-order"),
                        line_id: line.into(),
                    });
                    input.event.key = format!("{tag}-{sku}-{line}-{kind:?}");
                }
                inputs.push(input);
            }
        }
        let again = inputs[2].clone();
        inputs.push(again);
        inputs
    }

    #[test]
    fn a_key_s_first_result_is_read_back_from_its_log_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(&dir.path().join("shard")).unwrap();
        let mut state = ShardState::default();
        let effects = apply(
            &mut state,
            &mixed("t", 1_800_000_000_000_000),
            1_800_000_000_000_000,
            1,
            &CoreConfig::default(),
        );
        assert!(effects.first_results.iter().any(|new| new.first.oversell));
        store.commit(&effects).unwrap();
        let found = |store: &DiskStore, new: &crate::core::FirstUse| {
            store.lookup(&new.sku, &new.source, &new.key).unwrap()
        };
        for new in &effects.first_results {
            assert_eq!(found(&store, new), Some(new.first), "{new:?}");
        }
        assert_eq!(store.lookup("A", "test", "never-seen").unwrap(), None);
        assert_eq!(
            store.lookup("B", "test", "t-0").unwrap().unwrap().seq,
            2,
            "keys are per SKU"
        );
        // In memory until the checkpoint writes them, then read from the partition.
        let first = &effects.first_results[0];
        let hash = key_hash(&first.sku, &first.source, &first.key);
        assert!(store.keys.candidates(hash).unwrap().is_empty());
        store.checkpoint().unwrap();
        drop(store);
        let store = DiskStore::open(&dir.path().join("shard")).unwrap();
        assert_eq!(store.keys.candidates(hash).unwrap().len(), 1);
        for new in &effects.first_results {
            assert_eq!(found(&store, new), Some(new.first), "{new:?}");
        }
    }

    /// A batch's chunk lives in the tail until a checkpoint: read back from it after a
    /// crash (the store dropped without one), by every log reader; then stored in the
    /// partition, and the tail started over, so no chunk is read twice or lost; and a
    /// chunk removed by `truncate_log_from` never comes back.
    #[test]
    fn a_chunk_is_read_back_from_the_tail_until_a_checkpoint_stores_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let config = CoreConfig::default();
        let at = 1_800_000_000_000_000;
        let seqs = |store: &DiskStore| -> Vec<u64> {
            store
                .log_after(0)
                .flat_map(|chunk| chunk.unwrap())
                .map(|r| r.seq)
                .collect()
        };
        let mut state = ShardState::default();
        let mut next = 1;
        let mut commit = |store: &DiskStore, tag: &str| {
            let inputs = mixed(tag, at);
            let effects = apply(&mut state, &inputs, at, next, &config);
            next += inputs.len() as u64;
            store.commit(&effects).unwrap();
            next - 1
        };
        let store = DiskStore::open(&path).unwrap();
        let first = commit(&store, "a");
        let second = commit(&store, "b");
        let all: Vec<u64> = (1..=second).collect();
        drop(store); // a crash: no checkpoint
        assert!(Wal::read_only(&path, 0).unwrap().len() == 2);

        let store = DiskStore::open(&path).unwrap();
        assert_eq!(seqs(&store), all, "read back from the tail");
        assert_eq!(store.last_seq().unwrap(), second);
        assert_eq!(store.record_at(first).unwrap().unwrap().seq, first);
        let newest: Vec<u64> = store
            .audit(None, 0, 3)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(newest, vec![second, second - 1, second - 2]);
        assert!(
            store.log.is_empty().unwrap(),
            "nothing in the partition yet"
        );
        // No rows replayed: the checkpoint stores the chunks alone.
        store.checkpoint().unwrap();
        assert_eq!(seqs(&store), all, "the same once stored");
        assert!(!store.log.is_empty().unwrap());
        drop(store);
        let store = DiskStore::open(&path).unwrap();
        assert_eq!(seqs(&store), all, "each chunk once: the tail started over");
        // A checkpoint with rows stores its chunk with them.
        let third = commit(&store, "c");
        store.checkpoint().unwrap();
        drop(store);
        let store = DiskStore::open(&path).unwrap();
        let all: Vec<u64> = (1..=third).collect();
        assert_eq!(seqs(&store), all);
        let fourth = commit(&store, "d");
        // Newest first across memory and the partition.
        let limit = (fourth - third) as usize + 2;
        let newest: Vec<u64> = store
            .audit(None, 0, limit)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(newest, (third - 1..=fourth).rev().collect::<Vec<u64>>());
        assert_eq!(store.audit(None, fourth - 1, 10).unwrap().len(), 1);
        assert_eq!(store.truncate_log_from(third + 1).unwrap(), 1);
        drop(store);
        let store = DiskStore::open(&path).unwrap();
        assert_eq!(
            seqs(&store),
            all,
            "the removed chunk (to {fourth}) stays removed"
        );
    }

    #[test]
    fn heads_come_in_pages_in_sku_order_pending_over_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(&dir.path().join("shard")).unwrap();
        let config = CoreConfig::default();
        let mut state = ShardState::default();
        let at = 1_800_000_000_000_000;
        let batch = |names: &[&str], tag: &str| -> Vec<Input> {
            names
                .iter()
                .map(|sku| {
                    let mut input = adjust(&format!("{tag}-{sku}"), at);
                    input.event.sku = sku.to_string();
                    input
                })
                .collect()
        };
        // B, D, F stored at a checkpoint; then A, D (again) and E pending.
        store
            .commit(&apply(
                &mut state,
                &batch(&["F", "B", "D"], "one"),
                at,
                1,
                &config,
            ))
            .unwrap();
        store.checkpoint().unwrap();
        store
            .commit(&apply(
                &mut state,
                &batch(&["E", "D", "A"], "two"),
                at,
                4,
                &config,
            ))
            .unwrap();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.heads_after(after.as_deref(), 2).unwrap();
            assert!(page.len() <= 2);
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            seen.extend(page);
        }
        let names: Vec<&str> = seen.iter().map(|(sku, _)| sku.as_str()).collect();
        assert_eq!(names, ["A", "B", "D", "E", "F"]);
        // Every head is the newest: D's includes its pending second adjustment.
        for (sku, head) in &seen {
            assert_eq!(*head, state[sku.as_str()].head(&config.channels), "{sku}");
        }
        assert_eq!(seen[2].1.on_hand, 2);
    }

    #[test]
    fn the_audit_chain_skips_other_skus_and_honours_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(&dir.path().join("shard")).unwrap();
        let mut state = ShardState::default();
        let at = 1_800_000_000_000_000;
        let mut inputs = Vec::new();
        for i in 0..6 {
            let mut input = adjust(&format!("k{i}"), at);
            input.event.sku = if i % 2 == 0 { "EVEN" } else { "ODD" }.into();
            inputs.push(input);
        }
        store
            .commit(&apply(
                &mut state,
                &inputs[..4],
                at,
                1,
                &CoreConfig::default(),
            ))
            .unwrap();
        store
            .commit(&apply(
                &mut state,
                &inputs[4..],
                at,
                5,
                &CoreConfig::default(),
            ))
            .unwrap();
        let seqs = |sku, since| -> Vec<u64> {
            store
                .audit(Some(sku), since, 10)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect()
        };
        assert_eq!(seqs("EVEN", 0), vec![5, 3, 1]);
        assert_eq!(seqs("ODD", 0), vec![6, 4, 2]);
        assert_eq!(seqs("ODD", 2), vec![6, 4]);
        let all: Vec<u64> = store
            .audit(None, 2, 3)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(all, vec![6, 5, 4]);
    }
}
