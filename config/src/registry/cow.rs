//! A hash map for immutable snapshots: split into shards that successive snapshots share,
//! so a change copies one shard, not the whole map, while a lookup stays one hash and one
//! probe. The number of shards grows with the map (at most [`MAX_SHARD`] entries a shard on
//! average), so what one change copies does not grow with the cluster.
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// The fewest shards (a power of two: the shard is the top bits of the routing hash).
const MIN_SHARD_BITS: u32 = 6;
/// Entries a shard holds on average before the shards double.
const MAX_SHARD: usize = 512;

#[derive(Debug)]
pub struct CowMap<K, V> {
    shards: Vec<Arc<HashMap<K, V>>>,
    /// `shards.len() == 1 << bits`.
    bits: u32,
    len: usize,
}

impl<K, V> Clone for CowMap<K, V> {
    fn clone(&self) -> Self {
        Self {
            shards: self.shards.clone(),
            bits: self.bits,
            len: self.len,
        }
    }
}

impl<K, V> Default for CowMap<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..1usize << MIN_SHARD_BITS)
                .map(|_| Arc::new(HashMap::new()))
                .collect(),
            bits: MIN_SHARD_BITS,
            len: 0,
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
        shard_of(key, self.bits)
    }

    /// Doubles the shards once the map outgrows them: each entry moves once per doubling,
    /// a constant cost per insert over the map's growth.
    fn grow(&mut self) {
        let bits = self.bits + 1;
        let mut shards: Vec<HashMap<K, V>> = (0..1usize << bits).map(|_| HashMap::new()).collect();
        for shard in &self.shards {
            for (k, v) in shard.iter() {
                shards[shard_of(k, bits)].insert(k.clone(), v.clone());
            }
        }
        self.shards = shards.into_iter().map(Arc::new).collect();
        self.bits = bits;
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
        let old = Arc::make_mut(&mut self.shards[shard]).insert(key, value);
        if old.is_none() {
            self.len += 1;
            if self.len > self.shards.len() * MAX_SHARD {
                self.grow();
            }
        }
        old
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
        let removed = Arc::make_mut(&mut self.shards[shard]).remove(key);
        self.len -= usize::from(removed.is_some());
        removed
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
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

fn shard_of<Q: Hash + ?Sized>(key: &Q, bits: u32) -> usize {
    // The multiply mixes into the high bits.
    (BuildRouter.hash_one(key) >> (u64::BITS - bits)) as usize
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
            shared >= map.shards.len() - 2,
            "only the touched shards were copied ({shared} shared)"
        );
    }

    #[test]
    fn shards_grow_with_the_map_so_a_change_copies_a_bounded_shard() {
        let mut map: CowMap<u32, u32> = CowMap::default();
        for i in 0..200_000 {
            map.insert(i, i);
        }
        assert_eq!(map.len(), 200_000);
        let largest = map.shards.iter().map(|s| s.len()).max().unwrap_or_default();
        assert!(largest <= 2 * MAX_SHARD, "largest shard {largest}");
        assert!((0..200_000).all(|i| map.get(&i) == Some(&i)));
        let before = map.clone();
        map.insert(7, 70);
        let copied = map
            .shards
            .iter()
            .zip(&before.shards)
            .filter(|(a, b)| !Arc::ptr_eq(a, b))
            .count();
        assert_eq!(copied, 1);
        assert_eq!(before.get(&7), Some(&7));
    }
}
