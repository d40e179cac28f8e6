//! The idempotency keys: which log record first carried each key, as a 64-bit hash of
//! (SKU, key) → that record's sequence number, in the `keys` partition of the shard's
//! fjall keyspace.
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
//! The value is the record's sequence number; the first result itself is read back from
//! that log record, which also checks that the key really matches. Two keys with the
//! same hash (odds about n² / 2⁶⁵) share one entry holding both numbers.
//!
//! Durability: writes reach fjall's journal without a sync of their own; the checkpoint
//! that records them as stored syncs that same journal after them (`disk.rs`).
//! Keys after the checkpoint come back from the log on start. The hash is XXH3-64, fixed
//! by its specification, because keys written by one build are read by the next.
//!
//! `KeyRun`: each checkpoint also stores its new (hash, seq) pairs as one run (a `state`
//! row), so that expiry removes a run's keys without scanning the tree.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use ahash::AHashSet;

use super::StoreError;
use crate::clock::Micros;

/// The stable 64-bit hash of a SKU's idempotency key.
pub fn key_hash(sku: &str, key: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(sku.as_bytes());
    // SKUs never contain NUL (ingest refuses control characters): an exact separator.
    hasher.update(&[0]);
    hasher.update(key.as_bytes());
    hasher.digest()
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

/// fjall's memory, per shard: block cache, all memtables, and journal size (fjall's
/// minimum is 24 MiB of journal).
const CACHE_BYTES: u64 = 8 * 1024 * 1024;
const WRITE_BUFFER_BYTES: u64 = 16 * 1024 * 1024;
const MEMTABLE_BYTES: u32 = 8 * 1024 * 1024;
const JOURNAL_BYTES: u64 = 32 * 1024 * 1024;

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
const TABLE_BYTES: u32 = 8 * 1024 * 1024;

/// Opens a shard's fjall keyspace (its journal syncs only when asked:
/// `Keyspace::persist`, which the shard's commits and checkpoints call).
/// File descriptors one shard's keyspace may hold open (fjall's tables and journal;
/// its default is 900 per keyspace, which a few shards and some idle sockets would
/// exhaust at the usual soft limit of 1,024): the listener keeps them aside.
pub const FDS_PER_SHARD: usize = 256;

pub fn open_keyspace(dir: &Path) -> Result<fjall::Keyspace, StoreError> {
    Ok(fjall::Config::new(dir)
        .max_open_files(FDS_PER_SHARD)
        .cache_size(CACHE_BYTES)
        .max_write_buffer_size(WRITE_BUFFER_BYTES)
        .max_journaling_size(JOURNAL_BYTES)
        .manual_journal_persist(true)
        .flush_workers(1)
        .compaction_workers(1)
        .open()?)
}

/// Options every partition of a shard's keyspace shares: memtables of `MEMTABLE_BYTES`,
/// tables of `TABLE_BYTES` (leveled compaction, otherwise fjall's defaults), and writes
/// synced only when the shard asks (`Keyspace::persist`), never on their own. fjall
/// stores a partition's options when it creates it: a data directory keeps the options
/// it was created with.
pub fn partition_options() -> fjall::PartitionCreateOptions {
    let leveled = fjall::compaction::Leveled {
        target_size: TABLE_BYTES,
        ..Default::default()
    };
    fjall::PartitionCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        .compaction_strategy(fjall::compaction::Strategy::Leveled(leveled))
        .manual_journal_persist(true)
}

/// A shard's idempotency keys.
pub struct KeyStore {
    keys: fjall::PartitionHandle,
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
    pub fn open(keyspace: &fjall::Keyspace) -> Result<KeyStore, StoreError> {
        let keys = keyspace.open_partition("keys", partition_options())?;
        Ok(KeyStore {
            keys,
            absent: Mutex::new(AHashSet::new()),
        })
    }

    fn absent(&self) -> MutexGuard<'_, AHashSet<u64>> {
        // A panic while holding it leaves a plain set behind, still usable.
        self.absent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self, hash: u64) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .keys
            .get(hash.to_be_bytes())?
            .map(|value| seqs(&value))
            .unwrap_or_default())
    }

    /// The records that may have carried a key with this hash, oldest first.
    pub fn candidates(&self, hash: u64) -> Result<Vec<u64>, StoreError> {
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

    /// Records that the key with this hash first came with record `seq` (again: no-op).
    pub fn insert(&self, hash: u64, seq: u64) -> Result<(), StoreError> {
        // Taken out of the set, so a second key with the same hash reads this one's entry.
        let mut all = if self.absent().remove(&hash) {
            Vec::new()
        } else {
            self.read(hash)?
        };
        if all.contains(&seq) {
            return Ok(());
        }
        all.push(seq);
        self.keys.insert(hash.to_be_bytes(), value_of(&all))?;
        Ok(())
    }

    /// Forgets one entry (a run's, when the run expires).
    pub fn remove(&self, hash: u64, seq: u64) -> Result<(), StoreError> {
        let mut all = self.read(hash)?;
        let before = all.len();
        all.retain(|s| *s != seq);
        if all.is_empty() {
            self.keys.remove(hash.to_be_bytes())?;
        } else if all.len() != before {
            self.keys.insert(hash.to_be_bytes(), value_of(&all))?;
        }
        Ok(())
    }
}

fn seqs(value: &[u8]) -> Vec<u64> {
    value
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

fn value_of(seqs: &[u64]) -> Vec<u8> {
    seqs.iter().flat_map(|s| s.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fixed_across_builds() {
        // Keys on disk are read by later builds: this value must never change. It is the
        // reference implementation's XXH3-64 of b"SKU-1\0shopify/1001/1/placed".
        assert_eq!(
            key_hash("SKU-1", "shopify/1001/1/placed"),
            0xe03e_1d85_d358_6017
        );
        assert_ne!(key_hash("AB", "C"), key_hash("A", "BC"));
    }

    #[test]
    fn colliding_entries_are_all_candidates_and_removed_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let keyspace = open_keyspace(dir.path()).unwrap();
            (KeyStore::open(&keyspace).unwrap(), keyspace)
        };
        let sync = |keyspace: &fjall::Keyspace| {
            keyspace.persist(fjall::PersistMode::SyncData).unwrap();
        };
        let (keys, keyspace) = open();
        keys.insert(7, 10).unwrap();
        keys.insert(7, 20).unwrap();
        keys.insert(7, 30).unwrap();
        keys.insert(7, 20).unwrap(); // a re-insert (replay) adds nothing
        assert_eq!(keys.candidates(7).unwrap(), vec![10, 20, 30]);
        keys.remove(7, 10).unwrap();
        assert_eq!(keys.candidates(7).unwrap(), vec![20, 30]);
        keys.remove(7, 30).unwrap();
        keys.remove(7, 20).unwrap();
        assert!(keys.candidates(7).unwrap().is_empty());
        keys.remove(8, 1).unwrap(); // absent: nothing happens
        sync(&keyspace);
        drop((keys, keyspace));
        let (keys, keyspace) = open();
        keys.insert(9, 1).unwrap();
        sync(&keyspace);
        drop((keys, keyspace));
        assert_eq!(open().0.candidates(9).unwrap(), vec![1]);
    }

    #[test]
    fn two_keys_found_absent_with_the_same_hash_both_keep_their_entry() {
        // A batch looks both up before inserting either: the first insert writes without
        // reading, the second must read it back and keep it.
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(&open_keyspace(dir.path()).unwrap()).unwrap();
        assert!(keys.candidates(7).unwrap().is_empty());
        assert!(keys.candidates(7).unwrap().is_empty());
        keys.insert(7, 10).unwrap();
        keys.insert(7, 20).unwrap();
        assert_eq!(keys.candidates(7).unwrap(), vec![10, 20]);
        // Found absent once, inserted by another route first (as replay does): the
        // later insert still keeps both.
        assert!(keys.candidates(8).unwrap().is_empty());
        keys.insert(8, 1).unwrap();
        keys.insert(8, 2).unwrap();
        assert_eq!(keys.candidates(8).unwrap(), vec![1, 2]);
    }
}
