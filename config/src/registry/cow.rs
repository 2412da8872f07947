//! A hash map for immutable snapshots: split into shards that successive snapshots share,
//! so a change copies one shard (1/64 of the entries), not the whole map, while a lookup
//! stays one hash and one probe.
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// A power of two: the shard is the top bits of the routing hash.
const SHARDS: usize = 64;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();

#[derive(Debug)]
pub struct CowMap<K, V> {
    shards: Vec<Arc<HashMap<K, V>>>,
}

impl<K, V> Clone for CowMap<K, V> {
    fn clone(&self) -> Self {
        Self {
            shards: self.shards.clone(),
        }
    }
}

impl<K, V> Default for CowMap<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::new())).collect(),
        }
    }
}

/// A cheap multiply-rotate hash (FxHash's) that only picks a shard: lookups are on the
/// connection path, and flooding one shard costs an attacker nothing they could not do to
/// the shard's own map, which keeps std's keyed SipHash.
struct Router(u64);

impl Hasher for Router {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

struct BuildRouter;

impl BuildHasher for BuildRouter {
    type Hasher = Router;

    fn build_hasher(&self) -> Router {
        Router(0)
    }
}

impl<K: Hash + Eq + Clone, V: Clone> CowMap<K, V> {
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The multiply mixes into the high bits.
        (BuildRouter.hash_one(key) >> (u64::BITS - SHARD_BITS)) as usize
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(key)].get(key)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let shard = self.shard(&key);
        Arc::make_mut(&mut self.shards[shard]).insert(key, value)
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        // Look before copying: removing an absent key must not unshare the shard.
        if !self.shards[shard].contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.shards[shard]).remove(key)
    }

    /// The value of `key` to modify in place (copying its shard if shared).
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        if !self.shards[shard].contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.shards[shard]).get_mut(key)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_the_shards() {
        let mut map: CowMap<std::net::IpAddr, u32> = CowMap::default();
        for i in 0..6400u32 {
            map.insert(
                std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
                i,
            );
        }
        let sizes: Vec<usize> = map.shards.iter().map(|s| s.len()).collect();
        assert!(sizes.iter().all(|n| (50..=150).contains(n)), "{sizes:?}");
    }

    #[test]
    fn a_change_leaves_earlier_copies_alone_and_shares_untouched_shards() {
        let mut map: CowMap<u32, u32> = CowMap::default();
        for i in 0..1000 {
            map.insert(i, i);
        }
        let before = map.clone();
        map.insert(7, 70);
        assert_eq!(map.remove(&8), Some(8));
        assert_eq!(before.get(&7), Some(&7));
        assert_eq!(before.get(&8), Some(&8));
        assert_eq!(map.get(&7), Some(&70));
        assert_eq!(map.len(), 999);
        let shared = map
            .shards
            .iter()
            .zip(&before.shards)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert!(
            shared >= SHARDS - 2,
            "only the touched shards were copied ({shared} shared)"
        );
    }
}
