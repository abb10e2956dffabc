//! The console's accept loop: each connection served by hyper's HTTP/1.1 server with the
//! console's router, over plain TCP or after a TLS handshake, with bounds on how many
//! connections are open at once and on how long a client may take to send a request's headers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a client has to finish the TLS handshake before its connection is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the accept loop bounds its clients.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// The most connections open at once: the next client waits in the listen backlog until
    /// one closes.
    pub(super) max_connections: usize,
    /// How long a client may take to send a request's headers.
    pub(super) header_timeout: Duration,
}

/// Accepts connections on `listener` and serves each with `router` on a task of its own, after
/// a TLS handshake where `tls` is given; never returns. A failed accept (e.g. out of file
/// descriptors) is logged and retried after 100 ms; with `limits.max_connections` open, the
/// next is accepted once one closes; a client whose handshake fails or takes over 10 s, or that
/// takes longer than `limits.header_timeout` to send a request's headers, is dropped.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    limits: Limits,
) -> Infallible {
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    // Dropping the serve future drops the set, which aborts every connection's task.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = Arc::clone(&open)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "console: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (tls, router) = (tls.clone(), router.clone());
        let header_timeout = limits.header_timeout;
        connections.spawn(async move {
            // Held until the connection closes.
            let _permit = permit;
            let Some(tls) = tls else {
                return http1(tcp, router, header_timeout, peer).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(stream)) => http1(stream, router, header_timeout, peer).await,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "console: TLS handshake failed");
                }
                Err(_) => tracing::debug!(%peer, "console: TLS handshake timed out"),
            }
        });
    }
}

/// Serves HTTP/1.1 requests on one connection until it closes.
async fn http1(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    router: axum::Router,
    header_timeout: Duration,
    peer: std::net::SocketAddr,
) {
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(
            TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(router),
        )
        .with_upgrades()
        .await;
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "console: connection ended with an error");
    }
}
