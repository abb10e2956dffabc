//! The storage of a [`ConfigMap`](super::ConfigMap): a persistent map from string keys to
//! shared values, kept in key order in chunks that copies of the map share.
//!
//! The map is a shared list of shared chunks, each a sorted run of at most [`MAX`] entries.
//! Cloning it copies nothing; changing one entry of a clone copies the list of chunks (one
//! pointer per chunk) and the one chunk that holds the entry, and leaves every other chunk
//! shared with the original. Built from entries already in key order (what deserializing a
//! document gives), it cuts them into chunks without comparing keys beyond one check of the
//! order, so building 10,000 entries costs a pass over them, where inserting them one by one
//! into a persistent tree costs a search and a path copy each.

use std::sync::Arc;

/// Entries per chunk when a map is built at once.
const CHUNK: usize = 64;

/// A chunk grown past this many entries is split in two.
const MAX: usize = 2 * CHUNK;

/// One entry: its key and its shared value.
pub(crate) type Entry<V> = (Arc<str>, Arc<V>);

/// A persistent sorted map of [`Entry`]s (see the module docs).
pub(crate) struct Chunks<V> {
    /// Sorted runs of entries, in key order; none is empty.
    chunks: Arc<Vec<Arc<Vec<Entry<V>>>>>,
    len: usize,
}

impl<V> Clone for Chunks<V> {
    fn clone(&self) -> Self {
        Chunks {
            chunks: Arc::clone(&self.chunks),
            len: self.len,
        }
    }
}

impl<V> Chunks<V> {
    /// An empty map.
    pub(crate) fn new() -> Self {
        Chunks {
            chunks: Arc::new(Vec::new()),
            len: 0,
        }
    }

    /// The map of `entries`, given in any order; of entries with the same key, the last one
    /// given is kept. Entries in strictly increasing key order are taken as they are.
    pub(crate) fn from_entries(mut entries: Vec<Entry<V>>) -> Self {
        if !entries.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            // A stable sort keeps entries with the same key in the order given.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut kept: Vec<Entry<V>> = Vec::with_capacity(entries.len());
            for entry in entries {
                match kept.last_mut() {
                    Some(last) if last.0 == entry.0 => *last = entry,
                    _ => kept.push(entry),
                }
            }
            entries = kept;
        }
        let len = entries.len();
        let mut chunks = Vec::with_capacity(len.div_ceil(CHUNK));
        let mut rest = entries.into_iter();
        loop {
            let chunk: Vec<Entry<V>> = rest.by_ref().take(CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(Arc::new(chunk));
        }
        Chunks {
            chunks: Arc::new(chunks),
            len,
        }
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The index of the chunk that holds `key` or would take it: the first chunk whose last
    /// key is not below `key`, or the last chunk for a key above every key; `None` when the
    /// map is empty.
    fn chunk_of(&self, key: &str) -> Option<usize> {
        let last = self.chunks.len().checked_sub(1)?;
        let at = self
            .chunks
            .partition_point(|chunk| chunk.last().is_none_or(|(k, _)| &**k < key));
        Some(at.min(last))
    }

    /// The position of `key` in chunk `chunk`: `Ok` where it is, `Err` where it would go.
    fn position(&self, chunk: usize, key: &str) -> Result<usize, usize> {
        self.chunks[chunk].binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// The value at `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&Arc<V>> {
        let chunk = self.chunk_of(key)?;
        let at = self.position(chunk, key).ok()?;
        Some(&self.chunks[chunk][at].1)
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub(crate) fn insert(&mut self, key: Arc<str>, value: Arc<V>) -> Option<Arc<V>> {
        let Some(chunk) = self.chunk_of(&key) else {
            Arc::make_mut(&mut self.chunks).push(Arc::new(vec![(key, value)]));
            self.len = 1;
            return None;
        };
        let at = self.position(chunk, &key);
        let chunks = Arc::make_mut(&mut self.chunks);
        let entries = Arc::make_mut(&mut chunks[chunk]);
        match at {
            Ok(at) => Some(std::mem::replace(&mut entries[at].1, value)),
            Err(at) => {
                entries.insert(at, (key, value));
                self.len += 1;
                if entries.len() > MAX {
                    let upper = entries.split_off(entries.len() / 2);
                    chunks.insert(chunk + 1, Arc::new(upper));
                }
                None
            }
        }
    }

    /// Removes `key`; returns its value. A chunk left with few entries is merged with a
    /// neighbour where the two fit in one chunk of [`CHUNK`].
    pub(crate) fn remove(&mut self, key: &str) -> Option<Arc<V>> {
        let chunk = self.chunk_of(key)?;
        let at = self.position(chunk, key).ok()?;
        let chunks = Arc::make_mut(&mut self.chunks);
        let (_, value) = Arc::make_mut(&mut chunks[chunk]).remove(at);
        self.len -= 1;
        let left = chunks[chunk].len();
        let fits = |other: &Arc<Vec<Entry<V>>>| left + other.len() <= CHUNK;
        if left == 0 {
            chunks.remove(chunk);
        } else if left < CHUNK / 4 {
            if chunks.get(chunk + 1).is_some_and(fits) {
                let next = Arc::unwrap_or_clone(chunks.remove(chunk + 1));
                Arc::make_mut(&mut chunks[chunk]).extend(next);
            } else if chunk > 0 && fits(&chunks[chunk - 1]) {
                let this = Arc::unwrap_or_clone(chunks.remove(chunk));
                Arc::make_mut(&mut chunks[chunk - 1]).extend(this);
            }
        }
        Some(value)
    }

    /// Every entry, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry<V>> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// Whether `self` and `other` are the same map (one is an unchanged clone of the other).
    pub(crate) fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.chunks, &other.chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    impl<V> Chunks<V> {
        /// Panics unless every chunk is non-empty and at most [`MAX`] long, the keys strictly
        /// increase across the whole map, and `len` counts them.
        fn assert_sound(&self) {
            assert!(self.chunks.iter().all(|c| !c.is_empty() && c.len() <= MAX));
            let keys: Vec<&str> = self.iter().map(|(k, _)| &**k).collect();
            assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "{keys:?}");
            assert_eq!(keys.len(), self.len);
        }

        fn contents(&self) -> Vec<(String, u32)>
        where
            V: Copy + Into<u32>,
        {
            self.iter()
                .map(|(k, v)| (k.to_string(), (**v).into()))
                .collect()
        }
    }

    fn entry(key: &str, value: u32) -> Entry<u32> {
        (Arc::from(key), Arc::new(value))
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        /// Keep a clone as it is now, to check later that changes to the map left it alone.
        Fork,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u16..400, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => (0u16..400).prop_map(Op::Remove),
            1 => Just(Op::Fork),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Built from entries in any order, with keys given twice, the map holds what a
        /// `BTreeMap` collected from them holds (the last value of a key wins).
        #[test]
        fn building_agrees_with_a_btree_map(
            pairs in proptest::collection::vec((0u16..300, any::<u32>()), 0..700),
            sorted in any::<bool>(),
        ) {
            let mut pairs = pairs;
            if sorted {
                pairs.sort_by_key(|(k, _)| format!("k{k}"));
                pairs.dedup_by_key(|(k, _)| *k);
            }
            let map = Chunks::from_entries(
                pairs.iter().map(|(k, v)| entry(&format!("k{k}"), *v)).collect(),
            );
            map.assert_sound();
            let model: BTreeMap<String, u32> =
                pairs.iter().map(|(k, v)| (format!("k{k}"), *v)).collect();
            prop_assert_eq!(map.contents(), model.into_iter().collect::<Vec<_>>());
        }

        /// Inserts and removes, on a map and on clones of it kept along the way, agree with a
        /// `BTreeMap`; every clone still holds what it held when it was taken.
        #[test]
        fn changes_agree_with_a_btree_map_and_leave_clones_alone(
            start in 0usize..600,
            ops in proptest::collection::vec(op(), 0..400),
        ) {
            let mut model: BTreeMap<String, u32> =
                (0..start).map(|i| (format!("k{:03}", i % 400), i as u32)).collect();
            let mut map = Chunks::from_entries(
                model.iter().map(|(k, v)| entry(k, *v)).collect(),
            );
            let mut forks = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let key = format!("k{k:03}");
                        let before = map.insert(Arc::from(key.as_str()), Arc::new(v));
                        prop_assert_eq!(before.map(|b| *b), model.insert(key, v));
                    }
                    Op::Remove(k) => {
                        let key = format!("k{k:03}");
                        prop_assert_eq!(map.remove(&key).map(|b| *b), model.remove(&key));
                        prop_assert!(map.get(&key).is_none());
                    }
                    Op::Fork => forks.push((map.clone(), map.contents())),
                }
                map.assert_sound();
            }
            prop_assert_eq!(map.contents(), model.clone().into_iter().collect::<Vec<_>>());
            for (k, v) in &model {
                prop_assert_eq!(map.get(k).map(|v| **v), Some(*v));
            }
            for (fork, held) in forks {
                fork.assert_sound();
                prop_assert_eq!(fork.contents(), held);
            }
        }
    }

    #[test]
    fn a_change_to_a_clone_copies_one_chunk_and_shares_the_rest() {
        let map = Chunks::from_entries((0..1000).map(|i| entry(&format!("k{i:04}"), i)).collect());
        let mut changed = map.clone();
        assert!(changed.ptr_eq(&map));
        changed.insert(Arc::from("k0500"), Arc::new(7));
        assert!(!changed.ptr_eq(&map));
        assert_eq!(map.get("k0500").map(|v| **v), Some(500));
        assert_eq!(changed.get("k0500").map(|v| **v), Some(7));
        let shared = map
            .chunks
            .iter()
            .zip(changed.chunks.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, map.chunks.len() - 1);
        // Values are shared, not copied, in the chunk that was copied too.
        assert!(Arc::ptr_eq(
            map.get("k0501").unwrap(),
            changed.get("k0501").unwrap()
        ));
    }

    #[test]
    fn growing_one_chunk_splits_it() {
        let mut map = Chunks::new();
        for i in (0..1000u32).rev() {
            map.insert(Arc::from(format!("k{i:04}").as_str()), Arc::new(i));
        }
        map.assert_sound();
        assert!(map.chunks.len() > 1000 / MAX);
        for i in 0..1000u32 {
            assert!(map.remove(&format!("k{i:04}")).is_some());
        }
        map.assert_sound();
        assert_eq!(map.len(), 0);
        assert!(map.chunks.is_empty());
    }
}
