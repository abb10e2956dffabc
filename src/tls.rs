//! TLS settings of a [`CoordinatorOptions`](crate::CoordinatorOptions): where the CA bundle and
//! the client identity come from, read and checked when the coordinator connects, and turned
//! into etcd-client's [`TlsOptions`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::{Error, ErrorKind, Result};

/// PEM text, given as bytes or as a file read at connect.
#[derive(Clone)]
pub(crate) enum Pem {
    /// A file, read when the coordinator connects.
    File(PathBuf),
    /// The PEM text itself.
    Bytes(Arc<[u8]>),
}

impl Pem {
    pub(crate) fn file(path: impl Into<PathBuf>) -> Self {
        Pem::File(path.into())
    }

    pub(crate) fn bytes(pem: impl Into<Vec<u8>>) -> Self {
        Pem::Bytes(Arc::from(pem.into()))
    }

    /// How errors and `Debug` name it: the path, or `PEM given in memory`.
    fn shown(&self, what: &str) -> String {
        match self {
            Pem::File(path) => format!("{what} file `{}`", path.display()),
            Pem::Bytes(_) => format!("{what} PEM given in memory"),
        }
    }

    /// The PEM text.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] naming the file if it cannot be read.
    fn load(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Pem::File(path) => read_file(path, what),
            Pem::Bytes(bytes) => Ok(bytes.to_vec()),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => write!(f, "File({:?})", path),
            // Never the bytes: a private key may be among them.
            Pem::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
        }
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("cannot read the {what} file `{}`: {e}", path.display()),
        )
        .with_source(e)
    })
}

/// The TLS part of a [`CoordinatorOptions`](crate::CoordinatorOptions).
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsSettings {
    pub(crate) ca: Option<Pem>,
    pub(crate) identity: Option<(Pem, Pem)>,
    pub(crate) server_name: Option<String>,
}

impl TlsSettings {
    /// Whether any TLS option was given.
    pub(crate) fn is_set(&self) -> bool {
        self.ca.is_some() || self.identity.is_some() || self.server_name.is_some()
    }

    /// Reads and checks the CA bundle and the client identity, and builds etcd-client's
    /// options. `None` when no TLS option was given.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] for a file that cannot be read; [`ErrorKind::InvalidArgument`] for a
    /// file or PEM without a certificate (CA, client certificate) or a private key (client
    /// key) and for a server name that is neither a DNS name nor an IP address. Each names the
    /// file.
    pub(crate) fn options(&self) -> Result<Option<TlsOptions>> {
        if !self.is_set() {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca {
            let text = ca.load("CA")?;
            certificates(&text, &ca.shown("CA"))?;
            tls = tls.ca_certificate(Certificate::from_pem(text));
        }
        if let Some((cert, key)) = &self.identity {
            let cert_text = cert.load("client certificate")?;
            certificates(&cert_text, &cert.shown("client certificate"))?;
            let key_text = key.load("client key")?;
            private_key(&key_text, &key.shown("client key"))?;
            tls = tls.identity(Identity::from_pem(cert_text, key_text));
        }
        if let Some(name) = &self.server_name {
            if ServerName::try_from(name.as_str()).is_err() {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("TLS server name `{name}` is neither a DNS name nor an IP address"),
                ));
            }
            tls = tls.domain_name(name.clone());
        }
        Ok(Some(tls))
    }
}

/// Checks that `text` holds at least one PEM `CERTIFICATE` block and nothing unreadable.
fn certificates(text: &[u8], shown: &str) -> Result<usize> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(text) {
        match cert {
            Ok(_) => count += 1,
            Err(e) => return Err(bad_pem(shown, &e)),
        }
    }
    if count == 0 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{shown} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"),
        ));
    }
    Ok(count)
}

/// Checks that `text` holds a PEM private key (PKCS#8, PKCS#1 or SEC1).
fn private_key(text: &[u8], shown: &str) -> Result<()> {
    match PrivateKeyDer::from_pem_slice(text) {
        Ok(_) => Ok(()),
        Err(pem::Error::NoItemsFound) => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{shown} holds no PEM private key (`-----BEGIN PRIVATE KEY-----`, \
                 `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
            ),
        )),
        Err(e) => Err(bad_pem(shown, &e)),
    }
}

fn bad_pem(shown: &str, e: &pem::Error) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("{shown} is not valid PEM: {e:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_io_naming_the_file() {
        let settings = TlsSettings {
            ca: Some(Pem::file("/nonexistent/ca.pem")),
            ..TlsSettings::default()
        };
        let err = settings.options().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
        assert!(err.message().contains("/nonexistent/ca.pem"), "{err}");
        assert!(err.message().contains("CA file"), "{err}");
    }

    #[test]
    fn pem_without_a_certificate_is_invalid_argument() {
        let settings = TlsSettings {
            ca: Some(Pem::bytes("just some text\n")),
            ..TlsSettings::default()
        };
        let err = settings.options().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err:?}");
        assert!(err.message().contains("holds no PEM certificate"), "{err}");

        let broken = "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n";
        let settings = TlsSettings {
            ca: Some(Pem::bytes(broken)),
            ..TlsSettings::default()
        };
        let err = settings.options().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err:?}");
        assert!(err.message().contains("not valid PEM"), "{err}");
    }

    #[test]
    fn a_certificate_is_no_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("client.pem");
        // A syntactically valid PEM certificate block (the DER is not checked here).
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let settings = TlsSettings {
            identity: Some((Pem::file(&cert), Pem::file(&cert))),
            ..TlsSettings::default()
        };
        let err = settings.options().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err:?}");
        assert!(err.message().contains("client key file"), "{err}");
        assert!(err.message().contains("client.pem"), "{err}");
    }

    #[test]
    fn server_name_must_be_a_name_or_address() {
        let settings = TlsSettings {
            server_name: Some("not a name!".into()),
            ..TlsSettings::default()
        };
        let err = settings.options().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err:?}");
        let settings = TlsSettings {
            server_name: Some("etcd.internal".into()),
            ..TlsSettings::default()
        };
        assert!(settings.options().unwrap().is_some());
    }

    #[test]
    fn debug_never_shows_pem_bytes() {
        let settings = TlsSettings {
            identity: Some((Pem::bytes("CERT-TEXT"), Pem::bytes("KEY-SECRET"))),
            ..TlsSettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("KEY-SECRET"), "{shown}");
        assert!(shown.contains("10 bytes"), "{shown}");
    }
}
