//! `coordctl serve`: the operator web console (feature `console`).

use std::net::SocketAddr;
use std::path::PathBuf;

use coordination::console::{Console, ConsoleOptions, ConsoleTls, Writers};
use coordination::history::SecretKey;

use crate::{connect, fail, key_failure, Cli, Failure, HISTORY_KEY_ENV};

/// The environment variable that may hold the writers (`NAME:TOKEN`, comma-separated).
const WRITERS_ENV: &str = "COORD_CONSOLE_WRITERS";

/// Arguments of `coordctl serve`.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// Address to listen on. Anything but a loopback address needs TLS (--tls-cert and
    /// --tls-key) or --insecure-listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (the console's certificate first); needs
    /// --tls-key. Session cookies are then marked Secure.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A file of writers, lines of `NAME:TOKEN` (also COORD_CONSOLE_WRITERS_FILE, or the
    /// writers themselves in COORD_CONSOLE_WRITERS). Without writers the console is read-only.
    #[arg(long, env = "COORD_CONSOLE_WRITERS_FILE", value_name = "FILE")]
    writers_file: Option<PathBuf>,
    /// Listen on a non-loopback address over plain HTTP (tokens and session cookies then
    /// cross the network in clear: serve TLS, or put a TLS-terminating proxy in front).
    #[arg(long)]
    insecure_listen: bool,
    /// A lock to show on the locks page (may be repeated).
    #[arg(long = "lock", value_name = "NAME")]
    locks: Vec<String>,
    /// An election to show on the locks page (may be repeated).
    #[arg(long = "election", value_name = "NAME")]
    elections: Vec<String>,
}

pub(crate) async fn run(cli: &Cli, args: &ServeArgs) -> Result<(), Failure> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(ConsoleTls::from_pem_files(cert, key).map_err(|e| fail(2, e.to_string()))?)
        }
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() && !args.insecure_listen {
        return Err(fail(
            2,
            format!(
                "refusing to serve the console on {} over plain HTTP: tokens and session cookies \
                 would cross the network in clear. Serve TLS (--tls-cert and --tls-key), listen \
                 on a loopback address behind a TLS-terminating proxy, or pass --insecure-listen.",
                args.listen
            ),
        ));
    }
    let writers = match &args.writers_file {
        Some(file) => Writers::from_file(file),
        None => Writers::from_env(WRITERS_ENV),
    }
    .map_err(|e| fail(2, e.to_string()))?;
    let read_only = writers.is_empty();
    let mut options = ConsoleOptions::new().with_writers(writers);
    for name in &args.locks {
        options = options.with_lock(name);
    }
    for name in &args.elections {
        options = options.with_election(name);
    }
    if let Some(file) = &cli.history_key_file {
        options = options.with_secret_key(SecretKey::from_file(file).map_err(key_failure)?);
    } else if std::env::var_os(HISTORY_KEY_ENV).is_some() {
        options =
            options.with_secret_key(SecretKey::from_env(HISTORY_KEY_ENV).map_err(key_failure)?);
    }
    for file in &cli.history_read_key_file {
        options = options.with_read_key(SecretKey::from_file(file).map_err(key_failure)?);
    }
    let coord = connect(cli).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| fail(1, format!("listening on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| fail(1, format!("listening on {}: {e}", args.listen)))?;
    let mode = if read_only {
        "read-only"
    } else {
        "writers configured"
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    outln!("console listening on {scheme}://{addr}/ ({mode})");
    let console = Console::new(&coord, options);
    // Ctrl-C stops serving at once: open event streams would hold a graceful shutdown forever.
    match tls {
        Some(tls) => tokio::select! {
            never = console.serve_tls(listener, tls) => never,
            _ = tokio::signal::ctrl_c() => eprintln!("console: interrupted, stopping"),
        },
        None => tokio::select! {
            served = console.serve(listener) => served?,
            _ = tokio::signal::ctrl_c() => eprintln!("console: interrupted, stopping"),
        },
    }
    Ok(())
}
