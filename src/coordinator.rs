//! [`Coordinator`]: one etcd connection shared by every module (config, lock, registry).

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use tracing::Instrument;

use crate::config::{ConfigHandle, ConfigOptions, CoordConfig, Reloader};
use crate::error::{Error, ErrorKind, Result};
use crate::etcd::Etcd;
use crate::history::Tracker;
#[cfg(feature = "tls")]
use crate::tls::{Pem, TlsSettings};

/// How to reach etcd. Build with [`CoordinatorOptions::new`] and the `with_*` methods.
#[derive(Clone)]
#[must_use = "options do nothing until they are passed on"]
pub struct CoordinatorOptions {
    endpoints: Vec<String>,
    user: Option<(String, String)>,
    connect_timeout: Duration,
    request_timeout: Duration,
    keep_alive: Option<(Duration, Duration)>,
    namespace: String,
    max_decode_bytes: usize,
    #[cfg(feature = "tls")]
    tls: TlsSettings,
}

impl fmt::Debug for CoordinatorOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CoordinatorOptions");
        d.field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("namespace", &self.namespace)
            .field("max_decode_bytes", &self.max_decode_bytes);
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls);
        d.finish()
    }
}

impl CoordinatorOptions {
    /// Endpoints such as `http://127.0.0.1:2379` (any member of the cluster; the client
    /// balances across them). Defaults: no auth, 5 s connect timeout, 5 s request timeout,
    /// HTTP/2 keepalive ping every 10 s with a 5 s ack timeout, no namespace, a decode limit
    /// of [`DEFAULT_MAX_DECODE_BYTES`](crate::DEFAULT_MAX_DECODE_BYTES) (16 MiB).
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        CoordinatorOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            user: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            keep_alive: Some((Duration::from_secs(10), Duration::from_secs(5))),
            namespace: String::new(),
            max_decode_bytes: crate::etcd::DEFAULT_MAX_DECODE_BYTES,
            #[cfg(feature = "tls")]
            tls: TlsSettings::default(),
        }
    }

    /// Authenticates as `user` (checked at connect). etcd's auth token expires after the
    /// server's `--auth-token-ttl` of disuse (300 s by default); the coordinator
    /// authenticates again when a request is refused for an expired token, and re-opens a
    /// watch etcd cancelled for it, so long-running watches and leases carry on.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Trusts the CA certificates in the PEM file at `path` (one or more
    /// `-----BEGIN CERTIFICATE-----` blocks) to sign etcd's server certificate. Required for
    /// `https://` endpoints: the platform's root store is not used. The file is read at
    /// connect. Replaces an earlier [`with_ca_pem`](Self::with_ca_pem).
    ///
    /// Available with the `tls` feature (on by default).
    #[cfg(feature = "tls")]
    pub fn with_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.ca = Some(Pem::file(path));
        self
    }

    /// Like [`with_ca_file`](Self::with_ca_file), with the PEM text itself.
    ///
    /// Available with the `tls` feature (on by default).
    #[cfg(feature = "tls")]
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca = Some(Pem::bytes(pem));
        self
    }

    /// Presents the client certificate in the PEM file `cert` (the leaf first, then any
    /// intermediates) with its private key in the PEM file `key` (PKCS#8, PKCS#1 or SEC1):
    /// mutual TLS, for an etcd started with `--client-cert-auth`. Both files are read at
    /// connect. Replaces an earlier [`with_client_identity_pem`](Self::with_client_identity_pem).
    ///
    /// With `--client-cert-auth`, etcd takes the certificate's common name (CN) as the user
    /// of a request that carries no auth token, i.e. when no [`with_user`](Self::with_user)
    /// is given: see `docs/security.md`.
    ///
    /// Available with the `tls` feature (on by default).
    #[cfg(feature = "tls")]
    pub fn with_client_identity_files(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls.identity = Some((Pem::file(cert), Pem::file(key)));
        self
    }

    /// Like [`with_client_identity_files`](Self::with_client_identity_files), with the PEM
    /// text of the certificate (chain) and of the private key.
    ///
    /// Available with the `tls` feature (on by default).
    #[cfg(feature = "tls")]
    pub fn with_client_identity_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.identity = Some((Pem::bytes(cert), Pem::bytes(key)));
        self
    }

    /// The name etcd's server certificate must carry (a DNS name, or an IP address), instead
    /// of each endpoint's host: for endpoints given by address whose certificate names the
    /// service, e.g. `https://10.0.0.5:2379` with a certificate for `etcd.internal`.
    ///
    /// Available with the `tls` feature (on by default).
    #[cfg(feature = "tls")]
    pub fn with_tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls.server_name = Some(name.into());
        self
    }

    /// How long establishing a connection may take (default 5 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a unary request (get, put, txn) may take (default 5 s). Watches are streams and
    /// are not cut by it; the keepalive detects a dead or hung server under them.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// HTTP/2 keepalive: a ping every `interval`, the connection dropped if unanswered within
    /// `timeout` (default 10 s / 5 s). etcd rejects clients that ping more often than every 5 s
    /// (`--grpc-keepalive-min-time`), so `interval` is raised to at least 5 s.
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval.max(Duration::from_secs(5)), timeout));
        self
    }

    /// Turns the HTTP/2 keepalive off (a hung server then goes unnoticed by watches).
    pub fn without_keep_alive(mut self) -> Self {
        self.keep_alive = None;
        self
    }

    /// The largest response this process decodes, in bytes (default
    /// [`DEFAULT_MAX_DECODE_BYTES`](crate::DEFAULT_MAX_DECODE_BYTES), 16 MiB; at least
    /// 64 KiB). It bounds the memory one range page or one watch response may take. Reads are
    /// split into smaller pages when a page exceeds it, and a watch catch-up that exceeds it
    /// (many large writes made while this process was cut off) is replaced by a paged read of
    /// the prefix, so a small limit costs reads, not correctness. One value must fit: etcd's
    /// `--max-request-bytes` (1.5 MiB by default) bounds a value.
    pub fn with_max_decode_bytes(mut self, bytes: usize) -> Self {
        self.max_decode_bytes = bytes;
        self
    }

    /// A key prefix put in front of every key this coordinator uses (e.g. `/tenant-a`), so
    /// several tenants or test runs can share one cluster. No trailing `/`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into().trim_end_matches('/').to_string();
        self
    }
}

/// Adds what a connection failure without a TLS diagnosis may mean: a plaintext client at a
/// TLS port, or a TLS client without the certificate etcd requires (TLS 1.3 servers refuse a
/// client certificate after the handshake, so the client only sees the connection close).
fn transport_hint(options: &CoordinatorOptions, error: Error) -> Error {
    if error.kind() != ErrorKind::Connection || error.message().contains("TLS") {
        return error;
    }
    let https = options.endpoints.iter().any(|e| {
        e.get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    });
    let hint = if https {
        "; if etcd runs with --client-cert-auth, it closes connections that present no client certificate signed by its --trusted-ca-file (CoordinatorOptions::with_client_identity_files)"
    } else {
        "; if etcd serves TLS, it closes plaintext connections: give https:// endpoints and a CA"
    };
    let message = format!("{}{hint}", error.message());
    error.with_message(message)
}

/// Checks the endpoints against the TLS options and reads the CA and client identity.
#[cfg(feature = "tls")]
fn tls_options(options: &CoordinatorOptions) -> Result<Option<etcd_client::TlsOptions>> {
    let scheme = |e: &str, s: &str| e.len() >= s.len() && e[..s.len()].eq_ignore_ascii_case(s);
    if options.tls.is_set() {
        if let Some(plain) = options.endpoints.iter().find(|e| scheme(e, "http://")) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("endpoint `{plain}` is plaintext (http://) but TLS options are set: give https:// endpoints"),
            ));
        }
        if options.tls.ca.is_none() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "TLS to etcd needs the CA that signed its certificate: CoordinatorOptions::with_ca_file or with_ca_pem (the platform's root store is not used)",
            ));
        }
    } else if let Some(https) = options.endpoints.iter().find(|e| scheme(e, "https://")) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("endpoint `{https}` is https:// but no CA is set: CoordinatorOptions::with_ca_file or with_ca_pem (the platform's root store is not used)"),
        ));
    }
    options.tls.options()
}

/// Without the `tls` feature, `https://` endpoints are refused.
#[cfg(not(feature = "tls"))]
fn refuse_https(options: &CoordinatorOptions) -> Result<()> {
    if let Some(https) = options.endpoints.iter().find(|e| {
        e.get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("endpoint `{https}` is https://, but coordination was built without its `tls` feature"),
        ));
    }
    Ok(())
}

/// One etcd connection shared by the config, lock and registry modules. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    etcd: Etcd,
    /// Handles bound through this coordinator, to share (see
    /// [`ConfigOptions::without_sharing`]).
    bound: BoundHandles,
    options: CoordinatorOptions,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Connects and checks that the cluster answers (etcd-client connects lazily, so this makes
    /// one cheap read).
    ///
    /// The first coordinator of a process also starts the crate's one background thread,
    /// `coordination-background`, which works out what a bind leaves for later (a snapshot's
    /// provenance, the history view of the bound keys). On Linux it runs under `SCHED_BATCH`:
    /// the same share of CPU as other threads, but it never preempts one when it wakes.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for no endpoints or a bad URL; [`ErrorKind::Connection`],
    /// [`ErrorKind::Unavailable`] or [`ErrorKind::Timeout`] if no endpoint answers;
    /// [`ErrorKind::Auth`] for rejected credentials.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future keeps no connection.
    pub async fn connect(options: CoordinatorOptions) -> Result<Self> {
        let coord = Self::connect_lazy(options).await?;
        let shown = coord.inner.options.endpoints.join(",");
        let probe = format!("{}/", coord.inner.options.namespace);
        let answer = coord
            .client()
            .get(
                probe,
                Some(GetOptions::new().with_count_only().with_limit(1)),
            )
            .await;
        match answer {
            Ok(_) => Ok(coord),
            // A user granted only its own prefixes may not read this key: etcd answered all
            // the same, and what the user may do is checked by each request.
            Err(etcd_client::Error::GRpcStatus(status))
                if status.code() == tonic::Code::PermissionDenied =>
            {
                Ok(coord)
            }
            Err(e) => Err(transport_hint(
                &coord.inner.options,
                Error::etcd(format_args!("etcd at {shown} did not answer"), e),
            )),
        }
    }

    /// Like [`connect`](Self::connect) but without checking that etcd answers: for services
    /// that must start while etcd is down (their configs bind stale from the last-known-good
    /// cache and switch to live when etcd answers; see [`ConfigOptions::with_cache_file`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for no endpoints or a bad URL; [`ErrorKind::Auth`] for
    /// rejected credentials (authentication happens at connect when a user is set).
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future keeps no connection.
    pub async fn connect_lazy(options: CoordinatorOptions) -> Result<Self> {
        // Started here so that its start is not part of a bind.
        crate::background::start();
        if options.endpoints.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "no etcd endpoints given",
            ));
        }
        // `require_leader`: a member cut off from the quorum cancels our watches instead of
        // keeping them silently open, so they move to a member that has a leader.
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_require_leader(true);
        if let Some((interval, timeout)) = options.keep_alive {
            connect = connect
                .with_keep_alive(interval, timeout)
                .with_keep_alive_while_idle(true);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = tls_options(&options)? {
            connect = connect.with_tls(tls);
        }
        #[cfg(not(feature = "tls"))]
        refuse_https(&options)?;
        if let Some((user, password)) = &options.user {
            // A simple token expires after `--auth-token-ttl` of disuse: authenticate again
            // and retry when a request is refused for it (watches: see `etcd::follow`).
            connect = connect
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        let shown = options.endpoints.join(",");
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| {
                transport_hint(
                    &options,
                    Error::etcd(format_args!("connecting to etcd at {shown}"), e),
                )
            })?;
        let etcd = Etcd::new(client.clone(), options.max_decode_bytes);
        crate::telemetry::describe();
        Ok(Coordinator {
            inner: Arc::new(Inner {
                client,
                etcd,
                bound: BoundHandles::default(),
                options,
            }),
        })
    }

    /// A clone of the underlying etcd client, for operations this crate does not wrap.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The crate's etcd layer over this connection (client and decode limit).
    pub(crate) fn etcd(&self) -> &Etcd {
        &self.inner.etcd
    }

    /// The etcd user this coordinator authenticated as ([`CoordinatorOptions::with_user`]),
    /// `None` without auth. Change control counts authors and approvers by it.
    pub fn user(&self) -> Option<&str> {
        self.inner
            .options
            .user
            .as_ref()
            .map(|(name, _)| name.as_str())
    }

    /// The namespace put in front of every key (`""` for none).
    pub fn namespace(&self) -> &str {
        &self.inner.options.namespace
    }

    /// `key` with the namespace in front.
    pub fn key(&self, key: &str) -> String {
        format!("{}{}", self.inner.options.namespace, key)
    }

    /// Binds `T` to its prefix with the type's own attributes. See [`config_with`](Self::config_with).
    ///
    /// # Errors
    /// As [`config_with`](Self::config_with).
    ///
    /// # Cancel safety
    /// Dropping the future before it completes binds nothing and leaves no task running (the
    /// history part may already have recorded the bound revision, which is harmless).
    pub async fn config<T: CoordConfig>(&self) -> Result<ConfigHandle<T>> {
        self.config_with(ConfigOptions::new()).await
    }

    /// Binds `T`: reads the file and environment layers, reads the etcd prefix at one revision,
    /// validates the merge, and starts watching etcd (from that revision + 1) and the file.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] if the current config is invalid (the error names the field,
    /// layer, key and revision); [`ErrorKind::Io`] if the file cannot be read or watched;
    /// the etcd error kinds if the prefix cannot be read; [`ErrorKind::InvalidArgument`] for an
    /// empty prefix.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes binds nothing and leaves no task running (the
    /// history part may already have recorded the bound revision, which is harmless).
    pub async fn config_with<T: CoordConfig>(
        &self,
        options: ConfigOptions,
    ) -> Result<ConfigHandle<T>> {
        let prefix = options.prefix.as_deref().unwrap_or(T::PREFIX);
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("empty etcd prefix for `{}`", std::any::type_name::<T>()),
            ));
        }
        let full = format!("{}{}/", self.inner.options.namespace, prefix);
        if options.shared {
            if let Some(bound) = self.inner.bound.find::<T>(&full, &options) {
                return Ok(bound);
            }
        }
        let span = tracing::info_span!(
            target: crate::telemetry::CONFIG_TARGET,
            "bind",
            prefix = %full,
            revision = tracing::field::Empty
        );
        let config = async {
            let mut started =
                Reloader::<T>::start(self.etcd().clone(), full.clone(), &options).await?;
            tracing::Span::current()
                .record("revision", started.reloader.current().load().revision());
            let bound_read = started.bound_read.take();
            let (history, bound) =
                Tracker::start(self, &full, &started.reloader, bound_read, &options);
            let overlay = started.reloader.overlay_sender();
            let config = ConfigHandle::spawn(started, full.clone(), history);
            let reserved = full
                .strip_prefix(self.namespace())
                .is_some_and(|rest| rest.starts_with("/__coordination/"));
            if let Some(receipts) = options.receipts().filter(|_| !reserved) {
                crate::fleet::start_receipts(
                    self.etcd().clone(),
                    self.namespace(),
                    &config,
                    overlay,
                    &receipts,
                )?;
            }
            // The schema and the bound revision are in etcd before the handle is handed out.
            bound.await;
            // A bind that read the whole prefix leaves the snapshot's provenance to be worked
            // out: start that now that the bind's own work is done.
            config.load().sources().compute_in_background();
            Ok::<_, Error>(config)
        }
        .instrument(span)
        .await?;
        if options.shared {
            self.inner.bound.insert(&full, options, &config);
        }
        Ok(config)
    }
}

/// The handles bound through one coordinator: by type, full prefix and options, each held
/// weakly (a handle lives as long as its users keep it).
#[derive(Default)]
struct BoundHandles {
    by_prefix: Mutex<HashMap<(TypeId, String), Vec<BoundEntry>>>,
}

/// One bound handle: the options it was bound with, and its state.
type BoundEntry = (ConfigOptions, WeakShared);

/// A bound handle's state, type-erased.
type WeakShared = std::sync::Weak<dyn std::any::Any + Send + Sync>;

impl BoundHandles {
    /// A live handle of `T` on `prefix` bound with `options`.
    fn find<T: CoordConfig>(
        &self,
        prefix: &str,
        options: &ConfigOptions,
    ) -> Option<ConfigHandle<T>> {
        let map = self.by_prefix.lock().unwrap_or_else(|e| e.into_inner());
        let entries = map.get(&(TypeId::of::<T>(), prefix.to_string()))?;
        entries
            .iter()
            .filter(|(o, _)| o == options)
            .find_map(|(_, weak)| ConfigHandle::<T>::upgrade(weak))
    }

    /// Remembers `handle`, dropping entries whose handles are gone.
    fn insert<T: CoordConfig>(
        &self,
        prefix: &str,
        options: ConfigOptions,
        handle: &ConfigHandle<T>,
    ) {
        let mut map = self.by_prefix.lock().unwrap_or_else(|e| e.into_inner());
        let entries = map
            .entry((TypeId::of::<T>(), prefix.to_string()))
            .or_default();
        entries.retain(|(_, weak)| weak.strong_count() > 0);
        entries.push((options, handle.downgrade()));
    }
}
