//! The idempotency keys: which log record first carried each key and what it answered,
//! as a 64-bit hash of (SKU, source, key) → entries, in the `keys` partition (a fjall
//! keyspace) of the shard's database.
//!
//! Why not sled (the design's first store), and why not memory: keys are kept at least 7
//! days, one or more per event. sled 0.34 keeps in-memory structures for every key it
//! holds, whatever its cache size (we measured about 200 bytes per key at a 64 MiB
//! cache: 2M keys, 480 MiB), and copies the leaf each write lands in, which made keys
//! spread at random over the tree most of the ingest path's CPU. A hash map in memory
//! grows by the same count. An LSM tree keeps them on disk behind a bounded memtable
//! and cache, with a Bloom filter per table (about 10 bits per key) answering "never
//! seen" without a read, which is what almost every lookup is.
//!
//! The value holds, per key with that hash, an entry: the first record's sequence
//! number, a second, independent 64-bit hash of (SKU, source, key) that tells keys
//! sharing the first apart, and the first result's answer (outcome, oversell, on_hand,
//! committed, available). A duplicate is answered from the entry alone: reading the answer back
//! from its log record decoded (and checked) that record's whole chunk, which made a
//! duplicate cost several fresh events, in a retry storm of all things. Two keys are
//! taken for one only if both hashes agree: 128 bits, odds about n² / 2¹²⁹ (for a
//! hundred million keys kept, 10⁻²³).
//!
//! Durability: a batch's new keys stay in memory with its other pending rows (`disk.rs`,
//! where lookups see them first) and are written by the checkpoint, in its atomic batch
//! (`stage`), which then syncs the journal. Keys after the checkpoint come back from the
//! log on start. (Until 2026-12-05 each batch wrote its keys to the journal at once,
//! unsynced: a journal entry and a memtable insert per key on the ingest path.)
//!
//! The hash is XXH3-64, fixed by its specification, because keys written by one build
//! are read by the next.
//!
//! `KeyRun`: each checkpoint also stores its new (hash, seq) pairs as one run (a `state`
//! row), so that expiry removes a run's keys without scanning the tree.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use ahash::AHashSet;

use super::StoreError;
use crate::clock::Micros;

/// The stable 64-bit hash of an idempotency key: whose key it is (the SKU and the event's
/// source) and the key. The source is part of it because keys come from senders that do
/// not know of each other: two ERPs each numbering their deliveries from 1, or a caller's
/// `Idempotency-Key` that happens to spell a channel's key, must never make one
/// sender's event a duplicate of another's. (Keys that name a business fact carry their
/// channel already, `{channel}/{order}/...`, and every such event's source is that
/// channel, so they deduplicate as before.)
pub fn key_hash(sku: &str, source: &str, key: &str) -> u64 {
    seeded_hash(&[sku, source, key], 0)
}

/// The second hash of a key, kept in its entry (XXH3-64 with another seed).
pub fn key_check(sku: &str, source: &str, key: &str) -> u64 {
    seeded_hash(&[sku, source, key], CHECK_SEED)
}

/// The hash of a key as builds before 2026-12-05 stored it: (SKU, key), without the
/// source. Read only while keys stored that way are kept (`disk.rs`, "legacy keys").
pub fn legacy_key_hash(sku: &str, key: &str) -> u64 {
    seeded_hash(&[sku, key], 0)
}

/// The second hash of a key stored by builds before 2026-12-05.
pub fn legacy_key_check(sku: &str, key: &str) -> u64 {
    seeded_hash(&[sku, key], CHECK_SEED)
}

const CHECK_SEED: u64 = 0x6c6f_636b_7374_6570; // "lockstep"

/// XXH3-64 of the parts joined by NUL: an exact separator, since neither SKUs nor sources
/// contain NUL (ingest refuses control characters in SKUs; sources hold only letters,
/// digits, `.`, `_` and `-`).
fn seeded_hash(parts: &[&str], seed: u64) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::with_seed(seed);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(&[0]);
        }
        hasher.update(part.as_bytes());
    }
    hasher.digest()
}

/// Bytes of a first result's answer in an entry (`disk.rs` encodes it).
pub const ANSWER_BYTES: usize = 25;
const ENTRY_BYTES: usize = 16 + ANSWER_BYTES;

/// One key's entry: its first record, its second hash, and the first result's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    pub seq: u64,
    pub check: u64,
    pub answer: [u8; ANSWER_BYTES],
}

/// One checkpoint's new keys, as stored: (hash, seq) pairs and the newest `applied_at`
/// among them, which says when the whole run may be forgotten.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct KeyRun {
    pub newest_applied_at: Micros,
    pub entries: Vec<(u64, u64)>,
}

/// fjall's memory and disk, per shard: block cache, each memtable, and the journals kept
/// before memtables are flushed (fjall 3's minimum is 64 MiB of journal). fjall 3 no
/// longer bounds all memtables together: three partitions of two memtables each (the
/// active one and one being flushed) are at most 48 MiB.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// The size fjall cuts tables (segments) at, and so the size of its first level: four
/// tables. fjall's default is 64 MiB (a first level of 256 MiB), and two of its costs
/// grow with those sizes. Tables in the first two levels keep their whole block index in
/// memory (an entry per 4 KiB block; deeper levels keep only the index's top level), and
/// writing a table buffers 16 bytes per key for its Bloom filter. A heap profile at
/// 10,000 orders/min (heaptrack, 15 and 45 minutes) showed both: whole block indexes
/// 1.3 → 4.0 MB as the log's first level filled, and a compaction rewriting a first
/// level of idempotency keys holding 16.8 MB of filter hashes, growing with that level
/// (keys are hashes, so every merge from level 0 rewrites all of level 1). At 8 MiB the
/// first level stays under 32 MiB of table per partition, whose index and filter
/// buffers are then a few MB at most, however long the engine runs; deeper levels are
/// merged a table at a time.
const TABLE_BYTES: u64 = 8 * 1024 * 1024;

/// File descriptors one shard's keyspace may hold open (fjall's tables and journal;
/// its default is 900 per keyspace, which a few shards and some idle sockets would
/// exhaust at the usual soft limit of 1,024): the listener keeps them aside.
pub const FDS_PER_SHARD: usize = 256;

/// Opens a shard's fjall database (its journal syncs only when asked:
/// `Database::persist`, which the shard's commits and checkpoints call). Two background
/// workers per shard flush and compact (as fjall 2's one flush and one compaction worker
/// did): a flush never waits behind a long compaction, and the shard threads and the
/// HTTP workers keep the cores.
pub fn open_database(dir: &Path) -> Result<fjall::Database, StoreError> {
    Ok(fjall::Database::builder(dir)
        .max_cached_files(Some(FDS_PER_SHARD))
        .cache_size(CACHE_BYTES)
        .max_journaling_size(JOURNAL_BYTES)
        .manual_journal_persist(true)
        .worker_threads(2)
        .open()?)
}

/// Options every partition (a fjall keyspace) of a shard's database shares: memtables of
/// `MEMTABLE_BYTES`, tables of `TABLE_BYTES` (leveled compaction, otherwise fjall's
/// defaults), and writes synced only when the shard asks (`Database::persist`), never
/// on their own. fjall stores a keyspace's options when it creates it: a data directory
/// keeps the options it was created with.
pub fn partition_options() -> fjall::KeyspaceCreateOptions {
    let leveled = fjall::compaction::Leveled::default().with_table_target_size(TABLE_BYTES);
    fjall::KeyspaceCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        .compaction_strategy(std::sync::Arc::new(leveled))
        .manual_journal_persist(true)
}

/// A shard's idempotency keys.
pub struct KeyStore {
    keys: fjall::Keyspace,
    /// Hashes a lookup found no entry for, and nothing has written since. Inserting a
    /// new key's entry needs the entry's current value (two keys may share a hash), and
    /// the shard looks every key up just before its batch inserts it: for the hashes
    /// found absent, the insert writes without reading again. Bounded by clearing.
    absent: Mutex<AHashSet<u64>>,
}

/// More than a few batches' worth of keys found absent and never inserted (refused
/// batches leave some behind): forget them all, and read before those writes instead.
const ABSENT_MAX: usize = 65_536;

impl KeyStore {
    /// The `keys` partition of a shard's keyspace.
    pub fn open(database: &fjall::Database) -> Result<KeyStore, StoreError> {
        let keys = database.keyspace("keys", partition_options)?;
        Ok(KeyStore {
            keys,
            absent: Mutex::new(AHashSet::new()),
        })
    }

    fn absent(&self) -> MutexGuard<'_, AHashSet<u64>> {
        // A panic while holding it leaves a plain set behind, still usable.
        self.absent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self, hash: u64) -> Result<Vec<KeyEntry>, StoreError> {
        match self.keys.get(hash.to_be_bytes())? {
            Some(value) => entries(&value).ok_or_else(|| StoreError::Inconsistent {
                sku: String::new(),
                detail: format!(
                    "the idempotency key entry {hash:016x} is {} bytes, not a multiple of {ENTRY_BYTES}",
                    value.len()
                ),
            }),
            None => Ok(Vec::new()),
        }
    }

    /// The entries of keys with this hash, oldest first.
    pub fn candidates(&self, hash: u64) -> Result<Vec<KeyEntry>, StoreError> {
        let found = self.read(hash)?;
        if found.is_empty() {
            let mut absent = self.absent();
            if absent.len() >= ABSENT_MAX {
                absent.clear();
            }
            absent.insert(hash);
        }
        Ok(found)
    }

    /// The stored entries of keys with this hash, for a lookup that inserts nothing after
    /// it (keys stored before the source was part of a key's hash: `disk.rs`).
    pub fn stored(&self, hash: u64) -> Result<Vec<KeyEntry>, StoreError> {
        self.read(hash)
    }

    /// Records the entry of a key with this hash (again, for the same record: no-op), at
    /// once: the tests' shorthand for what a checkpoint `stage`s.
    #[cfg(test)]
    pub fn insert(&self, hash: u64, entry: KeyEntry) -> Result<(), StoreError> {
        if let Some(value) = self.merged(hash, std::slice::from_ref(&entry))? {
            self.keys.insert(hash.to_be_bytes(), value)?;
        }
        Ok(())
    }

    /// Adds the entries of keys with this hash to `batch` (a checkpoint's), beside those
    /// stored; entries of records already there are not added twice.
    pub fn stage(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        hash: u64,
        entries: &[KeyEntry],
    ) -> Result<(), StoreError> {
        if let Some(value) = self.merged(hash, entries)? {
            batch.insert(&self.keys, hash.to_be_bytes(), value);
        }
        Ok(())
    }

    /// The stored entries of `hash` with `new` added, as a value to write; `None` when
    /// every one of `new` is there already (a replay).
    fn merged(&self, hash: u64, new: &[KeyEntry]) -> Result<Option<Vec<u8>>, StoreError> {
        // Taken out of the set, so a second key with the same hash reads this one's entry.
        let mut all = if self.absent().remove(&hash) {
            Vec::new()
        } else {
            self.read(hash)?
        };
        let before = all.len();
        for entry in new {
            if !all.iter().any(|e| e.seq == entry.seq) {
                all.push(entry.clone());
            }
        }
        Ok((all.len() != before).then(|| value_of(&all)))
    }

    /// Forgets one entry (a run's, when the run expires).
    pub fn remove(&self, hash: u64, seq: u64) -> Result<(), StoreError> {
        let mut all = self.read(hash)?;
        let before = all.len();
        all.retain(|e| e.seq != seq);
        if all.is_empty() {
            self.keys.remove(hash.to_be_bytes())?;
        } else if all.len() != before {
            self.keys.insert(hash.to_be_bytes(), value_of(&all))?;
        }
        Ok(())
    }
}

/// The entries of a stored value; `None` if it is not whole entries.
fn entries(value: &[u8]) -> Option<Vec<KeyEntry>> {
    if !value.len().is_multiple_of(ENTRY_BYTES) {
        return None;
    }
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    Some(
        value
            .chunks_exact(ENTRY_BYTES)
            .map(|b| KeyEntry {
                seq: u64_at(b, 0),
                check: u64_at(b, 8),
                answer: b[16..].try_into().expect("answer bytes"),
            })
            .collect(),
    )
}

fn value_of(entries: &[KeyEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        out.extend_from_slice(&e.seq.to_le_bytes());
        out.extend_from_slice(&e.check.to_le_bytes());
        out.extend_from_slice(&e.answer);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> KeyEntry {
        KeyEntry {
            seq,
            check: seq * 3,
            answer: [seq as u8; ANSWER_BYTES],
        }
    }

    fn seqs(entries: Vec<KeyEntry>) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn an_entry_keeps_its_check_and_answer() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(&open_database(dir.path()).unwrap()).unwrap();
        keys.insert(7, entry(10)).unwrap();
        keys.insert(7, entry(20)).unwrap();
        assert_eq!(keys.candidates(7).unwrap(), vec![entry(10), entry(20)]);
        assert_ne!(key_check("A", "api", "k"), key_hash("A", "api", "k"));
    }

    #[test]
    fn the_hash_is_fixed_across_builds() {
        // Keys on disk are read by later builds: these values must never change. The
        // legacy one is the reference implementation's XXH3-64 of
        // b"SKU-1\0shopify/1001/1/placed", as builds before 2026-12-05 stored it.
        assert_eq!(
            legacy_key_hash("SKU-1", "shopify/1001/1/placed"),
            0xe03e_1d85_d358_6017
        );
        assert_eq!(
            key_hash("SKU-1", "shopify", "shopify/1001/1/placed"),
            xxhash_rust::xxh3::xxh3_64(b"SKU-1\0shopify\0shopify/1001/1/placed")
        );
        assert_ne!(key_hash("AB", "s", "C"), key_hash("A", "s", "BC"));
        assert_ne!(key_hash("A", "s1", "k"), key_hash("A", "s", "1k"));
        // The same key from two senders is two keys.
        assert_ne!(key_hash("A", "erp-a", "1"), key_hash("A", "erp-b", "1"));
    }

    #[test]
    fn colliding_entries_are_all_candidates_and_removed_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let keyspace = open_database(dir.path()).unwrap();
            (KeyStore::open(&keyspace).unwrap(), keyspace)
        };
        let sync = |keyspace: &fjall::Database| {
            keyspace.persist(fjall::PersistMode::SyncData).unwrap();
        };
        let (keys, keyspace) = open();
        keys.insert(7, entry(10)).unwrap();
        keys.insert(7, entry(20)).unwrap();
        keys.insert(7, entry(30)).unwrap();
        keys.insert(7, entry(20)).unwrap(); // a re-insert (replay) adds nothing
        assert_eq!(seqs(keys.candidates(7).unwrap()), vec![10, 20, 30]);
        keys.remove(7, 10).unwrap();
        assert_eq!(seqs(keys.candidates(7).unwrap()), vec![20, 30]);
        keys.remove(7, 30).unwrap();
        keys.remove(7, 20).unwrap();
        assert!(keys.candidates(7).unwrap().is_empty());
        keys.remove(8, 1).unwrap(); // absent: nothing happens
        sync(&keyspace);
        drop((keys, keyspace));
        let (keys, keyspace) = open();
        keys.insert(9, entry(1)).unwrap();
        sync(&keyspace);
        drop((keys, keyspace));
        assert_eq!(seqs(open().0.candidates(9).unwrap()), vec![1]);
    }

    #[test]
    fn two_keys_found_absent_with_the_same_hash_both_keep_their_entry() {
        // A batch looks both up before inserting either: the first insert writes without
        // reading, the second must read it back and keep it.
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(&open_database(dir.path()).unwrap()).unwrap();
        assert!(keys.candidates(7).unwrap().is_empty());
        assert!(keys.candidates(7).unwrap().is_empty());
        keys.insert(7, entry(10)).unwrap();
        keys.insert(7, entry(20)).unwrap();
        assert_eq!(seqs(keys.candidates(7).unwrap()), vec![10, 20]);
        // Found absent once, inserted by another route first (as replay does): the
        // later insert still keeps both.
        assert!(keys.candidates(8).unwrap().is_empty());
        keys.insert(8, entry(1)).unwrap();
        keys.insert(8, entry(2)).unwrap();
        assert_eq!(seqs(keys.candidates(8).unwrap()), vec![1, 2]);
    }
}
