//! The sled backend: one sled database per shard, one keyspace with a prefix per kind of
//! row, and every batch written with a single atomic `apply_batch`.
//!
//! | prefix | key                                   | value        |
//! |--------|---------------------------------------|--------------|
//! | `L`    | seq (u64 BE)                          | LogRecord    |
//! | `A`    | sku, 0, seq                           | (empty): the audit index by SKU |
//! | `H`    | sku                                   | HeadRecord   |
//! | `N`    | sku, 0, line identity                 | LineRecord   |
//! | `D`    | sku, 0, ts (sortable), seq            | DeltaRecord  |
//! | `I`    | sku, 0, idempotency key               | KeyRecord    |
//! | `E`    | expiry (sortable), sku, 0, key        | (empty): the sweep's index |
//! | `M`    | `checkpoint`                          | u64 LE: last seq the state includes |
//!
//! SKUs never contain NUL (ingest rejects control characters), so `sku, 0` is an exact
//! prefix. Durability: `apply_batch`, then sled's `flush`, then `fdatasync` of sled's data
//! file, because sled 0.34's flush uses `sync_file_range`, which neither commits metadata
//! nor empties the device's write cache (docs/durability.md).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ahash::AHashMap;

use super::envelope::{decode, encode};
use super::records::{DeltaRecord, HeadRecord, LineRecord, LogRecord};
use super::{LoadedState, ShardStore, StoreError};
use crate::clock::Micros;
use crate::engine::core::{Effects, SkuState, StateWrite};
use crate::engine::event::FirstResult;

const CHECKPOINT_KEY: &[u8] = b"Mcheckpoint";

/// An idempotency key's first result and when it may be forgotten.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct KeyRecord {
    pub first: FirstResult,
    pub expires_at: Micros,
}

/// One shard's sled database.
pub struct SledStore {
    db: sled::Db,
    /// sled's data file, opened once: `fdatasync` acts on the file whichever descriptor
    /// asks, so our own descriptor makes sled's writes durable.
    data_file: File,
    path: PathBuf,
}

impl SledStore {
    /// Opens (or creates) the shard database in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
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

    /// Writes raw bytes under a log sequence number, bypassing the envelope. Only for
    /// tests that damage the log on purpose to exercise recovery.
    pub fn put_raw_log_record(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.db.insert(log_key(seq), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    fn decode_at<T>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        decode::<T>(bytes).map_err(|source| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            seq: (key.first() == Some(&b'L') && key.len() == 9)
                .then(|| u64::from_be_bytes(key[1..9].try_into().expect("8 bytes"))),
            source,
        })
    }
}

fn log_key(seq: u64) -> [u8; 9] {
    let mut key = [b'L'; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
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

fn audit_key(sku: &str, seq: u64) -> Vec<u8> {
    let mut key = sku_prefix(b'A', sku);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn idem_key(sku: &str, key: &str) -> Vec<u8> {
    let mut out = sku_prefix(b'I', sku);
    out.extend_from_slice(key.as_bytes());
    out
}

fn expiry_key(expires_at: Micros, sku: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + sku.len() + key.len());
    out.push(b'E');
    out.extend_from_slice(&sortable(expires_at));
    out.extend_from_slice(sku.as_bytes());
    out.push(0);
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
    fn load_state(&self) -> Result<LoadedState, StoreError> {
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
        let checkpoint = match self.db.get(CHECKPOINT_KEY)? {
            Some(bytes) if bytes.len() == 8 => {
                u64::from_le_bytes(bytes[..].try_into().expect("8 bytes"))
            }
            Some(_) => return Err(bad_key(CHECKPOINT_KEY)),
            None => 0,
        };
        Ok(LoadedState { skus, checkpoint })
    }

    fn log_after(
        &self,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<LogRecord, StoreError>> + '_> {
        let start = log_key(after.saturating_add(1));
        let mut failed = false;
        Box::new(
            self.db
                .range(start.to_vec()..log_key(u64::MAX).to_vec())
                .map(|item| {
                    let (key, value) = item?;
                    Self::decode_at::<LogRecord>(&key, &value)
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
        for item in self
            .db
            .range(log_key(from).to_vec()..=log_key(u64::MAX).to_vec())
        {
            let (key, value) = item?;
            // The audit index entry goes too, when the record is readable enough to name it.
            if let Ok(record) = decode::<LogRecord>(&value) {
                batch.remove(audit_key(&record.sku, record.seq));
            }
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
            Some(item) => {
                let (key, _) = item?;
                Ok(u64::from_be_bytes(key[1..9].try_into().expect("8 bytes")))
            }
            None => Ok(0),
        }
    }

    fn lookup(&self, sku: &str, key: &str) -> Result<Option<FirstResult>, StoreError> {
        let db_key = idem_key(sku, key);
        match self.db.get(&db_key)? {
            Some(bytes) => Ok(Some(Self::decode_at::<KeyRecord>(&db_key, &bytes)?.first)),
            None => Ok(None),
        }
    }

    fn commit(&self, effects: &Effects, keys_expire_at: Micros) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for record in &effects.records {
            batch.insert(&log_key(record.seq), encode(record));
            batch.insert(audit_key(&record.sku, record.seq), &[]);
        }
        for (sku, key, first) in &effects.first_results {
            let record = KeyRecord {
                first: *first,
                expires_at: keys_expire_at,
            };
            batch.insert(idem_key(sku, key), encode(&record));
            batch.insert(expiry_key(keys_expire_at, sku, key), &[]);
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
        if let Some(last) = effects.records.last() {
            batch.insert(CHECKPOINT_KEY, &last.seq.to_le_bytes());
        }
        self.db.apply_batch(batch)?;
        let started = Instant::now();
        self.db.flush()?;
        self.data_file.sync_data()?;
        metrics::histogram!("lockstep_log_flush_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn sweep_expired_keys(&self, now: Micros, max: usize) -> Result<usize, StoreError> {
        let mut end = vec![b'E'];
        end.extend_from_slice(&sortable(now));
        let mut batch = sled::Batch::default();
        let mut swept = 0;
        for item in self.db.range(b"E".to_vec()..end).take(max) {
            let (key, _) = item?;
            let body = &key[9..];
            let nul = body
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| bad_key(&key))?;
            let mut idem = vec![b'I'];
            idem.extend_from_slice(body);
            debug_assert_eq!(idem[1 + nul], 0);
            batch.remove(idem);
            batch.remove(key);
            swept += 1;
        }
        // Not flushed on purpose: forgetting a key is idempotent, and the next batch's
        // flush or a re-sweep after a crash finishes the job.
        self.db.apply_batch(batch)?;
        Ok(swept)
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
                let prefix = sku_prefix(b'A', sku);
                for item in self.db.scan_prefix(&prefix).rev() {
                    let (key, _) = item?;
                    let seq = u64::from_be_bytes(
                        key[prefix.len()..].try_into().map_err(|_| bad_key(&key))?,
                    );
                    if seq <= since || out.len() >= limit {
                        break;
                    }
                    let log = log_key(seq);
                    if let Some(bytes) = self.db.get(log)? {
                        out.push(Self::decode_at(&log, &bytes)?);
                    }
                }
            }
            None => {
                let range = log_key(since.saturating_add(1)).to_vec()..=log_key(u64::MAX).to_vec();
                for item in self.db.range(range).rev().take(limit) {
                    let (key, value) = item?;
                    out.push(Self::decode_at(&key, &value)?);
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
