//! Optional per-registration health checks: an HTTP GET, a TCP connect or a custom async fn, run
//! every interval, with hysteresis (N failures → unhealthy, M successes → healthy).

use std::fmt;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};

type ProbeFuture = Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send>>;
type CustomProbe = Arc<dyn Fn() -> ProbeFuture + Send + Sync>;

#[derive(Clone)]
enum Probe {
    Tcp(String),
    Http(String),
    Custom(CustomProbe),
}

/// A health check run by a [`Registration`](crate::registry::Registration) in the background: made by
/// [`tcp`](Self::tcp), [`http`](Self::http) or [`custom`](Self::custom), configured with the
/// `with_*` methods, attached with
/// [`RegistrationBuilder::with_health_check`](crate::registry::RegistrationBuilder::with_health_check).
///
/// Every [interval](Self::with_interval) (default 5 s) the probe runs with a
/// [timeout](Self::with_timeout) (default 1 s). After
/// [`with_unhealthy_after`](Self::with_unhealthy_after) consecutive failures (default 3) the
/// instance is marked [`Health::Unhealthy`](crate::registry::Health::Unhealthy) (it leaves the resolver
/// key space and every live view's picks); after
/// [`with_healthy_after`](Self::with_healthy_after) consecutive successes (default 2) it is
/// healthy again. The check starts out assuming success and probes at once. A manual
/// [`Health::Draining`](crate::registry::Health::Draining) or `Unhealthy` set with
/// [`set_health`](crate::registry::Registration::set_health) wins over a passing check.
///
/// ```no_run
/// # use std::time::Duration;
/// use coordination::registry::HealthCheck;
/// let check = HealthCheck::http("http://127.0.0.1:8080/healthz")
///     .with_interval(Duration::from_secs(2))
///     .with_unhealthy_after(3)
///     .with_healthy_after(2);
/// ```
#[derive(Clone)]
pub struct HealthCheck {
    probe: Probe,
    interval: Duration,
    timeout: Duration,
    unhealthy_after: u32,
    healthy_after: u32,
}

impl fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let probe = match &self.probe {
            Probe::Tcp(addr) => format!("tcp {addr}"),
            Probe::Http(url) => format!("http {url}"),
            Probe::Custom(_) => "custom".to_string(),
        };
        f.debug_struct("HealthCheck")
            .field("probe", &probe)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("unhealthy_after", &self.unhealthy_after)
            .field("healthy_after", &self.healthy_after)
            .finish()
    }
}

impl HealthCheck {
    fn from_probe(probe: Probe) -> Self {
        HealthCheck {
            probe,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 2,
        }
    }

    /// Succeeds when a TCP connection to `addr` (`host:port`) opens within the timeout.
    pub fn tcp(addr: impl Into<String>) -> Self {
        Self::from_probe(Probe::Tcp(addr.into()))
    }

    /// Succeeds when `GET url` answers with a 2xx or 3xx status within the timeout. Only plain
    /// `http://host:port/path` URLs are supported (no TLS); the port defaults to 80.
    pub fn http(url: impl Into<String>) -> Self {
        Self::from_probe(Probe::Http(url.into()))
    }

    /// Succeeds when `probe()` resolves to `Ok(())` within the timeout; an `Err` is logged with
    /// its `Display`.
    pub fn custom<F, Fut, E>(probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        let probe: CustomProbe = Arc::new(move || {
            let fut = probe();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        Self::from_probe(Probe::Custom(probe))
    }

    /// Time between probes (default 5 s; at least 10 ms).
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long one probe may take before it counts as failed (default 1 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Consecutive failures that mark the instance unhealthy (default 3, at least 1).
    #[must_use]
    pub fn with_unhealthy_after(mut self, failures: u32) -> Self {
        self.unhealthy_after = failures.max(1);
        self
    }

    /// Consecutive successes that mark it healthy again (default 2, at least 1).
    #[must_use]
    pub fn with_healthy_after(mut self, successes: u32) -> Self {
        self.healthy_after = successes.max(1);
        self
    }

    /// Checks the target once the check is attached to a registration.
    pub(crate) fn validate(&self) -> Result<()> {
        match &self.probe {
            Probe::Http(url) => parse_http_url(url).map(|_| ()),
            Probe::Tcp(addr) if addr.is_empty() => Err(Error::new(
                ErrorKind::InvalidArgument,
                "empty TCP health-check address",
            )),
            _ => Ok(()),
        }
    }

    /// Runs one probe: `Ok(())` or why it failed.
    pub(crate) async fn probe_once(&self) -> std::result::Result<(), String> {
        let timeout = self.timeout;
        let run = async {
            match &self.probe {
                Probe::Custom(f) => f().await,
                Probe::Tcp(addr) => {
                    let addr = addr.clone();
                    blocking(move || tcp_connect(&addr, timeout).map(drop)).await
                }
                Probe::Http(url) => {
                    let url = url.clone();
                    blocking(move || http_get(&url, timeout)).await
                }
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }

    /// Probes every interval and calls `report(healthy)` on each flip; stops when `report`
    /// returns `false` or the task is aborted.
    pub(crate) fn spawn(
        self,
        label: String,
        mut report: impl FnMut(bool) -> bool + Send + 'static,
    ) -> JoinHandle<()> {
        let service = label.split('/').next().unwrap_or_default().to_string();
        let failures = metrics::counter!(
            crate::telemetry::REGISTRY_CHECK_FAILURES,
            "service" => service
        );
        tokio::spawn(async move {
            let mut state = Hysteresis::new(self.unhealthy_after, self.healthy_after);
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let result = self.probe_once().await;
                if let Err(reason) = &result {
                    failures.increment(1);
                    tracing::debug!(instance = %label, reason = %reason, "health probe failed");
                }
                if let Some(healthy) = state.observe(result.is_ok()) {
                    if healthy {
                        tracing::info!(instance = %label, "health check passing again");
                    } else {
                        tracing::warn!(
                            instance = %label,
                            reason = %result.err().unwrap_or_default(),
                            failures = self.unhealthy_after,
                            "health check failing; marking unhealthy"
                        );
                    }
                    if !report(healthy) {
                        return;
                    }
                }
            }
        })
    }
}

async fn blocking(
    f: impl FnOnce() -> std::result::Result<(), String> + Send + 'static,
) -> std::result::Result<(), String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("probe panicked: {e}")))
}

/// N-failures / M-successes hysteresis, starting healthy.
#[derive(Debug)]
pub(crate) struct Hysteresis {
    healthy: bool,
    failures: u32,
    successes: u32,
    fall: u32,
    rise: u32,
}

impl Hysteresis {
    pub(crate) fn new(fall: u32, rise: u32) -> Self {
        Hysteresis {
            healthy: true,
            failures: 0,
            successes: 0,
            fall: fall.max(1),
            rise: rise.max(1),
        }
    }

    /// Records one probe result; returns the new state when it flips.
    pub(crate) fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.healthy && self.successes >= self.rise {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= self.fall {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

fn resolve(authority: &str) -> std::result::Result<SocketAddr, String> {
    authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{authority}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{authority}` resolves to no address"))
}

fn tcp_connect(authority: &str, timeout: Duration) -> std::result::Result<TcpStream, String> {
    let addr = resolve(authority)?;
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))
}

/// `(authority with port, path)` of an `http://` URL.
fn parse_http_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("health-check URL `{url}` is not http:// (TLS is not supported)"),
        )
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("health-check URL `{url}` has no host"),
        ));
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// A minimal HTTP/1.1 GET: success on a 2xx or 3xx status line.
fn http_get(url: &str, timeout: Duration) -> std::result::Result<(), String> {
    let (authority, path) = parse_http_url(url).map_err(|e| e.to_string())?;
    let mut stream = tcp_connect(&authority, timeout)?;
    let io = |e: std::io::Error| format!("GET {url}: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: coordination-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {url}: no HTTP status line (got `{line}`)"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {url}: status {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_needs_n_failures_and_m_successes() {
        let mut h = Hysteresis::new(3, 2);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None, "a success resets the failure count");
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
        assert_eq!(h.observe(true), None);
    }

    #[test]
    fn http_urls_parse() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/healthz").unwrap(),
            ("127.0.0.1:8080".into(), "/healthz".into())
        );
        assert_eq!(
            parse_http_url("http://localhost").unwrap(),
            ("localhost:80".into(), "/".into())
        );
        assert_eq!(
            parse_http_url("http://[::1]/x").unwrap(),
            ("[::1]:80".into(), "/x".into())
        );
        assert!(parse_http_url("https://x/").is_err());
        assert!(parse_http_url("http:///x").is_err());
    }
}
