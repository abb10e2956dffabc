//! The metrics and the tracing events of docs/observability.md, against a real etcd: a
//! Prometheus exporter scraped over HTTP shows the counters and gauges move with valid and
//! invalid changes, an etcd restart, publishes, a conflict, a rollback and a lost lease; and a
//! rejection's warn event carries prefix, key, layer, revision and the error, never a secret.

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordination::lock::{Session, SessionOptions};
use coordination::{ConfigEvent, ConfigHandle, ConfigOptions, CoordConfig, ErrorKind};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::Etcd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/metrics/config")]
struct Service {
    #[schemars(range(min = 1))]
    port: u16,
    #[serde(default)]
    name: String,
}

const P: &str = "/apps/metrics/config/";

/// One scrape of `/metrics`: `name{labels}` lines, parsed.
struct Scrape(String);

impl Scrape {
    /// The sum of the samples of `name` whose labels include every pair of `labels`; `None`
    /// if there is no such sample.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for line in self.0.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                continue;
            }
            let all = labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            if all {
                *found.get_or_insert(0.0) += value.parse::<f64>().expect("a sample value");
            }
        }
        found
    }
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `GET /metrics` over a plain TCP connection.
async fn scrape(port: u16) -> Scrape {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the exporter");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Scrape(body.to_string())
}

/// Waits until `name{labels}` reaches `at_least`; returns the last scrape.
async fn scrape_until(port: u16, name: &str, labels: &[(&str, &str)], at_least: f64) -> Scrape {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = scrape(port).await;
        if s.value(name, labels).is_some_and(|v| v >= at_least) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}{labels:?} never reached {at_least}:\n{s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A global subscriber for the whole process (the `TEST_LOG` one, or a bare registry), set
/// before either test logs. With only the capture's scoped one alive, tracing-core would
/// cache "never" for a callsite first hit on another thread (its one-dispatcher shortcut asks
/// that thread's default), and the capture would miss it.
fn global_subscriber() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        support::init_tracing();
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Every metric check in one test: a process has one global recorder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrape_follows_config_history_and_lease_changes() {
    global_subscriber();
    let port = support::free_port();
    PrometheusBuilder::new()
        .with_http_listener(([127, 0, 0, 1], port))
        .with_recommended_naming(true)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &[0.001, 0.01, 0.1, 1.0])
        .unwrap()
        .install()
        .expect("install the Prometheus recorder");

    let mut etcd = Etcd::start().await;
    etcd.put(&format!("{P}port"), "8080");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<Service> = coord
        .config_with(ConfigOptions::new().without_file().without_env())
        .await
        .unwrap();
    let prefix = [("prefix", P)];
    let bound = cfg.load().revision();

    // At bind: one applied snapshot, its revision, confirmed just now, no rejection yet (the
    // series exist at zero), the watch opened once.
    let s = scrape_until(port, "coordination_config_watch_opens_total", &prefix, 1.0).await;
    assert_eq!(
        s.value("coordination_config_applied_total", &prefix),
        Some(1.0),
        "{s:?}"
    );
    assert_eq!(
        s.value("coordination_config_revision", &prefix),
        Some(bound as f64)
    );
    let confirmed = s
        .value("coordination_config_confirmed_timestamp_seconds", &prefix)
        .unwrap();
    assert!((now() - confirmed).abs() < 60.0, "confirmed at {confirmed}");
    assert!(
        s.value("coordination_config_applied_timestamp_seconds", &prefix)
            .unwrap()
            > 0.0
    );
    assert_eq!(
        s.value(
            "coordination_config_rejected_total",
            &[("prefix", P), ("layer", "etcd")]
        ),
        Some(0.0),
        "{s:?}"
    );
    assert!(
        s.0.contains("# HELP coordination_config_applied_total"),
        "{s:?}"
    );

    // A valid change: applied, and the revision gauge follows.
    let rev = etcd.put(&format!("{P}port"), "9090");
    let s = scrape_until(port, "coordination_config_applied_total", &prefix, 2.0).await;
    assert_eq!(
        s.value("coordination_config_revision", &prefix),
        Some(rev as f64)
    );
    assert!(s
        .value("coordination_config_reload_duration_seconds_count", &prefix)
        .is_some_and(|n| n >= 1.0));

    // An invalid change: rejected, naming the etcd layer; the serving revision stays.
    etcd.put(&format!("{P}port"), "not-a-port");
    let etcd_layer = [("prefix", P), ("layer", "etcd")];
    let s = scrape_until(port, "coordination_config_rejected_total", &etcd_layer, 1.0).await;
    assert_eq!(
        s.value("coordination_config_rejected_total", &etcd_layer),
        Some(1.0)
    );
    assert_eq!(
        s.value("coordination_config_applied_total", &prefix),
        Some(2.0)
    );
    assert_eq!(
        s.value("coordination_config_revision", &prefix),
        Some(rev as f64)
    );
    let fixed = etcd.put(&format!("{P}port"), "9091");
    let s = scrape_until(port, "coordination_config_applied_total", &prefix, 3.0).await;
    assert_eq!(
        s.value("coordination_config_revision", &prefix),
        Some(fixed as f64)
    );

    // An etcd restart: the watch fails and is re-opened, at the config and the etcd level,
    // and etcd confirms the handle again afterwards.
    let before = s
        .value("coordination_config_confirmed_timestamp_seconds", &prefix)
        .unwrap();
    etcd.restart().await;
    let s = scrape_until(port, "coordination_config_watch_opens_total", &prefix, 2.0).await;
    assert!(
        s.value("coordination_config_watch_reopens_total", &prefix)
            .is_some_and(|n| n >= 1.0),
        "{s:?}"
    );
    assert!(s
        .value(
            "coordination_etcd_watch_reopens_total",
            &[("subsystem", "config")]
        )
        .is_some_and(|n| n >= 1.0));
    assert!(s
        .value(
            "coordination_etcd_watch_opens_total",
            &[("subsystem", "config")]
        )
        .is_some_and(|n| n >= 2.0));
    let after_restart = scrape_until(
        port,
        "coordination_config_confirmed_timestamp_seconds",
        &prefix,
        before + 0.001,
    )
    .await;
    assert!(after_restart
        .value("coordination_config_confirmed_timestamp_seconds", &prefix)
        .is_some_and(|t| t > before));

    // History: a publish is written and recorded, a stale one conflicts, a rollback is written.
    let published = cfg
        .update(|c| c.name = "metrics".into(), "test", "name it")
        .await
        .unwrap()
        .expect("a new version");
    let written = [
        ("prefix", P),
        ("operation", "publish"),
        ("outcome", "written"),
    ];
    let s = scrape_until(port, "coordination_history_writes_total", &written, 1.0).await;
    assert!(s
        .value(
            "coordination_history_records_total",
            &[("prefix", P), ("outcome", "created")]
        )
        .is_some_and(|n| n >= 1.0));
    assert!(s
        .value(
            "coordination_history_record_duration_seconds_count",
            &prefix
        )
        .is_some_and(|n| n >= 1.0));
    assert!(s
        .value("coordination_history_versions", &prefix)
        .is_some_and(|n| n >= 1.0));
    let conflict = [
        ("prefix", P),
        ("operation", "publish"),
        ("outcome", "conflict"),
    ];
    assert_eq!(
        s.value("coordination_history_writes_total", &conflict),
        Some(0.0)
    );
    assert!(eventually!(
        WAIT,
        cfg.load().revision() == published.revision
    ));
    let stale = cfg
        .publish_at(
            fixed,
            &Service {
                port: 7000,
                name: String::new(),
            },
            "test",
            "stale",
        )
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::Conflict, "{stale}");
    scrape_until(port, "coordination_history_writes_total", &conflict, 1.0).await;
    cfg.rollback_to(fixed, "test", "back").await.unwrap();
    let rolled = [
        ("prefix", P),
        ("operation", "rollback"),
        ("outcome", "written"),
    ];
    scrape_until(port, "coordination_history_writes_total", &rolled, 1.0).await;

    // A lease revoked behind a lock session's back: lost, counted as expired.
    let session = Session::open(
        &coord,
        SessionOptions::new().with_lease_ttl(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let expired = [("reason", "expired")];
    let lost_before = scrape(port)
        .await
        .value("coordination_etcd_lease_lost_total", &expired)
        .expect("the series exists from the first grant");
    etcd.client()
        .await
        .lease_revoke(session.lease_id())
        .await
        .unwrap();
    tokio::time::timeout(WAIT, session.lost())
        .await
        .expect("the session notices");
    scrape_until(
        port,
        "coordination_etcd_lease_lost_total",
        &expired,
        lost_before + 1.0,
    )
    .await;

    // A held lock force-released by an operator: its guard reports the loss, and it is counted;
    // the wait for the lock and, at release, the hold were timed under the lock's name.
    let guard = coord.lock("jobs/metrics").await.unwrap();
    let lock = [("lock", "jobs/metrics")];
    scrape_until(
        port,
        "coordination_lock_acquire_wait_seconds_count",
        &lock,
        1.0,
    )
    .await;
    coord.force_unlock("jobs/metrics").await.unwrap();
    tokio::time::timeout(WAIT, guard.lost())
        .await
        .expect("the guard notices the force-release");
    scrape_until(port, "coordination_lock_key_deleted_total", &[], 1.0).await;
    drop(guard);
    scrape_until(port, "coordination_lock_hold_seconds_count", &lock, 1.0).await;
}

/// A span's or an event's fields, as text.
type Fields = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct Captured {
    target: String,
    level: tracing::Level,
    fields: Fields,
    /// The names of the spans it happened in, outermost first, with their fields.
    spans: Vec<(String, Fields)>,
}

struct FieldsOf<'a>(&'a mut Fields);

impl Visit for FieldsOf<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

/// Keeps every event with its spans (the axum `capture_tracing` pattern, as a layer).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut FieldsOf(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(&mut FieldsOf(fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut FieldsOf(&mut fields));
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| {
                        let fields = span
                            .extensions()
                            .get::<Fields>()
                            .cloned()
                            .unwrap_or_default();
                        (span.name().to_string(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Captured {
            target: event.metadata().target().to_string(),
            level: *event.metadata().level(),
            fields,
            spans,
        });
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/traced/config", secrets = "password")]
struct Traced {
    #[schemars(range(min = 1))]
    port: u16,
    #[schemars(length(min = 8))]
    password: String,
}

/// On a current-thread runtime the reload task runs on the test's thread, so a subscriber set
/// as the default for the test's scope sees everything it logs.
#[tokio::test]
async fn a_rejection_logs_prefix_key_layer_revision_and_error_without_the_secret() {
    const SECRET: &str = "correct-horse-battery";
    global_subscriber();
    let capture = Capture::default();
    let _default = tracing_subscriber::registry()
        .with(
            capture.clone().with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("coordination", tracing::Level::DEBUG),
            ),
        )
        .set_default();

    let etcd = Etcd::start().await;
    let prefix = "/apps/traced/config/";
    etcd.put(&format!("{prefix}port"), "8080");
    etcd.put(&format!("{prefix}password"), SECRET);
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<Traced> = coord
        .config_with(ConfigOptions::new().without_file().without_env())
        .await
        .unwrap();
    let mut events = cfg.subscribe();

    // A secret too short for the schema: rejected, and the log shows neither value.
    let short = "short7!";
    let rev = etcd.put(&format!("{prefix}password"), short);
    match tokio::time::timeout(WAIT, events.next()).await {
        Ok(Some(ConfigEvent::Rejected(_))) => {}
        other => panic!("expected a rejection, got {other:?}"),
    }

    let captured = capture.0.lock().unwrap().clone();
    let bind = captured
        .iter()
        .find(|e| e.fields.get("message").is_some_and(|m| m == "bound config"))
        .unwrap_or_else(|| panic!("no bind event in {captured:#?}"));
    let (name, fields) = bind.spans.first().expect("in the bind span");
    assert_eq!(name, "bind");
    assert_eq!(fields.get("prefix").map(String::as_str), Some(prefix));

    let warn = captured
        .iter()
        .find(|e| {
            e.level == tracing::Level::WARN
                && e.fields
                    .get("message")
                    .is_some_and(|m| m.starts_with("rejected config change"))
        })
        .unwrap_or_else(|| panic!("no rejection warning in {captured:#?}"));
    assert!(warn.target.starts_with("coordination::config"), "{warn:?}");
    let field = |name: &str| warn.fields.get(name).map(String::as_str);
    assert_eq!(field("prefix"), Some(prefix), "{warn:?}");
    assert_eq!(
        field("key"),
        Some(format!("{prefix}password").as_str()),
        "{warn:?}"
    );
    assert_eq!(field("layer"), Some("etcd"), "{warn:?}");
    assert_eq!(field("field"), Some("password"), "{warn:?}");
    assert_eq!(
        field("revision"),
        Some(rev.to_string().as_str()),
        "{warn:?}"
    );
    assert!(
        field("error").is_some_and(|e| e.contains("shorter than 8 characters")),
        "{warn:?}"
    );
    let (span, span_fields) = warn.spans.last().expect("in the reload span");
    assert_eq!(span, "reload");
    assert_eq!(span_fields.get("revision"), Some(&rev.to_string()));
    assert_eq!(span_fields.get("cause").map(String::as_str), Some("etcd"));

    let everything = format!("{captured:?}");
    assert!(!everything.contains(SECRET), "secret leaked: {everything}");
    assert!(!everything.contains(short), "secret leaked: {everything}");
}
