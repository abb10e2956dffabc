//! One-shot discovery: a linearizable, paged read of a service's status keys.

use etcd_client::KeyValue;

use super::instance::{validate_segment, Instance};
use super::Registry;
use crate::error::Result;
use crate::etcd::read_prefix;

impl Registry {
    /// Every registered instance of `service`, serving or not, sorted by id, as of one etcd
    /// revision (a linearizable read, paged by the options' page size at a pinned revision).
    ///
    /// Use [`Instance::is_serving`] to keep only those that should get traffic, or
    /// [`live`](Self::live) for a view that follows changes. A malformed record (not written by
    /// this crate) is skipped with a warning.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for an empty service
    /// name or one containing `/`; the etcd error kinds
    /// ([`Unavailable`](crate::ErrorKind::Unavailable), [`Timeout`](crate::ErrorKind::Timeout),
    /// …) if the read fails.
    ///
    /// # Cancel safety
    /// Cancel-safe: a read.
    pub async fn discover(&self, service: &str) -> Result<Vec<Instance>> {
        Ok(self.discover_at(service).await?.1)
    }

    /// [`discover`](Self::discover) plus the revision the read was made at.
    pub(crate) async fn discover_at(&self, service: &str) -> Result<(i64, Vec<Instance>)> {
        validate_segment("service name", service)?;
        let prefix = self.layout().status_dir(service);
        let (revision, kvs) =
            read_prefix(self.coordinator().etcd(), &prefix, self.layout().page_size).await?;
        Ok((revision, parse_kvs(service, &prefix, &kvs)))
    }
}

/// The instance id of a status key under `prefix` (which ends with `/`), if it is one.
pub(crate) fn id_of<'a>(prefix: &str, key: &'a [u8]) -> Option<&'a str> {
    let rest = key.strip_prefix(prefix.as_bytes())?;
    let id = std::str::from_utf8(rest).ok()?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// Parses status keys; malformed ones are logged and skipped.
pub(crate) fn parse_kvs(service: &str, prefix: &str, kvs: &[KeyValue]) -> Vec<Instance> {
    kvs.iter()
        .filter_map(|kv| {
            let id = id_of(prefix, kv.key())?;
            match Instance::from_kv(service, id, kv) {
                Ok(instance) => Some(instance),
                Err(error) => {
                    tracing::warn!(error = %error, "skipping malformed registry record");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_single_segments() {
        assert_eq!(id_of("/r/chat/", b"/r/chat/chat-1"), Some("chat-1"));
        assert_eq!(id_of("/r/chat/", b"/r/chat/a/b"), None);
        assert_eq!(id_of("/r/chat/", b"/r/chat/"), None);
        assert_eq!(id_of("/r/chat/", b"/r/chatty/x"), None);
    }
}
