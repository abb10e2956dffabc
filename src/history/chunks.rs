//! Chunks: a record's content when it is over 32 KiB (see [`store`](super::store)).
//!
//! Chunk keys `…/chunks/<revision:020>/<id>/<n:04>` hold JSON arrays of the content's entries,
//! at most 512 KiB each. The id is unique to one attempt at writing the record; an attempt that
//! loses the race to create the record removes its chunks.

use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::DeleteOptions;
use serde::Serialize;

use super::record::{corrupt, encode_error, ChunkRef, Content, Head, Kind, Op, Raw, Stored};
use super::store::Store;
use crate::error::{Error, Permission, Result};
use crate::etcd::read_range;

/// Content up to this size (as JSON) is inline in the record.
pub(crate) const INLINE_BYTES: usize = 32 * 1024;
/// Upper bound of one chunk (as JSON), unless a single entry is bigger.
const CHUNK_BYTES: usize = 512 * 1024;
/// Chunks per page when reading content.
const CHUNK_PAGE: i64 = 4;

impl Store {
    /// Writes `content` to fresh chunk keys of `revision` and names them in `head`; returns
    /// their id (to drop them if the record is not written).
    pub(crate) async fn write_chunks(
        &self,
        revision: i64,
        head: &mut Head,
        content: &Content,
    ) -> Result<String> {
        let id = nonce();
        let texts = match content {
            Content::Full(kvs) => chunk_texts(kvs)?,
            Content::Delta(ops) => chunk_texts(ops)?,
        };
        let mut client = self.client();
        for (n, text) in texts.iter().enumerate() {
            let n = n as u32;
            client
                .put(self.keys().chunk(revision, &id, n), text.as_str(), None)
                .await
                .map_err(|e| {
                    Error::etcd(format_args!("writing chunk {n} of version {revision}"), e).needs(
                        Permission::Write,
                        &self.keys().root_label(),
                        self.keys().root(),
                    )
                })?;
        }
        head.chunks = Some(ChunkRef {
            id: id.clone(),
            count: texts.len() as u32,
        });
        Ok(id)
    }

    /// Best effort: removes the chunks of a failed attempt.
    pub(crate) async fn drop_chunks(&self, revision: i64, id: Option<&str>) {
        if let Some(id) = id {
            let dir = self.keys().chunk_dir(revision, id);
            let _ = self
                .client()
                .delete(dir, Some(DeleteOptions::new().with_prefix()))
                .await;
        }
    }

    /// A record's content, inline or from its chunks (read at `at`).
    pub(crate) async fn content(&self, head: &Head, at: i64) -> Result<Content> {
        let Some(chunks) = &head.chunks else {
            return Ok(head.inline_content());
        };
        let dir = self.keys().chunk_dir(head.revision, &chunks.id);
        let end = crate::etcd::prefix_end(dir.as_bytes());
        let (_, kvs) = read_range(self.etcd(), dir.into_bytes(), end, CHUNK_PAGE, Some(at)).await?;
        if kvs.len() != chunks.count as usize {
            return Err(corrupt(
                head.revision,
                &format!("{} of {} chunks found", kvs.len(), chunks.count),
            ));
        }
        let bad = |e: serde_json::Error| corrupt(head.revision, &format!("bad chunk: {e}"));
        Ok(match head.kind {
            Kind::Full => {
                let mut all = Vec::with_capacity(head.keys);
                for kv in &kvs {
                    all.extend(
                        serde_json::from_slice::<Vec<(Raw, Stored)>>(kv.value()).map_err(bad)?,
                    );
                }
                Content::Full(all)
            }
            Kind::Delta => {
                let mut all = Vec::new();
                for kv in &kvs {
                    all.extend(serde_json::from_slice::<Vec<Op>>(kv.value()).map_err(bad)?);
                }
                Content::Delta(all)
            }
        })
    }
}

/// JSON arrays of the items, each at most [`CHUNK_BYTES`] unless one item alone is bigger.
fn chunk_texts<E: Serialize>(items: &[E]) -> Result<Vec<String>> {
    let mut chunks = Vec::new();
    let mut current = String::from("[");
    for item in items {
        let text = serde_json::to_string(item).map_err(encode_error)?;
        if current.len() > 1 && current.len() + text.len() + 2 > CHUNK_BYTES {
            current.push(']');
            chunks.push(std::mem::replace(&mut current, String::from("[")));
        }
        if current.len() > 1 {
            current.push(',');
        }
        current.push_str(&text);
    }
    current.push(']');
    chunks.push(current);
    Ok(chunks)
}

/// A unique id for one attempt to write chunks.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_on_size_and_stay_json_arrays() {
        let items: Vec<(Raw, Raw)> = (0..3000)
            .map(|i| (Raw(format!("k{i}").into_bytes()), Raw(vec![b'x'; 400])))
            .collect();
        let texts = chunk_texts(&items).unwrap();
        assert!(texts.len() >= 3, "{}", texts.len());
        let mut total = 0;
        for t in &texts {
            assert!(t.len() <= CHUNK_BYTES);
            total += serde_json::from_str::<Vec<(Raw, Raw)>>(t).unwrap().len();
        }
        assert_eq!(total, 3000);
        assert_eq!(chunk_texts::<Op>(&[]).unwrap(), vec!["[]".to_string()]);
    }
}
