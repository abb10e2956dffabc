//! The bind's read of the etcd layer: every page is parsed and put into the layer's tree on a
//! blocking thread while the next page is read, so parsing overlaps the read. A large prefix
//! is read as two parts at once: the upper part's pages are parsed as they arrive and put
//! into the tree after the lower part's.

use bytes::Bytes;

use super::etcd::{EtcdLayer, Loading, ParsedPage, ReadKv};
use crate::config::tree::EtcdTree;
use crate::config::value::StringFields;
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::{prefix_end, read_range_pages, Etcd, Page, Pages, Part};

/// What [`read_layer`] read.
pub(crate) struct LayerRead {
    /// The revision every page was read at.
    pub(crate) revision: i64,
    /// Every key under the prefix with its value (the bytes the layer holds) and
    /// `mod_revision`, in key order.
    pub(crate) kvs: Vec<ReadKv>,
    /// The layer's tree (or its first bad key), as [`EtcdLayer::tree`] gives it.
    pub(crate) tree: Result<EtcdTree>,
}

/// Reads every key under `layer`'s prefix (empty) into it, in pages of `page_size` keys at one
/// revision, as `read_prefix` does (a prefix of many pages as two parts at once), except that
/// the last page of each part is kept to a quarter of a page (what is parsed after the read
/// ends). Returns the layer (holding what was read, even after an error) and the read.
///
/// Cancel safety: dropping the future stops the read after the page in flight; the thread
/// parsing pages ends with it.
///
/// # Errors
/// The error of the read, as `read_prefix` gives it.
pub(crate) async fn read_layer(
    etcd: &Etcd,
    prefix: &str,
    page_size: i64,
    mut layer: EtcdLayer,
    fields: &StringFields,
) -> (EtcdLayer, Result<LayerRead>) {
    let (pages, received) = std::sync::mpsc::channel::<Page>();
    let fields = fields.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let mut load = Loading::new(layer.prefix());
        let mut kvs = Vec::new();
        // Pages of the upper part of a split read that came before the lower part ended:
        // parsed on arrival, put into the tree after the lower part.
        let mut held: Vec<ParsedPage> = Vec::new();
        let mut held_keys = 0;
        let mut low_done = false;
        for page in received {
            // Sized for the whole read from the first page: no copy as they grow.
            let coming = page.kvs.len() + page.left + held_keys;
            kvs.reserve(coming);
            load.reserve(coming);
            let (part, last) = (page.part, page.last);
            let page: Vec<ReadKv> = page
                .kvs
                .into_iter()
                .map(|kv| {
                    let mod_revision = kv.mod_revision();
                    let (key, value) = kv.into_key_value();
                    (key, Bytes::from(value), mod_revision)
                })
                .collect();
            if part == Part::High && !low_done {
                held_keys += page.len();
                held.push(layer.parse_page(page, &fields));
                continue;
            }
            layer.load_page(&page, &fields, &mut load);
            kvs.extend(page);
            if part == Part::Low && last {
                low_done = true;
                for parsed in held.drain(..) {
                    kvs.extend(layer.load_parsed(parsed, &mut load));
                }
                held_keys = 0;
            }
        }
        // After a failed read: what was read is kept all the same.
        for parsed in held {
            kvs.extend(layer.load_parsed(parsed, &mut load));
        }
        let tree = layer.loaded_tree(load, &fields);
        (layer, kvs, tree)
    });
    let read = read_range_pages(
        etcd,
        prefix.as_bytes().to_vec(),
        prefix_end(prefix.as_bytes()),
        Pages {
            page: page_size,
            tail: page_size / 4,
            split: true,
        },
        None,
        |page| {
            // The receiver lives until every page is sent.
            let _ = pages.send(page);
        },
    )
    .await;
    drop(pages);
    let (layer, kvs, tree) = match worker.await {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => {
            let error = Error::new(
                ErrorKind::Unavailable,
                format!("reading `{prefix}`: the runtime is shutting down"),
            );
            return (EtcdLayer::new(prefix.to_string(), usize::MAX), Err(error));
        }
    };
    let read = read.map(|revision| LayerRead {
        revision,
        kvs,
        tree,
    });
    (layer, read)
}
