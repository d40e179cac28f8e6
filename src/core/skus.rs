//! A shard's SKUs (`ShardState`): each SKU's state under its name, a million and more per
//! engine, so the container is chosen by what it costs per SKU.
//!
//! A hash map of name → state keeps between 1.14 and 2.3 slots per entry (its load factor
//! lies between 7/16 and 7/8), each slot the size of a name and a state: 320 bytes a slot
//! with the state inline, 24 with both boxed, plus the name's and the state's own
//! allocations. Here the states live named in chunks (`Named`: the name inline when it
//! fits 24 bytes, as most SKUs do), in the order they came, and the hash table holds only
//! each one's place, 4 bytes: at 500,000 SKUs a shard's table is 5 MB where a map of
//! boxes took 26 MB, and no SKU has an allocation of its own for its name or its state.
//! SKUs are never removed (a SKU once seen keeps its state and its audit chain), so a
//! place never changes.

use std::ops::Index;

use compact_str::CompactString;
use hashbrown::HashTable;

use super::SkuState;

/// SKUs per chunk: a chunk is allocated once at this size (the first grows to it), so
/// adding a SKU never moves more than one chunk, and a shard holds at most one chunk
/// partly empty (557 KB).
const CHUNK_SKUS: usize = 4_096;

/// A shard's SKUs by name. Only the shard thread holds it.
#[derive(Clone, Default)]
pub struct ShardState {
    /// Each SKU's place in `chunks`, hashed by its name.
    places: HashTable<u32>,
    /// The SKUs in the order they came, `CHUNK_SKUS` to a chunk.
    chunks: Vec<Vec<Named>>,
    hasher: ahash::RandomState,
}

/// A SKU's state with its name.
#[derive(Clone, Debug)]
struct Named {
    name: CompactString,
    state: SkuState,
}

fn at(chunks: &[Vec<Named>], place: u32) -> &Named {
    let place = place as usize;
    &chunks[place / CHUNK_SKUS][place % CHUNK_SKUS]
}

impl ShardState {
    pub fn len(&self) -> usize {
        self.places.len()
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    fn place(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.places
            .find(hash, |place| at(&self.chunks, *place).name == name)
            .copied()
    }

    fn at_mut(&mut self, place: u32) -> &mut Named {
        let place = place as usize;
        &mut self.chunks[place / CHUNK_SKUS][place % CHUNK_SKUS]
    }

    pub fn get(&self, name: &str) -> Option<&SkuState> {
        self.place(name).map(|place| &at(&self.chunks, place).state)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut SkuState> {
        let place = self.place(name)?;
        Some(&mut self.at_mut(place).state)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.place(name).is_some()
    }

    /// The state of SKU `name`, made by `new` if the SKU is not here yet.
    pub fn get_or_insert_with(
        &mut self,
        name: &str,
        new: impl FnOnce() -> SkuState,
    ) -> &mut SkuState {
        let place = match self.place(name) {
            Some(place) => place,
            None => self.push(name, new()),
        };
        &mut self.at_mut(place).state
    }

    /// Sets the state of SKU `name`.
    pub fn insert(&mut self, name: &str, state: SkuState) {
        match self.get_mut(name) {
            Some(held) => *held = state,
            None => {
                self.push(name, state);
            }
        }
    }

    /// Adds a SKU that is not here; returns its place.
    fn push(&mut self, name: &str, state: SkuState) -> u32 {
        let place = u32::try_from(self.len()).expect("fewer than 2^32 SKUs in one shard");
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK_SKUS) {
            self.chunks.push(Vec::new());
        }
        let chunk = self.chunks.last_mut().expect("a chunk with room");
        if chunk.len() == chunk.capacity() {
            // Doubling, but never past a chunk: the first chunk of a small shard stays small.
            let more = chunk.len().clamp(16, CHUNK_SKUS - chunk.len());
            chunk.reserve_exact(more);
        }
        chunk.push(Named {
            name: CompactString::from(name),
            state,
        });
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.places
            .insert_unique(hasher.hash_one(name), place, |place| {
                hasher.hash_one(at(chunks, *place).name.as_str())
            });
        place
    }

    /// Every SKU with its state, in the order they came.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SkuState)> {
        self.chunks
            .iter()
            .flatten()
            .map(|named| (named.name.as_str(), &named.state))
    }

    /// Every SKU with its state to change, in the order they came.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut SkuState)> {
        self.chunks
            .iter_mut()
            .flatten()
            .map(|named| (named.name.as_str(), &mut named.state))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.chunks
            .iter()
            .flatten()
            .map(|named| named.name.as_str())
    }

    pub fn values(&self) -> impl Iterator<Item = &SkuState> {
        self.chunks.iter().flatten().map(|named| &named.state)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut SkuState> {
        self.chunks
            .iter_mut()
            .flatten()
            .map(|named| &mut named.state)
    }
}

impl<'a> IntoIterator for &'a ShardState {
    type Item = (&'a str, &'a SkuState);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a SkuState)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl Index<&str> for ShardState {
    type Output = SkuState;

    fn index(&self, name: &str) -> &SkuState {
        self.get(name)
            .unwrap_or_else(|| panic!("no SKU {name:?} in the shard's state"))
    }
}

impl PartialEq for ShardState {
    /// The same SKUs with equal states, in whatever order they came.
    fn eq(&self, other: &ShardState) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(name, state)| other.get(name) == Some(state))
    }
}

impl Eq for ShardState {}

impl std::fmt::Debug for ShardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_found_by_name_across_chunks_and_compare_as_a_map() {
        let mut state = ShardState::default();
        let n = CHUNK_SKUS * 2 + 7;
        for i in 0..n {
            let sku = state.get_or_insert_with(&format!("SKU-{i}"), SkuState::new);
            sku.base = i as i64;
        }
        assert_eq!(state.len(), n);
        assert_eq!(state.chunks.len(), 3);
        for i in [0, CHUNK_SKUS - 1, CHUNK_SKUS, n - 1] {
            assert_eq!(state[format!("SKU-{i}").as_str()].base, i as i64);
        }
        assert!(state.get("SKU-x").is_none());
        // A name too long to keep inline is found as well.
        let long = "L".repeat(100);
        state.insert(&long, SkuState::default());
        state.get_or_insert_with(&long, SkuState::new).base = 5;
        assert_eq!(state[long.as_str()].base, 5);
        assert_eq!(state.len(), n + 1);

        let mut other = ShardState::default();
        for (name, sku) in state.iter().collect::<Vec<_>>().into_iter().rev() {
            other.insert(name, sku.clone());
        }
        assert_eq!(other, state, "the same SKUs, in another order");
        other.get_mut("SKU-3").unwrap().base += 1;
        assert_ne!(other, state);
    }

    /// A SKU's name of up to 24 bytes and its state take 136 bytes in a chunk, and its
    /// place 4 in the table (issue #18; the README's "Performance").
    #[test]
    fn a_named_state_is_136_bytes() {
        assert_eq!(std::mem::size_of::<Named>(), 136);
        assert!(!CompactString::from("LG-0123456789-000001").is_heap_allocated());
    }
}
