//! Where to split a paged read in two: a key found from etcd's own counts at the read's
//! revision, so that both halves of a large range can be read at once.
//!
//! etcd serves one range request on one core; a read of a large range as two concurrent
//! sequences of pages uses two. The split key has to come from etcd, since the keys past the
//! first page are not known yet: it is found with count-only ranges (etcd counts keys in its
//! in-memory index, reading no values) in a read-only transaction per round, at most
//! [`ROUNDS`] rounds of at most [`OPS`] ranges. The ranges of one round are disjoint, so a
//! round counts each key of the range once at most.
//!
//! - The first round's candidates follow the first page's last key at each byte position:
//!   the end of the range of keys that share it up to there, and the keys that share it
//!   before the position and have there a greater byte of those the first page's keys are
//!   made of. Keys made of few bytes (digits, letters, `/`) change counts exactly there, so
//!   one round usually finds a split within an eighth of the middle.
//! - Each later round places its candidates between the two candidates of the round before
//!   whose counts bracket the middle: their common prefix and one or two bytes of that
//!   alphabet, or else evenly (as big-endian numbers of 16 bytes past the common prefix).
//!
//! A split is taken only where it leaves at least a quarter of the keys on each side; where
//! none is found (keys too alike for the candidates, or the transaction refused, e.g. by a
//! `--max-txn-ops` below [`OPS`]) the read goes on as one sequence. The probe costs etcd one
//! walk of its index over the keys counted (no value is read), much less than reading them.

use etcd_client::{GetOptions, Txn, TxnOp, TxnOpResponse};

use super::range::prefix_end;
use super::Etcd;

/// The most count-only ranges in one probe transaction (etcd's `--max-txn-ops` is 128 by
/// default).
pub(crate) const OPS: usize = 120;

/// The most probe transactions one split takes.
pub(crate) const ROUNDS: usize = 3;

/// A key that splits a range of keys in two parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Split {
    /// The first key of the upper part (every key below it is in the lower part).
    pub(crate) key: Vec<u8>,
    /// How many keys of the range are below `key`, at the read's revision.
    pub(crate) below: i64,
}

/// A key that splits the `total` keys after `after` and below `end`, as of `revision`, so that
/// each part holds between a quarter and three quarters of them; `None` where no such key was
/// found in [`ROUNDS`] rounds or a probe failed (the read then goes on as one sequence: a
/// failure that matters, such as a compacted revision, fails its next page as well).
///
/// Cancel safety: dropping the future drops the probe in flight; nothing was written.
pub(crate) async fn find_split(
    etcd: &Etcd,
    after: &[u8],
    end: &[u8],
    revision: i64,
    total: i64,
    target: i64,
    alphabet: &[u8],
) -> Option<Split> {
    if end == [0] {
        // To the end of the key space: no bound to place candidates below.
        return None;
    }
    let (least, most) = (total / 4, total - total / 4);
    // Close enough to stop looking: within an eighth of the keys of the target.
    let near = (total / 8).max(1);
    let mut start = after.to_vec();
    start.push(0);
    // The candidates' bracket of the middle: below `lo`, fewer than `target` keys; below `hi`,
    // at least `target`.
    let mut lo = (start.clone(), 0);
    let mut hi = (end.to_vec(), total);
    let mut candidates = first_candidates(after, &start, end, alphabet);
    for round in 0..ROUNDS {
        if candidates.is_empty() {
            break;
        }
        let counts = match count_below(etcd, &lo, &candidates, revision).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::debug!(error = %e, round, "split probe failed; reading as one sequence");
                return None;
            }
        };
        for (key, below) in candidates.into_iter().zip(counts) {
            if below < target {
                lo = (key, below);
            } else {
                hi = (key, below);
                break;
            }
        }
        let best = match (target - lo.1) <= (hi.1 - target) {
            true => &lo,
            false => &hi,
        };
        let usable = (least..=most).contains(&best.1) && best.0 != start && best.0 != end;
        if usable && ((best.1 - target).abs() <= near || round + 1 == ROUNDS) {
            return Some(Split {
                key: best.0.clone(),
                below: best.1,
            });
        }
        candidates = among(&lo.0, &hi.0, alphabet, OPS);
        if candidates.len() < 2 {
            candidates = between(&lo.0, &hi.0, OPS);
        }
        if candidates.is_empty() && usable {
            return Some(Split {
                key: best.0.clone(),
                below: best.1,
            });
        }
    }
    tracing::debug!(total, "no split found; reading as one sequence");
    None
}

/// The first round's candidates: for each position of `after`, the keys that share `after`
/// before it and have a greater byte there: that byte one above `after`'s (where the range of
/// keys sharing `after` up to that position ends) and each greater byte of `alphabet`; kept
/// where they lie in `(start, end)`, ascending, at most [`OPS`]. The earlier the position, the
/// larger its keys and the more keys below them: positions are taken from the first one not
/// shared with `end` (before it, every such key is past `end`) until there are enough.
fn first_candidates(after: &[u8], start: &[u8], end: &[u8], alphabet: &[u8]) -> Vec<Vec<u8>> {
    let shared = after.iter().zip(end).take_while(|(a, b)| a == b).count();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for (i, &byte) in after.iter().enumerate().skip(shared) {
        if keys.len() >= OPS {
            break;
        }
        let mut at = vec![prefix_end(&after[..=i])];
        at.extend(alphabet.iter().filter(|&&c| c > byte).map(|&c| {
            let mut key = after[..i].to_vec();
            key.push(c);
            key
        }));
        keys.extend(
            at.into_iter()
                .filter(|key| key.as_slice() > start && key.as_slice() < end),
        );
    }
    keys.sort();
    keys.dedup();
    let extra = keys.len().saturating_sub(OPS);
    keys.drain(..extra);
    keys
}

/// Up to `n` keys strictly between `lo` and `hi` (`lo < hi`), ascending: their common prefix
/// followed by one or two bytes of `alphabet` (the bytes the keys read so far are made of,
/// ascending and distinct),
/// evenly chosen among all such keys. Where the keys are made of few bytes (digits, letters),
/// these are the places where counts change.
pub(crate) fn among(lo: &[u8], hi: &[u8], alphabet: &[u8], n: usize) -> Vec<Vec<u8>> {
    debug_assert!(
        alphabet.windows(2).all(|w| w[0] < w[1]),
        "ascending, distinct"
    );
    let common = lo.iter().zip(hi).take_while(|(a, b)| a == b).count();
    let (lo_rest, hi_rest) = (&lo[common..], &hi[common..]);
    // The tails past the common prefix, in key order (a one-byte tail before the two-byte
    // tails it starts); only the chosen ones become keys, so a long prefix costs no more.
    let tails: Vec<([u8; 2], usize)> = alphabet
        .iter()
        .flat_map(|&a| {
            std::iter::once(([a, 0], 1)).chain(alphabet.iter().map(move |&b| ([a, b], 2)))
        })
        .filter(|(tail, len)| {
            let tail = &tail[..*len];
            tail > lo_rest && tail < hi_rest
        })
        .collect();
    let chosen = n.min(tails.len());
    (0..chosen)
        .map(|j| {
            let (tail, len) = tails[j * tails.len() / chosen];
            let mut key = lo[..common].to_vec();
            key.extend_from_slice(&tail[..len]);
            key
        })
        .collect()
}

/// Up to `n` keys evenly spread strictly between `lo` and `hi` (`lo < hi`), ascending: the 16
/// bytes past their common prefix read as a big-endian number, with trailing zero bytes
/// dropped.
pub(crate) fn between(lo: &[u8], hi: &[u8], n: usize) -> Vec<Vec<u8>> {
    let common = lo.iter().zip(hi).take_while(|(a, b)| a == b).count();
    let number = |key: &[u8]| {
        let mut digits = [0u8; 16];
        let rest = &key[common..];
        let len = rest.len().min(16);
        digits[..len].copy_from_slice(&rest[..len]);
        u128::from_be_bytes(digits)
    };
    let (a, b) = (number(lo), number(hi));
    if b <= a {
        return Vec::new();
    }
    let step = ((b - a) / (n as u128 + 1)).max(1);
    let mut keys: Vec<Vec<u8>> = (1..=n as u128)
        .map_while(|j| a.checked_add(step.checked_mul(j)?))
        .take_while(|&x| x < b)
        .map(|x| {
            let digits = x.to_be_bytes();
            let used = digits.iter().rposition(|&d| d != 0).map_or(0, |i| i + 1);
            let mut key = lo[..common].to_vec();
            key.extend_from_slice(&digits[..used]);
            key
        })
        .filter(|key| key.as_slice() > lo && key.as_slice() < hi)
        .collect();
    keys.dedup();
    keys
}

/// For each of `candidates` (ascending, all above `from.0`), how many keys are below it: the
/// `from.1` keys below `from.0` and those counted from there, as of `revision`. One read-only
/// transaction of disjoint count-only ranges.
async fn count_below(
    etcd: &Etcd,
    from: &(Vec<u8>, i64),
    candidates: &[Vec<u8>],
    revision: i64,
) -> Result<Vec<i64>, etcd_client::Error> {
    let starts = std::iter::once(&from.0).chain(candidates);
    let ops: Vec<TxnOp> = starts
        .zip(candidates)
        .map(|(start, end)| {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_count_only()
                .with_serializable()
                .with_revision(revision);
            TxnOp::get(start.clone(), Some(options))
        })
        .collect();
    let resp = etcd
        .client()
        .kv_client()
        .txn(Txn::new().and_then(ops))
        .await?;
    let mut below = from.1;
    let counts = resp
        .op_responses()
        .into_iter()
        .map(|op| {
            if let TxnOpResponse::Get(get) = op {
                below = below.saturating_add(get.count());
            }
            below
        })
        .collect::<Vec<_>>();
    match counts.len() == candidates.len() {
        true => Ok(counts),
        false => Err(etcd_client::Error::InvalidArgs(
            "the probe's answer has the wrong number of ranges".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_candidates_follow_the_last_key_at_each_position() {
        let keys = first_candidates(b"/p/k19", b"/p/k19\0", b"/p0", b"19k");
        let want: [&[u8]; 6] = [b"/p/k1:", b"/p/k1k", b"/p/k2", b"/p/k9", b"/p/kk", b"/p/l"];
        assert_eq!(keys, want.map(<[u8]>::to_vec));
    }

    #[test]
    fn among_places_keys_where_counts_change() {
        let keys = among(b"/p/k001", b"/p/k01", b"0123456789", 8);
        let want: [&[u8]; 8] = [
            b"/p/k002", b"/p/k003", b"/p/k004", b"/p/k005", b"/p/k006", b"/p/k007", b"/p/k008",
            b"/p/k009",
        ];
        assert_eq!(keys, want.map(<[u8]>::to_vec));
        // Spread evenly where there are more than asked for, ascending, strictly inside.
        let keys = among(b"/p/a", b"/p/z", b"abcdefghijklmnopqrstuvwxyz", 10);
        assert_eq!(keys.len(), 10);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(keys
            .iter()
            .all(|k| k.as_slice() > b"/p/a".as_slice() && k.as_slice() < b"/p/z".as_slice()));
        assert!(among(b"/p/a", b"/p/b", b"ab", 10)
            .iter()
            .all(|k| k.starts_with(b"/p/a")));
    }

    #[test]
    fn between_spreads_keys_strictly_inside() {
        let keys = between(b"/p/k01", b"/p/k1", 8);
        assert!(!keys.is_empty() && keys.len() <= 8);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(keys
            .iter()
            .all(|k| k.as_slice() > b"/p/k01".as_slice() && k.as_slice() < b"/p/k1".as_slice()));
        // Next to each other: nothing between.
        assert!(between(b"a", b"a\0", 8).is_empty());
        assert!(between(b"b", b"a", 8).is_empty());
    }
}
