//! `coordctl`: the operator CLI for typed configs on etcd — current value, history, diff,
//! validated put/apply, fleet-wide rollback, the published schema, and a live watch.
//!
//! ```text
//! coordctl --endpoints http://127.0.0.1:2379 config history /apps/chat/config
//! coordctl config apply /apps/chat/config -f chat.yaml -m "raise the pool"
//! coordctl config diff /apps/chat/config 42 current
//! coordctl config rollback /apps/chat/config 42 -m "bad deploy"
//! COORD_CONSOLE_WRITERS_FILE=writers coordctl serve --listen 127.0.0.1:8080
//! coordctl --endpoints https://etcd-1:2379 --cacert ca.pem --cert me.pem --key me-key.pem \
//!          --user alice config get /apps/chat/config
//! ```
//!
//! TLS and auth flags are etcdctl's: `--cacert`, `--cert`, `--key` (also ETCDCTL_CACERT,
//! ETCDCTL_CERT, ETCDCTL_KEY), `--user NAME[:PASSWORD]`, `--password` (also ETCD_PASSWORD);
//! without a password coordctl prompts on the terminal. `--insecure-skip-tls-verify` is
//! refused: etcd-client's TLS cannot skip verification.
//!
//! Secret values are never in the history in plaintext: with `--history-key-file FILE` (or
//! `COORD_HISTORY_KEY` holding the key) the versions coordctl writes hold them encrypted and a
//! rollback restores them; `--history-read-key-file` adds older keys after a rotation.
//!
//! Change control: `config propose`, `proposals`, `proposal show|approve|reject|apply|rebase`,
//! `approve`, `reject`, `apply ID`, `policy`, `promote`, `--break-glass --reason` on
//! put/apply/rollback; `template` and `docs` from the published schema. With etcd auth on, the
//! author or approver is the etcd user (a different `--author` is refused).
//!
//! Fleet operations: `config instances` (who serves which revision, who is stale, who rejected
//! what), `config wait` (until every live instance serves a revision), and staged rollouts
//! (`config rollout start|status|pause|resume|promote|abort`). `put`, `apply`, `rollback` and
//! `rollout start` are refused when a schema still running in the fleet would reject the
//! candidate; `--force` writes anyway and records the refusal.
//!
//! Exit codes: 0 success; 1 etcd or I/O failure; 2 bad usage; 3 invalid input refused (the
//! message names the field; also the fleet gate's refusal); 4 conflict (the prefix changed
//! meanwhile, a rollout already running); 5 version or schema not found; 6 refused by the
//! change-control policy; 7 not converged (`wait` timed out or an instance rejected the
//! revision; a rollout was reverted).

#[macro_use]
mod output;
mod change;
mod config;
mod fleet;
mod lock;
mod registry;
#[cfg(feature = "console")]
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coordination::history::{ConfigHistory, SecretKey, Version};
use coordination::{Coordinator, CoordinatorOptions, ErrorKind};
use serde_json::json;

/// Operate on typed configs stored in etcd: history, diff, validated writes, rollback.
#[derive(Parser, Debug)]
#[command(name = "coordctl", version, about, long_about = None)]
struct Cli {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ',',
        global = true
    )]
    endpoints: Vec<String>,
    /// Key namespace the services use (`CoordinatorOptions::with_namespace`), e.g. `/tenant-a`.
    #[arg(long, default_value = "", global = true)]
    namespace: String,
    /// etcd user, `NAME` or `NAME:PASSWORD` (etcdctl's form). Without a password here, in
    /// --password or in ETCD_PASSWORD, coordctl asks for it when standard input is a terminal.
    #[arg(long, env = "ETCD_USER", value_name = "NAME[:PASSWORD]", global = true)]
    user: Option<String>,
    /// etcd password (then --user is taken whole as the name, as etcdctl does).
    #[arg(long, env = "ETCD_PASSWORD", hide_env_values = true, global = true)]
    password: Option<String>,
    /// Verify etcd's server certificate with the CA certificates in this PEM file (required
    /// for https:// endpoints).
    #[arg(long, env = "ETCDCTL_CACERT", value_name = "FILE", global = true)]
    cacert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --key.
    #[arg(long, env = "ETCDCTL_CERT", value_name = "FILE", global = true)]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with --cert.
    #[arg(long, env = "ETCDCTL_KEY", value_name = "FILE", global = true)]
    key: Option<PathBuf>,
    /// Not supported: always refused (see the message it prints).
    #[arg(long, global = true)]
    insecure_skip_tls_verify: bool,
    /// Machine-readable JSON output instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Author recorded with writes (default: $USER).
    #[arg(long, env = "COORDCTL_AUTHOR", global = true)]
    author: Option<String>,
    /// The server's --max-txn-ops: bigger changes are written in guarded batches.
    #[arg(long, default_value_t = 128, global = true)]
    max_txn_ops: usize,
    /// The history's secret key (32 bytes as 64 hex digits or base64, e.g. from
    /// `openssl rand -hex 32`): secret values in the versions coordctl writes are encrypted
    /// with it, and a rollback decrypts them. Without it (or COORD_HISTORY_KEY holding the key
    /// itself), versions coordctl writes leave secret values out.
    #[arg(
        long,
        env = "COORD_HISTORY_KEY_FILE",
        value_name = "FILE",
        global = true
    )]
    history_key_file: Option<PathBuf>,
    /// An older history key to decrypt with after a rotation (may be repeated).
    #[arg(long, value_name = "FILE", global = true)]
    history_read_key_file: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Typed configuration bound to an etcd prefix.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Distributed locks (the `etcdctl lock` / Go `concurrency.Mutex` layout).
    Lock {
        #[command(subcommand)]
        command: LockCommand,
    },
    /// The service registry: operator actions on registered instances.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Serve the operator web console (history, diff, publish, rollback, locks, registry).
    #[cfg(feature = "console")]
    Serve(serve::ServeArgs),
}

#[derive(Subcommand, Debug)]
enum RegistryCommand {
    /// Ask a registered instance (any process) to drain: its registration sets its own health
    /// to draining, so it leaves the resolver keys and discovery's picks. `--author` (or $USER)
    /// is recorded as who asked.
    Drain {
        /// The service name, e.g. chat.
        service: String,
        /// The instance id, e.g. chat-1.
        instance: String,
    },
}

#[derive(Subcommand, Debug)]
enum LockCommand {
    /// List a lock's holder and waiters: key, lease, create_revision (the fencing token), TTL left.
    Ls {
        /// The lock name, e.g. jobs/rebalance (the namespace is put in front).
        name: String,
    },
    /// Force-release a lock: delete the holder's key (its `lost()` fires; the next waiter gets
    /// the lock).
    Release {
        /// The lock name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Show the config (etcd layer) now or at a version; secrets masked.
    Get {
        /// The config prefix, e.g. /apps/chat/config.
        prefix: String,
        /// A version (revision) from `history` instead of the current value.
        #[arg(long)]
        version: Option<i64>,
        /// List the raw keys and values instead of fields.
        #[arg(long)]
        keys: bool,
    },
    /// Set one field (a patch: no other key is touched), validated against the published schema.
    Put {
        /// The config prefix.
        prefix: String,
        /// Dotted field path, e.g. database.pool.
        field: String,
        /// The value, read like an etcd value (YAML; a document sets a whole object).
        value: String,
        /// Why (recorded in the history).
        #[arg(short = 'm', long)]
        comment: Option<String>,
        /// Write without checking the published schema.
        #[arg(long)]
        no_validate: bool,
        /// Write a field path the published schema does not know (the value is still checked).
        #[arg(long)]
        allow_unknown: bool,
        #[command(flatten)]
        glass: BreakGlass,
        /// Write even if a schema running in the fleet would reject it (recorded in the history).
        #[arg(long)]
        force: bool,
    },
    /// Publish a whole config from a YAML or JSON file, validated against the published
    /// schema; or, given a proposal ID and no file, apply that proposal.
    Apply {
        /// The config prefix (starts with `/`), or a proposal ID.
        prefix: String,
        /// The file (`-` for standard input).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// Why (recorded in the history).
        #[arg(short = 'm', long)]
        comment: Option<String>,
        /// Write without checking the published schema.
        #[arg(long)]
        no_validate: bool,
        #[command(flatten)]
        glass: BreakGlass,
        /// Write even if a schema running in the fleet would reject it (recorded in the history).
        #[arg(long)]
        force: bool,
    },
    /// List the recorded versions, newest first.
    History {
        /// The config prefix.
        prefix: String,
    },
    /// Changed fields between two versions (`current` for the value now).
    Diff {
        /// The config prefix.
        prefix: String,
        /// The older version, or `current`.
        from: String,
        /// The newer version, or `current`.
        to: String,
    },
    /// Restore a version's exact keys on every instance.
    Rollback {
        /// The config prefix.
        prefix: String,
        /// The version (revision) to restore.
        version: i64,
        /// Why (recorded in the history).
        #[arg(short = 'm', long)]
        comment: Option<String>,
        #[command(flatten)]
        glass: BreakGlass,
        /// Restore even if a schema running in the fleet would reject it (recorded in the history).
        #[arg(long)]
        force: bool,
    },
    /// Print the JSON Schema the service published.
    Schema {
        /// The config prefix.
        prefix: String,
    },
    /// Print each change to the prefix as it happens.
    Watch {
        /// The config prefix.
        prefix: String,
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<usize>,
    },
    /// The live instances: how many serve each revision, who is stale, who rejected what.
    Instances {
        /// The config prefix.
        prefix: String,
        /// Flag an instance stale when it is behind the prefix for longer than this.
        #[arg(long, default_value = "10s", value_parser = fleet::parse_duration)]
        stale_after: std::time::Duration,
    },
    /// Wait until every live instance serves a revision (exit 7 listing laggards otherwise).
    Wait {
        /// The config prefix.
        prefix: String,
        /// The revision every live instance must serve (or a later one).
        #[arg(long)]
        revision: i64,
        /// Give up after this long (`30s`, `500ms`, `2m`).
        #[arg(long, default_value = "30s", value_parser = fleet::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Staged rollouts by label, with bake times and automatic revert.
    Rollout {
        #[command(subcommand)]
        command: fleet::RolloutCommand,
    },
    /// Propose a change for review (validated like a publish; nothing changes until applied).
    Propose {
        /// The config prefix.
        prefix: String,
        /// The whole new config, a YAML or JSON file (`-` for standard input).
        #[arg(short = 'f', long, conflicts_with = "set")]
        file: Option<PathBuf>,
        /// Set one field, `path=value` (may be repeated; a patch like `put`).
        #[arg(long, value_name = "PATH=VALUE")]
        set: Vec<String>,
        /// Why (shown to reviewers and recorded in the history).
        #[arg(short = 'm', long)]
        comment: Option<String>,
    },
    /// List the proposals for a prefix.
    Proposals {
        /// The config prefix.
        prefix: String,
        /// First delete the decided proposals (applied or rejected) decided longer ago than
        /// this (`30d`, `12h`); open ones are kept. The ids deleted go to stderr.
        #[arg(long, value_name = "AGE", value_parser = fleet::parse_duration)]
        prune_decided_older_than: Option<std::time::Duration>,
    },
    /// One proposal: show, approve, reject, apply, rebase.
    Proposal {
        #[command(subcommand)]
        command: ProposalCommand,
    },
    /// Approve a proposal (as the etcd user with auth on; else --author).
    Approve {
        /// The proposal ID.
        id: String,
    },
    /// Reject a proposal.
    Reject {
        /// The proposal ID.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Show a prefix's change-control policy, or set it (--set -f policy.yaml, or --clear).
    Policy {
        /// The config prefix.
        prefix: String,
        /// Store the policy in the file given with -f.
        #[arg(long, requires = "file")]
        set: bool,
        /// The policy as YAML or JSON (see `coordination::change::Policy`).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// Remove the policy.
        #[arg(long, conflicts_with = "set")]
        clear: bool,
    },
    /// Promote a config from one environment's prefix to another's: a proposal on the target
    /// (applied at once where its policy needs no approval).
    Promote {
        /// The source prefix, e.g. /env/staging/apps/chat/config.
        #[arg(long)]
        from: String,
        /// The target prefix, e.g. /env/prod/apps/chat/config.
        #[arg(long)]
        to: String,
        /// Only these fields (dotted paths, and what is below them; may be repeated).
        #[arg(long, num_args = 1..)]
        only: Vec<String>,
        /// Why.
        #[arg(short = 'm', long)]
        comment: Option<String>,
    },
    /// Print a commented YAML template of every field, from the published schema.
    Template {
        /// The config prefix.
        prefix: String,
    },
    /// Print a reference of every field (type, default, constraints, description, secret,
    /// etcd key, env variable).
    Docs {
        /// The config prefix.
        prefix: String,
        /// `markdown` (a table) or `json`.
        #[arg(long, default_value = "markdown")]
        format: String,
    },
}

#[derive(Subcommand, Debug)]
enum ProposalCommand {
    /// Show a proposal and its diff.
    Show {
        /// The proposal ID.
        id: String,
    },
    /// Approve it.
    Approve {
        /// The proposal ID.
        id: String,
    },
    /// Reject it.
    Reject {
        /// The proposal ID.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Apply it: a publish guarded by its base revision.
    Apply {
        /// The proposal ID.
        id: String,
    },
    /// Recompute its diff on the current revision (approvals are dropped).
    Rebase {
        /// The proposal ID.
        id: String,
    },
}

/// Writing past the prefix's change-control policy.
#[derive(clap::Args, Debug, Default)]
struct BreakGlass {
    /// Write although the policy would refuse (no approved proposal, outside the change
    /// windows); recorded in the history and logged at warn.
    #[arg(long, requires = "reason")]
    break_glass: bool,
    /// Why the glass is broken (required with --break-glass).
    #[arg(long, requires = "break_glass")]
    reason: Option<String>,
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<coordination::Error> for Failure {
    fn from(e: coordination::Error) -> Self {
        let code = match e.kind() {
            ErrorKind::Validation | ErrorKind::InvalidArgument => 3,
            ErrorKind::Conflict => 4,
            ErrorKind::NotFound => 5,
            ErrorKind::Refused => 6,
            _ => 1,
        };
        Failure {
            code,
            message: format!("{e:#}"),
        }
    }
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn connect(cli: &Cli) -> Result<Coordinator, Failure> {
    let mut options = CoordinatorOptions::new(cli.endpoints.clone()).with_namespace(&cli.namespace);
    if cli.insecure_skip_tls_verify {
        return Err(fail(
            2,
            "--insecure-skip-tls-verify is not supported: coordctl speaks TLS through etcd-client, \
             whose TLS options (a CA, a client identity, a server name) have no way to turn \
             certificate verification off. Give --cacert with the CA that signed etcd's server \
             certificate instead.",
        ));
    }
    if let Some(ca) = &cli.cacert {
        options = options.with_ca_file(ca);
    }
    match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => options = options.with_client_identity_files(cert, key),
        (None, None) => {}
        _ => return Err(fail(2, "--cert and --key go together")),
    }
    if let Some((user, password)) = credentials(cli)? {
        options = options.with_user(user, password);
    }
    Ok(Coordinator::connect(options).await?)
}

/// The user and password, etcdctl's way: `--user NAME:PASSWORD`; or `--user NAME` with
/// `--password` (or ETCD_PASSWORD), the name then taken whole; or a prompt on the terminal.
fn credentials(cli: &Cli) -> Result<Option<(String, String)>, Failure> {
    use std::io::IsTerminal;
    let Some(user) = &cli.user else {
        if cli.password.is_some() {
            return Err(fail(2, "--password (or ETCD_PASSWORD) needs --user"));
        }
        return Ok(None);
    };
    if let Some(password) = &cli.password {
        return Ok(Some((user.clone(), password.clone())));
    }
    if let Some((name, password)) = user.split_once(':') {
        return Ok(Some((name.to_string(), password.to_string())));
    }
    if !std::io::stdin().is_terminal() {
        return Err(fail(
            2,
            format!(
                "no password for etcd user `{user}`: give --user {user}:PASSWORD, --password or \
                 ETCD_PASSWORD (standard input is not a terminal to ask on)"
            ),
        ));
    }
    let password = rpassword::prompt_password(format!("Password for etcd user {user}: "))
        .map_err(|e| fail(1, format!("reading the password from the terminal: {e}")))?;
    Ok(Some((user.clone(), password)))
}

/// The environment variable holding the history's secret key itself (hex or base64).
const HISTORY_KEY_ENV: &str = "COORD_HISTORY_KEY";

/// Hidden test override: the instant (RFC 3339) change windows are checked at.
const NOW_ENV: &str = "COORDCTL_NOW";

async fn open(cli: &Cli, prefix: &str, validate: bool) -> Result<ConfigHistory, Failure> {
    let coord = connect(cli).await?;
    open_with(cli, &coord, prefix, validate).await
}

async fn open_with(
    cli: &Cli,
    coord: &Coordinator,
    prefix: &str,
    validate: bool,
) -> Result<ConfigHistory, Failure> {
    let mut history = ConfigHistory::open(coord, prefix)
        .await?
        .with_max_txn_ops(cli.max_txn_ops);
    if let Some(file) = &cli.history_key_file {
        history = history.with_secret_key(SecretKey::from_file(file).map_err(key_failure)?);
    } else if std::env::var_os(HISTORY_KEY_ENV).is_some() {
        history =
            history.with_secret_key(SecretKey::from_env(HISTORY_KEY_ENV).map_err(key_failure)?);
    }
    for file in &cli.history_read_key_file {
        history = history.with_read_key(SecretKey::from_file(file).map_err(key_failure)?);
    }
    if let Ok(now) = std::env::var(NOW_ENV) {
        let clock =
            coordination::change::FixedClock::parse(&now).map_err(|e| fail(2, e.to_string()))?;
        history = history.with_clock(std::sync::Arc::new(clock));
    }
    Ok(if validate {
        history
    } else {
        history.without_validation()
    })
}

/// A key that cannot be read is bad usage (exit 2), or an I/O failure (exit 1).
fn key_failure(e: coordination::Error) -> Failure {
    let code = if e.kind() == ErrorKind::Io { 1 } else { 2 };
    fail(code, e.to_string())
}

/// `history` breaking glass as `glass` says.
fn with_glass(history: ConfigHistory, glass: &BreakGlass) -> Result<ConfigHistory, Failure> {
    match (&glass.break_glass, &glass.reason) {
        (true, Some(reason)) => {
            eprintln!(
                "warning: breaking glass on {} ({reason}): the change-control policy is not applied; the reason is recorded in the history",
                history.prefix()
            );
            Ok(history.with_break_glass(reason)?)
        }
        _ => Ok(history),
    }
}

fn author(cli: &Cli) -> String {
    cli.author
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "coordctl".to_string())
}

fn parse_version(text: &str) -> Result<Option<i64>, Failure> {
    match text {
        "current" | "now" => Ok(None),
        number => number.parse().map(Some).map_err(|_| {
            fail(
                3,
                format!("`{text}` is not a version: give a revision from `history` or `current`"),
            )
        }),
    }
}

fn print_json(value: &impl serde::Serialize) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn report_write(cli: &Cli, what: &str, result: Option<Version>) {
    if cli.json {
        print_json(&json!({"changed": result.is_some(), "version": result}));
        return;
    }
    match result {
        Some(v) => outln!("{what} version {} ({} keys)", v.revision, v.keys),
        None => outln!("unchanged: the prefix already holds exactly this"),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Config { command } => config::run(&cli, command).await,
        Command::Lock { command } => lock::run(&cli, command).await,
        Command::Registry { command } => registry::run(&cli, command).await,
        #[cfg(feature = "console")]
        Command::Serve(args) => serve::run(&cli, args).await,
    }
}
