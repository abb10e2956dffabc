//! The operator web console: history, diff, publish and rollback of every bound prefix, locks
//! and elections, and the service registry, in a browser, live (feature `console`).
//! `coordctl serve --listen 127.0.0.1:8080` runs it.
//!
//! Pages are rendered on the server (maud); the only script is the few lines that follow a
//! server-sent event stream (`/events`) and re-render the page's main part in place when etcd
//! changes, and show a banner while the console has lost etcd. Everything comes from the
//! crate's own APIs: [`ConfigHistory`](crate::history::ConfigHistory) for versions, documents,
//! diffs, publish and rollback (schema-validated, compare-and-swap on the revision the page
//! showed), [`Coordinator::lock_status`] and [`Coordinator::force_unlock`] for locks and
//! elections, [`Registry::discover`](crate::registry::Registry::discover) and
//! [`Registry::request_drain`](crate::registry::Registry::request_drain) for the registry, and
//! [`Fleet`](crate::fleet::Fleet) for instances' receipts and rollouts, and the crate's prefix
//! follower for the live stream.
//!
//! # TLS
//! [`Console::serve_tls`] serves HTTPS itself ([`ConsoleTls`]: a PEM certificate chain and
//! key; `coordctl serve --tls-cert FILE --tls-key FILE`), and marks the session cookie
//! `Secure`. [`Console::serve`] speaks plain HTTP, for loopback or behind a TLS-terminating
//! proxy (then set [`ConsoleOptions::with_secure_cookies`]).
//!
//! # Access
//! The console is read-only unless writers are configured ([`Writers`]): each writer is a name
//! and a token, read from a file or an environment variable, never from the command line. A
//! writer authenticates with `Authorization: Bearer TOKEN`, with basic auth `NAME:TOKEN`, or by
//! entering the token on `/login` (an HMAC-signed, `HttpOnly`, `SameSite=Strict` session
//! cookie, valid for [`ConsoleOptions::with_session_ttl`]). Write buttons are shown to writers
//! only; every write is a form POST that carries a CSRF token (an HMAC of the session, keyed by
//! a random key made when the console starts) and is refused with 403 without it, with a
//! foreign `Origin`, or without a writer's credentials. The author recorded with a publish or
//! rollback is the writer's name. Rollback, publish, force release and a registry drain each go
//! through a confirmation page that shows what will change.
//!
//! | part | file |
//! |---|---|
//! | [`Console`], [`ConsoleOptions`]: the application and its settings | `mod.rs` |
//! | router, shared state, error pages | `app.rs` |
//! | [`Writers`], sessions and who is asking | `auth.rs` |
//! | CSRF tokens and the checks every write passes | `csrf.rs` |
//! | the live stream: followers, etcd reachability, `/events` | `live.rs` |
//! | the page layout, style and script | `templates.rs` |
//! | the accept loop: HTTP/1.1 over TCP or TLS, the connection limit, the header-read timeout | `server.rs` |
//! | [`ConsoleTls`]: the TLS identity | `tls.rs` |
//! | pages: prefixes, history (versions, diff, publish, rollback), instances and rollouts (pause, resume, promote, abort), locks and elections, registry (drain), login | `pages/` |

mod app;
mod auth;
mod csrf;
mod live;
mod pages;
mod server;
mod templates;
mod tls;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub use auth::Writers;
pub use tls::ConsoleTls;

use crate::coordinator::Coordinator;
use crate::error::Result;
use crate::history::SecretKey;

/// What a [`Console`] serves and who may write. Build with [`ConsoleOptions::new`] and the
/// `with_*` methods.
#[derive(Clone, Debug)]
pub struct ConsoleOptions {
    pub(crate) writers: Writers,
    pub(crate) locks: Vec<String>,
    pub(crate) elections: Vec<String>,
    pub(crate) secret_key: Option<SecretKey>,
    pub(crate) read_keys: Vec<SecretKey>,
    pub(crate) session_ttl: Duration,
    pub(crate) secure_cookies: bool,
    pub(crate) header_timeout: Duration,
    pub(crate) max_connections: usize,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions::new()
    }
}

impl ConsoleOptions {
    /// Read-only, no lock or election names, sessions of 8 hours, 30 s to send a request's
    /// headers, at most 1,024 connections open at once.
    pub fn new() -> Self {
        ConsoleOptions {
            writers: Writers::none(),
            locks: Vec::new(),
            elections: Vec::new(),
            secret_key: None,
            read_keys: Vec::new(),
            session_ttl: Duration::from_secs(8 * 3600),
            secure_cookies: false,
            header_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }

    /// Who may write (publish, rollback, force release). Without writers the console is
    /// read-only: no write buttons, and every POST is refused with 403.
    #[must_use]
    pub fn with_writers(mut self, writers: Writers) -> Self {
        self.writers = writers;
        self
    }

    /// A lock to show on the locks page (its name as given to
    /// [`Coordinator::lock`](crate::Coordinator::lock), e.g. `jobs/rebalance`). Lock names
    /// cannot be listed from etcd, so the console shows the ones it is told about (and any
    /// name typed into the page's look-up form).
    #[must_use]
    pub fn with_lock(mut self, name: impl Into<String>) -> Self {
        self.locks.push(name.into());
        self
    }

    /// An election to show on the locks page (its name as given to
    /// [`Coordinator::election`](crate::Coordinator::election)).
    #[must_use]
    pub fn with_election(mut self, name: impl Into<String>) -> Self {
        self.elections.push(name.into());
        self
    }

    /// The history's secret key, for rollbacks to restore encrypted secrets and for versions
    /// the console writes to hold them encrypted (see
    /// [`ConfigHistory::with_secret_key`](crate::history::ConfigHistory::with_secret_key)).
    #[must_use]
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.secret_key = Some(key);
        self
    }

    /// An older history key to decrypt with after a rotation.
    #[must_use]
    pub fn with_read_key(mut self, key: SecretKey) -> Self {
        self.read_keys.push(key);
        self
    }

    /// How long a login session lasts (default 8 h; at least 1 s).
    #[must_use]
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Marks the session cookie `Secure` (browsers then send it over HTTPS only): for a console
    /// served with [`Console::serve`] or [`Console::router`] behind a TLS-terminating proxy.
    /// [`Console::serve_tls`] sets it itself. Default off.
    #[must_use]
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    /// How long a client may take to send a request's headers before [`Console::serve`] and
    /// [`Console::serve_tls`] close its connection (default 30 s; at least 100 ms): a client
    /// that opens connections and sends nothing holds none of them for longer.
    #[must_use]
    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// The most connections [`Console::serve`] and [`Console::serve_tls`] keep open at once
    /// (default 1,024; at least 1). With that many open (each page's live `/events` stream is
    /// one), the next client waits in the listen backlog until one closes, so the console never
    /// runs out of file descriptors for its own etcd connection.
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }
}

/// The console application on one [`Coordinator`]. Cheap to clone.
///
/// ```no_run
/// # async fn run(coord: coordination::Coordinator) -> coordination::Result<()> {
/// use coordination::console::{Console, ConsoleOptions, Writers};
///
/// let writers = Writers::from_file("console-writers")?; // lines of `NAME:TOKEN`
/// let console = Console::new(&coord, ConsoleOptions::new().with_writers(writers));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
///     .await
///     .map_err(|e| coordination::Error::new(coordination::ErrorKind::Io, e.to_string()))?;
/// console.serve(listener).await
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Console {
    state: Arc<app::ConsoleState>,
}

impl Console {
    /// The console on `coord`'s connection. Starts the live stream's followers (they read the
    /// crate's keys under `<namespace>/__coordination/`, each config prefix with a published
    /// schema, and the configured locks and elections); they stop when the last clone of the
    /// console and of its router is dropped.
    ///
    /// # Panics
    /// Outside a Tokio runtime (it spawns the followers).
    pub fn new(coord: &Coordinator, options: ConsoleOptions) -> Console {
        Console {
            state: app::ConsoleState::start(coord.clone(), options),
        }
    }

    /// The axum router of every page, for embedding in an application's own server.
    pub fn router(&self) -> axum::Router {
        app::router(self.state.clone())
    }

    /// Serves the console over plain HTTP/1.1 on `listener`. Does not return while the listener
    /// lives: a failed accept (e.g. out of file descriptors) is logged and retried after 100 ms,
    /// a client that takes longer than [`ConsoleOptions::with_header_timeout`] to send a
    /// request's headers is dropped, and at most [`ConsoleOptions::with_max_connections`]
    /// connections are open at once.
    ///
    /// # Errors
    /// None: a failed accept is retried, so the future only ends when dropped.
    ///
    /// # Cancel safety
    /// Dropping the future stops serving (open connections are closed).
    pub async fn serve(self, listener: tokio::net::TcpListener) -> Result<()> {
        match server::serve(listener, None, self.router(), self.limits()).await {}
    }

    /// Serves the console over TLS (`tls`) on `listener`, HTTP/1.1, and marks the session
    /// cookie `Secure` from now on. Never returns: as [`serve`](Self::serve), and a client whose
    /// handshake fails or takes over 10 s is dropped.
    ///
    /// # Cancel safety
    /// Dropping the future stops serving and closes every open connection.
    pub async fn serve_tls(self, listener: tokio::net::TcpListener, tls: ConsoleTls) -> ! {
        self.state.secure_cookies.store(true, Ordering::Relaxed);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
        match server::serve(listener, Some(acceptor), self.router(), self.limits()).await {}
    }

    fn limits(&self) -> server::Limits {
        server::Limits {
            max_connections: self.state.options.max_connections,
            header_timeout: self.state.options.header_timeout,
        }
    }
}
