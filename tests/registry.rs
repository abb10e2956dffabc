//! Service registry against real etcd: registration on a lease, discovery, the watch, the
//! resolver-visible key space, lease loss, partitions and etcd restarts, a SIGKILLed process,
//! keys deleted under a live lease, takeovers, health checks.

#[macro_use]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordination::registry::{
    Balancer, Health, HealthCheck, Instance, InstanceSpec, LiveInstances, LiveSet, LiveUpdates,
    RegistrationState, RegistrationStatus, Registry, RegistryEvent, RegistryOptions, RegistryWatch,
    StatusWatch,
};
use coordination::{Coordinator, CoordinatorOptions, ErrorKind};
use serde_json::json;
use support::proxy::Proxy;
use support::{init_tracing, read_prefix_raw, Etcd, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The lease TTL used by the tests (etcd's minimum is 2 s with default election settings).
const TTL: Duration = Duration::from_secs(2);

fn chat(id: &str) -> InstanceSpec {
    InstanceSpec::new("chat", id, format!("10.0.0.7:{}", 50_000 + id.len()))
}

fn full_chat_1() -> InstanceSpec {
    InstanceSpec {
        service: "chat".into(),
        id: "chat-1".into(),
        addr: "10.0.0.7:50051".into(),
        weight: 100,
        zone: Some("eu-1a".into()),
        version: Some("1.4.2".into()),
        metadata: json!({"proto": "v2", "shard": 3}),
    }
}

async fn next_event(watch: &mut RegistryWatch) -> RegistryEvent {
    tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("a registry event within 15 s")
        .expect("watch open")
}

async fn assert_quiet(watch: &mut RegistryWatch, for_: Duration) {
    if let Ok(event) = tokio::time::timeout(for_, watch.next()).await {
        panic!("unexpected extra event: {event:?}");
    }
}

fn ids(instances: &[Instance]) -> Vec<&str> {
    instances.iter().map(Instance::id).collect()
}

/// Whether discovery lists `id`; `None` if it fails.
async fn discovered(registry: &Registry, id: &str) -> Option<bool> {
    let all = registry.discover("chat").await.ok()?;
    Some(all.iter().any(|i| i.id() == id))
}

async fn discover_has(registry: &Registry, id: &str) -> bool {
    discovered(registry, id).await == Some(true)
}

async fn discover_has_not(registry: &Registry, id: &str) -> bool {
    discovered(registry, id).await == Some(false)
}

/// Waits up to `limit` for the registration's status to satisfy `condition`.
async fn wait_status(
    status: &mut StatusWatch,
    limit: Duration,
    what: &str,
    condition: impl FnMut(&RegistrationStatus) -> bool,
) -> RegistrationStatus {
    tokio::time::timeout(limit, status.wait_for(condition))
        .await
        .unwrap_or_else(|_| panic!("{what} within {} ms", limit.as_millis()))
        .expect("the registration's task is running")
}

#[track_caller]
fn expect_added(event: &RegistryEvent, id: &str) -> i64 {
    match event {
        RegistryEvent::Added { instance, revision } if instance.id() == id => *revision,
        other => panic!("expected Added {id}, got {other:?}"),
    }
}

#[track_caller]
fn expect_removed(event: &RegistryEvent, id: &str) -> i64 {
    match event {
        RegistryEvent::Removed { instance, revision } if instance.id() == id => *revision,
        other => panic!("expected Removed {id}, got {other:?}"),
    }
}

#[tokio::test]
async fn register_discover_deregister_and_the_watch_reports_each_change_once_in_order() {
    init_tracing();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let mut watch = registry.watch("chat");

    let a = registry
        .register(full_chat_1())
        .with_lease_ttl(TTL)
        .await
        .expect("register chat-1");
    let b = registry
        .register(chat("chat-2"))
        .with_lease_ttl(TTL)
        .await
        .expect("register chat-2");
    assert_eq!(a.status().state, RegistrationState::Registered);
    assert_ne!(a.lease_id(), b.lease_id());

    let found = registry.discover("chat").await.unwrap();
    assert_eq!(ids(&found), ["chat-1", "chat-2"]);
    assert_eq!(found[0].spec, full_chat_1());
    assert_eq!(found[0].health, Health::Healthy);
    assert_eq!(found[0].lease_id, a.lease_id());
    assert!(found.iter().all(Instance::is_serving));

    // A watch opened now starts with what is registered.
    let mut late = registry.watch("chat");
    expect_added(&next_event(&mut late).await, "chat-1");
    expect_added(&next_event(&mut late).await, "chat-2");

    a.set_health(Health::Draining).await.unwrap();
    let found = registry.discover("chat").await.unwrap();
    assert_eq!(found[0].health, Health::Draining);
    assert!(!found[0].is_serving());

    // Deregistration deletes the keys at once: no waiting for the lease.
    a.deregister().await.unwrap();
    assert_eq!(ids(&registry.discover("chat").await.unwrap()), ["chat-2"]);

    // Dropping the handle deregisters in the background.
    drop(b);
    assert!(
        eventually!(Duration::from_secs(5), {
            registry.discover("chat").await.unwrap().is_empty()
        }),
        "a dropped registration is removed"
    );

    let mut revisions = vec![
        expect_added(&next_event(&mut watch).await, "chat-1"),
        expect_added(&next_event(&mut watch).await, "chat-2"),
    ];
    match next_event(&mut watch).await {
        RegistryEvent::Updated {
            previous,
            instance,
            revision,
        } => {
            assert_eq!(instance.id(), "chat-1");
            assert_eq!(previous.health, Health::Healthy);
            assert_eq!(instance.health, Health::Draining);
            assert_eq!(instance.spec, full_chat_1());
            revisions.push(revision);
        }
        other => panic!("expected Updated chat-1, got {other:?}"),
    }
    revisions.push(expect_removed(&next_event(&mut watch).await, "chat-1"));
    revisions.push(expect_removed(&next_event(&mut watch).await, "chat-2"));
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "events in revision order: {revisions:?}"
    );
    assert_quiet(&mut watch, Duration::from_millis(300)).await;

    // The late watch saw the same changes after its initial state.
    assert!(matches!(
        next_event(&mut late).await,
        RegistryEvent::Updated { .. }
    ));
    expect_removed(&next_event(&mut late).await, "chat-1");
    expect_removed(&next_event(&mut late).await, "chat-2");
    assert_quiet(&mut late, Duration::from_millis(100)).await;
}

const WORKER_ENDPOINT: &str = "COORDINATION_REGISTRY_WORKER_ENDPOINT";

/// Not a test on its own: when re-executed by `a_sigkilled_process_disappears_within_ttl_plus_1s`
/// with the endpoint variable set, it registers `worker-1` and waits to be killed. Without the
/// variable it returns at once.
#[test]
fn registry_worker_process() {
    let Ok(endpoint) = std::env::var(WORKER_ENDPOINT) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let coord = Coordinator::connect(CoordinatorOptions::new([endpoint]))
            .await
            .expect("worker connects");
        let _registration = coord
            .registry()
            .register(InstanceSpec::new("chat", "worker-1", "127.0.0.1:1"))
            .with_lease_ttl(TTL)
            .await
            .expect("worker registers");
        // Wait to be SIGKILLed; exit by ourselves if the parent goes away (stdin closes) or
        // after 60 s.
        let stdin_closed = tokio::task::spawn_blocking(|| {
            use std::io::Read;
            let mut buf = [0u8; 64];
            while std::io::stdin()
                .read(&mut buf)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        });
        let _ = tokio::time::timeout(Duration::from_secs(60), stdin_closed).await;
    });
}

#[tokio::test]
async fn a_sigkilled_process_disappears_within_ttl_plus_1s() {
    init_tracing();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let endpoint = etcd.endpoint();
    let mut child = Proc::worker(
        "registry_worker_process",
        &[(WORKER_ENDPOINT, endpoint.clone())],
        "registry worker",
    );
    assert!(
        eventually!(
            Duration::from_secs(30),
            discover_has(&registry, "worker-1").await
        ),
        "the worker process registers"
    );
    let live = registry.live("chat").await.unwrap();
    assert!(live.current().contains("worker-1"));

    child.signal("KILL");
    let killed = Instant::now();
    child.wait_exit(Duration::from_secs(5)).await;
    assert!(
        eventually!(TTL + Duration::from_secs(3), {
            !discover_has(&registry, "worker-1").await
        }),
        "the killed worker's instance expires"
    );
    let gone_after = killed.elapsed();
    assert!(
        gone_after <= TTL + Duration::from_secs(1),
        "gone from discovery {} ms after SIGKILL (TTL {} ms)",
        gone_after.as_millis(),
        TTL.as_millis()
    );
    tokio::time::timeout(
        Duration::from_secs(2),
        live.wait_for(|s| !s.contains("worker-1")),
    )
    .await
    .expect("the live view drops the killed instance")
    .unwrap();
}

#[tokio::test]
async fn a_lost_lease_is_replaced_by_itself_and_the_watch_sees_it_once() {
    init_tracing();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let reg = registry
        .register(chat("chat-1"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    let mut watch = registry.watch("chat");
    expect_added(&next_event(&mut watch).await, "chat-1");
    let old_lease = reg.lease_id();

    etcd.etcdctl(&["lease", "revoke", &format!("{old_lease:x}")]);

    let mut status = reg.status_watch();
    let now = wait_status(&mut status, Duration::from_secs(10), "re-registered", |s| {
        s.reregistrations == 1 && s.state == RegistrationState::Registered
    })
    .await;
    assert_ne!(now.lease_id, old_lease);
    assert_eq!(reg.lease_id(), now.lease_id);

    let found = registry.discover("chat").await.unwrap();
    assert_eq!(ids(&found), ["chat-1"]);
    assert_eq!(found[0].lease_id, now.lease_id);
    let resolver = read_prefix_raw(&etcd, &registry.resolver_prefix("chat")).await;
    assert_eq!(resolver.len(), 1);
    assert_eq!(resolver[0].2, now.lease_id, "resolver key on the new lease");

    let removed = expect_removed(&next_event(&mut watch).await, "chat-1");
    let added = expect_added(&next_event(&mut watch).await, "chat-1");
    assert!(removed < added);
    assert_quiet(&mut watch, Duration::from_millis(300)).await;

    // Updates go to the new lease.
    reg.set_health(Health::Draining).await.unwrap();
    assert_eq!(
        registry.discover("chat").await.unwrap()[0].health,
        Health::Draining
    );
}

#[tokio::test]
async fn after_etcd_is_down_longer_than_the_ttl_the_instance_and_live_view_recover() {
    init_tracing();
    let mut etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let reg = registry
        .register(chat("chat-1"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    // chat-3 is kept by no registration here (as if written by a process that is gone; a live
    // registration would write its keys back): its record sits on a long lease, and is deleted
    // below while the watches are down.
    let mut raw = etcd.client().await;
    let orphan = raw.lease_grant(60, None).await.unwrap().id();
    let doomed = format!("{}chat-3", registry.status_prefix("chat"));
    raw.put(
        doomed.as_str(),
        serde_json::to_string(&chat("chat-3")).unwrap(),
        Some(etcd_client::PutOptions::new().with_lease(orphan)),
    )
    .await
    .unwrap();
    let live = registry.live("chat").await.unwrap();
    let mut watch = registry.watch("chat");
    expect_added(&next_event(&mut watch).await, "chat-1");
    expect_added(&next_event(&mut watch).await, "chat-3");
    let mut status = reg.status_watch();

    etcd.kill();
    wait_status(
        &mut status,
        Duration::from_secs(10),
        "the registration notices the outage",
        |s| s.state != RegistrationState::Registered,
    )
    .await;
    assert_eq!(
        live.current().len(),
        2,
        "the live view keeps serving during the outage"
    );
    tokio::time::sleep(TTL + Duration::from_millis(1500)).await;
    etcd.restart().await;

    // Right after the restart, before the watches are back (they back off), change the service
    // from another client and compact the history, so the watches may have to resync.
    let other = etcd.coordinator().await;
    let newcomer = other
        .registry()
        .register(chat("chat-2"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    let mut raw = etcd.client().await;
    raw.delete(doomed.as_str(), None).await.unwrap();
    let head = raw
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    raw.compact(head, None).await.unwrap();

    wait_status(
        &mut status,
        Duration::from_secs(20),
        "the registration recovers by itself",
        |s| s.state == RegistrationState::Registered,
    )
    .await;
    assert!(
        eventually!(
            Duration::from_secs(20),
            discover_has(&registry, "chat-1").await
        ),
        "chat-1 is registered again"
    );
    let view = tokio::time::timeout(
        Duration::from_secs(20),
        live.wait_for(|s| {
            let ids: Vec<&str> = s.instances().iter().map(|i| i.id()).collect();
            ids == ["chat-1", "chat-2"]
        }),
    )
    .await
    .expect("the live view converges")
    .unwrap();
    assert!(view.serving().iter().all(|i| i.is_serving()));
    let found = registry.discover("chat").await.unwrap();
    assert_eq!(ids(&found), ["chat-1", "chat-2"]);
    let chat1 = view.get("chat-1").unwrap();
    assert_eq!(chat1.lease_id, reg.lease_id());

    // The watch converges too, and never reports an instance twice in a row as Added.
    let mut present = std::collections::BTreeSet::from(["chat-1".to_string(), "chat-3".into()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while present != std::collections::BTreeSet::from(["chat-1".to_string(), "chat-2".into()]) {
        assert!(
            Instant::now() < deadline,
            "watch did not converge: {present:?}"
        );
        match next_event(&mut watch).await {
            RegistryEvent::Added { instance, .. } => {
                assert!(
                    present.insert(instance.id().to_string()),
                    "added twice: {instance:?}"
                )
            }
            RegistryEvent::Removed { instance, .. } => {
                assert!(
                    present.remove(instance.id()),
                    "removed unknown {instance:?}"
                )
            }
            RegistryEvent::Updated { instance, .. } => {
                assert!(
                    present.contains(instance.id()),
                    "updated unknown {instance:?}"
                )
            }
        }
    }
    drop(newcomer);
}

#[tokio::test]
async fn draining_and_unhealthy_instances_leave_the_resolver_prefix() {
    init_tracing();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let resolver_prefix = registry.resolver_prefix("chat");
    assert_eq!(resolver_prefix, "/services/chat/");
    assert_eq!(registry.resolver_target("chat"), "etcd:////services/chat/");

    let reg = registry
        .register(full_chat_1())
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    let other = registry
        .register(chat("chat-2"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();

    let resolver = read_prefix_raw(&etcd, &resolver_prefix).await;
    assert_eq!(resolver.len(), 2);
    let (key, value, lease) = &resolver[0];
    assert_eq!(key, "/services/chat/chat-1");
    assert_eq!(
        value, r#"{"Op":0,"Addr":"10.0.0.7:50051","Metadata":null}"#,
        "what Go's endpoints manager writes for an endpoint without metadata"
    );
    assert_eq!(
        *lease,
        reg.lease_id(),
        "the resolver key lives on the lease"
    );
    // Exactly gRPC naming's shape: Op, Addr, Metadata, nothing else, and no JSON object in
    // Metadata (grpc-go's round_robin panics on one).
    for (_, value, _) in &resolver {
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        let fields: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["Addr", "Metadata", "Op"]);
        assert_eq!(v["Op"], 0);
        assert!(v["Addr"].is_string());
        assert!(v["Metadata"].is_null());
    }
    let status = read_prefix_raw(&etcd, &registry.status_prefix("chat")).await;
    assert_eq!(status[0].0, "/__coordination/registry/chat/chat-1");
    assert_eq!(status[0].2, reg.lease_id());

    let resolver_ids = || async {
        read_prefix_raw(&etcd, &resolver_prefix)
            .await
            .into_iter()
            .map(|(k, _, _)| k.rsplit('/').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    for health in [Health::Draining, Health::Unhealthy] {
        reg.set_health(health).await.unwrap();
        assert_eq!(
            resolver_ids().await,
            ["chat-2"],
            "{health} leaves the resolver set"
        );
        let found = registry.discover("chat").await.unwrap();
        assert_eq!(ids(&found), ["chat-1", "chat-2"], "still discoverable");
        assert_eq!(found[0].health, health);
        assert_eq!(reg.status().health, health);
    }
    reg.set_health(Health::Healthy).await.unwrap();
    assert_eq!(resolver_ids().await, ["chat-1", "chat-2"]);

    // Weight 0 means no traffic: out of the resolver set as well.
    reg.set_weight(0).await.unwrap();
    assert_eq!(resolver_ids().await, ["chat-2"]);
    reg.set_weight(50).await.unwrap();
    reg.set_metadata(json!({"proto": "v3"})).await.unwrap();
    // Weight and metadata go to the status record; the resolver value keeps only the address.
    let resolver = read_prefix_raw(&etcd, &resolver_prefix).await;
    assert_eq!(
        resolver[0].1,
        r#"{"Op":0,"Addr":"10.0.0.7:50051","Metadata":null}"#
    );
    let status = read_prefix_raw(&etcd, &registry.status_prefix("chat")).await;
    let v: serde_json::Value = serde_json::from_str(&status[0].1).unwrap();
    assert_eq!(v["weight"], 50);
    assert_eq!(v["metadata"], json!({"proto": "v3"}));
    drop(other);

    // The prefixes are configurable and sit under the coordinator's namespace.
    let tenant = Coordinator::connect(
        CoordinatorOptions::new([etcd.endpoint()]).with_namespace("/tenant-a"),
    )
    .await
    .unwrap();
    let custom = tenant
        .registry_with(RegistryOptions::new().with_resolver_prefix("/grpc/naming/"))
        .unwrap();
    assert_eq!(
        custom.resolver_target("chat"),
        "etcd:////tenant-a/grpc/naming/chat/"
    );
    let t = custom
        .register(chat("chat-9"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    assert_eq!(t.resolver_key(), "/tenant-a/grpc/naming/chat/chat-9");
    assert_eq!(
        t.status_key(),
        "/tenant-a/__coordination/registry/chat/chat-9"
    );
    assert_eq!(
        read_prefix_raw(&etcd, "/tenant-a/grpc/naming/chat/")
            .await
            .len(),
        1
    );
    t.set_health(Health::Draining).await.unwrap();
    assert!(read_prefix_raw(&etcd, "/tenant-a/grpc/naming/chat/")
        .await
        .is_empty());
    assert_eq!(ids(&custom.discover("chat").await.unwrap()), ["chat-9"]);
}

#[tokio::test]
async fn invalid_arguments_are_rejected_and_a_taken_over_id_is_reported() {
    init_tracing();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let kind =
        |r: coordination::Result<coordination::registry::Registration>| r.unwrap_err().kind();
    assert_eq!(
        kind(registry.register(chat("a/b")).await),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(
            registry
                .register(chat("x"))
                .with_lease_ttl(Duration::from_millis(500))
                .await
        ),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(
            registry
                .register(chat("x"))
                .with_health_check(HealthCheck::http("https://127.0.0.1/"))
                .await
        ),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        registry.discover("").await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        coord
            .registry_with(RegistryOptions::new().with_status_prefix("/services/x"))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );

    // Registering an id again replaces the first registration; the old handle sees its status
    // key written on another lease and stops at once, without a write of its own.
    let first = registry
        .register(chat("chat-1"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    let first_write = first.status().revision;
    let first_lease = first.lease_id();
    let second = registry
        .register(chat("chat-1"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    let superseded = wait_status(
        &mut first.status_watch(),
        Duration::from_secs(5),
        "the first registration is superseded by the takeover alone",
        |s| s.state == RegistrationState::Superseded,
    )
    .await;
    assert_eq!(superseded.revision, first_write, "no write of its own");
    assert_eq!(superseded.restored_keys, 0);
    assert!(
        eventually!(
            Duration::from_secs(2),
            {
                let etcd = &etcd;
                async move {
                    let mut raw = etcd.client().await;
                    raw.lease_time_to_live(first_lease, None)
                        .await
                        .unwrap()
                        .ttl()
                        < 0
                }
            }
            .await
        ),
        "the superseded registration revokes its own lease"
    );
    let err = first.set_health(Health::Draining).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(first.status().state, RegistrationState::Superseded);
    let found = registry.discover("chat").await.unwrap();
    assert_eq!(found[0].lease_id, second.lease_id());
    assert_eq!(found[0].health, Health::Healthy);
    // Dropping the superseded handle leaves the new registration alone.
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids(&registry.discover("chat").await.unwrap()), ["chat-1"]);
}

/// Accepts and drops connections on `listener` until aborted.
fn accept_loop(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    })
}

/// A tiny HTTP server: 200 while `up` holds, 503 otherwise.
fn http_server(listener: TcpListener, up: Arc<AtomicBool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let up = Arc::clone(&up);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let response: &[u8] = if up.load(Ordering::SeqCst) {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                } else {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown"
                };
                let _ = socket.write_all(response).await;
            });
        }
    })
}

fn fast(check: HealthCheck) -> HealthCheck {
    check
        .with_interval(Duration::from_millis(50))
        .with_timeout(Duration::from_millis(500))
        .with_unhealthy_after(2)
        .with_healthy_after(2)
}

async fn wait_health(registry: &Registry, id: &str, want: Health) {
    let ok = eventually!(Duration::from_secs(10), {
        registry
            .discover("chat")
            .await
            .unwrap()
            .iter()
            .any(|i| i.id() == id && i.health == want)
    });
    assert!(ok, "{id} did not become {want} within 10 s");
}

#[tokio::test]
async fn health_checks_flip_status_on_real_tcp_and_http_listeners() {
    init_tracing();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let resolver_has = |id: &'static str| {
        let etcd = &etcd;
        let prefix = registry.resolver_prefix("chat");
        async move {
            read_prefix_raw(etcd, &prefix)
                .await
                .iter()
                .any(|(k, _, _)| k.ends_with(&format!("/{id}")))
        }
    };

    // TCP: a listener the test starts, stops and starts again on the same port.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = accept_loop(listener);
    let tcp = registry
        .register(chat("tcp-1"))
        .with_lease_ttl(TTL)
        .with_health_check(fast(HealthCheck::tcp(addr.to_string())))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_health(&registry, "tcp-1", Health::Healthy).await;
    assert!(resolver_has("tcp-1").await);

    server.abort();
    let _ = server.await;
    wait_health(&registry, "tcp-1", Health::Unhealthy).await;
    assert!(
        !resolver_has("tcp-1").await,
        "unhealthy leaves the resolver set"
    );
    assert_eq!(tcp.status().health, Health::Unhealthy);

    let server = accept_loop(
        TcpListener::bind(addr)
            .await
            .expect("re-bind the same port"),
    );
    wait_health(&registry, "tcp-1", Health::Healthy).await;
    assert!(resolver_has("tcp-1").await);
    server.abort();

    // HTTP: 200 → 503 → 200, then the server stops.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Arc::new(AtomicBool::new(true));
    let server = http_server(listener, Arc::clone(&up));
    let _http = registry
        .register(chat("http-1"))
        .with_lease_ttl(TTL)
        .with_health_check(fast(HealthCheck::http(format!("http://{addr}/healthz"))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_health(&registry, "http-1", Health::Healthy).await;
    up.store(false, Ordering::SeqCst);
    wait_health(&registry, "http-1", Health::Unhealthy).await;
    up.store(true, Ordering::SeqCst);
    wait_health(&registry, "http-1", Health::Healthy).await;
    server.abort();
    let _ = server.await;
    wait_health(&registry, "http-1", Health::Unhealthy).await;

    // Custom: an async fn; a manual Draining wins over a passing check.
    let passing = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&passing);
    let custom = registry
        .register(chat("fn-1"))
        .with_lease_ttl(TTL)
        .with_health_check(fast(HealthCheck::custom(move || {
            let ok = flag.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("flag is down")
                }
            }
        })))
        .await
        .unwrap();
    custom.set_health(Health::Draining).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_health(&registry, "fn-1", Health::Draining).await;
    passing.store(false, Ordering::SeqCst);
    custom.set_health(Health::Healthy).await.unwrap();
    wait_health(&registry, "fn-1", Health::Unhealthy).await;
    passing.store(true, Ordering::SeqCst);
    wait_health(&registry, "fn-1", Health::Healthy).await;
}

/// Cut off from etcd (a TCP proxy resets every connection) for longer than the TTL: etcd
/// expires the lease and the keys go; once the network is back the registration grants a new
/// lease and registers again by itself.
#[tokio::test]
async fn a_registration_cut_off_longer_than_its_ttl_registers_again_on_a_new_lease() {
    init_tracing();
    let etcd = Etcd::start().await;
    let proxy = Proxy::to(&etcd).await;
    let coord = proxy.coordinator().await;
    let reg = coord
        .registry()
        .register(chat("chat-1"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    let old_lease = reg.lease_id();
    let direct = etcd.coordinator().await.registry();
    let mut status = reg.status_watch();

    proxy.cut();
    wait_status(
        &mut status,
        Duration::from_secs(10),
        "the registration notices the partition",
        |s| s.state == RegistrationState::Reconnecting,
    )
    .await;
    assert!(
        eventually!(
            TTL + Duration::from_secs(3),
            discover_has_not(&direct, "chat-1").await
        ),
        "etcd expires the lease and the keys with it"
    );

    proxy.restore();
    let now = wait_status(
        &mut status,
        Duration::from_secs(15),
        "registered again after the partition",
        |s| s.reregistrations == 1 && s.state == RegistrationState::Registered,
    )
    .await;
    assert_ne!(now.lease_id, old_lease);
    assert_eq!(
        now.restored_keys, 0,
        "keys that went with the lease are re-registered, not written back"
    );
    let found = direct.discover("chat").await.unwrap();
    assert_eq!(ids(&found), ["chat-1"]);
    assert_eq!(found[0].lease_id, now.lease_id);
    let resolver = read_prefix_raw(&etcd, &direct.resolver_prefix("chat")).await;
    assert_eq!(resolver.len(), 1);
    assert_eq!(resolver[0].2, now.lease_id, "resolver key on the new lease");
}

/// The lease of the key at `key`, `None` if it does not exist.
async fn key_lease(etcd: &Etcd, key: &str) -> Option<i64> {
    let mut raw = etcd.client().await;
    let resp = raw.get(key, None).await.unwrap();
    resp.kvs().first().map(|kv| kv.lease())
}

/// `etcdctl del` of a registration's keys while its lease is alive: the registration writes
/// them back on the same lease within a few seconds and counts each write-back; what it
/// deletes itself (the resolver key of a draining instance) stays deleted.
#[tokio::test]
async fn keys_deleted_under_a_live_lease_are_written_back_and_counted() {
    init_tracing();
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let reg = registry
        .register(chat("chat-1"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    let lease = reg.lease_id();
    let status = reg.status_watch();
    let restored = |n: u64| {
        let mut status = status.clone();
        async move {
            let what = format!("write-back number {n}");
            wait_status(&mut status, Duration::from_secs(5), &what, |s| {
                s.restored_keys == n
            })
            .await
        }
    };

    etcd.del(reg.status_key());
    let now = restored(1).await;
    assert_eq!(now.state, RegistrationState::Registered);
    assert_eq!((now.lease_id, now.reregistrations), (lease, 0));
    assert_eq!(key_lease(&etcd, reg.status_key()).await, Some(lease));
    assert_eq!(key_lease(&etcd, reg.resolver_key()).await, Some(lease));
    let found = registry.discover("chat").await.unwrap();
    assert_eq!(ids(&found), ["chat-1"]);
    assert_eq!(
        (found[0].lease_id, found[0].health),
        (lease, Health::Healthy)
    );

    // The resolver key alone, while the instance is serving.
    etcd.del(reg.resolver_key());
    restored(2).await;
    assert_eq!(key_lease(&etcd, reg.resolver_key()).await, Some(lease));

    // Draining deletes the resolver key: that is the registration's own write, not undone.
    reg.set_health(Health::Draining).await.unwrap();
    assert_eq!(key_lease(&etcd, reg.resolver_key()).await, None);
    // A later write-back writes the draining record, still without a resolver key.
    etcd.del(reg.status_key());
    let now = restored(3).await;
    assert_eq!(now.health, Health::Draining);
    assert_eq!(key_lease(&etcd, reg.status_key()).await, Some(lease));
    assert_eq!(key_lease(&etcd, reg.resolver_key()).await, None);
    assert_eq!(
        registry.discover("chat").await.unwrap()[0].health,
        Health::Draining
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let now = status.current();
    assert_eq!(now.restored_keys, 3, "no write-back of its own delete");
    assert_eq!((now.lease_id, now.reregistrations), (lease, 0));
}

/// The view after the next change that satisfies `want`, within 10 s (views coalesce, so
/// intermediate ones may be skipped).
async fn next_view(
    updates: &mut LiveUpdates,
    mut want: impl FnMut(&LiveInstances) -> bool,
) -> Arc<LiveInstances> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let view = updates.next().await.expect("the live view is running");
            if want(&view) {
                return view;
            }
        }
    })
    .await
    .expect("a matching live view within 10 s")
}

/// Everything that follows changes has one shape, `next() -> Option<_>`: the live updates and
/// the status watch return the state after each change, and `None` once nothing more can come
/// (a deregistered registration's task has ended; a fixed view never changes).
#[tokio::test]
async fn live_updates_and_the_status_watch_return_each_change_then_none() {
    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let live = registry.live("chat").await.unwrap();
    let mut updates = live.updates();
    let reg = registry
        .register(chat("chat-1"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    let view = next_view(&mut updates, |v| v.contains("chat-1")).await;
    assert!(view.get("chat-1").unwrap().is_serving());
    assert!(view.revision() >= reg.status().revision);

    let mut status = reg.status_watch();
    let current = status.current();
    assert_eq!(current.state, RegistrationState::Registered);
    assert!(current.granted_ttl >= TTL, "{:?}", current.granted_ttl);

    reg.set_health(Health::Draining).await.unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(5), status.next())
        .await
        .expect("a status change within 5 s")
        .expect("the registration's task is running");
    assert_eq!(changed.health, Health::Draining);
    let view = next_view(&mut updates, |v| {
        v.get("chat-1")
            .is_some_and(|i| i.health == Health::Draining)
    })
    .await;
    assert!(view.serving().is_empty());

    reg.deregister().await.unwrap();
    let mut last = None;
    while let Some(s) = tokio::time::timeout(Duration::from_secs(5), status.next())
        .await
        .expect("the status watch ends within 5 s of deregistration")
    {
        last = Some(s);
    }
    assert_eq!(last.unwrap().state, RegistrationState::Deregistered);
    assert!(status.next().await.is_none(), "still ended");
    next_view(&mut updates, |v| v.is_empty()).await;

    let fixed = LiveSet::from_instances("chat", std::iter::empty());
    assert!(fixed.updates().next().await.is_none());
}

/// With the `stream` feature the registry watch, the status watch and the live updates are
/// `Stream`s with the same items as their `next()`.
#[cfg(feature = "stream")]
#[tokio::test]
async fn the_registry_watch_status_watch_and_live_updates_are_streams() {
    use futures_util::StreamExt;

    let etcd = Etcd::start().await;
    let coord = etcd.coordinator().await;
    let registry = coord.registry();
    let mut watch = registry.watch("chat");
    let live = registry.live("chat").await.unwrap();
    let mut serving = live.updates().map(|view| {
        view.serving()
            .iter()
            .map(|i| i.id().to_string())
            .collect::<Vec<_>>()
    });
    let reg = registry
        .register(chat("chat-1"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    let status = reg.status_watch();

    let event = tokio::time::timeout(Duration::from_secs(15), StreamExt::next(&mut watch))
        .await
        .expect("a registry event within 15 s")
        .expect("watch open");
    expect_added(&event, "chat-1");
    let ids = tokio::time::timeout(Duration::from_secs(10), serving.next())
        .await
        .expect("a live view within 10 s")
        .expect("the live view is running");
    assert_eq!(ids, ["chat-1"]);

    reg.set_health(Health::Draining).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(15), StreamExt::next(&mut watch)).await {
        Ok(Some(RegistryEvent::Updated { instance, .. })) => {
            assert_eq!(instance.health, Health::Draining)
        }
        other => panic!("expected the health update, got {other:?}"),
    }
    reg.deregister().await.unwrap();
    let states: Vec<RegistrationState> =
        tokio::time::timeout(Duration::from_secs(5), status.map(|s| s.state).collect())
            .await
            .expect("the status stream ends within 5 s of deregistration");
    assert_eq!(states.last(), Some(&RegistrationState::Deregistered));

    let fixed = LiveSet::from_instances("chat", std::iter::empty());
    assert!(StreamExt::next(&mut fixed.updates()).await.is_none());
}

/// An operator (another coordinator, as another process would be) asks a registered instance
/// to drain: the instance's own registration follows the request, reports draining, leaves the
/// resolver key space and the live view's picks, and keeps it so through a write-back; the
/// request key sits on the instance's lease and goes with it.
#[tokio::test]
async fn an_operator_drain_request_drains_the_instance_and_discovery_stops_picking_it() {
    init_tracing();
    let etcd = Etcd::start().await;
    let instance_side = etcd.coordinator().await;
    let operator = etcd.coordinator().await.registry();
    let one = instance_side
        .registry()
        .register(chat("chat-1"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    let two = instance_side
        .registry()
        .register(chat("chat-22"))
        .with_lease_ttl(TTL)
        .await
        .unwrap();
    let live = operator.live("chat").await.unwrap();
    assert!(
        eventually!(Duration::from_secs(5), live.current().serving().len() == 2),
        "both instances serving before the drain"
    );
    let mut status = one.status_watch();

    let request = operator
        .request_drain("chat", "chat-1", "alice")
        .await
        .unwrap();
    assert_eq!(
        (request.service.as_str(), request.id.as_str()),
        ("chat", "chat-1")
    );
    assert_eq!(request.lease_id, one.lease_id());
    assert!(request.revision > 0);
    assert_eq!(key_lease(&etcd, &request.key).await, Some(one.lease_id()));
    // Draining, written by the instance itself after the request (its record's revision).
    let drained = wait_status(
        &mut status,
        Duration::from_secs(5),
        "draining written",
        |s| s.health == Health::Draining && s.revision > request.revision,
    )
    .await;
    assert_eq!(drained.state, RegistrationState::Registered);
    assert_eq!(drained.lease_id, request.lease_id);
    assert_eq!(key_lease(&etcd, one.resolver_key()).await, None);
    let found = operator.discover("chat").await.unwrap();
    let chat_1 = found.iter().find(|i| i.id() == "chat-1").unwrap();
    assert_eq!(chat_1.health, Health::Draining);
    assert!(!chat_1.is_serving());
    assert!(
        eventually!(Duration::from_secs(5), live.current().serving().len() == 1),
        "the live view drops the drained instance"
    );
    for _ in 0..10 {
        let picked = live
            .pick(&Balancer::WeightedRoundRobin)
            .expect("chat-22 serves");
        assert_eq!(picked.id(), "chat-22");
    }
    assert_eq!(
        two.status().health,
        Health::Healthy,
        "only the named instance drains"
    );

    // Its write-back after an operator's delete keeps the drain.
    etcd.del(one.status_key());
    let now = wait_status(&mut status, Duration::from_secs(5), "write-back", |s| {
        s.restored_keys == 1
    })
    .await;
    assert_eq!(now.health, Health::Draining);
    assert_eq!(key_lease(&etcd, one.resolver_key()).await, None);

    // Bad requests: not registered, not one key segment.
    let err = operator
        .request_drain("chat", "chat-9", "alice")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = operator
        .request_drain("chat", "a/b", "alice")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    // The request goes with the instance's lease.
    one.deregister().await.unwrap();
    assert_eq!(key_lease(&etcd, &request.key).await, None);
    drop(two);
}
