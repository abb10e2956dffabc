//! Key ranges and consistent paged reads, pages bounded by keys and by the decode limit.

use etcd_client::{GetOptions, KeyValue};

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
    let pages = Pages { page, tail: 0 };
    let revision = read_range_pages(etcd, start, end, pages, at, |kvs, left| {
        out.reserve(kvs.len() + left);
        out.extend(kvs);
    })
    .await?;
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
}

/// The most keys a paged read says are left after a page (131,072): the count sizes what a
/// caller collects, and a count no prefix could have (from a faulty server or proxy) must not
/// make it reserve memory it will never use, or overflow.
pub(crate) const LEFT_HINT_MAX: usize = 1 << 17;

/// As [`read_range`], handing each page to `each` as it arrives (with the number of keys after
/// it, by etcd's count at the read's revision, at most [`LEFT_HINT_MAX`]: 0 with the last page)
/// instead of collecting them: the caller can work on one page while the next is read, and size
/// what it collects from the first. Returns the revision every page was read at.
///
/// # Errors
/// As [`read_prefix`]; the pages before the failing one have been handed to `each`.
pub(crate) async fn read_range_pages(
    etcd: &Etcd,
    start: Vec<u8>,
    end: Vec<u8>,
    pages: Pages,
    at: Option<i64>,
    mut each: impl FnMut(Vec<KeyValue>, usize),
) -> Result<i64> {
    let mut client = etcd.kv();
    let page = pages.page.max(1);
    let mut limit = page;
    let mut from = start.clone();
    let mut revision = at.unwrap_or(0);
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut resp = match client.get(from.clone(), Some(options)).await {
            Ok(resp) => resp,
            Err(e) if limit > 1 && is_too_large(&e) => {
                tracing::debug!(
                    keys = limit,
                    "range page over the client's decode limit; reading half as many keys"
                );
                limit = (limit / 2).max(1);
                continue;
            }
            Err(e) => {
                let key = String::from_utf8_lossy(&start).into_owned();
                return Err(Error::etcd(format_args!("reading `{key}`"), e).needs(
                    Permission::Read,
                    &range_label(&start, &end),
                    &key,
                ));
            }
        };
        limit = (limit.saturating_mul(2)).min(page);
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        let kvs = resp.take_kvs();
        let more = match kvs.last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
                true
            }
            _ => false,
        };
        // `count` is the number of keys from this page's start to the end, at `revision`.
        let left = resp.count().saturating_sub(kvs.len() as i64);
        if more && pages.tail > 0 && left > pages.tail && left <= limit {
            limit = left - pages.tail;
        }
        let hint = match more {
            true => usize::try_from(left).unwrap_or(0).min(LEFT_HINT_MAX),
            false => 0,
        };
        each(kvs, hint);
        if !more {
            return Ok(revision);
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
