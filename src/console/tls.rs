//! The console over TLS: [`ConsoleTls`] (a certificate chain and its key) and the accept loop
//! of [`Console::serve_tls`](super::Console::serve_tls): rustls with the ring provider (the one
//! etcd-client's TLS builds) under hyper's HTTP/1.1 server, serving the console's router.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, ErrorKind, Result};

/// How long a client has to finish the TLS handshake before its connection is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The console's TLS identity: a certificate chain (the console's own certificate first) and its
/// private key, from PEM. TLS 1.2 and 1.3, no client certificates; the console speaks HTTP/1.1
/// (ALPN `http/1.1`).
#[derive(Clone)]
pub struct ConsoleTls {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ConsoleTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("ConsoleTls").finish_non_exhaustive()
    }
}

impl ConsoleTls {
    /// Reads the certificate chain from `cert_chain` and the private key (PKCS#8, PKCS#1 or
    /// SEC1) from `key`, both PEM files.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] naming the file that cannot be read; otherwise as
    /// [`from_pem`](Self::from_pem).
    pub fn from_pem_files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("reading the console's TLS {what} `{}`: {e}", path.display()),
                )
                .with_source(e)
            })
        };
        let chain = read(cert_chain.as_ref(), "certificate chain")?;
        let key = read(key.as_ref(), "private key")?;
        Self::from_pem(&chain, &key)
    }

    /// The identity from PEM text: `cert_chain` holds one or more certificates, `key` one
    /// private key.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if `cert_chain` holds no certificate, `key` no private
    /// key, or the key does not belong to the first certificate (rustls's reason in the
    /// message; the key itself is never shown).
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self> {
        let invalid = |message: String| Error::new(ErrorKind::InvalidArgument, message);
        let chain = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("the console's TLS certificate chain: {e}")))?;
        if chain.is_empty() {
            return Err(invalid(
                "the console's TLS certificate chain holds no PEM certificate".to_string(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
            invalid(format!(
                "the console's TLS private key: no PEM private key ({e})"
            ))
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("the console's TLS settings: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid(format!("the console's TLS certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ConsoleTls {
            config: Arc::new(config),
        })
    }
}

/// Accepts connections on `listener`, each served over TLS (`tls`) by `router` on a task of
/// `connections`' own; never returns. A failed accept (e.g. out of file descriptors) is logged
/// and retried after 100 ms; a client that fails or does not finish its handshake within 10 s
/// is dropped.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    tls: &ConsoleTls,
    router: axum::Router,
) -> std::convert::Infallible {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
    // Dropping the serve future drops the set, which aborts every connection's task.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "console: accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let service = hyper_util::service::TowerToHyperService::new(router.clone());
                connections.spawn(async move {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "console: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "console: TLS handshake timed out");
                            return;
                        }
                    };
                    let served = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    if let Err(error) = served {
                        tracing::debug!(%peer, %error, "console: connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
