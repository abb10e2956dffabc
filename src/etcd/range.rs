//! Key ranges and consistent paged reads, pages bounded by keys and by the decode limit.

use std::sync::Mutex;

use etcd_client::{GetOptions, KeyValue, KvClient};

use super::split::find_split;
use super::Etcd;

use crate::error::{Error, Permission, Result};

/// The range end that covers every key starting with `prefix` (etcd's `WithPrefix` rule: the
/// last byte below 0xff incremented, trailing 0xff dropped; `\0` means "to the end").
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Reads every key under `prefix` as of one revision: the first page fixes the revision R
/// (the response header's), later pages are read at R. Returns R and the keys in key order.
///
/// # Errors
/// The etcd error of any page (e.g. [`ErrorKind::Compacted`](crate::ErrorKind::Compacted) if R
/// was compacted between pages, [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)).
pub(crate) async fn read_prefix(
    etcd: &Etcd,
    prefix: &str,
    page_size: i64,
) -> Result<(i64, Vec<KeyValue>)> {
    let end = prefix_end(prefix.as_bytes());
    read_range(etcd, prefix.as_bytes().to_vec(), end, page_size, None).await
}

/// Reads the keys in `[start, end)` in pages of at most `page` keys, every page at one revision:
/// `at`, or the current one (the first response header's). Returns that revision and the keys in
/// key order.
///
/// Pages are bounded by bytes as well: a page the client cannot decode (larger than its decode
/// limit, [`DEFAULT_MAX_DECODE_BYTES`](super::DEFAULT_MAX_DECODE_BYTES) unless set: 1000 keys
/// of 250 KB are 250 MB) is asked for again with half as many
/// keys, down to one key (etcd refuses values over its `--max-request-bytes`, 1.5 MiB by
/// default, so one key always fits); after a page that fits, the size grows back.
///
/// A range of many pages is read as two parts at once (see [`Pages::split`]).
///
/// # Errors
/// As [`read_prefix`].
pub(crate) async fn read_range(
    etcd: &Etcd,
    start: Vec<u8>,
    end: Vec<u8>,
    page: i64,
    at: Option<i64>,
) -> Result<(i64, Vec<KeyValue>)> {
    let mut out = Vec::new();
    let mut high = Vec::new();
    let pages = Pages {
        page,
        tail: 0,
        split: true,
    };
    let revision = read_range_pages(etcd, start, end, pages, at, |page| {
        // Sized for the whole read (both parts) from the first page; the upper part's keys
        // then move into that room.
        out.reserve(page.kvs.len() + page.left + high.len());
        match page.part {
            Part::Low => out.extend(page.kvs),
            Part::High => high.extend(page.kvs),
        }
    })
    .await?;
    out.append(&mut high);
    Ok((revision, out))
}

/// How many keys a paged read asks for at a time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pages {
    /// Keys per page (at most; fewer where a page would be over the decode limit).
    pub(crate) page: i64,
    /// With more than this many keys left but no more than a page, the read asks for all but
    /// this many, so that the last page holds `tail` keys: a caller that works on each page as
    /// the next one is read then has little left to do once the read ends. 0: no such split.
    pub(crate) tail: i64,
    /// Whether a read with at least [`SPLIT_MIN_PAGES`] pages left after the first is read as
    /// two parts at once: etcd serves each range request on one core, so two sequences of
    /// pages, below and above a split key found from etcd's counts at the read's revision
    /// (see [`find_split`]), are served on two. The lower part goes on reading while the split
    /// is looked for; where none is found it reads to the end alone.
    pub(crate) split: bool,
}

/// The fewest pages left after the first for a read to be split (see [`Pages::split`]): a
/// shorter read is about over by the time the split's probe has answered.
pub(crate) const SPLIT_MIN_PAGES: i64 = 4;

/// The part of a read a page belongs to: all keys of [`Low`](Part::Low) pages are below all
/// keys of [`High`](Part::High) pages; the pages of each part come in key order, but those of
/// the two parts interleave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// The lower part: every page of a read that is not split.
    Low,
    /// The upper part of a split read.
    High,
}

/// One page of a paged read, as [`read_range_pages`] hands it over.
#[derive(Debug)]
pub(crate) struct Page {
    /// The keys, in key order.
    pub(crate) kvs: Vec<KeyValue>,
    /// Which part of the read they are in.
    pub(crate) part: Part,
    /// Whether this is the last page of its part.
    pub(crate) last: bool,
    /// How many keys of the read (both parts) are still to come after this page, by etcd's
    /// counts at the read's revision, at most [`LEFT_HINT_MAX`]: 0 with the read's last page.
    pub(crate) left: usize,
}

/// The most keys a paged read says are left after a page (131,072): the count sizes what a
/// caller collects, and a count no prefix could have (from a faulty server or proxy) must not
/// make it reserve memory it will never use, or overflow.
pub(crate) const LEFT_HINT_MAX: usize = 1 << 17;

/// As [`read_range`], handing each page to `each` as it arrives instead of collecting them:
/// the caller can work on one page while the next is read, and size what it collects from the
/// first. With [`Pages::split`], the pages of the upper part come interleaved with those of
/// the lower one (see [`Part`]). Returns the revision every page was read at.
///
/// Cancel safety: dropping the future drops the requests in flight; the pages handed over
/// before stay handed over.
///
/// # Errors
/// As [`read_prefix`]; the pages before the failing one have been handed to `each`.
pub(crate) async fn read_range_pages(
    etcd: &Etcd,
    start: Vec<u8>,
    end: Vec<u8>,
    pages: Pages,
    at: Option<i64>,
    mut each: impl FnMut(Page),
) -> Result<i64> {
    let mut low = Cursor::new(etcd, &start, &end, pages, at);
    let first = low.next().await?;
    let revision = low.revision;
    let split_from = match first.kvs.last() {
        Some(last) if pages.split && first.left >= SPLIT_MIN_PAGES * low.page => {
            Some(last.key().to_vec())
        }
        _ => None,
    };
    let Some(after) = split_from else {
        each(low.page_of(first));
        while !low.done {
            let read = low.next().await?;
            each(low.page_of(read));
        }
        return Ok(revision);
    };
    let total = first.left;
    let alphabet = alphabet(&first.kvs, start.len());
    each(low.page_of(first));
    let low_page = low.limit;
    // From here the lower part goes on in pages while the split is looked for; once it is
    // found, the lower part ends below it and the upper part reads from it.
    let shared = Mutex::new(Shared {
        each,
        handed: 0,
        split: None,
        low_done: false,
        frontier: after.clone(),
    });
    let lower = async {
        while !low.done {
            if let Some(split) = &lock(&shared).split {
                low.end.clone_from(split);
            }
            let mut read = low.next().await?;
            let mut shared = lock(&shared);
            if let Some(split) = &shared.split {
                // A page asked for before the split was known may reach past it.
                let kept = read.kvs.partition_point(|kv| kv.key() < split.as_slice());
                if kept < read.kvs.len() {
                    read.kvs.truncate(kept);
                    low.done = true;
                }
            }
            if let Some(last) = read.kvs.last() {
                shared.frontier = last.key().to_vec();
            }
            shared.low_done = low.done;
            shared.hand(read.kvs, Part::Low, low.done, total);
        }
        Ok::<_, Error>(())
    };
    let upper = async {
        // The lower part reads its second page meanwhile: aim for as many keys above the
        // split as below it after that page.
        let target = (total + low_page.min(total)) / 2;
        let Some(split) = find_split(etcd, &after, &end, revision, total, target, &alphabet).await
        else {
            return Ok(());
        };
        {
            let mut shared = lock(&shared);
            if shared.low_done || shared.frontier >= split.key {
                // The lower part got there first.
                return Ok(());
            }
            shared.split = Some(split.key.clone());
        }
        tracing::debug!(
            range = %range_label(&start, &end),
            split = %String::from_utf8_lossy(&split.key),
            below = split.below,
            above = total - split.below,
            revision,
            "reading as two parts"
        );
        let mut high = Cursor::new(etcd, &split.key, &end, pages, Some(revision));
        high.whole = (start.clone(), end.clone());
        while !high.done {
            let read = high.next().await?;
            lock(&shared).hand(read.kvs, Part::High, high.done, total);
        }
        Ok(())
    };
    tokio::try_join!(lower, upper)?;
    Ok(revision)
}

/// What the two parts of a split read share.
struct Shared<F> {
    each: F,
    /// Keys handed over after the first page, from both parts.
    handed: i64,
    /// The split key, once found and taken.
    split: Option<Vec<u8>>,
    /// Whether the lower part has read its last page.
    low_done: bool,
    /// The last key the lower part has read.
    frontier: Vec<u8>,
}

impl<F: FnMut(Page)> Shared<F> {
    /// Hands a page of `part` to the caller; `total` keys came after the first page.
    fn hand(&mut self, kvs: Vec<KeyValue>, part: Part, last: bool, total: i64) {
        self.handed += kvs.len() as i64;
        let left = usize::try_from(total - self.handed).unwrap_or(0);
        (self.each)(Page {
            kvs,
            part,
            last,
            left: left.min(LEFT_HINT_MAX),
        });
    }
}

/// `mutex`'s guard, whether or not a panic poisoned it (the state stays consistent: every
/// change is made under one lock).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The distinct bytes of the keys of `kvs` past their first `skip` bytes (the read's start),
/// ascending.
fn alphabet(kvs: &[KeyValue], skip: usize) -> Vec<u8> {
    let mut seen = [false; 256];
    for kv in kvs {
        for &b in kv.key().get(skip..).unwrap_or_default() {
            seen[usize::from(b)] = true;
        }
    }
    (0..=255u8).filter(|&b| seen[usize::from(b)]).collect()
}

/// A page as one sequence of a read gives it.
struct Read {
    kvs: Vec<KeyValue>,
    /// The keys of the sequence's range after this page (etcd's count at the read's revision).
    left: i64,
}

/// One sequence of pages of a read through `[from, end)`.
struct Cursor {
    client: KvClient,
    /// The range of the whole read, for errors.
    whole: (Vec<u8>, Vec<u8>),
    from: Vec<u8>,
    end: Vec<u8>,
    page: i64,
    limit: i64,
    tail: i64,
    /// The read's revision; 0 until the first page, where it is the current one.
    revision: i64,
    /// Whether the last page has been read.
    done: bool,
}

impl Cursor {
    fn new(etcd: &Etcd, start: &[u8], end: &[u8], pages: Pages, at: Option<i64>) -> Self {
        let page = pages.page.max(1);
        Cursor {
            client: etcd.kv(),
            whole: (start.to_vec(), end.to_vec()),
            from: start.to_vec(),
            end: end.to_vec(),
            page,
            limit: page,
            tail: pages.tail,
            revision: at.unwrap_or(0),
            done: false,
        }
    }

    /// The next page (`done` after the last).
    async fn next(&mut self) -> Result<Read> {
        debug_assert!(!self.done);
        loop {
            let mut options = GetOptions::new()
                .with_range(self.end.clone())
                .with_limit(self.limit);
            if self.revision > 0 {
                options = options.with_revision(self.revision);
            }
            let mut resp = match self.client.get(self.from.clone(), Some(options)).await {
                Ok(resp) => resp,
                Err(e) if self.limit > 1 && is_too_large(&e) => {
                    tracing::debug!(
                        keys = self.limit,
                        "range page over the client's decode limit; reading half as many keys"
                    );
                    self.limit = (self.limit / 2).max(1);
                    continue;
                }
                Err(e) => {
                    let (start, end) = &self.whole;
                    let key = String::from_utf8_lossy(start).into_owned();
                    return Err(Error::etcd(format_args!("reading `{key}`"), e).needs(
                        Permission::Read,
                        &range_label(start, end),
                        &key,
                    ));
                }
            };
            self.limit = (self.limit.saturating_mul(2)).min(self.page);
            if self.revision == 0 {
                self.revision = resp.header().map_or(0, |h| h.revision());
            }
            let kvs = resp.take_kvs();
            match kvs.last() {
                Some(last) if resp.more() => {
                    self.from = last.key().to_vec();
                    self.from.push(0);
                }
                _ => self.done = true,
            }
            // `count` is the number of keys from this page's start to the end, at `revision`.
            let left = match self.done {
                true => 0,
                false => resp.count().saturating_sub(kvs.len() as i64).max(0),
            };
            if !self.done && self.tail > 0 && left > self.tail && left <= self.limit {
                self.limit = left - self.tail;
            }
            return Ok(Read { kvs, left });
        }
    }

    /// `read` as a page of a read that is not split.
    fn page_of(&self, read: Read) -> Page {
        Page {
            kvs: read.kvs,
            part: Part::Low,
            last: self.done,
            left: usize::try_from(read.left).unwrap_or(0).min(LEFT_HINT_MAX),
        }
    }
}

/// How an error names `[start, end)`: ``the prefix `/a/` ``, `` `/a/b` `` for one key, or
/// ``the range `/a` to `/b` ``.
pub(crate) fn range_label(start: &[u8], end: &[u8]) -> String {
    let shown = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if end == prefix_end(start).as_slice() {
        format!("the prefix `{}`", shown(start))
    } else if end.len() == start.len() + 1 && end.starts_with(start) && end.last() == Some(&0) {
        format!("`{}`", shown(start))
    } else {
        format!("the range `{}` to `{}`", shown(start), shown(end))
    }
}

/// Whether a response failed because it is larger than the client decodes (tonic's
/// `OutOfRange` "decoded message length too large"; etcd's own `OutOfRange` is compaction).
pub(crate) fn is_too_large(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::OutOfRange
                && status.message().contains("message length too large")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn range_labels_name_prefixes_keys_and_ranges() {
        assert_eq!(range_label(b"/a/", b"/a0"), "the prefix `/a/`");
        assert_eq!(range_label(b"/a/b", b"/a/b\0"), "`/a/b`");
        assert_eq!(range_label(b"/a", b"/c"), "the range `/a` to `/c`");
    }
}
