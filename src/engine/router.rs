//! The router: which shard owns a SKU. `ahash(sku) % shards`, with fixed seeds so that a
//! SKU lands on the same shard after a restart, which its stored state requires.
//!
//! ahash promises stable output for fixed seeds only within one build on one kind of CPU
//! (it picks AES instructions when present). The data directory therefore records a
//! fingerprint of the router, and the engine refuses to start when it differs, rather
//! than look for a SKU's state on the wrong shard.

/// Fixed seeds: part of the on-disk format, never change them.
const SEEDS: [u64; 4] = [
    0x6c6f_636b_7374_6570,
    0x7368_6172_642d_6b65,
    0x7973_2d62_792d_736b,
    0x752d_6861_7368_2d31,
];

/// Maps SKUs to shards.
#[derive(Clone, Debug)]
pub struct Router {
    hasher: ahash::RandomState,
    shards: usize,
}

impl Router {
    pub fn new(shards: usize) -> Router {
        assert!(shards > 0, "a router needs at least one shard");
        Router {
            hasher: ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]),
            shards,
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard that owns `sku`.
    pub fn shard_of(&self, sku: &str) -> usize {
        (self.hasher.hash_one(sku) % self.shards as u64) as usize
    }

    /// A value that changes whenever the SKU → shard mapping would change.
    pub fn fingerprint(&self) -> u64 {
        ["SKU-0", "TSHIRT-RED-M", "lockstep", "", "0123456789abcdef"]
            .iter()
            .fold(self.shards as u64, |acc, probe| {
                acc.rotate_left(13) ^ self.hasher.hash_one(probe)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_skus_and_is_deterministic() {
        let router = Router::new(4);
        let mut counts = [0usize; 4];
        for i in 0..10_000 {
            let sku = format!("SKU-{i}");
            let shard = router.shard_of(&sku);
            assert_eq!(shard, Router::new(4).shard_of(&sku));
            counts[shard] += 1;
        }
        assert!(
            counts.iter().all(|c| *c > 2_000),
            "uneven spread: {counts:?}"
        );
        assert_ne!(Router::new(4).fingerprint(), Router::new(3).fingerprint());
    }
}
