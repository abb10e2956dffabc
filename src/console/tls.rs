//! The console's TLS identity, [`ConsoleTls`]: a certificate chain and its key, for
//! [`Console::serve_tls`](super::Console::serve_tls) (rustls with the ring provider, the one
//! etcd-client's TLS builds).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, ErrorKind, Result};

/// The console's TLS identity: a certificate chain (the console's own certificate first) and its
/// private key, from PEM. TLS 1.2 and 1.3, no client certificates; the console speaks HTTP/1.1
/// (ALPN `http/1.1`).
#[derive(Clone)]
pub struct ConsoleTls {
    pub(super) config: Arc<rustls::ServerConfig>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str) -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_its_key_make_an_identity() {
        let (cert, key) = identity("127.0.0.1");
        ConsoleTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    }

    #[test]
    fn a_missing_certificate_a_missing_key_or_a_foreign_key_is_refused() {
        let (cert, key) = identity("127.0.0.1");
        let (_, other_key) = identity("localhost");
        let refused = |chain: &str, key: &str| {
            let e = ConsoleTls::from_pem(chain.as_bytes(), key.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let shown = e.to_string();
            assert!(!shown.contains("PRIVATE KEY"), "never the key: {shown}");
            shown
        };
        assert!(refused("", &key).contains("no PEM certificate"));
        assert!(refused(&cert, &cert).contains("no PEM private key"));
        assert!(refused(&cert, &other_key).contains("certificate and key"));
    }

    #[test]
    fn an_unreadable_file_is_an_io_error_naming_it() {
        let e = ConsoleTls::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    }
}
