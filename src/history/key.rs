//! [`SecretKey`]: the keys secret values in history records are encrypted with
//! (XChaCha20-Poly1305), and the key ring of one handle or tool: one key to write with, older
//! ones to read.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};

/// Bytes in a key.
const KEY_BYTES: usize = 32;
/// Bytes in an XChaCha20-Poly1305 nonce.
const NONCE_BYTES: usize = 24;
/// Hex digits of a key id (the first 8 bytes of the key's SHA-256).
const ID_DIGITS: usize = 16;

/// A 256-bit key for the secret values in history records (see
/// [`HistoryOptions::with_secret_key`](crate::history::HistoryOptions::with_secret_key)).
///
/// The key text is 32 bytes as 64 hex digits or as base64 (standard or URL-safe alphabet,
/// padded), surrounding white space ignored: what `openssl rand -hex 32` or
/// `openssl rand -base64 32` prints. Each key has an [`id`](Self::id), recorded next to every
/// value encrypted with it, so records written with an older key can still be read after a
/// rotation: the first 16 hex digits of the SHA-256 of the 32 key bytes
/// (`xxd -r -p key.hex | sha256sum | cut -c1-16`).
///
/// `Debug` shows the id only; the key bytes are wiped from memory when the last clone is
/// dropped. No error message ever quotes the key text.
///
/// ```
/// use coordination::history::SecretKey;
///
/// let key = SecretKey::parse("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")?;
/// assert_eq!(key.id().len(), 16);
/// assert!(!format!("{key:?}").contains("0a0b0c"));
/// # Ok::<(), coordination::Error>(())
/// ```
#[derive(Clone)]
pub struct SecretKey {
    id: String,
    bytes: Arc<Zeroizing<[u8; KEY_BYTES]>>,
}

impl SecretKey {
    /// The key with these 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        let digest = Sha256::digest(bytes);
        let id: String = digest
            .iter()
            .take(ID_DIGITS / 2)
            .map(|b| format!("{b:02x}"))
            .collect();
        SecretKey {
            id,
            bytes: Arc::new(Zeroizing::new(bytes)),
        }
    }

    /// Reads a key from its text: 64 hex digits, or base64 of 32 bytes.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if the text is neither (the message does not quote it).
    pub fn parse(text: &str) -> Result<Self> {
        let text = Zeroizing::new(text.trim().to_string());
        let bad = |what: &str| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "a history secret key must be 32 bytes as 64 hex digits or base64 (e.g. from `openssl rand -hex 32`); {what}"
                ),
            )
        };
        let decoded: Zeroizing<Vec<u8>> =
            if text.len() == 2 * KEY_BYTES && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                Zeroizing::new(
                    (0..KEY_BYTES)
                        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or(0))
                        .collect(),
                )
            } else {
                match STANDARD
                    .decode(text.as_bytes())
                    .or_else(|_| URL_SAFE.decode(text.as_bytes()))
                {
                    Ok(bytes) => Zeroizing::new(bytes),
                    Err(_) => return Err(bad("this text is neither")),
                }
            };
        let bytes: [u8; KEY_BYTES] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| bad(&format!("this one has {} bytes", decoded.len())))?;
        Ok(SecretKey::from_bytes(bytes))
    }

    /// Reads a key from a file holding its text (see [`parse`](Self::parse)), e.g. one made with
    /// `openssl rand -hex 32 > history.key`. Keep the file readable by the service only.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the file cannot be read; [`ErrorKind::InvalidArgument`] if it does
    /// not hold a key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read(path).map(Zeroizing::new).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "cannot read the history secret key file {}: {e}",
                    path.display()
                ),
            )
            .with_source(e)
        })?;
        let text = std::str::from_utf8(&text).map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the history secret key file {} is not text: it must hold 64 hex digits or base64",
                    path.display()
                ),
            )
        })?;
        Self::parse(text)
            .map_err(|e| Error::new(e.kind(), format!("{}: {}", path.display(), e.message())))
    }

    /// Reads a key from the environment variable `var` holding its text (see
    /// [`parse`](Self::parse)), e.g. `COORD_HISTORY_KEY`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if the variable is unset, not Unicode, or does not hold a
    /// key.
    pub fn from_env(var: &str) -> Result<Self> {
        let text = std::env::var(var).map(Zeroizing::new).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("no history secret key in ${var}: {e}"),
            )
        })?;
        Self::parse(&text).map_err(|e| Error::new(e.kind(), format!("${var}: {}", e.message())))
    }

    /// The key's id, 16 lowercase hex digits, recorded next to each value encrypted with it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.as_slice().into())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Two keys are equal when their ids are (the id is a hash of the key bytes).
impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for SecretKey {}

/// A value encrypted with one key: the key's id, the nonce and the ciphertext (tag included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub(crate) key: String,
    pub(crate) nonce: Vec<u8>,
    pub(crate) data: Vec<u8>,
}

/// Why a sealed value could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// No key with the value's key id is configured.
    MissingKey,
    /// The key is there but the value does not decrypt with it (altered, or not for this key).
    Damaged,
}

/// The keys of one handle or tool: the one new records are encrypted with, and older ones
/// that can only decrypt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyRing {
    write: Option<SecretKey>,
    read: Vec<SecretKey>,
}

impl KeyRing {
    /// Encrypts new values with `key` (and reads with it).
    pub(crate) fn set_write(&mut self, key: SecretKey) {
        self.write = Some(key);
    }

    /// Also reads values encrypted with `key`.
    pub(crate) fn add_read(&mut self, key: SecretKey) {
        if !self.read.contains(&key) {
            self.read.push(key);
        }
    }

    /// The ids of every key, the write key first.
    pub(crate) fn ids(&self) -> Vec<&str> {
        self.write
            .iter()
            .chain(&self.read)
            .map(SecretKey::id)
            .collect()
    }

    fn find(&self, id: &str) -> Option<&SecretKey> {
        self.write.iter().chain(&self.read).find(|k| k.id == id)
    }

    /// `plain` encrypted with the write key under a fresh random nonce, bound to `aad`; `None`
    /// without a write key.
    pub(crate) fn seal(&self, plain: &[u8], aad: &[u8]) -> Option<Sealed> {
        let key = self.write.as_ref()?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let data = key
            .cipher()
            .encrypt(&nonce, Payload { msg: plain, aad })
            // Only fails for messages over 256 GiB.
            .ok()?;
        Some(Sealed {
            key: key.id.clone(),
            nonce: nonce.to_vec(),
            data,
        })
    }

    /// The plaintext of `sealed`, bound to `aad`.
    pub(crate) fn open(
        &self,
        sealed: &Sealed,
        aad: &[u8],
    ) -> std::result::Result<Vec<u8>, OpenError> {
        let key = self.find(&sealed.key).ok_or(OpenError::MissingKey)?;
        if sealed.nonce.len() != NONCE_BYTES {
            return Err(OpenError::Damaged);
        }
        key.cipher()
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.data,
                    aad,
                },
            )
            .map_err(|_| OpenError::Damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn keys_parse_from_hex_or_base64_and_never_show() {
        let hex = SecretKey::parse(&format!("  {HEX}\n")).unwrap();
        let b64 = SecretKey::parse(&STANDARD.encode((0u8..32).collect::<Vec<_>>())).unwrap();
        assert_eq!(hex, b64);
        // sha256 of the bytes 00..1f.
        assert_eq!(hex.id(), "630dcd2966c43366");
        assert!(!format!("{hex:?}").contains("0a0b"));
        for bad in [
            "",
            "00",
            &HEX[..62],
            &format!("{HEX}00"),
            "not a key at all!",
        ] {
            let e = SecretKey::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(bad.len() < 4 || !e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn sealed_values_open_with_the_same_key_and_context_only() {
        let a = SecretKey::parse(HEX).unwrap();
        let b = SecretKey::from_bytes([7; 32]);
        let mut ring = KeyRing::default();
        ring.set_write(a.clone());
        let sealed = ring.seal(b"hunter2", b"ctx").unwrap();
        assert_eq!(sealed.key, a.id());
        assert_ne!(sealed.data, b"hunter2");
        assert_eq!(ring.open(&sealed, b"ctx").unwrap(), b"hunter2");
        assert!(matches!(
            ring.open(&sealed, b"other"),
            Err(OpenError::Damaged)
        ));
        let again = ring.seal(b"hunter2", b"ctx").unwrap();
        assert_ne!(again.nonce, sealed.nonce, "a fresh nonce each time");

        // Rotation: write with B, keep A to read.
        let mut rotated = KeyRing::default();
        rotated.set_write(b.clone());
        assert!(matches!(
            rotated.open(&sealed, b"ctx"),
            Err(OpenError::MissingKey)
        ));
        rotated.add_read(a);
        assert_eq!(rotated.open(&sealed, b"ctx").unwrap(), b"hunter2");
        assert_eq!(rotated.seal(b"x", b"").unwrap().key, b.id());
        assert!(KeyRing::default().seal(b"x", b"").is_none());
    }
}
