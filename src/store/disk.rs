//! A shard's storage: the log and the idempotency keys in an fjall keyspace (`lsm/` of
//! the shard's directory: LSM trees sharing one journal), the state rows in sled.
//!
//! | where | key                                 | value        |
//! |-------|-------------------------------------|--------------|
//! | fjall `log`  | `L`, last seq of the chunk (u64 BE) | LogChunk: one batch's records |
//! | fjall `keys` | key hash (u64 BE)            | first records' seqs (`keys.rs`) |
//! | sled `H` | sku                              | HeadRecord   |
//! | sled `N` | sku, 0, line identity            | LineRecord   |
//! | sled `D` | sku, 0, ts (sortable), seq       | DeltaRecord  |
//! | sled `K` | last seq of the checkpoint (u64 BE) | KeyRun: that checkpoint's new keys, for expiry |
//! | sled `M` | `checkpoint`                     | u64 LE: last seq the state rows include |
//!
//! **Per batch, one write: the log.** A batch's records go in as one value and the
//! journal is `fdatasync`ed before any of them is acknowledged; that is the durable fact.
//! The state rows (`H`, `N`, `D`) and the new keys are the log's consequences: the rows
//! stay in memory (`Pending`, which readers see) and go to sled together at a checkpoint,
//! every `CHECKPOINT_RECORDS` records or `CHECKPOINT_AGE`, in one atomic batch with
//! `Mcheckpoint`, after the keys' journal is synced. On start, recovery loads the rows
//! and replays the log past `Mcheckpoint`. At a checkpoint a SKU's head is written once
//! however many events changed it, and a line opened and closed in between not at all.
//!
//! Why not all in sled: sled 0.34 copies the leaf each write lands in and keeps memory for
//! every key it holds, whatever its cache size, so a head, a line and a key per event (or
//! even one log key per batch, ~500 a second at 10,000 orders/min) made ingest CPU-bound
//! in sled and memory grow for as long as the keys were kept (docs/durability.md has the
//! figures). sled's flush is not what an ack waits for either: it uses
//! `sync_file_range`, which neither commits metadata nor empties the device's cache.
//!
//! The audit by SKU follows each record's `prev_seq` from the SKU's head instead of an
//! index. SKUs never contain NUL (ingest rejects control characters), so `sku, 0` is an
//! exact prefix.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ahash::AHashMap;

use super::envelope::{self, decode, encode, read_archived};
use super::keys::{key_hash, open_keyspace, KeyRun, KeyStore, MEMTABLE_BYTES};
use super::records::{DeltaRecord, HeadRecord, LineRecord, LogChunk, LogRecord};
use super::{LoadedState, ShardStore, StoreError};
use crate::clock::Micros;
use crate::engine::core::{ChannelRule, Effects, SkuState, StateWrite};
use crate::engine::event::FirstResult;

const CHECKPOINT_KEY: &[u8] = b"Mcheckpoint";

/// A checkpoint is written once this many records are past the last one. Bounds the
/// replay on start (well under a second) and the memory `Pending` holds.
const CHECKPOINT_RECORDS: usize = 20_000;
/// ... or once the oldest pending record is this old, so a slow shard's replay stays short
/// and its rows reach sled's files within seconds.
const CHECKPOINT_AGE: Duration = Duration::from_secs(10);

/// One shard's storage: the log and the idempotency keys in an fjall keyspace (`lsm/`),
/// the state rows in sled.
pub struct DiskStore {
    db: sled::Db,
    /// The journal both partitions share; syncing it makes a batch's log durable.
    keyspace: fjall::Keyspace,
    /// The log: one value per batch, keyed by its last sequence number (big-endian).
    log: fjall::PartitionHandle,
    path: PathBuf,
    /// What the log holds beyond the last checkpoint; readers look here before sled.
    pending: Mutex<Pending>,
    /// Every idempotency key within retention (`keys.rs`), in the same keyspace.
    keys: KeyStore,
}

/// State rows and keys of the batches since the last checkpoint, newest value per row.
#[derive(Default)]
struct Pending {
    heads: AHashMap<String, HeadRecord>,
    lines: AHashMap<Vec<u8>, Option<LineRecord>>,
    deltas: AHashMap<Vec<u8>, Option<DeltaRecord>>,
    /// The new keys, stored as this checkpoint's run.
    keys: KeyRun,
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

/// The first result an idempotency key's first record stands for.
fn first_result_of(record: &LogRecord) -> FirstResult {
    FirstResult {
        outcome: record.outcome,
        oversell: record.oversell,
        on_hand: record.on_hand_after,
        committed: record.committed_after,
        available: record.available_after,
        seq: record.seq,
    }
}

/// sled's page cache per shard. sled's default is 1 GiB per database, which a long run
/// fills with pages it wrote and rarely reads again; and sled's resident memory is
/// several times its nominal cache (a scratch program of ours, not kept: 2M keys at
/// 64 MiB, 480 MiB resident; at 4 MiB, 165 MiB). sled now takes only the rows that changed, at checkpoints, so a
/// small cache costs little throughput and bounds memory.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

impl DiskStore {
    /// Opens (or creates) the shard database in `dir`.
    pub fn open(dir: &Path) -> Result<DiskStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        let keyspace = open_keyspace(&dir.join("lsm"))?;
        let log = keyspace.open_partition(
            "log",
            fjall::PartitionCreateOptions::default()
                .max_memtable_size(MEMTABLE_BYTES)
                .manual_journal_persist(true)
                // Read by ranges only: a Bloom filter would never be asked.
                .bloom_filter_bits(None),
        )?;
        let keys = KeyStore::open(&keyspace)?;
        // The directory entries must be durable too; they exist from here on.
        File::open(dir)?.sync_all()?;
        let store = DiskStore {
            db,
            keyspace,
            log,
            path: dir.to_path_buf(),
            pending: Mutex::new(Pending::default()),
            keys,
        };
        store.migrate_key_rows()?;
        Ok(store)
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
        for (sku, key, first) in &effects.first_results {
            let hash = key_hash(sku, key);
            self.keys.insert(hash, first.seq)?;
            pending.keys.entries.push((hash, first.seq));
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

    /// Data written before runs existed kept one `I{sku}\0{key}` row (the first result)
    /// per key: they become one run, kept a full retention from now, and the rows go.
    fn migrate_key_rows(&self) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut entries = Vec::new();
        for item in self.db.scan_prefix(b"I") {
            let (key, value) = item?;
            let (sku, idem) = split_sku_key(&key).ok_or_else(|| bad_key(&key))?;
            let first: FirstResult = Self::decode_at(&key, &value)?;
            let hash = key_hash(sku, &String::from_utf8_lossy(idem));
            self.keys.insert(hash, first.seq)?;
            entries.push((hash, first.seq));
            batch.remove(key);
        }
        let Some(last) = entries.iter().map(|e| e.1).max() else {
            return Ok(());
        };
        let run = KeyRun {
            newest_applied_at: crate::clock::now_micros(),
            entries,
        };
        batch.insert(&run_key(last), encode(&run));
        self.keys.persist()?;
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Writes every pending row and key with `Mcheckpoint` in one atomic batch. Readers
    /// wait on the lock meanwhile, so they never miss a row between memory and sled.
    fn write_checkpoint(&self, pending: &mut Pending) -> Result<(), StoreError> {
        if pending.last_seq == 0 {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (sku, head) in &pending.heads {
            batch.insert(head_key(sku), encode(head));
        }
        for (key, line) in &pending.lines {
            match line {
                Some(line) => batch.insert(key.as_slice(), encode(line)),
                None => batch.remove(key.as_slice()),
            }
        }
        for (key, delta) in &pending.deltas {
            match delta {
                Some(delta) => batch.insert(key.as_slice(), encode(delta)),
                None => batch.remove(key.as_slice()),
            }
        }
        if !pending.keys.entries.is_empty() {
            batch.insert(&run_key(pending.last_seq), encode(&pending.keys));
        }
        batch.insert(CHECKPOINT_KEY, &pending.last_seq.to_le_bytes());
        // The keys first: the checkpoint must never say stored what the key store could
        // still lose.
        self.keys.persist()?;
        // On an error nothing was written and everything stays pending: a later checkpoint
        // then writes these rows too, never a checkpoint past rows it skipped.
        self.db.apply_batch(batch)?;
        *pending = Pending::default();
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes raw bytes as the log chunk ending at `last_seq`, bypassing the envelope.
    /// Only for tests that damage the log on purpose to exercise recovery.
    pub fn put_raw_log_chunk(&self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.log.insert(log_key(last_seq), bytes)?;
        self.keyspace.persist(fjall::PersistMode::SyncData)?;
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
        let Some(item) = self.log.range(log_key(seq)..).next() else {
            return Ok(None);
        };
        let (key, value) = item?;
        let found = read_archived::<LogChunk, _>(&value, |chunk| {
            let first = chunk.first()?.seq.to_native();
            let record = chunk.get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
            rkyv::deserialize::<LogRecord, rkyv::rancor::Error>(record).ok()
        })
        .map_err(|source| Self::corrupt(&key, source))?;
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

    fn read_u64(&self, key: &[u8]) -> Result<u64, StoreError> {
        match self.db.get(key)? {
            Some(bytes) if bytes.len() == 8 => {
                Ok(u64::from_le_bytes(bytes[..].try_into().expect("8 bytes")))
            }
            Some(_) => Err(bad_key(key)),
            None => Ok(0),
        }
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

/// Splits `prefix, sku, 0, rest` into (sku, rest).
fn split_sku_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let body = &key[1..];
    let nul = body.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&body[..nul]).ok()?, &body[nul + 1..]))
}

impl ShardStore for DiskStore {
    fn load_state(&self, channels: &[ChannelRule]) -> Result<LoadedState, StoreError> {
        let mut heads: AHashMap<String, HeadRecord> = AHashMap::new();
        for item in self.db.scan_prefix(b"H") {
            let (key, value) = item?;
            let sku = String::from_utf8_lossy(&key[1..]).into_owned();
            heads.insert(sku, Self::decode_at(&key, &value)?);
        }
        let mut lines: AHashMap<String, AHashMap<String, LineRecord>> = AHashMap::new();
        for item in self.db.scan_prefix(b"N") {
            let (key, value) = item?;
            let (sku, id) = split_sku_key(&key).ok_or_else(|| bad_key(&key))?;
            let line = Self::decode_at(&key, &value)?;
            lines
                .entry(sku.to_string())
                .or_default()
                .insert(String::from_utf8_lossy(id).into_owned(), line);
        }
        let mut deltas: AHashMap<String, BTreeMap<(Micros, u64), DeltaRecord>> = AHashMap::new();
        for item in self.db.scan_prefix(b"D") {
            let (key, value) = item?;
            let (sku, rest) = split_sku_key(&key).ok_or_else(|| bad_key(&key))?;
            if rest.len() != 16 {
                return Err(bad_key(&key));
            }
            let ts = unsortable(&rest[..8]);
            let seq = u64::from_be_bytes(rest[8..].try_into().expect("8 bytes"));
            let delta = Self::decode_at(&key, &value)?;
            deltas
                .entry(sku.to_string())
                .or_default()
                .insert((ts, seq), delta);
        }
        let mut skus = AHashMap::with_capacity(heads.len());
        for (sku, head) in heads {
            let state = SkuState::from_parts(
                head,
                lines.remove(&sku).unwrap_or_default(),
                deltas.remove(&sku).unwrap_or_default(),
                channels,
            )
            .map_err(|detail| StoreError::Inconsistent {
                sku: sku.clone(),
                detail,
            })?;
            skus.insert(sku, state);
        }
        if let Some(sku) = lines.keys().chain(deltas.keys()).next() {
            return Err(StoreError::Inconsistent {
                sku: sku.clone(),
                detail: "lines or deltas are stored without a head".into(),
            });
        }
        let checkpoint = self.read_u64(CHECKPOINT_KEY)?;
        Ok(LoadedState { skus, checkpoint })
    }

    fn log_after(
        &self,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<Vec<LogRecord>, StoreError>> + '_> {
        let chunks = self.log.range(log_key(after.saturating_add(1))..);
        let mut failed = false;
        Box::new(
            chunks
                .map(move |item| {
                    let (key, value) = item?;
                    let mut chunk = Self::decode_at::<LogChunk>(&key, &value)?;
                    chunk.retain(|r| r.seq > after);
                    Ok(chunk)
                })
                .take_while(move |item| {
                    let go_on = !failed;
                    failed |= item.is_err();
                    go_on
                }),
        )
    }

    fn truncate_log_from(&self, from: u64) -> Result<usize, StoreError> {
        let mut batch = self.keyspace.batch();
        let mut removed = 0;
        for item in self.log.range(log_key(from)..) {
            let (key, _) = item?;
            batch.remove(&self.log, key);
            removed += 1;
        }
        batch.commit()?;
        self.keyspace.persist(fjall::PersistMode::SyncData)?;
        Ok(removed)
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        match self.log.last_key_value()? {
            Some((key, _)) => Ok(seq_of_log_key(&key)),
            None => Ok(0),
        }
    }

    fn lookup(&self, sku: &str, key: &str) -> Result<Option<FirstResult>, StoreError> {
        for seq in self.keys.candidates(key_hash(sku, key))? {
            let record = self.named_record(seq, sku, || format!("idempotency key {key:?}"))?;
            // Another key with the same hash is no match: look at the next candidate.
            if record.sku == sku && record.key == key {
                return Ok(Some(first_result_of(&record)));
            }
        }
        Ok(None)
    }

    fn commit(&self, effects: &Effects) -> Result<(), StoreError> {
        let Some(last) = effects.records.last() else {
            return Ok(());
        };
        self.log
            .insert(log_key(last.seq), encode::<LogChunk>(&effects.records))?;
        let started = Instant::now();
        // Writes the journal's buffer and `fdatasync`s it.
        self.keyspace.persist(fjall::PersistMode::SyncData)?;
        metrics::histogram!("lockstep_log_flush_seconds").record(started.elapsed().as_secs_f64());
        self.absorb(effects)
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
        let mut batch = sled::Batch::default();
        let mut expired = Vec::new();
        for item in self.db.scan_prefix(b"K").take(max_runs) {
            let (key, value) = item?;
            let run: KeyRun = Self::decode_at(&key, &value)?;
            if run.newest_applied_at >= applied_before {
                break;
            }
            batch.remove(key);
            expired.push(run);
        }
        if expired.is_empty() {
            return Ok(0);
        }
        // Keys first, then the runs: a crash in between leaves runs whose keys are gone,
        // and forgetting them again is harmless. Not synced on purpose, for that reason.
        let mut forgotten = 0;
        for run in &expired {
            forgotten += run.entries.len();
            for (hash, seq) in &run.entries {
                self.keys.remove(*hash, *seq)?;
            }
        }
        self.db.apply_batch(batch)?;
        Ok(forgotten)
    }

    fn heads(&self) -> Result<Vec<(String, HeadRecord)>, StoreError> {
        // sled first, then the pending heads over it: a checkpoint in between moves rows
        // from pending to sled, so each head is at least as new as the scan's start.
        let mut all: AHashMap<String, HeadRecord> = AHashMap::new();
        for item in self.db.scan_prefix(b"H") {
            let (key, value) = item?;
            all.insert(
                String::from_utf8_lossy(&key[1..]).into_owned(),
                Self::decode_at(&key, &value)?,
            );
        }
        for (sku, head) in &self.pending().heads {
            all.insert(sku.clone(), head.clone());
        }
        let mut out: Vec<_> = all.into_iter().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn head(&self, sku: &str) -> Result<Option<HeadRecord>, StoreError> {
        if let Some(head) = self.pending().heads.get(sku) {
            return Ok(Some(head.clone()));
        }
        let key = head_key(sku);
        match self.db.get(&key)? {
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
                'chunks: for item in self.log.range(log_key(since.saturating_add(1))..).rev() {
                    let (key, value) = item?;
                    let chunk = Self::decode_at::<LogChunk>(&key, &value)?;
                    for record in chunk.into_iter().rev() {
                        if record.seq <= since || out.len() >= limit {
                            break 'chunks;
                        }
                        out.push(record);
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
mod tests {
    use super::*;
    use crate::clock::MICROS_PER_HOUR;
    use crate::engine::core::{apply, CoreConfig, Input, ShardState};
    use crate::engine::event::{Event, EventKind};

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
        assert_eq!(store.lookup("SKU", "old-1").unwrap(), None);
        assert_eq!(store.lookup("SKU", "old-2").unwrap(), None);
        assert!(
            store.lookup("SKU", "new-1").unwrap().is_some(),
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
    }

    /// A mixed batch on a few SKUs: counts, placements (some overselling), shipments,
    /// cancellations and a duplicate, keyed `{tag}-{i}`.
    fn mixed(tag: &str, at: Micros) -> Vec<Input> {
        use crate::engine::event::LineRef;
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
        assert!(effects.first_results.iter().any(|(_, _, f)| f.oversell));
        store.commit(&effects).unwrap();
        for (sku, key, first) in &effects.first_results {
            assert_eq!(
                store.lookup(sku, key).unwrap().as_ref(),
                Some(first),
                "{sku} {key}"
            );
        }
        assert_eq!(store.lookup("A", "never-seen").unwrap(), None);
        assert_eq!(
            store.lookup("B", "t-0").unwrap().unwrap().seq,
            2,
            "keys are per SKU"
        );
    }

    #[test]
    fn rows_and_keys_past_the_checkpoint_come_back_from_the_log_after_a_crash() {
        use crate::engine::recovery::recover;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let config = CoreConfig::default();
        let at = 1_800_000_000_000_000;
        let mut state = ShardState::default();
        let mut firsts = Vec::new();
        {
            let store = DiskStore::open(&path).unwrap();
            let before = apply(&mut state, &mixed("a", at), at, 1, &config);
            store.commit(&before).unwrap();
            store.checkpoint().unwrap();
            let after = apply(&mut state, &mixed("b", at + 10), at + 10, 14, &config);
            store.commit(&after).unwrap();
            // Readers see the batch past the checkpoint before it is stored as rows.
            let head = store.head("A").unwrap().unwrap();
            assert_eq!(head.last_seq, state["A"].head(&config.channels).last_seq);
            let heads = store.heads().unwrap();
            assert_eq!(heads.len(), 2);
            assert!(heads
                .iter()
                .all(|(sku, h)| *h == state[sku].head(&config.channels)));
            firsts.extend(before.first_results);
            firsts.extend(after.first_results);
            // Dropped without a checkpoint, as a kill -9 would leave it.
        }
        let store = DiskStore::open(&path).unwrap();
        assert_eq!(store.load_state(&config.channels).unwrap().checkpoint, 13);
        let (recovered, report) = recover(&store, &config).unwrap();
        assert_eq!(report.replayed, 13);
        assert_eq!(recovered, state);
        for (sku, key, first) in &firsts {
            assert_eq!(
                store.lookup(sku, key).unwrap().as_ref(),
                Some(first),
                "{sku} {key}"
            );
        }
        // Recovery stored what it replayed: the next start replays nothing.
        drop(store);
        let store = DiskStore::open(&path).unwrap();
        let (again, report) = recover(&store, &config).unwrap();
        assert_eq!((report.checkpoint, report.replayed), (26, 0));
        assert_eq!(again, state);
        assert_eq!(store.lookup("A", "b-0").unwrap().unwrap().seq, 14);
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
