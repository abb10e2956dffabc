//! The crate's one error type: a kind, a message, where the bad value came from, and a source.

use std::fmt;
use std::sync::Arc;

use crate::provenance::{Layer, Origin, Provenance};

/// A boxed error that caused an [`Error`] (an etcd-client, I/O, YAML or serde error).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result<T, coordination::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms a caller can branch on.
///
/// New kinds may be added in minor releases; match with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No connection to etcd could be made (refused, DNS, TLS, transport reset).
    #[error("connection failed")]
    Connection,
    /// A request ran past its deadline (the coordinator's request timeout, in ms).
    #[error("timed out")]
    Timeout,
    /// etcd answered but cannot serve now (no leader, shutting down, stream closed).
    #[error("etcd unavailable")]
    Unavailable,
    /// etcd refused the credentials or the operation is not permitted for the user.
    #[error("not authorized")]
    Auth,
    /// The requested key, version or record does not exist.
    #[error("not found")]
    NotFound,
    /// A guarded write lost a race: what it compared against has changed.
    #[error("conflict")]
    Conflict,
    /// The requested revision has been compacted away by etcd.
    #[error("revision compacted")]
    Compacted,
    /// A configuration value failed to parse, deserialize or validate.
    #[error("invalid configuration")]
    Validation,
    /// An argument or option given by the caller is invalid (bad endpoint URL, empty prefix).
    #[error("invalid argument")]
    InvalidArgument,
    /// A local file could not be read or watched.
    #[error("i/o error")]
    Io,
    /// The handle's background task has stopped (the runtime shut down).
    #[error("closed")]
    Closed,
    /// Any other error reported by etcd.
    #[error("etcd error")]
    Etcd,
    /// A change-control policy refused the write: it needs an approved proposal, or it is
    /// outside the prefix's change windows (see [`change`](crate::change)); nothing was written.
    #[error("refused by policy")]
    Refused,
}

/// The error type of every fallible operation in this crate.
///
/// It carries an [`ErrorKind`] to branch on, a human message, the [`Provenance`] of the bad
/// value where there is one, and the underlying error (etcd-client, I/O, YAML, serde) as
/// [`source()`](std::error::Error::source).
///
/// `{}` prints the message and provenance, e.g.
/// `invalid type: string "x", expected u16 (field `port`, layer etcd, key `/apps/chat/config/port`, revision 42)`;
/// `{:#}` also appends the chain of sources.
///
/// `Error` is `Clone` (its source is shared), so one rejection can be logged, returned and
/// delivered to every subscriber.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    provenance: Box<Provenance>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self;
        f.write_str(&e.message)?;
        if !e.provenance.is_empty() {
            write!(f, " ({})", e.provenance)?;
        }
        if f.alternate() {
            let mut next = std::error::Error::source(e);
            while let Some(cause) = next {
                write!(f, ": {cause}")?;
                next = cause.source();
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if !self.provenance.is_empty() {
            d.field("provenance", &self.provenance);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl Error {
    /// A new error of `kind` with a message and no provenance or source.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            provenance: Box::default(),
            source: None,
        }
    }

    /// Attaches the underlying cause, returned by [`source()`](std::error::Error::source).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// Sets the layer the bad value came from.
    #[must_use]
    pub fn with_layer(mut self, layer: Layer) -> Self {
        self.provenance.layer = Some(layer);
        self
    }

    /// Sets the dotted field path of the bad value.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.provenance.field = Some(field.into());
        self
    }

    /// Sets the etcd key, file path or environment variable the bad value came from.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.provenance.key = Some(key.into());
        self
    }

    /// Sets the layer and key to those of `origin` (no key for [`Origin::Default`]), the way
    /// a snapshot's [`Source`](crate::provenance::Source) names the same value. The revision is left as it
    /// is: an error's revision is the one being applied, not the key's `mod_revision`.
    #[must_use]
    pub fn with_origin(mut self, origin: &Origin) -> Self {
        self.provenance.set_origin(origin);
        self
    }

    /// Sets the etcd revision being applied.
    #[must_use]
    pub fn with_revision(mut self, revision: i64) -> Self {
        self.provenance.revision = Some(revision);
        self
    }

    /// Replaces the message (e.g. to hide a secret value it quoted).
    pub(crate) fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Sets the revision only if none is set yet.
    pub(crate) fn or_revision(mut self, revision: i64) -> Self {
        self.provenance.revision.get_or_insert(revision);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without provenance or sources.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where the bad value came from (all parts may be `None`).
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// The layer of the bad value, if known.
    pub fn layer(&self) -> Option<Layer> {
        self.provenance.layer
    }

    /// The dotted field path of the bad value, if known (`""` is the root).
    pub fn field(&self) -> Option<&str> {
        self.provenance.field.as_deref()
    }

    /// The etcd key, file path or environment variable of the bad value, if known.
    pub fn key(&self) -> Option<&str> {
        self.provenance.key.as_deref()
    }

    /// The etcd revision being read or applied, if known.
    pub fn revision(&self) -> Option<i64> {
        self.provenance.revision
    }

    /// Wraps an etcd-client error, classifying it by gRPC code or transport failure.
    /// `doing` says what was attempted, e.g. `reading prefix /apps/chat/config/`.
    pub(crate) fn etcd(doing: impl fmt::Display, err: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        let kind = match &err {
            E::GRpcStatus(status) => match status.code() {
                tonic::Code::DeadlineExceeded => ErrorKind::Timeout,
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => ErrorKind::Auth,
                // etcd answers a bad password or token with InvalidArgument.
                tonic::Code::InvalidArgument
                    if status.message().contains("authentication failed")
                        || status.message().contains("invalid auth token")
                        || status.message().contains("user name is empty") =>
                {
                    ErrorKind::Auth
                }
                tonic::Code::OutOfRange if status.message().contains("compacted") => {
                    ErrorKind::Compacted
                }
                tonic::Code::NotFound => ErrorKind::NotFound,
                tonic::Code::InvalidArgument => ErrorKind::InvalidArgument,
                tonic::Code::Unknown if status.message().contains("timed out") => {
                    ErrorKind::Timeout
                }
                tonic::Code::Cancelled if status.message().contains("Timeout expired") => {
                    ErrorKind::Timeout
                }
                // Made on this side from a transport failure (refused, reset, TLS): etcd never
                // answered. Statuses etcd sends carry no source.
                tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
                    if std::error::Error::source(status).is_some() =>
                {
                    ErrorKind::Connection
                }
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Aborted => {
                    ErrorKind::Unavailable
                }
                _ => ErrorKind::Etcd,
            },
            // Building the TLS connector refused the client key: not a connection problem.
            E::TransportError(e) if format!("{e:?}").contains("KeyMismatch") => {
                ErrorKind::InvalidArgument
            }
            E::TransportError(_) | E::IoError(_) => ErrorKind::Connection,
            E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) => {
                ErrorKind::InvalidArgument
            }
            E::EndpointError(_) | E::EndpointsNotManaged => ErrorKind::InvalidArgument,
            E::WatchError(_) | E::LeaseKeepAliveError(_) => ErrorKind::Unavailable,
            _ => ErrorKind::Etcd,
        };
        let message = match tls_failure(&err) {
            Some(hint) => format!("{doing}: {hint}: {}", kind_detail(&err)),
            None => format!("{doing}: {}", kind_detail(&err)),
        };
        Error::new(kind, message).with_source(err)
    }

    /// For an etcd "permission denied": says which `permission` on which key or range the
    /// request needed (`what`, e.g. ``the prefix `/apps/chat/config/` ``), and records `key`
    /// as the error's key. Other errors are returned as they are.
    pub(crate) fn needs(mut self, permission: Permission, what: &str, key: &str) -> Self {
        if self.is_permission_denied() {
            self.message = format!(
                "{}: the etcd user needs {permission} permission on {what}",
                self.message
            );
            self.provenance.key.get_or_insert_with(|| key.to_string());
        }
        self
    }

    /// Whether etcd refused the request for a missing permission (as opposed to a bad
    /// password or an expired token).
    pub(crate) fn is_permission_denied(&self) -> bool {
        self.kind == ErrorKind::Auth
            && (self.message.contains("permission denied")
                || self.source.as_deref().is_some_and(|source| {
                    matches!(
                        source.downcast_ref::<etcd_client::Error>(),
                        Some(etcd_client::Error::GRpcStatus(status))
                            if status.code() == tonic::Code::PermissionDenied
                    )
                }))
    }
}

/// A permission of an etcd role, as `etcdctl role grant-permission` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Permission {
    /// `read`: get, watch.
    Read,
    /// `write`: put, delete (and the puts of a transaction).
    Write,
    /// `readwrite`: a transaction that compares (reads) and writes.
    ReadWrite,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::ReadWrite => "readwrite",
        })
    }
}

/// What a transport failure says about TLS, if it is a TLS failure: the hint that goes in
/// front of the message.
fn tls_failure(err: &etcd_client::Error) -> Option<&'static str> {
    let text = match err {
        etcd_client::Error::GRpcStatus(status) => {
            format!(
                "{} {:?}",
                status.message(),
                std::error::Error::source(status)
            )
        }
        etcd_client::Error::TransportError(e) => format!("{e:?}"),
        _ => return None,
    };
    if text.contains("invalid peer certificate") || text.contains("InvalidCertificate") {
        Some("TLS handshake failed: etcd's server certificate was not accepted (check the CA and the server name)")
    } else if text.contains("received fatal alert") {
        Some("TLS handshake failed: etcd refused this client (with --client-cert-auth it needs a client certificate signed by its --trusted-ca-file)")
    } else if text.contains("tls handshake eof") || text.contains("InvalidContentType") {
        Some("TLS handshake failed: the endpoint does not speak TLS (is it an http:// endpoint?)")
    } else if text.contains("KeyMismatch") || text.contains("InconsistentKeys") {
        Some("the TLS client key does not belong to the client certificate")
    } else {
        None
    }
}

/// A short description of an etcd-client error for the message (the full error stays the source).
fn kind_detail(err: &etcd_client::Error) -> String {
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            let mut detail = format!("{:?}: {}", status.code(), status.message());
            // A transport failure's status says little ("transport error"): add its cause.
            if let Some(cause) = innermost(std::error::Error::source(status)) {
                if !detail.contains(&cause) {
                    detail = format!("{detail} ({cause})");
                }
            }
            detail
        }
        etcd_client::Error::TransportError(e) => match innermost(std::error::Error::source(e)) {
            Some(cause) => format!("transport error ({cause})"),
            None => format!("transport error ({e:?})"),
        },
        other => other.to_string(),
    }
}

/// The message of the last error in a source chain.
fn innermost(mut next: Option<&(dyn std::error::Error + 'static)>) -> Option<String> {
    let mut last = None;
    while let Some(cause) = next {
        last = Some(cause.to_string());
        next = cause.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_field_layer_key_and_revision() {
        let e = Error::new(
            ErrorKind::Validation,
            "invalid type: string \"x\", expected u16",
        )
        .with_field("port")
        .with_layer(Layer::Etcd)
        .with_key("/apps/chat/config/port")
        .with_revision(42);
        assert_eq!(
            e.to_string(),
            "invalid type: string \"x\", expected u16 (field `port`, layer etcd, key `/apps/chat/config/port`, revision 42)"
        );
        assert_eq!(e.kind(), ErrorKind::Validation);
        assert_eq!(e.revision(), Some(42));
    }

    #[test]
    fn alternate_display_appends_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::new(ErrorKind::Io, "reading config/chat.yaml").with_source(io);
        assert_eq!(e.to_string(), "reading config/chat.yaml");
        assert_eq!(format!("{e:#}"), "reading config/chat.yaml: no such file");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn file_and_env_layers_name_their_origin() {
        let e = Error::new(ErrorKind::Validation, "bad")
            .with_origin(&Origin::File("config/chat.yaml".into()));
        assert_eq!(e.to_string(), "bad (layer file, file `config/chat.yaml`)");
        assert_eq!(e.layer(), Some(Layer::File));
        assert_eq!(e.key(), Some("config/chat.yaml"));
        let e =
            Error::new(ErrorKind::Validation, "bad").with_origin(&Origin::Env("CHAT_PORT".into()));
        assert_eq!(e.to_string(), "bad (layer env, variable `CHAT_PORT`)");
        let e = Error::new(ErrorKind::Validation, "bad")
            .with_origin(&Origin::Etcd {
                key: "/p/port".into(),
                mod_revision: 7,
            })
            .with_revision(9);
        assert_eq!(
            e.to_string(),
            "bad (layer etcd, key `/p/port`, revision 9)",
            "the revision is the one applied, not the key's mod_revision"
        );
    }
}
