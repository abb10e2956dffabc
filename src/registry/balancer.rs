//! Load-balancing policies and the precomputed tables that make [`LiveSet::pick`] lock-free.
//!
//! Everything a policy needs is computed once per change of the live view (the smooth weighted
//! round-robin sequence, per-zone sequences, the consistent-hash ring), so a pick is one
//! `ArcSwap` load, at most one atomic increment or a binary search, and one `Arc` clone.
//!
//! [`LiveSet::pick`]: crate::registry::LiveSet::pick

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// How [`LiveSet::pick`](crate::registry::LiveSet::pick) chooses among the serving instances (healthy,
/// weight above 0).
///
/// | policy | picks | state |
/// |---|---|---|
/// | `RoundRobin` | each serving instance in turn, by id, ignoring weights | one atomic counter |
/// | `Random` | uniformly at random, ignoring weights | a per-thread xorshift generator |
/// | `WeightedRoundRobin` | nginx's smooth weighted round robin: over every cycle of `sum(weights)/gcd` picks each instance gets exactly its share, interleaved | one atomic counter |
/// | `ZoneAffinity(zone)` | smooth weighted round robin among the serving instances in `zone`; if there are none, among all | one atomic counter per zone |
/// | `ConsistentHash(key)` | the owner of `key` on a hash ring (160 virtual nodes per instance, unweighted); when one of n instances leaves only its ~1/n of the keys move | none |
///
/// All policies return `None` when no instance is serving. The weighted sequence is capped at
/// 8192 entries; above that, weights are scaled down proportionally (each non-zero weight keeps
/// at least 1), so shares stay within a fraction of a percent.
///
/// The consistent-hash function is fixed (FNV-1a 64 with a splitmix64 finalizer over
/// `"<id>#<vnode>"` and over the key), so every client maps a key to the same instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balancer<'a> {
    /// Each serving instance in turn.
    RoundRobin,
    /// A uniformly random serving instance.
    Random,
    /// Smooth weighted round robin: shares follow the weights.
    WeightedRoundRobin,
    /// Prefer serving instances in this zone (weighted); fall back to all serving instances.
    ZoneAffinity(&'a str),
    /// The instance owning this key on a consistent-hash ring (e.g. a user id's bytes).
    ConsistentHash(&'a [u8]),
}

/// Virtual nodes per instance on the consistent-hash ring.
pub(crate) const VNODES: u32 = 160;

/// Longest smooth weighted round-robin sequence kept per view (entries of 4 bytes).
pub(crate) const MAX_SEQUENCE: u64 = 8192;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One cycle of nginx's smooth weighted round robin over `weights` (indices into `weights`;
/// weight 0 never appears). Reduced by the gcd and capped at [`MAX_SEQUENCE`] entries.
pub(crate) fn smooth_wrr_sequence(weights: &[u32]) -> Vec<u32> {
    let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w)).collect();
    let g = w.iter().copied().filter(|&x| x > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    w.iter_mut().for_each(|x| *x /= g);
    let total: u64 = w.iter().sum();
    if total > MAX_SEQUENCE {
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = (*x * MAX_SEQUENCE / total).max(1);
        }
    }
    let total: u64 = w.iter().sum();
    let weights: Vec<i64> = w.iter().map(|&x| x as i64).collect();
    let total = total as i64;
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0usize;
        let mut best_value = i64::MIN;
        for (i, (c, &wi)) in current.iter_mut().zip(&weights).enumerate() {
            if wi == 0 {
                continue;
            }
            *c += wi;
            // Strictly greater keeps the lowest index on ties (deterministic across clients).
            if *c > best_value {
                best_value = *c;
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

/// 64-bit FNV-1a over `parts`, then splitmix64's finalizer (fixed: the same on every client).
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    splitmix64(h)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ring for `ids` (indices into `ids`), sorted by point.
pub(crate) fn build_ring<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<(u64, u32)> {
    let mut ring = Vec::new();
    for (index, id) in ids.enumerate() {
        for v in 0..VNODES {
            let v = v.to_string();
            ring.push((
                stable_hash(&[id.as_bytes(), b"#", v.as_bytes()]),
                index as u32,
            ));
        }
    }
    ring.sort_unstable();
    ring
}

/// The index owning `key` on `ring` (the first point at or after the key's hash, wrapping).
pub(crate) fn ring_lookup(ring: &[(u64, u32)], key: &[u8]) -> Option<u32> {
    if ring.is_empty() {
        return None;
    }
    let h = stable_hash(&[key]);
    let at = ring.partition_point(|&(point, _)| point < h);
    Some(ring[if at == ring.len() { 0 } else { at }].1)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    RandomState::new().build_hasher().finish() | 1
}

/// A uniform index below `n` (`n > 0`) from a per-thread xorshift64* generator.
pub(crate) fn random_below(n: usize) -> usize {
    let x = RNG.with(|cell| {
        let mut x = cell.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        cell.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    });
    // Lemire's multiply-shift: unbiased enough for load balancing, no division.
    ((u128::from(x) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_wrr_matches_nginx() {
        // nginx's documented example: weights a=5, b=1, c=1 give a a b a c a a.
        assert_eq!(smooth_wrr_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn smooth_wrr_reduces_by_gcd_and_skips_zero() {
        let seq = smooth_wrr_sequence(&[100, 0, 300, 600]);
        assert_eq!(seq.len(), 10);
        let count = |i| seq.iter().filter(|&&x| x == i).count();
        assert_eq!((count(0), count(1), count(2), count(3)), (1, 0, 3, 6));
        assert!(smooth_wrr_sequence(&[0, 0]).is_empty());
        assert!(smooth_wrr_sequence(&[]).is_empty());
    }

    #[test]
    fn smooth_wrr_caps_long_cycles() {
        let seq = smooth_wrr_sequence(&[10_007, 20_011, 1]);
        assert!(seq.len() as u64 <= MAX_SEQUENCE + 3);
        let share0 = seq.iter().filter(|&&x| x == 0).count() as f64 / seq.len() as f64;
        assert!((share0 - 10_007.0 / 30_019.0).abs() < 0.01, "{share0}");
        assert!(
            seq.contains(&2),
            "a non-zero weight keeps at least one slot"
        );
    }

    #[test]
    fn ring_moves_only_the_departed_keys() {
        let ids: Vec<String> = (0..10).map(|i| format!("svc-{i}")).collect();
        let full = build_ring(ids.iter().map(String::as_str));
        let without: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|&id| id != "svc-3")
            .collect();
        let smaller = build_ring(without.iter().copied());
        let mut moved = 0;
        for k in 0..10_000u32 {
            let key = k.to_string();
            let before = ids[ring_lookup(&full, key.as_bytes()).unwrap() as usize].as_str();
            let after = without[ring_lookup(&smaller, key.as_bytes()).unwrap() as usize];
            if before != after {
                assert_eq!(before, "svc-3", "only keys of the departed instance move");
                moved += 1;
            }
        }
        assert!(moved <= 1_000 + 500, "moved {moved}");
    }

    #[test]
    fn random_stays_in_range() {
        for n in 1..20 {
            for _ in 0..100 {
                assert!(random_below(n) < n);
            }
        }
    }

    #[test]
    fn stable_hash_is_fixed() {
        // Pinned so that a change of the function (which would remap every key) is noticed.
        assert_eq!(stable_hash(&[b"user-42"]), 16_324_320_986_541_187_651);
        assert_eq!(stable_hash(&[b"user-42"]), stable_hash(&[b"user-", b"42"]));
        assert_ne!(stable_hash(&[b"a"]), stable_hash(&[b"b"]));
    }
}
