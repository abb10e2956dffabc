//! TLS, mutual TLS, user/password auth, auth-token expiry and RBAC, against a real etcd
//! serving `https://` on loopback with `--client-cert-auth` and auth enabled (see
//! `support::tls`).
#![cfg(feature = "tls")]

#[macro_use]
mod support;

use std::time::Duration;

use coordination::history::HistoryOptions;
use coordination::lock::{Session, SessionOptions};
use coordination::registry::{InstanceSpec, RegistrationState};
use coordination::{ConfigOptions, CoordConfig, Coordinator, CoordinatorOptions, ErrorKind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::init_tracing;
use support::tls::{Pki, Secure, SecureEtcd, ROOT_PASSWORD};

const PREFIX: &str = "/apps/sec/config/";

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/sec/config")]
struct SecConfig {
    port: u16,
}

/// Another prefix, which the limited roles below cannot read.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/other/config")]
struct OtherConfig {
    port: u16,
}

fn no_history() -> ConfigOptions {
    ConfigOptions::new().with_history(HistoryOptions::new().with_recording(false))
}

async fn connect_err(options: CoordinatorOptions) -> coordination::Error {
    match Coordinator::connect(options).await {
        Ok(_) => panic!("connect should fail"),
        Err(e) => e,
    }
}

/// A coordinator over mTLS authenticated as `user`.
async fn connect_as(etcd: &SecureEtcd, user: &str, password: &str) -> Coordinator {
    Coordinator::connect(etcd.tls_options().with_user(user, password))
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e:#}"))
}

/// Waits until `cfg` serves `port`.
async fn reloads_to(cfg: &coordination::ConfigHandle<SecConfig>, port: u16) -> bool {
    eventually!(Duration::from_secs(10), cfg.load().port == port)
}

#[tokio::test]
async fn only_mutual_tls_with_the_right_ca_and_certificate_gets_through() {
    init_tracing();
    let etcd = SecureEtcd::start().await;

    // Plaintext to the TLS port.
    let e = connect_err(
        CoordinatorOptions::new([etcd.plain_endpoint()]).with_user("root", ROOT_PASSWORD),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::Connection, "{e:#}");
    assert!(e.message().contains("https://"), "{e}");

    // A CA that did not sign etcd's certificate.
    let other = Pki::new("some other CA");
    let e = connect_err(
        CoordinatorOptions::new([etcd.endpoint()])
            .with_ca_file(other.ca_file())
            .with_client_identity_files(&etcd.client.cert_file, &etcd.client.key_file)
            .with_user("root", ROOT_PASSWORD),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::Connection, "{e:#}");
    assert!(e.message().contains("TLS handshake failed"), "{e}");
    assert!(e.message().contains("UnknownIssuer"), "{e}");

    // The right CA but no client certificate (etcd runs with --client-cert-auth).
    let e = connect_err(
        CoordinatorOptions::new([etcd.endpoint()])
            .with_ca_pem(etcd.pki.ca_pem())
            .with_user("root", ROOT_PASSWORD),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::Connection, "{e:#}");
    assert!(e.message().contains("client certificate"), "{e}");

    // A client certificate from another CA.
    let foreign = other.client("intruder");
    let e = connect_err(
        CoordinatorOptions::new([etcd.endpoint()])
            .with_ca_file(etcd.pki.ca_file())
            .with_client_identity_pem(foreign.cert_pem.clone(), foreign.key_pem.clone())
            .with_user("root", ROOT_PASSWORD),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::Connection, "{e:#}");
    assert!(e.message().contains("client certificate"), "{e}");

    // A server name the certificate does not carry; one it does.
    let e = connect_err(etcd.root_options().with_tls_server_name("etcd.example")).await;
    assert_eq!(e.kind(), ErrorKind::Connection, "{e:#}");
    assert!(e.message().contains("etcd.example"), "{e}");
    Coordinator::connect(etcd.root_options().with_tls_server_name("localhost"))
        .await
        .expect("the certificate names localhost");

    // The right certificate and password, from files and from PEM bytes.
    Coordinator::connect(etcd.root_options())
        .await
        .expect("mTLS + root");
    Coordinator::connect(
        CoordinatorOptions::new([etcd.endpoint()])
            .with_ca_pem(etcd.pki.ca_pem())
            .with_client_identity_pem(etcd.client.cert_pem.clone(), etcd.client.key_pem.clone())
            .with_user("root", ROOT_PASSWORD),
    )
    .await
    .expect("mTLS from PEM bytes");

    // A wrong password over a good TLS connection.
    let e = connect_err(etcd.tls_options().with_user("root", "wrong")).await;
    assert_eq!(e.kind(), ErrorKind::Auth, "{e:#}");
}

#[tokio::test]
async fn bad_tls_options_are_refused_before_connecting_naming_the_file() {
    let etcd = SecureEtcd::start_with(Secure {
        auth: false,
        ..Secure::default()
    })
    .await;
    // https:// without a CA: the platform's roots are not used.
    let e = connect_err(CoordinatorOptions::new([etcd.endpoint()])).await;
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e:#}");
    assert!(e.message().contains("with_ca_file"), "{e}");
    // TLS options with an http:// endpoint.
    let e = connect_err(
        CoordinatorOptions::new([etcd.plain_endpoint()]).with_ca_file(etcd.pki.ca_file()),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e:#}");
    assert!(e.message().contains(&etcd.plain_endpoint()), "{e}");
    // A CA file that does not exist, and one that holds no certificate.
    let missing = etcd.pki.path("missing-ca.pem");
    let e = connect_err(etcd.tls_options().with_ca_file(&missing)).await;
    assert_eq!(e.kind(), ErrorKind::Io, "{e:#}");
    assert!(e.message().contains(&missing.display().to_string()), "{e}");
    let garbage = etcd.pki.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let e = connect_err(etcd.tls_options().with_ca_file(&garbage)).await;
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e:#}");
    assert!(e.message().contains(&garbage.display().to_string()), "{e}");
    // A certificate given as the key; a key that belongs to another certificate.
    let e = connect_err(
        etcd.tls_options()
            .with_client_identity_files(&etcd.client.cert_file, &etcd.client.cert_file),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e:#}");
    assert!(e.message().contains("client key"), "{e}");
    let other = etcd.pki.client("other");
    let e = connect_err(
        etcd.tls_options()
            .with_client_identity_files(&etcd.client.cert_file, &other.key_file),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e:#}");
    assert!(e.message().contains("does not belong"), "{e}");
    // Without auth, mTLS alone is enough.
    let coord = Coordinator::connect(etcd.tls_options())
        .await
        .expect("mTLS");
    coord.client().put("/k", "v", None).await.expect("put");
}

#[tokio::test]
async fn bind_reload_lock_and_registration_work_over_mtls_and_auth() {
    init_tracing();
    let etcd = SecureEtcd::start().await;
    etcd.put(&format!("{PREFIX}port"), "8080");
    let coord = Coordinator::connect(etcd.root_options())
        .await
        .expect("connect");

    let cfg = SecConfig::bind(&coord).await.expect("bind");
    assert_eq!(cfg.load().port, 8080);
    assert!(cfg.history_refused().is_none());
    etcd.put(&format!("{PREFIX}port"), "8181");
    assert!(reloads_to(&cfg, 8181).await, "reload over TLS");
    let versions = cfg.history().await.expect("history");
    assert!(!versions.is_empty(), "root records history");

    let guard = coord.lock("jobs/nightly").await.expect("lock");
    let status = coord
        .lock_status("jobs/nightly")
        .await
        .expect("lock status");
    assert_eq!(
        status.holder.map(|h| h.create_revision),
        Some(guard.fencing_token())
    );
    guard.unlock().await.expect("unlock");

    let registry = coord.registry();
    let registration = registry
        .register(InstanceSpec::new("chat", "chat-1", "127.0.0.1:7001"))
        .with_lease_ttl(Duration::from_secs(5))
        .await
        .expect("register");
    assert_eq!(registration.status().state, RegistrationState::Registered);
    let found = registry.discover("chat").await.expect("discover");
    assert_eq!(found.len(), 1, "{found:?}");
    registration.deregister().await.expect("deregister");
}

#[tokio::test]
async fn a_missing_permission_is_auth_naming_the_key_and_the_permission() {
    init_tracing();
    let mut etcd = SecureEtcd::start().await;
    etcd.put(&format!("{PREFIX}port"), "8080");
    etcd.put("/apps/other/config/port", "9090");
    // A service: read on its own config prefix, nothing else.
    etcd.add_user_with_role("svc", "svc-pw", &[("read", PREFIX, true)]);
    // It may not read the key `Coordinator::connect` probes, and connects all the same.
    let coord = connect_as(&etcd, "svc", "svc-pw").await;

    // History off: the bind needs nothing but read on the prefix.
    let cfg = coord
        .config_with::<SecConfig>(no_history())
        .await
        .expect("read-only bind with history off");
    assert_eq!(cfg.load().port, 8080);
    etcd.put(&format!("{PREFIX}port"), "8081");
    assert!(reloads_to(&cfg, 8081).await);

    // History on: the bind succeeds, the handle says why it records nothing.
    let recorded = SecConfig::bind(&coord)
        .await
        .expect("read-only bind with history on still binds");
    let refused = recorded.history_refused().expect("history refused");
    assert_eq!(refused.kind(), ErrorKind::Auth, "{refused:#}");
    assert!(
        refused.message().contains("readwrite permission")
            && refused.message().contains("/__coordination/"),
        "{refused}"
    );
    assert!(refused
        .key()
        .is_some_and(|k| k.starts_with("/__coordination/")));
    etcd.put(&format!("{PREFIX}port"), "8082");
    assert!(reloads_to(&recorded, 8082).await, "config still reloads");
    assert!(cfg.history_refused().is_none(), "history off is no refusal");

    // A prefix the role does not cover.
    let e = match coord.config_with::<OtherConfig>(no_history()).await {
        Ok(_) => panic!("bind of an unreadable prefix"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Auth, "{e:#}");
    assert_eq!(e.key(), Some("/apps/other/config/"), "{e:#}");
    assert!(
        e.message()
            .contains("needs read permission on the prefix `/apps/other/config/`"),
        "{e}"
    );

    // A write the role does not allow.
    let e = cfg
        .update(|c| c.port = 1, "svc", "try")
        .await
        .expect_err("read-only update");
    assert_eq!(e.kind(), ErrorKind::Auth, "{e:#}");
    assert!(
        e.message()
            .contains("needs readwrite permission on the prefix `/apps/sec/config/`"),
        "{e}"
    );

    // The read permission revoked: etcd keeps open watches, but once they must re-open (here
    // after a restart), the refusal shows in the handle's status while it serves the last
    // snapshot.
    etcd.etcdctl(&["role", "revoke-permission", "--prefix=true", "svc", PREFIX]);
    etcd.restart().await;
    let refused = eventually!(Duration::from_secs(15), {
        cfg.status().last_error.as_ref().is_some_and(|e| {
            e.kind() == ErrorKind::Auth
                && e.message()
                    .contains("needs read permission on the prefix `/apps/sec/config/`")
        })
    });
    assert!(refused, "{:?}", cfg.status());
    assert_eq!(cfg.load().port, 8082, "the last snapshot keeps serving");
}

#[tokio::test]
async fn an_operator_role_on_the_prefix_and_the_history_can_do_everything() {
    init_tracing();
    let etcd = SecureEtcd::start().await;
    etcd.put(&format!("{PREFIX}port"), "8080");
    etcd.add_user_with_role(
        "operator",
        "op-pw",
        &[
            ("readwrite", PREFIX, true),
            ("readwrite", "/__coordination/", true),
        ],
    );
    let coord = connect_as(&etcd, "operator", "op-pw").await;
    let cfg = SecConfig::bind(&coord).await.expect("bind");
    assert!(
        cfg.history_refused().is_none(),
        "{:?}",
        cfg.history_refused()
    );
    let version = cfg
        .update(|c| c.port = 9000, "operator", "raise")
        .await
        .expect("update")
        .expect("a new version");
    assert!(reloads_to(&cfg, 9000).await);
    let versions = cfg.history().await.expect("history");
    assert!(
        versions.iter().any(|v| v.revision == version.revision),
        "{versions:?}"
    );
    cfg.rollback_to(versions[0].revision, "operator", "back")
        .await
        .expect("rollback");
    assert!(reloads_to(&cfg, 8080).await);
}

#[tokio::test]
async fn watches_and_leases_carry_on_past_the_auth_token_ttl_and_an_etcd_restart() {
    init_tracing();
    // Tokens expire after 2 s of disuse.
    let mut etcd = SecureEtcd::start_with(Secure {
        auth_token_ttl: Some(2),
        ..Secure::default()
    })
    .await;
    etcd.put(&format!("{PREFIX}port"), "1");
    etcd.add_user_with_role(
        "svc",
        "svc-pw",
        &[
            ("read", PREFIX, true),
            ("readwrite", "jobs/", true),
            ("readwrite", "/services/", true),
            ("readwrite", "/__coordination/registry/", true),
        ],
    );
    let coord = connect_as(&etcd, "svc", "svc-pw").await;
    let cfg = coord
        .config_with::<SecConfig>(no_history())
        .await
        .expect("bind");
    // Leases longer than the restart below takes (the keepalive cannot confirm a lease while
    // etcd is down), far longer than the token TTL.
    let session = Session::open(
        &coord,
        SessionOptions::new().with_lease_ttl(Duration::from_secs(10)),
    )
    .await
    .expect("session");
    let guard = session.lock("jobs/nightly").await.expect("lock");
    let registration = coord
        .registry()
        .register(InstanceSpec::new("chat", "chat-1", "127.0.0.1:7001"))
        .with_lease_ttl(Duration::from_secs(10))
        .await
        .expect("register");

    // Idle stretches longer than the token TTL, with a change after each.
    for port in 2..=4 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        etcd.put(&format!("{PREFIX}port"), &port.to_string());
        assert!(reloads_to(&cfg, port).await, "reload {port} past the TTL");
    }
    assert!(!guard.is_lost(), "{:?}", guard.lost_reason());
    assert!(!session.is_lost());
    assert_eq!(registration.status().state, RegistrationState::Registered);

    // A restart voids every token; the watches re-open with a fresh one.
    etcd.restart().await;
    etcd.put(&format!("{PREFIX}port"), "5");
    assert!(
        reloads_to(&cfg, 5).await,
        "reload after the restart: {:?}",
        cfg.status()
    );
    assert!(eventually!(
        Duration::from_secs(10),
        cfg.status().state == coordination::config::WatchState::Live
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!guard.is_lost(), "{:?}", guard.lost_reason());
    let status = coord
        .lock_status("jobs/nightly")
        .await
        .expect("lock status");
    assert_eq!(
        status.holder.map(|h| h.create_revision),
        Some(guard.fencing_token()),
        "the lock is still held by its lease"
    );
    assert!(eventually!(
        Duration::from_secs(10),
        registration.status().state == RegistrationState::Registered
    ));
}

#[cfg(feature = "cli")]
mod cli {
    use std::process::{Command, Output, Stdio};

    use super::*;

    #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, CoordConfig)]
    #[coord(prefix = "/apps/chat/config")]
    struct ChatConfig {
        port: u16,
    }

    /// The `etcdctl` lines of the ```sh block of `docs/security.md` that adds `role`, as
    /// arguments, every `"$PASSWORD"` replaced by `pw`.
    fn documented_role(role: &str) -> Vec<Vec<String>> {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md"))
            .expect("docs/security.md");
        let block = doc
            .split("```sh\n")
            .skip(1)
            .map(|rest| rest.split("```").next().unwrap_or(""))
            .find(|block| block.contains(&format!("etcdctl role add {role}\n")))
            .unwrap_or_else(|| panic!("no block adds role {role}"));
        block
            .lines()
            .filter_map(|line| line.strip_prefix("etcdctl "))
            .map(|line| {
                line.split_whitespace()
                    .map(|arg| match arg.split_once("=\"$") {
                        Some((flag, _)) => format!("{flag}=pw"),
                        None => arg.to_string(),
                    })
                    .collect()
            })
            .collect()
    }

    fn run_documented(etcd: &SecureEtcd, role: &str) {
        let lines = documented_role(role);
        assert!(lines.len() >= 4, "{lines:?}");
        for args in lines {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            etcd.etcdctl(&args);
        }
    }

    #[tokio::test]
    async fn the_documented_roles_work_for_a_service_an_operator_and_ci() {
        init_tracing();
        let etcd = SecureEtcd::start().await;
        etcd.put("/apps/chat/config/port", "8080");
        for role in ["chat-service", "config-operator", "chat-deploy"] {
            run_documented(&etcd, role);
        }
        // The service: reads its config with history off, registers, takes its locks.
        let service = connect_as(&etcd, "chat-service", "pw").await;
        let cfg = service
            .config_with::<ChatConfig>(no_history())
            .await
            .expect("service binds");
        assert_eq!(cfg.load().port, 8080);
        let registration = service
            .registry()
            .register(InstanceSpec::new("chat", "chat-1", "127.0.0.1:7001"))
            .with_lease_ttl(Duration::from_secs(10))
            .await
            .expect("service registers");
        let guard = service
            .lock("locks/chat/rebalance")
            .await
            .expect("service locks");
        let e = service
            .lock("jobs/other")
            .try_acquire()
            .await
            .expect_err("a lock outside its prefix");
        assert_eq!(e.kind(), ErrorKind::Auth, "{e:#}");

        // The operator: binds with history, publishes and rolls back.
        let operator = connect_as(&etcd, "alice", "pw").await;
        let recorded = ChatConfig::bind(&operator).await.expect("operator binds");
        assert!(
            recorded.history_refused().is_none(),
            "{:?}",
            recorded.history_refused()
        );
        recorded
            .update(|c| c.port = 8181, "alice", "raise")
            .await
            .expect("operator updates")
            .expect("a version");
        assert!(eventually!(
            Duration::from_secs(10),
            cfg.load().port == 8181
        ));

        // CI: applies a file with coordctl, validated against the published schema.
        let file = etcd.pki.path("chat.yaml");
        std::fs::write(&file, "port: 9000\n").unwrap();
        let out = coordctl(
            &etcd,
            Some("ci-chat:pw"),
            &[
                "config",
                "apply",
                "/apps/chat/config",
                "-f",
                &file.display().to_string(),
                "-m",
                "deploy",
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        assert!(eventually!(
            Duration::from_secs(10),
            cfg.load().port == 9000
        ));
        let versions = recorded.history().await.expect("history");
        assert!(
            versions
                .iter()
                .any(|v| v.comment.as_deref() == Some("deploy")),
            "CI's publish is recorded: {versions:?}"
        );
        // ... and nothing else.
        let out = coordctl(
            &etcd,
            Some("ci-chat:pw"),
            &[
                "config",
                "put",
                "/apps/other/config",
                "port",
                "1",
                "--no-validate",
            ],
        );
        assert_exit(&out, 1, "permission");

        guard.unlock().await.expect("unlock");
        registration.deregister().await.expect("deregister");
    }

    fn coordctl(etcd: &SecureEtcd, user: Option<&str>, args: &[&str]) -> Output {
        coordctl_env(etcd, user, &[], args)
    }

    /// `coordctl --endpoints <etcd> <TLS flags> [--user USER] ARGS` with `env` set, standard
    /// input not a terminal.
    fn coordctl_env(
        etcd: &SecureEtcd,
        user: Option<&str>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordctl"));
        cmd.arg("--endpoints")
            .arg(etcd.endpoint())
            .args(etcd.tls_args())
            .env_remove("ETCD_USER")
            .env_remove("ETCD_PASSWORD")
            .env("COORDCTL_AUTHOR", "ci")
            .envs(env.iter().copied());
        if let Some(user) = user {
            cmd.arg(format!("--user={user}"));
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run coordctl")
    }

    /// Asserts the exit code and that stdout or stderr contains `needle`.
    fn assert_exit(out: &Output, code: i32, needle: &str) {
        assert_eq!(out.status.code(), Some(code), "{}", text(out));
        assert!(text(out).contains(needle), "no `{needle}` in {}", text(out));
    }

    fn text(out: &Output) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    #[tokio::test]
    async fn coordctl_gets_and_puts_over_mtls_and_auth() {
        let etcd = SecureEtcd::start().await;
        etcd.put(&format!("{PREFIX}port"), "8080");
        let root = format!("root:{ROOT_PASSWORD}");

        let out = coordctl(&etcd, Some(&root), &["config", "get", PREFIX, "--keys"]);
        assert_exit(&out, 0, "8080");

        let out = coordctl(
            &etcd,
            Some(&root),
            &[
                "config",
                "put",
                PREFIX,
                "port",
                "8181",
                "--no-validate",
                "-m",
                "tls",
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        let got = etcd.etcdctl(&["get", "--print-value-only", &format!("{PREFIX}port")]);
        assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "8181");

        // `--user NAME` with the password from ETCD_PASSWORD.
        let out = coordctl_env(
            &etcd,
            Some("root"),
            &[("ETCD_PASSWORD", ROOT_PASSWORD)],
            &["config", "get", PREFIX],
        );
        assert!(out.status.success(), "{}", text(&out));

        // A wrong password is an error naming the failure; no password and no terminal is
        // bad usage.
        let out = coordctl(&etcd, Some("root:wrong"), &["config", "get", PREFIX]);
        assert_exit(&out, 1, "authentication failed");
        let out = coordctl(&etcd, Some("root"), &["config", "get", PREFIX]);
        assert_exit(&out, 2, "no password for etcd user `root`");

        // Certificate verification cannot be turned off.
        let out = coordctl(
            &etcd,
            Some(&root),
            &["--insecure-skip-tls-verify", "config", "get", PREFIX],
        );
        assert_exit(&out, 2, "not supported");
    }
}
