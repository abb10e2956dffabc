//! TLS, mutual TLS, user/password auth, token expiry and RBAC against a real secured etcd.
#![cfg(feature = "tls")]

mod support;

use coordination::{Coordinator, CoordinatorOptions, ErrorKind};
use support::tls::{Pki, SecureEtcd};

#[tokio::test]
async fn scratch_errors() {
    let etcd = SecureEtcd::start().await;
    let show = |what: &str, r: coordination::Result<Coordinator>| match r {
        Ok(_) => println!("{what}: OK"),
        Err(e) => println!("{what}: {:?} | {e:#}", e.kind()),
    };
    show("plain", Coordinator::connect(CoordinatorOptions::new([etcd.plain_endpoint()])).await);
    show("plain+user", Coordinator::connect(CoordinatorOptions::new([etcd.plain_endpoint()]).with_user("root", "x")).await);
    let other = Pki::new("other");
    show("wrong ca", Coordinator::connect(CoordinatorOptions::new([etcd.endpoint()]).with_ca_file(other.ca_file()).with_client_identity_files(&etcd.client.cert_file, &etcd.client.key_file).with_user("root", support::tls::ROOT_PASSWORD)).await);
    show("no client cert", Coordinator::connect(CoordinatorOptions::new([etcd.endpoint()]).with_ca_file(etcd.pki.ca_file()).with_user("root", support::tls::ROOT_PASSWORD)).await);
    show("no client cert no user", Coordinator::connect(CoordinatorOptions::new([etcd.endpoint()]).with_ca_file(etcd.pki.ca_file())).await);
    let foreign = other.client("x");
    show("foreign client cert", Coordinator::connect(CoordinatorOptions::new([etcd.endpoint()]).with_ca_file(etcd.pki.ca_file()).with_client_identity_files(&foreign.cert_file, &foreign.key_file).with_user("root", support::tls::ROOT_PASSWORD)).await);
    let c2 = etcd.pki.client("y");
    show("mismatched key", Coordinator::connect(CoordinatorOptions::new([etcd.endpoint()]).with_ca_file(etcd.pki.ca_file()).with_client_identity_files(&etcd.client.cert_file, &c2.key_file).with_user("root", support::tls::ROOT_PASSWORD)).await);
    show("wrong server name", Coordinator::connect(etcd.root_options().with_tls_server_name("etcd.example")).await);
    show("localhost name", Coordinator::connect(etcd.root_options().with_tls_server_name("localhost")).await);
    show("wrong pw", Coordinator::connect(etcd.tls_options().with_user("root", "nope")).await);
    show("no user", Coordinator::connect(etcd.tls_options()).await);
    show("root", Coordinator::connect(etcd.root_options()).await);
    let c = Coordinator::connect(etcd.tls_options()).await.unwrap();
    let e = c.client().put("/x", "1", None).await;
    println!("no user put: {e:?}");
}

#[tokio::test]
async fn scratch_more() {
    // https client against a plaintext etcd
    let plain = support::Etcd::start().await;
    let pki = Pki::new("x");
    let ep = plain.endpoint().replace("http://", "https://");
    match Coordinator::connect(CoordinatorOptions::new([ep]).with_ca_file(pki.ca_file())).await {
        Ok(_) => println!("https->plain OK"),
        Err(e) => println!("https->plain: {:?} | {e:#} | {:?}", e.kind(), std::error::Error::source(&e)),
    }
    let etcd = SecureEtcd::start().await;
    let c2 = etcd.pki.client("y");
    match Coordinator::connect(CoordinatorOptions::new([etcd.endpoint()]).with_ca_file(etcd.pki.ca_file()).with_client_identity_files(&etcd.client.cert_file, &c2.key_file)).await {
        Ok(_) => println!("mismatch OK"),
        Err(e) => println!("mismatch: {:?} | {e:#} | {:?}", e.kind(), std::error::Error::source(&e)),
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, coordination::CoordConfig)]
#[coord(prefix = "/apps/sec/config")]
struct SecConfig {
    port: u16,
}

#[tokio::test]
async fn scratch_rbac() {
    support::init_tracing();
    let etcd = SecureEtcd::start().await;
    etcd.put("/apps/sec/config/port", "1");
    etcd.add_user_with_role("reader", "pw", &[("read", "/apps/sec/config/", true)]);
    let coord = Coordinator::connect(etcd.tls_options().with_user("reader", "pw")).await;
    println!("connect reader: {:?}", coord.as_ref().err());
    let coord = match coord { Ok(c) => c, Err(_) => return };
    let r = coord.config::<SecConfig>().await;
    println!("bind history on: {:?}", r.as_ref().err());
    let r = coord.config_with::<SecConfig>(coordination::ConfigOptions::new().history(coordination::HistoryOptions::new().record(false))).await;
    println!("bind history off: {:?}", r.as_ref().map(|c| c.load().port).err());
    let e = coord.client().put("/apps/sec/config/port", "2", None).await;
    println!("put: {e:?}");
}

#[tokio::test]
async fn scratch_ttl() {
    support::init_tracing();
    let mut etcd = support::tls::SecureEtcd::start_with(support::tls::Secure { auth_token_ttl: Some(2), ..Default::default() }).await;
    etcd.put("/apps/sec/config/port", "1");
    let coord = Coordinator::connect(etcd.root_options()).await.unwrap();
    let cfg = coord.config::<SecConfig>().await.unwrap();
    let session = coordination::Session::open(&coord, coordination::SessionOptions::new(std::time::Duration::from_secs(3))).await.unwrap();
    let guard = session.lock("jobs").acquire().await.unwrap();
    let reg = coord.registry().register(coordination::ServiceInstance::new("chat", "c1", "127.0.0.1:1")).ttl(std::time::Duration::from_secs(3)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    println!("after 6s: lost={:?} reg={:?}", guard.lost_reason(), reg.status().state);
    etcd.put("/apps/sec/config/port", "2");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    println!("port={} status={:?}", cfg.load().port, cfg.status());
    etcd.restart().await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    etcd.put("/apps/sec/config/port", "3");
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    println!("after restart port={} status={:?}", cfg.load().port, cfg.status());
    println!("after restart: lost={:?} reg={:?}", guard.lost_reason(), reg.status().state);
}
