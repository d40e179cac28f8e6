//! The idempotency index: which log record first carried each idempotency key, kept in
//! memory as a 64-bit hash of (SKU, key) → sequence number, and stored as one run per
//! checkpoint instead of one sled key per event.
//!
//! Why not a sled key per event: sled 0.34 copies the leaf it writes to, and keys spread
//! at random over the tree made that copy (and the allocator behind it) most of the
//! ingest path's CPU. A hash and a sequence number cost 16 bytes here; the first result
//! itself is read back from the log record the number names, which also checks that the
//! key really matches (a hash collision then finds the other record, and lookup goes on
//! to the next candidate).
//!
//! The hash is XXH3-64, whose output is fixed by its specification, because runs written
//! by one build are read by the next.

use ahash::AHashMap;

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

/// Every kept key's hash → the sequence number of its first record.
#[derive(Default)]
pub struct KeyIndex {
    first: AHashMap<u64, u64>,
    /// Further records whose keys share a hash with an entry of `first`: almost always
    /// empty (two distinct keys collide with odds of about n² / 2⁶⁵).
    more: AHashMap<u64, Vec<u64>>,
}

impl KeyIndex {
    pub fn insert(&mut self, hash: u64, seq: u64) {
        match self.first.entry(hash) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(seq);
            }
            std::collections::hash_map::Entry::Occupied(slot) if *slot.get() == seq => {}
            std::collections::hash_map::Entry::Occupied(_) => {
                let more = self.more.entry(hash).or_default();
                if !more.contains(&seq) {
                    more.push(seq);
                }
            }
        }
    }

    /// The records that may have carried a key with this hash, oldest entry first.
    pub fn candidates(&self, hash: u64) -> impl Iterator<Item = u64> + '_ {
        self.first
            .get(&hash)
            .into_iter()
            .chain(self.more.get(&hash).into_iter().flatten())
            .copied()
    }

    /// Forgets one entry (a run's, when the run expires).
    pub fn remove(&mut self, hash: u64, seq: u64) {
        if let Some(more) = self.more.get_mut(&hash) {
            if let Some(at) = more.iter().position(|s| *s == seq) {
                more.swap_remove(at);
            } else if self.first.get(&hash) == Some(&seq) {
                self.first.insert(hash, more.swap_remove(0));
            }
            if more.is_empty() {
                self.more.remove(&hash);
            }
        } else if self.first.get(&hash) == Some(&seq) {
            self.first.remove(&hash);
        }
    }

    pub fn len(&self) -> usize {
        self.first.len() + self.more.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fixed_across_builds() {
        // Runs on disk are read by later builds: this value must never change. It is the
        // reference implementation's XXH3-64 of b"SKU-1\0shopify/1001/1/placed".
        assert_eq!(
            key_hash("SKU-1", "shopify/1001/1/placed"),
            0xe03e_1d85_d358_6017
        );
        assert_ne!(key_hash("AB", "C"), key_hash("A", "BC"));
    }

    #[test]
    fn colliding_entries_are_all_candidates_and_removed_one_by_one() {
        let mut index = KeyIndex::default();
        index.insert(7, 10);
        index.insert(7, 20);
        index.insert(7, 30);
        index.insert(7, 20); // a re-insert (replay) adds nothing
        assert_eq!(index.candidates(7).collect::<Vec<_>>(), vec![10, 20, 30]);
        assert_eq!(index.len(), 3);
        index.remove(7, 10);
        let mut left: Vec<_> = index.candidates(7).collect();
        left.sort();
        assert_eq!(left, vec![20, 30]);
        index.remove(7, 30);
        index.remove(7, 20);
        assert_eq!(index.candidates(7).count(), 0);
        assert!(index.is_empty());
        index.remove(8, 1); // absent: nothing happens
    }
}
