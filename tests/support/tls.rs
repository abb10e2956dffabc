//! A secured etcd for tests: a CA, a server certificate (SAN `127.0.0.1`, `localhost`) and
//! client certificates made with rcgen in a temp dir; etcd serving `https://` on loopback with
//! `--client-cert-auth`; auth enabled with a `root` user. Killed when the handle drops.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use coordination::CoordinatorOptions;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::etcd::{etcd_command, free_port};
use super::etcdctl::header_revision;
use super::process::kill_with_parent;

/// The root user's password on every [`SecureEtcd`].
pub const ROOT_PASSWORD: &str = "root-s3cret";

/// The common name of [`SecureEtcd::client`]: no etcd user has it.
pub const CLIENT_CN: &str = "coordination-tests";

/// A certificate authority whose files live in a temp dir.
pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    issued: std::sync::atomic::AtomicU32,
}

/// A certificate and its private key, as PEM text and as files.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Pki {
    /// A new CA with common name `name`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let ca_pem = cert.pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("write CA");
        Pki {
            dir,
            issuer: Issuer::new(params, key),
            ca_pem,
            issued: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self) -> Leaf {
        self.issue(
            "etcd-server",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `cn` (etcd takes the CN as the user of a request
    /// without an auth token).
    pub fn client(&self, cn: &str) -> Leaf {
        self.issue(cn, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, cn: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let n = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let cert_file = self.dir.path().join(format!("{n}-{cn}.pem"));
        let key_file = self.dir.path().join(format!("{n}-{cn}-key.pem"));
        let leaf = Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_file,
            key_file,
        };
        std::fs::write(&leaf.cert_file, &leaf.cert_pem).expect("write cert");
        std::fs::write(&leaf.key_file, &leaf.key_pem).expect("write key");
        leaf
    }

    /// A path inside this CA's temp dir (for files a test writes).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// How a [`SecureEtcd`] is started.
#[derive(Clone, Copy, Debug)]
pub struct Secure {
    /// `--client-cert-auth`: clients must present a certificate signed by the CA.
    pub client_cert_auth: bool,
    /// Create `root` with [`ROOT_PASSWORD`] and enable auth.
    pub auth: bool,
    /// `--auth-token-ttl` in seconds (etcd's default is 300).
    pub auth_token_ttl: Option<u64>,
}

impl Default for Secure {
    fn default() -> Self {
        Secure {
            client_cert_auth: true,
            auth: true,
            auth_token_ttl: None,
        }
    }
}

/// A single-member etcd serving TLS on loopback.
pub struct SecureEtcd {
    pub pki: Pki,
    pub server: Leaf,
    /// A client certificate with CN [`CLIENT_CN`].
    pub client: Leaf,
    client_port: u16,
    peer_port: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
    secure: Secure,
}

impl SecureEtcd {
    /// mTLS and auth, etcd's default token TTL.
    pub async fn start() -> SecureEtcd {
        SecureEtcd::start_with(Secure::default()).await
    }

    pub async fn start_with(secure: Secure) -> SecureEtcd {
        let pki = Pki::new("coordination test CA");
        let server = pki.server();
        let client = pki.client(CLIENT_CN);
        let mut etcd = SecureEtcd {
            pki,
            server,
            client,
            client_port: free_port(),
            peer_port: free_port(),
            data: tempfile::tempdir().expect("temp dir"),
            child: None,
            secure,
        };
        etcd.spawn();
        etcd.wait_ready().await;
        if secure.auth {
            etcd.etcdctl_raw_as(None, &["user", "add", &format!("root:{ROOT_PASSWORD}")])
                .check("user add root");
            etcd.etcdctl_raw_as(None, &["auth", "enable"])
                .check("auth enable");
        }
        etcd
    }

    /// SIGKILL, then start again on the same ports and data (auth stays enabled; every auth
    /// token handed out before is void, as tokens live in the server's memory).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) {
        let secure = self.secure;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("etcd.log"))
            .expect("etcd log");
        let mut cmd = etcd_command(
            "s",
            &self.data.path().join("data"),
            &client,
            &peer,
            &format!("s={peer}"),
        );
        cmd.arg("--cert-file")
            .arg(&self.server.cert_file)
            .arg("--key-file")
            .arg(&self.server.key_file)
            .arg("--trusted-ca-file")
            .arg(self.pki.ca_file());
        if secure.client_cert_auth {
            cmd.arg("--client-cert-auth");
        }
        if let Some(ttl) = secure.auth_token_ttl {
            cmd.arg(format!("--auth-token-ttl={ttl}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        kill_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("start etcd (is etcd-server installed?)"));
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // `endpoint health` counts "permission denied" as healthy (auth may be on).
            let out = self.etcdctl_raw_as(None, &["--command-timeout=1s", "endpoint", "health"]);
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.data.path().join("etcd.log")).unwrap_or_default();
                panic!(
                    "TLS etcd did not become ready in 30 s: {}\nlog:\n{log}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.client_port)
    }

    /// The same port with `http://` (which etcd does not serve).
    pub fn plain_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// TLS (the CA and the [`client`](Self::client) certificate), no user.
    pub fn tls_options(&self) -> CoordinatorOptions {
        CoordinatorOptions::new([self.endpoint()])
            .with_ca_file(self.pki.ca_file())
            .with_client_identity_files(&self.client.cert_file, &self.client.key_file)
    }

    /// TLS as in [`tls_options`](Self::tls_options), authenticated as root.
    pub fn root_options(&self) -> CoordinatorOptions {
        self.tls_options().with_user("root", ROOT_PASSWORD)
    }

    /// etcdctl's TLS flags for this etcd (with the [`client`](Self::client) certificate).
    pub fn tls_args(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.pki.ca_file().display()),
            format!("--cert={}", self.client.cert_file.display()),
            format!("--key={}", self.client.key_file.display()),
        ]
    }

    /// `etcdctl` over TLS as `user` (`name:password`, or none), unchecked.
    pub fn etcdctl_raw_as(&self, user: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint())
            .args(self.tls_args());
        if let Some(user) = user {
            cmd.arg(format!("--user={user}"));
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl (is etcd-client installed?)")
    }

    /// `etcdctl` over TLS as root; panics with stderr if it fails.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_raw_as(Some(&format!("root:{ROOT_PASSWORD}")), args)
            .check(&format!("etcdctl {args:?}"))
    }

    /// `etcdctl put KEY VALUE` as root, returning the revision of the write.
    pub fn put(&self, key: &str, value: &str) -> i64 {
        header_revision(
            &self
                .etcdctl(&["put", "-w", "json", "--", key, value])
                .stdout,
        )
    }

    /// A user `name` with password `password` and a new role `name` holding `grants`, each
    /// `(permission, key, prefix)` with permission `read`, `write` or `readwrite`.
    pub fn add_user_with_role(&self, name: &str, password: &str, grants: &[(&str, &str, bool)]) {
        self.etcdctl(&["role", "add", name]);
        for (permission, key, prefix) in grants {
            let mut args = vec!["role", "grant-permission"];
            if *prefix {
                args.push("--prefix=true");
            }
            args.extend([name, permission, key]);
            self.etcdctl(&args);
        }
        self.etcdctl(&["user", "add", &format!("{name}:{password}")]);
        self.etcdctl(&["user", "grant-role", name, name]);
    }
}

impl Drop for SecureEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Checking a command's exit status.
pub trait Checked {
    /// The output, or a panic naming `what` with stderr.
    fn check(self, what: &str) -> Output;
}

impl Checked for Output {
    fn check(self, what: &str) -> Output {
        assert!(
            self.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&self.stderr),
            String::from_utf8_lossy(&self.stdout)
        );
        self
    }
}
