//! Who is asking: the configured writers, their tokens, login sessions.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "coord_console_session";

/// The writers of a console: names with their tokens (only the tokens' SHA-256 digests are
/// kept). Read from text of lines `NAME:TOKEN` (blank lines and `#` comments skipped; a name
/// is letters, digits and `._@-`; a token is at least 16 characters), from a file
/// ([`from_file`](Self::from_file)) or an environment variable ([`from_env`](Self::from_env)),
/// so that no token is ever on a command line.
#[derive(Clone, Default)]
pub struct Writers {
    tokens: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Writers").field("names", &names).finish()
    }
}

/// The shortest token accepted.
const MIN_TOKEN: usize = 16;

impl Writers {
    /// No writers: the console is read-only.
    pub fn none() -> Self {
        Writers::default()
    }

    /// Parses lines of `NAME:TOKEN`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming the line (never the token) for a line without
    /// `:`, a bad name, a short token or a token used twice.
    pub fn parse(text: &str) -> Result<Self> {
        let mut tokens: Vec<(String, [u8; 32])> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| {
                Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("console writers, line {}: {why}", n + 1),
                ))
            };
            let Some((name, token)) = line.split_once(':') else {
                return bad("expected NAME:TOKEN");
            };
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
            {
                return bad("a name is letters, digits and `._@-`");
            }
            if token.len() < MIN_TOKEN {
                return bad("the token is shorter than 16 characters");
            }
            let digest = digest(token);
            if tokens.iter().any(|(_, d)| *d == digest) {
                return bad("this token is already given to another writer");
            }
            tokens.push((name.to_string(), digest));
        }
        Ok(Writers { tokens })
    }

    /// Reads [`parse`](Self::parse)'s format from a file.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the file cannot be read; as [`parse`](Self::parse).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("reading console writers from `{}`: {e}", path.display()),
            )
            .with_source(e)
        })?;
        Self::parse(&text)
    }

    /// Reads [`parse`](Self::parse)'s format from the environment variable `var` (lines, or
    /// entries separated by `,`). An unset variable is no writers.
    ///
    /// # Errors
    /// As [`parse`](Self::parse).
    pub fn from_env(var: &str) -> Result<Self> {
        match std::env::var(var) {
            Ok(text) => Self::parse(&text.replace(',', "\n")),
            Err(_) => Ok(Writers::none()),
        }
    }

    /// Whether there are no writers (the console is read-only).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The writer whose token this is.
    pub(crate) fn who(&self, token: &str) -> Option<&str> {
        let presented = digest(token);
        self.tokens
            .iter()
            .find(|(_, d)| constant_eq(d, &presented))
            .map(|(n, _)| n.as_str())
    }

    /// Whether `name` is a writer (a session names one).
    fn has(&self, name: &str) -> bool {
        self.tokens.iter().any(|(n, _)| n == name)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(crate) fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An authenticated writer, and what their CSRF token is bound to.
#[derive(Clone, Debug)]
pub(crate) struct Principal {
    /// The writer's name: the author of their writes.
    pub(crate) user: String,
    /// The session nonce for a cookie session, `header` for a token in `Authorization`.
    pub(crate) binding: String,
}

/// The HMAC key of sessions and CSRF tokens, made at start.
#[derive(Clone)]
pub(crate) struct Keyed {
    key: [u8; 32],
}

impl Keyed {
    pub(crate) fn random() -> Self {
        use chacha20poly1305::aead::{KeyInit, OsRng};
        let key = chacha20poly1305::XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&key);
        Keyed { key: bytes }
    }

    pub(crate) fn mac(&self, parts: &[&str]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        hex(&mac.finalize().into_bytes())
    }

    pub(crate) fn nonce() -> String {
        use chacha20poly1305::aead::{AeadCore, OsRng};
        hex(&chacha20poly1305::XChaCha20Poly1305::generate_nonce(
            &mut OsRng,
        ))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A session cookie's value for `user`: `NAME:EXPIRY:NONCE:MAC`.
pub(crate) fn session_value(keyed: &Keyed, user: &str, ttl: Duration) -> String {
    let expiry = (now_secs() + ttl.as_secs()).to_string();
    let nonce = Keyed::nonce();
    let mac = keyed.mac(&["session", user, &expiry, &nonce]);
    format!("{user}:{expiry}:{nonce}:{mac}")
}

/// Who sent the request: a token in `Authorization` (bearer or basic `NAME:TOKEN`), or a valid
/// session cookie. `None` for anyone else (a reader).
pub(crate) fn principal(
    writers: &Writers,
    keyed: &Keyed,
    headers: &HeaderMap,
) -> Option<Principal> {
    if writers.is_empty() {
        return None;
    }
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let user = if let Some(token) = auth.strip_prefix("Bearer ") {
            writers.who(token.trim())
        } else if let Some(basic) = auth.strip_prefix("Basic ") {
            base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|pair| {
                    let (name, token) = pair.split_once(':')?;
                    writers
                        .who(token)
                        .filter(|w| *w == name)
                        .map(str::to_string)
                })
                .and_then(|name| writers.tokens.iter().find(|(n, _)| *n == name))
                .map(|(n, _)| n.as_str())
        } else {
            None
        };
        return user.map(|user| Principal {
            user: user.to_string(),
            binding: "header".into(),
        });
    }
    let cookie = cookie(headers, SESSION_COOKIE)?;
    let mut parts = cookie.splitn(4, ':');
    let (user, expiry, nonce, mac) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let expected = keyed.mac(&["session", user, expiry, nonce]);
    if !constant_eq(expected.as_bytes(), mac.as_bytes()) {
        return None;
    }
    if expiry.parse::<u64>().ok()? <= now_secs() || !writers.has(user) {
        return None;
    }
    Some(Principal {
        user: user.to_string(),
        binding: nonce.to_string(),
    })
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn writers() -> Writers {
        Writers::parse("# ops\nalice:alice-token-0123456789\n\nbob:bob-token-0123456789abc\n")
            .unwrap()
    }

    #[test]
    fn tokens_name_their_writer() {
        let w = writers();
        assert_eq!(w.who("alice-token-0123456789"), Some("alice"));
        assert_eq!(w.who("nope-nope-nope-nope"), None);
        assert!(Writers::parse("alice:short").is_err());
        assert!(Writers::parse("al ice:alice-token-0123456789").is_err());
        let dup = Writers::parse("a:alice-token-0123456789\nb:alice-token-0123456789").unwrap_err();
        assert!(dup.message().contains("line 2"), "{dup}");
        assert!(
            !dup.message().contains("alice-token"),
            "the token is never shown"
        );
    }

    #[test]
    fn bearer_basic_and_sessions() {
        let w = writers();
        let k = Keyed::random();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer bob-token-0123456789abc"),
        );
        assert_eq!(principal(&w, &k, &h).unwrap().user, "bob");
        let basic =
            base64::engine::general_purpose::STANDARD.encode("alice:alice-token-0123456789");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
        );
        assert_eq!(principal(&w, &k, &h).unwrap().user, "alice");
        let wrong = base64::engine::general_purpose::STANDARD.encode("bob:alice-token-0123456789");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {wrong}")).unwrap(),
        );
        assert!(
            principal(&w, &k, &h).is_none(),
            "a token names one writer only"
        );

        let session = session_value(&k, "alice", Duration::from_secs(60));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {SESSION_COOKIE}={session}")).unwrap(),
        );
        let p = principal(&w, &k, &h).unwrap();
        assert_eq!(p.user, "alice");
        assert_ne!(p.binding, "header");
        let forged = session.replacen("alice", "bob", 1);
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={forged}")).unwrap(),
        );
        assert!(
            principal(&w, &k, &h).is_none(),
            "a session cookie cannot be edited"
        );
        let other = Keyed::random();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={session}")).unwrap(),
        );
        assert!(
            principal(&w, &other, &h).is_none(),
            "a restart's new key ends sessions"
        );
        assert!(principal(&Writers::none(), &k, &h).is_none());
    }
}
