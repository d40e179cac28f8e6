//! The sled backend: one sled database per shard, one keyspace with a prefix per kind of
//! row, and every batch written with a single atomic `apply_batch`.
//!
//! | prefix | key                                   | value        |
//! |--------|---------------------------------------|--------------|
//! | `L`    | last seq of the chunk (u64 BE)        | LogChunk: one batch's records |
//! | `H`    | sku                                   | HeadRecord   |
//! | `N`    | sku, 0, line identity                 | LineRecord   |
//! | `D`    | sku, 0, ts (sortable), seq            | DeltaRecord  |
//! | `I`    | sku, 0, idempotency key               | FirstResult  |
//! | `M`    | `checkpoint`                          | u64 LE: last seq the state includes |
//! | `M`    | `swept`                               | u64 LE: last chunk whose keys were forgotten |
//!
//! sled costs a few microseconds per key written, so the layout keeps keys per event
//! few: the log is one value per batch, the audit by SKU follows each record's `prev_seq`
//! from the SKU's head instead of an index, and expired keys are found by walking old
//! log chunks instead of an expiry index. SKUs never contain NUL (ingest rejects control
//! characters), so `sku, 0` is an exact prefix.
//!
//! Durability: `apply_batch`, then sled's `flush`, then `fdatasync` of sled's data file, because sled 0.34's flush uses `sync_file_range`, which neither commits metadata
//! nor empties the device's write cache (docs/durability.md).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ahash::AHashMap;

use super::envelope::{self, decode, encode, read_archived};
use super::records::{DeltaRecord, HeadRecord, LineRecord, LogChunk, LogRecord};
use super::{LoadedState, ShardStore, StoreError};
use crate::clock::Micros;
use crate::engine::core::{ChannelRule, Effects, SkuState, StateWrite};
use crate::engine::event::{FirstResult, Outcome};

const CHECKPOINT_KEY: &[u8] = b"Mcheckpoint";
const SWEPT_KEY: &[u8] = b"Mswept";

/// One shard's sled database.
pub struct SledStore {
    db: sled::Db,
    /// sled's data file, opened once: `fdatasync` acts on the file whichever descriptor
    /// asks, so our own descriptor makes sled's writes durable.
    data_file: File,
    path: PathBuf,
}

/// sled's page cache per shard. sled's default is 1 GiB per database, which a long run
/// fills with pages it wrote and rarely reads again, so resident memory climbs for an
/// hour (see the `soak` figures in the README). 16 MiB flattened it within minutes but
/// cost the commit path a third of its throughput (sled reads back the index pages it
/// updates); 64 MiB bounds it at about the same throughput as the default.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl SledStore {
    /// Opens (or creates) the shard database in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        let data_file = File::open(dir.join("db"))?;
        // The files' directory entries must be durable too; they exist from here on.
        File::open(dir)?.sync_all()?;
        data_file.sync_all()?;
        Ok(SledStore {
            db,
            data_file,
            path: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes raw bytes as the log chunk ending at `last_seq`, bypassing the envelope.
    /// Only for tests that damage the log on purpose to exercise recovery.
    pub fn put_raw_log_chunk(&self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.db.insert(log_key(last_seq), bytes)?;
        self.db.flush()?;
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
        let Some(item) = self.db.range(log_range(seq)).next() else {
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

/// The log chunks whose last record is `from` or later, and nothing but log chunks.
fn log_range(from: u64) -> std::ops::RangeInclusive<Vec<u8>> {
    log_key(from).to_vec()..=log_key(u64::MAX).to_vec()
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

fn idem_key(sku: &str, key: &str) -> Vec<u8> {
    let mut out = sku_prefix(b'I', sku);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Splits `prefix, sku, 0, rest` into (sku, rest).
fn split_sku_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let body = &key[1..];
    let nul = body.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&body[..nul]).ok()?, &body[nul + 1..]))
}

impl ShardStore for SledStore {
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
        let chunks = self.db.range(log_range(after.saturating_add(1)));
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
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for item in self.db.range(log_range(from)) {
            let (key, _) = item?;
            batch.remove(key);
            removed += 1;
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.data_file.sync_data()?;
        Ok(removed)
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        match self.db.scan_prefix(b"L").next_back() {
            Some(item) => Ok(seq_of_log_key(&item?.0)),
            None => Ok(0),
        }
    }

    fn lookup(&self, sku: &str, key: &str) -> Result<Option<FirstResult>, StoreError> {
        let db_key = idem_key(sku, key);
        match self.db.get(&db_key)? {
            Some(bytes) => Ok(Some(Self::decode_at::<FirstResult>(&db_key, &bytes)?)),
            None => Ok(None),
        }
    }

    fn commit(&self, effects: &Effects) -> Result<(), StoreError> {
        let Some(last) = effects.records.last() else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        batch.insert(&log_key(last.seq), encode::<LogChunk>(&effects.records));
        for (sku, key, first) in &effects.first_results {
            batch.insert(idem_key(sku, key), encode(first));
        }
        for write in &effects.writes {
            match write {
                StateWrite::Head { sku, head } => batch.insert(head_key(sku), encode(head)),
                StateWrite::Line {
                    sku,
                    id,
                    line: Some(line),
                } => batch.insert(line_key(sku, id), encode(line)),
                StateWrite::Line {
                    sku,
                    id,
                    line: None,
                } => batch.remove(line_key(sku, id)),
                StateWrite::Delta {
                    sku,
                    ts,
                    seq,
                    delta: Some(delta),
                } => batch.insert(delta_key(sku, *ts, *seq), encode(delta)),
                StateWrite::Delta {
                    sku,
                    ts,
                    seq,
                    delta: None,
                } => batch.remove(delta_key(sku, *ts, *seq)),
            }
        }
        batch.insert(CHECKPOINT_KEY, &last.seq.to_le_bytes());
        self.db.apply_batch(batch)?;
        let started = Instant::now();
        self.db.flush()?;
        self.data_file.sync_data()?;
        metrics::histogram!("lockstep_log_flush_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn sweep_expired_keys(
        &self,
        applied_before: Micros,
        max_chunks: usize,
    ) -> Result<usize, StoreError> {
        let swept = self.read_u64(SWEPT_KEY)?;
        let mut batch = sled::Batch::default();
        let mut forgotten = 0;
        let mut last_swept = None;
        for item in self
            .db
            .range(log_range(swept.saturating_add(1)))
            .take(max_chunks)
        {
            let (key, value) = item?;
            let chunk = Self::decode_at::<LogChunk>(&key, &value)?;
            if chunk.first().is_none_or(|r| r.applied_at >= applied_before) {
                break;
            }
            for record in chunk.iter().filter(|r| r.outcome != Outcome::Duplicate) {
                batch.remove(idem_key(&record.sku, &record.key));
                forgotten += 1;
            }
            last_swept = Some(seq_of_log_key(&key));
        }
        if let Some(last) = last_swept {
            batch.insert(SWEPT_KEY, &last.to_le_bytes());
            // Not flushed on purpose: forgetting a key is idempotent, and the next batch's
            // flush or a re-sweep after a crash finishes the job.
            self.db.apply_batch(batch)?;
        }
        Ok(forgotten)
    }

    fn heads(&self) -> Result<Vec<(String, HeadRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"H") {
            let (key, value) = item?;
            out.push((
                String::from_utf8_lossy(&key[1..]).into_owned(),
                Self::decode_at(&key, &value)?,
            ));
        }
        Ok(out)
    }

    fn head(&self, sku: &str) -> Result<Option<HeadRecord>, StoreError> {
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
                    let record = self
                        .record_at(next)?
                        .ok_or_else(|| StoreError::Inconsistent {
                            sku: sku.to_string(),
                            detail: format!(
                                "its audit chain names record {next}, which the log does not hold"
                            ),
                        })?;
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
                'chunks: for item in self.db.range(log_range(since.saturating_add(1))).rev() {
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
        let store = SledStore::open(&dir.path().join("shard")).unwrap();
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
        store
            .commit(&apply(&mut state, &[adjust("new-1", new)], new, 3, &config))
            .unwrap();

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

    #[test]
    fn the_audit_chain_skips_other_skus_and_honours_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("shard")).unwrap();
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
