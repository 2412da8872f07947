//! xxHash64, the hash Envoy uses for its ring hash and Maglev load balancers and for request
//! hash keys, and the Maglev lookup table.
//!
//! Using Envoy's function (rather than std's `DefaultHasher`, whose output may change between
//! Rust releases) keeps the ring identical across waypoint replicas and versions, so a key
//! lands on the same endpoint whichever replica serves it.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn merge_round(acc: u64, value: u64) -> u64 {
    (acc ^ round(0, value)).wrapping_mul(P1).wrapping_add(P4)
}

/// XXH64 of `input` with `seed`.
pub fn xxh64(input: &[u8], seed: u64) -> u64 {
    let mut rest = input;
    let mut hash = if input.len() >= 32 {
        let mut v1 = seed.wrapping_add(P1).wrapping_add(P2);
        let mut v2 = seed.wrapping_add(P2);
        let mut v3 = seed;
        let mut v4 = seed.wrapping_sub(P1);
        while rest.len() >= 32 {
            v1 = round(v1, read_u64(rest));
            v2 = round(v2, read_u64(&rest[8..]));
            v3 = round(v3, read_u64(&rest[16..]));
            v4 = round(v4, read_u64(&rest[24..]));
            rest = &rest[32..];
        }
        let mut h = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        for v in [v1, v2, v3, v4] {
            h = merge_round(h, v);
        }
        h
    } else {
        seed.wrapping_add(P5)
    };
    hash = hash.wrapping_add(input.len() as u64);
    while rest.len() >= 8 {
        hash ^= round(0, read_u64(rest));
        hash = hash.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        hash ^= u64::from(read_u32(rest)).wrapping_mul(P1);
        hash = hash.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &byte in rest {
        hash ^= u64::from(byte).wrapping_mul(P5);
        hash = hash.rotate_left(11).wrapping_mul(P1);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(P2);
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(P3);
    hash ^ (hash >> 32)
}

/// Envoy's Maglev table (Eisenbud et al., NSDI 2016) of `table_size` entries (a prime,
/// which validation ensures) over `endpoints`: each endpoint's preference list is the
/// permutation `offset + j * skip` (offset and skip from xxHash64 of `"<ip:port>"` with seeds
/// 0 and 1), and the endpoints take turns claiming their next free entry until the table is
/// full. Each endpoint gets `table_size / n` entries, ±1; a key belongs to
/// `table[hash % table_size]`. Removing an endpoint hands its entries to the others and
/// moves only a small share of the rest (the paper's "minimal disruption").
pub fn maglev_table(endpoints: &[std::net::SocketAddr], table_size: u64) -> Vec<u32> {
    let Ok(size) = usize::try_from(table_size) else {
        return Vec::new();
    };
    if endpoints.is_empty() || table_size < 2 {
        return Vec::new();
    }
    struct Permutation {
        offset: u64,
        skip: u64,
        next: u64,
    }
    let mut permutations: Vec<Permutation> = endpoints
        .iter()
        .map(|endpoint| {
            let key = endpoint.to_string();
            Permutation {
                offset: xxh64(key.as_bytes(), 0) % table_size,
                skip: xxh64(key.as_bytes(), 1) % (table_size - 1) + 1,
                next: 0,
            }
        })
        .collect();
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; size];
    let mut filled = 0;
    'fill: loop {
        for (i, permutation) in permutations.iter_mut().enumerate() {
            let Ok(owner) = u32::try_from(i) else {
                break 'fill;
            };
            // A prime size makes every permutation visit every entry: a free one is found
            // within `table_size` steps while the table is not full.
            loop {
                let at = (permutation.offset + permutation.next * permutation.skip) % table_size;
                permutation.next += 1;
                let Some(entry) = usize::try_from(at).ok().and_then(|at| table.get_mut(at)) else {
                    break 'fill;
                };
                if *entry == EMPTY {
                    *entry = owner;
                    break;
                }
            }
            filled += 1;
            if filled == size {
                break 'fill;
            }
        }
    }
    table
}

/// The endpoint index of `hash` in a Maglev table; `None` for an empty table.
pub fn maglev_lookup(table: &[u32], hash: u64) -> Option<usize> {
    let size = u64::try_from(table.len()).ok().filter(|s| *s > 0)?;
    let at = usize::try_from(hash % size).ok()?;
    table.get(at).and_then(|i| usize::try_from(*i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn endpoints(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
            .collect()
    }

    #[test]
    fn maglev_spreads_entries_evenly() {
        let eps = endpoints(7);
        let table = maglev_table(&eps, 65_537);
        assert_eq!(table.len(), 65_537);
        let mut counts = [0usize; 7];
        for owner in &table {
            counts[*owner as usize] += 1;
        }
        // 65537 / 7 = 9362.4: each endpoint owns 9362 or 9363 entries.
        for count in counts {
            assert!((9362..=9363).contains(&count), "{counts:?}");
        }
        // And keys spread the same way.
        let mut keys = [0usize; 7];
        for k in 0..7000u32 {
            let hash = xxh64(&k.to_le_bytes(), 0);
            keys[maglev_lookup(&table, hash).expect("owner")] += 1;
        }
        for count in keys {
            assert!((800..=1200).contains(&count), "{keys:?}");
        }
    }

    #[test]
    fn maglev_removal_moves_the_removed_endpoints_keys_and_few_others() {
        let eps = endpoints(10);
        let before = maglev_table(&eps, 65_537);
        // Remove the fourth endpoint: indexes after it shift, so compare addresses.
        let mut fewer = eps.clone();
        let removed = fewer.remove(3);
        let after = maglev_table(&fewer, 65_537);
        let (mut moved_others, mut others) = (0, 0);
        for k in 0..10_000u32 {
            let hash = xxh64(&k.to_le_bytes(), 0);
            let was = eps[maglev_lookup(&before, hash).expect("owner")];
            let now = fewer[maglev_lookup(&after, hash).expect("owner")];
            assert_ne!(now, removed);
            if was != removed {
                others += 1;
                if was != now {
                    moved_others += 1;
                }
            }
        }
        // Maglev trades perfect stability for balance; the paper measures a few percent.
        assert!(
            moved_others * 100 <= others * 3,
            "{moved_others} of {others} keys of remaining endpoints moved"
        );
    }

    #[test]
    fn maglev_is_deterministic_and_small_tables_work() {
        let eps = endpoints(3);
        assert_eq!(maglev_table(&eps, 251), maglev_table(&eps, 251));
        let small = maglev_table(&eps, 7);
        assert_eq!(small.len(), 7);
        assert!(small.iter().all(|o| *o < 3));
        assert!(maglev_table(&[], 251).is_empty());
        assert_eq!(maglev_lookup(&[], 5), None);
        assert_eq!(maglev_lookup(&[2, 0, 1], 4), Some(0));
    }

    #[test]
    fn matches_the_reference_implementation() {
        // Reference values from libxxhash 0.8.
        let cases: [(&[u8], u64, u64); 7] = [
            (b"", 0, 0xef46_db37_51d8_e999),
            (b"a", 0, 0xd24e_c4f1_a98c_6e5b),
            (b"abc", 0, 0x44bc_2cf5_ad77_0999),
            (
                b"Nobody inspects the spammish repetition",
                0,
                0xfbce_a83c_8a37_8bf1,
            ),
            (b"10.0.0.1:8080_0", 0, 0x23a2_9ae7_75df_d4a3),
            (b"abcdefgh", 7, 0x1561_b8f7_5328_fe71),
            (
                b"0123456789abcdef0123456789abcdef0123456789abcdef01234",
                12345,
                0xae8a_9711_fe68_10b0,
            ),
        ];
        for (input, seed, expected) in cases {
            assert_eq!(xxh64(input, seed), expected, "{input:?} seed {seed}");
        }
    }
}
