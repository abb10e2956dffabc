//! The operator console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, fantoccini) against `coordctl serve`, a real etcd and a real bound handle.
//! Screenshots of every page go to `target/console-screenshots/`.
#![cfg(feature = "console")]

#[macro_use]
mod support;

use std::process::Command;
use std::time::Duration;

use coordination::registry::InstanceSpec;
use coordination::{ConfigHandle, ConfigOptions, CoordConfig};
use fantoccini::{Client, ClientBuilder, Locator};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use support::{free_port, Etcd, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const P: &str = "/apps/web/config";
const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "alice-console-token-0123456789";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/web/config", secrets = "database.password")]
struct WebConfig {
    #[schemars(range(min = 1))]
    port: u16,
    database: Database,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Database {
    host: String,
    #[serde(default = "default_pool")]
    #[schemars(range(min = 1, max = 100))]
    pool: u32,
    #[serde(default)]
    password: String,
}

fn default_pool() -> u32 {
    4
}

/// `coordctl serve` on a free loopback port.
struct Served {
    _proc: Proc,
    url: String,
}

async fn serve(etcd: &Etcd, writers: bool) -> Served {
    serve_with(etcd, writers, &[]).await
}

/// `coordctl serve` on a free loopback port with `extra` arguments.
async fn serve_with(etcd: &Etcd, writers: bool, extra: &[&std::ffi::OsStr]) -> Served {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordctl"));
    cmd.args(["--endpoints", &etcd.endpoint()])
        .args(["serve", "--listen", "127.0.0.1:0", "--lock", "jobs/nightly"])
        .args(extra)
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("COORD_CONSOLE_WRITERS_FILE");
    if writers {
        cmd.env("COORD_CONSOLE_WRITERS", format!("alice:{TOKEN}"));
    } else {
        cmd.env_remove("COORD_CONSOLE_WRITERS");
    }
    let mut proc = Proc::spawn(cmd, "coordctl serve");
    let line = proc
        .try_line(WAIT)
        .await
        .expect("coordctl serve prints its URL");
    let url = line
        .strip_prefix("console listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .trim_end_matches('/')
        .to_string();
    Served { _proc: proc, url }
}

/// Headless Chromium through chromedriver on a free loopback port.
struct Browser {
    client: Client,
    _driver: Proc,
    _profile: tempfile::TempDir,
    shots: std::path::PathBuf,
}

async fn browser() -> Browser {
    browser_with(&[]).await
}

/// [`browser`] with more Chromium arguments.
async fn browser_with(extra: &[&str]) -> Browser {
    let port = free_port();
    let mut cmd = Command::new("chromedriver");
    cmd.arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1");
    let driver = Proc::spawn(cmd, "chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
        "--no-first-run",
        "--disable-extensions",
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(str::to_string)
    .collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let client = loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => break client,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver did not start a browser: {e}"),
        }
    };
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    Browser {
        client,
        _driver: driver,
        _profile: profile,
        shots,
    }
}

impl Browser {
    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap(),
            Err(e) => {
                let at = self.client.current_url().await.ok();
                let page = self.source().await;
                panic!("no `{css}` on {at:?}: {e}\n{page}")
            }
        }
    }

    async fn exists(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// Clicks a link or submit button and waits until the next page has loaded.
    async fn click(&self, css: &str) {
        self.client
            .execute(
                "document.documentElement.setAttribute('data-left', '1');",
                vec![],
            )
            .await
            .unwrap();
        self.click_only(css).await;
        let loaded = eventually!(WAIT, {
            self.client
                .execute(
                    "return document.readyState === 'complete' && !document.documentElement.hasAttribute('data-left');",
                    vec![],
                )
                .await
                .map(|v| v == json!(true))
                .unwrap_or(false)
        });
        assert!(loaded, "clicking `{css}` loaded a page");
    }

    async fn click_only(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` to click: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    /// Sets a textarea's value (send_keys would type it slowly).
    async fn set_value(&self, css: &str, text: &str) {
        self.client
            .execute(
                "document.querySelector(arguments[0]).value = arguments[1];",
                vec![json!(css), json!(text)],
            )
            .await
            .unwrap();
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }
}

/// A raw HTTP/1.1 request on loopback: the status code and the body.
async fn raw(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let addr = url.strip_prefix("http://").unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(stream, addr, method, path, headers, body).await
}

/// Sends one HTTP/1.1 request on `stream` (to `addr`) and reads the response to the end: the
/// status code (0 if there is none) and the whole response.
async fn exchange(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A TLS peer may end without close_notify: what was read before counts.
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the console answers");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

fn revision_now(etcd: &Etcd) -> i64 {
    let out = etcd.etcdctl(&["get", "-w", "json", "/"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

async fn bind(etcd: &Etcd) -> (coordination::Coordinator, ConfigHandle<WebConfig>) {
    etcd.put(&format!("{P}/port"), "8080");
    etcd.put(&format!("{P}/database/host"), "db1");
    etcd.put(&format!("{P}/database/password"), "s3cret-one");
    let coord = etcd.coordinator().await;
    let cfg: ConfigHandle<WebConfig> = coord
        .config_with(ConfigOptions::new().without_file().without_env())
        .await
        .unwrap();
    assert!(eventually!(
        WAIT,
        cfg.history().await.is_ok_and(|h| h.len() == 1)
    ));
    (coord, cfg)
}

async fn versions(cfg: &ConfigHandle<WebConfig>, n: usize) -> Vec<coordination::history::Version> {
    assert!(
        eventually!(WAIT, cfg.history().await.is_ok_and(|h| h.len() == n)),
        "{n} versions recorded"
    );
    cfg.history().await.unwrap()
}

fn history_url(base: &str) -> String {
    format!("{base}/history?prefix={P}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_diff_rollback_and_publish_in_the_browser() {
    support::init_tracing();
    let mut etcd = Etcd::start().await;
    let (coord, cfg) = bind(&etcd).await;
    // Versions: bound (external), a publish, an external change of the secret, a publish.
    cfg.update(|c| c.database.pool = 20, "bob", "raise pool")
        .await
        .unwrap();
    etcd.put(&format!("{P}/database/password"), "s3cret-two");
    assert!(eventually!(
        WAIT,
        cfg.load().value().database.password == "s3cret-two"
    ));
    cfg.update(|c| c.port = 9090, "bob", "move port")
        .await
        .unwrap();
    let made = versions(&cfg, 4).await;
    // Oldest first.
    let (v_bound, v_pool, v_secret, v_port) = (
        made[0].revision,
        made[1].revision,
        made[2].revision,
        made[3].revision,
    );
    assert_eq!(made[1].comment.as_deref(), Some("raise pool"));

    let served = serve(&etcd, true).await;
    let b = browser().await;
    let url = &served.url;

    // Prefixes: the bound prefix with its type and secret fields.
    b.goto(&format!("{url}/")).await;
    let row = b.text(&format!("tr[data-prefix='{P}']")).await;
    assert!(
        row.contains("WebConfig") && row.contains("database.password"),
        "{row}"
    );
    b.shot("prefixes").await;

    // Log in with the token.
    b.goto(&format!("{url}/login")).await;
    b.fill("#token", TOKEN).await;
    b.click("#login").await;
    assert_eq!(b.text("#user").await, "alice");

    // History: every version the test made, newest first, with author and comment.
    b.goto(&history_url(url)).await;
    for v in [v_bound, v_pool, v_secret, v_port] {
        assert!(b.exists(&format!("#v-{v}")).await, "version {v} listed");
    }
    let row = b.text(&format!("#v-{v_pool}")).await;
    assert!(
        row.contains("publish") && row.contains("bob") && row.contains("raise pool"),
        "{row}"
    );
    assert!(b.text(&format!("#v-{v_secret}")).await.contains("external"));
    b.shot("history").await;

    // Diff: the changed paths, the secret masked.
    b.goto(&format!("{url}/diff?prefix={P}&from={v_bound}&to={v_port}"))
        .await;
    let pool = b.text("tr[data-path='database.pool']").await;
    assert!(pool.contains("20"), "{pool}");
    let port = b.text("tr[data-path='port']").await;
    assert!(port.contains("8080") && port.contains("9090"), "{port}");
    let secret = b.text("tr[data-path='database.password']").await;
    assert!(
        secret.contains("***") && secret.contains("secret"),
        "{secret}"
    );
    assert!(
        !b.exists("tr[data-path='database.host']").await,
        "unchanged fields are not listed"
    );
    let page = b.source().await;
    assert!(!page.contains("s3cret"), "no secret value in the page");
    b.shot("diff").await;

    // A second window keeps the history open; it must update without a reload.
    let watcher = b.client.window().await.unwrap();
    b.goto(&history_url(url)).await;
    b.client
        .execute("window.__notReloaded = true;", vec![])
        .await
        .unwrap();
    let writer = b.client.new_window(true).await.unwrap();
    b.client
        .switch_to_window(writer.handle.clone())
        .await
        .unwrap();

    // Rollback to the version before the port move, with its confirmation.
    b.goto(&history_url(url)).await;
    b.click(&format!("#v-{v_pool} a.rollback")).await;
    let confirm = b.text("#diff").await;
    assert!(
        confirm.contains("port") && confirm.contains("9090") && confirm.contains("8080"),
        "{confirm}"
    );
    b.fill("#comment", "undo the port move").await;
    b.shot("rollback-confirm").await;
    b.click("#confirm-rollback").await;
    assert!(b.text("#flash").await.contains("Rolled back"));
    // etcd holds it, and the bound handle applied it (the secret kept: no history key).
    assert!(
        eventually!(WAIT, cfg.load().value().port == 8080),
        "the handle applied the rollback: {:?}",
        cfg.load().value()
    );
    assert_eq!(cfg.load().value().database.pool, 20);
    assert_eq!(cfg.load().value().database.password, "s3cret-two");
    let out = etcd.etcdctl(&["get", "--print-value-only", &format!("{P}/port")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8080");
    let after = versions(&cfg, 5).await;
    let newest = &after[4];
    assert_eq!(
        newest.author.as_deref(),
        Some("alice"),
        "the author is the logged-in writer"
    );
    assert_eq!(newest.comment.as_deref(), Some("undo the port move"));
    assert_eq!(newest.restored_from, Some(v_pool));
    let v_rollback = newest.revision;

    // The first window shows the rollback without having reloaded.
    b.client.switch_to_window(watcher).await.unwrap();
    let live = eventually!(WAIT, b.exists(&format!("#v-{v_rollback}")).await);
    assert!(live, "the open history page shows the new version");
    let kept = b
        .client
        .execute("return window.__notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(kept, json!(true), "updated in place, not reloaded");
    assert!(b.text(&format!("#v-{v_rollback}")).await.contains("alice"));

    // A bad publish: the field error, nothing written.
    b.goto(&format!("{url}/publish?prefix={P}")).await;
    let shown = b.text("#document").await;
    assert!(
        shown.contains("***") && !shown.contains("s3cret"),
        "{shown}"
    );
    let before = revision_now(&etcd);
    b.set_value(
        "#document",
        r#"{"port": 0, "database": {"host": "db1", "pool": 20, "password": "***"}}"#,
    )
    .await;
    b.fill("#comment", "try port 0").await;
    b.click("#review").await;
    assert_eq!(b.text("#field-error").await, "port");
    assert!(b.text("#error").await.contains("port"));
    b.shot("publish-refused").await;
    // The final step refuses it too, whatever the form carries.
    b.click("#review").await;
    assert!(b.exists("#field-error").await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        revision_now(&etcd),
        before,
        "a refused publish writes nothing"
    );

    // A good publish: reviewed, confirmed, applied; the masked secret keeps its value.
    b.set_value(
        "#document",
        r#"{"port": 8081, "database": {"host": "db1", "pool": 30, "password": "***"}}"#,
    )
    .await;
    b.fill("#comment", "pool 30").await;
    b.click("#review").await;
    assert!(b.text("tr[data-path='database.pool']").await.contains("30"));
    b.shot("publish-review").await;
    b.click("#confirm-publish").await;
    assert!(b.text("#flash").await.contains("Published"));
    assert!(eventually!(WAIT, cfg.load().value().database.pool == 30));
    assert_eq!(cfg.load().value().port, 8081);
    assert_eq!(cfg.load().value().database.password, "s3cret-two");

    // Locks: holder, fencing token, TTL; force release with confirmation.
    let guard = coord.lock("jobs/nightly").await.unwrap();
    let token = guard.fencing_token();
    b.goto(&format!("{url}/locks")).await;
    let holder = b.text(&format!("tr[data-token='{token}']")).await;
    assert!(
        holder.contains("holder") && holder.contains(" s"),
        "{holder}"
    );
    b.shot("locks").await;
    b.click("a.release").await;
    b.click("#confirm-release").await;
    assert!(b.text("#flash").await.contains(&token.to_string()));
    let lost = tokio::time::timeout(WAIT, guard.lost()).await;
    assert!(lost.is_ok(), "the holder saw its lock released");

    // Registry: a registered instance with health and zone.
    let reg = coord
        .registry()
        .register(InstanceSpec::new("web", "web-1", "127.0.0.1:7001").with_zone("zone-a"))
        .await
        .unwrap();
    b.goto(&format!("{url}/registry")).await;
    let row = b.text("tr[data-id='web-1']").await;
    assert!(row.contains("healthy") && row.contains("zone-a"), "{row}");
    b.shot("registry").await;

    // Drain, confirmed: the instance's own registration drains it and the page shows it.
    let mut status = reg.status_watch();
    b.click("tr[data-id='web-1'] a.drain").await;
    assert!(b.text("#drain-form").await.contains("Drain"));
    b.shot("registry-drain-confirm").await;
    b.click("#confirm-drain").await;
    assert!(b.text("#flash").await.contains("web-1"));
    let drained = tokio::time::timeout(
        WAIT,
        status.wait_for(|s| s.health == coordination::registry::Health::Draining),
    )
    .await;
    assert!(
        matches!(drained, Ok(Some(_))),
        "the registration drained itself"
    );
    assert!(
        eventually!(
            WAIT,
            b.text("tr[data-id='web-1']").await.contains("draining")
        ),
        "the registry page shows web-1 draining without a reload"
    );
    assert!(
        !b.exists("tr[data-id='web-1'] a.drain").await,
        "no drain button on a draining instance"
    );
    let found = coord.registry().discover("web").await.unwrap();
    assert!(!found[0].is_serving(), "discovery no longer serves web-1");
    b.shot("registry-drained").await;
    drop(reg);

    // Instances: the bound handle's receipt, at the revision it serves.
    let serving = cfg.load().revision();
    b.goto(&format!("{url}/instances")).await;
    let receipt =
        format!("section.fleet[data-prefix='{P}'] tr.instance[data-revision='{serving}']");
    assert!(
        eventually!(WAIT, b.exists(&receipt).await),
        "the instance's receipt shows revision {serving}"
    );
    assert!(b.text(&receipt).await.contains("live"));
    b.shot("instances").await;

    // A rollout started (no controller drives it): paused and aborted from the browser.
    let history = coordination::history::ConfigHistory::open(&coord, P)
        .await
        .unwrap();
    let fleet = coordination::fleet::Fleet::open(&coord, P).unwrap();
    let plan = coordination::fleet::RolloutPlan::new(
        json!({"port": 8082, "database": {"host": "db1", "pool": 40}}),
    )
    .with_author("bob", "pool 40 in steps");
    fleet.start_rollout(&history, plan).await.unwrap();
    let section = format!("section.fleet[data-prefix='{P}'] section.rollout");
    assert!(
        eventually!(
            WAIT,
            b.exists(&format!("{section}[data-status='running']")).await
        ),
        "the open page shows the running rollout"
    );
    b.click("#rollout-pause").await;
    assert!(b.text("#flash").await.contains("paused"));
    assert_eq!(
        fleet.rollout().await.unwrap().unwrap().status.as_str(),
        "paused"
    );
    b.fill("section.rollout input[name='reason']", "not today")
        .await;
    b.shot("rollout").await;
    b.click("#rollout-abort").await;
    assert!(b.text("#flash").await.contains("aborted"));
    let state = fleet.rollout().await.unwrap().unwrap();
    assert_eq!(state.status.as_str(), "aborted");
    assert!(
        state.transitions.iter().any(|t| t.author == "alice"),
        "the writer is the author of the transitions: {:?}",
        state.transitions
    );

    // etcd gone: the banner says so, without a reload.
    b.goto(&history_url(url)).await;
    etcd.kill();
    let banner = eventually!(WAIT, {
        b.client
            .execute(
                "return !document.getElementById('etcd-banner').hidden;",
                vec![],
            )
            .await
            .unwrap()
            == json!(true)
    });
    assert!(banner, "the banner shows the lost etcd");
    assert!(b.text("#etcd-banner").await.contains("lost etcd"));
    b.shot("etcd-lost").await;
    b.client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_without_a_token_and_csrf_on_every_write() {
    support::init_tracing();
    let etcd = Etcd::start().await;
    let (coord, cfg) = bind(&etcd).await;
    cfg.update(|c| c.database.pool = 7, "bob", "pool 7")
        .await
        .unwrap();
    let made = versions(&cfg, 2).await;
    let v_bound = made[0].revision;
    let form = format!("prefix={P}&version={v_bound}&seen=999999999&comment=forged");

    // A console without writers: no write buttons, every POST refused.
    let read_only = serve(&etcd, false).await;
    let b = browser().await;
    b.goto(&history_url(&read_only.url)).await;
    assert!(b.exists(&format!("#v-{v_bound}")).await);
    assert!(!b.exists("a.rollback").await, "no rollback button");
    assert!(!b.exists("#publish").await, "no publish button");
    assert!(b.text("header").await.contains("read-only"));
    b.shot("history-read-only").await;
    let reg = coord
        .registry()
        .register(InstanceSpec::new("web", "web-9", "127.0.0.1:7009"))
        .await
        .unwrap();
    b.goto(&format!("{}/registry", read_only.url)).await;
    assert!(b.text("tr[data-id='web-9']").await.contains("healthy"));
    assert!(!b.exists("a.drain").await, "no drain button");
    let before = revision_now(&etcd);
    let (status, _) = raw(&read_only.url, "POST", "/rollback", &[], &form).await;
    assert_eq!(status, 403);
    let (status, _) = raw(
        &read_only.url,
        "POST",
        "/rollback",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        &form,
    )
    .await;
    assert_eq!(status, 403, "a token means nothing to a read-only console");

    // A console with a writer: the same buttons hidden from a reader, POSTs refused without
    // credentials, without the CSRF token and with a wrong one.
    let served = serve(&etcd, true).await;
    b.goto(&history_url(&served.url)).await;
    assert!(
        !b.exists("a.rollback").await,
        "no rollback button before logging in"
    );
    let (status, body) = raw(&served.url, "POST", "/rollback", &[], &form).await;
    assert_eq!(status, 403, "{body}");
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let (status, body) = raw(&served.url, "POST", "/rollback", &auth, &form).await;
    assert_eq!(status, 403);
    assert!(body.contains("CSRF"), "{body}");
    let (status, body) = raw(
        &served.url,
        "POST",
        "/publish",
        &auth,
        &format!("{form}&csrf=0123"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("CSRF"), "{body}");
    let (status, body) = raw(
        &served.url,
        "POST",
        "/registry/drain",
        &auth,
        "service=web&id=web-1&lease=1",
    )
    .await;
    assert_eq!(status, 403, "a drain without the CSRF token is refused");
    assert!(body.contains("CSRF"), "{body}");
    let (status, _) = raw(
        &read_only.url,
        "POST",
        "/registry/drain",
        &auth,
        "service=web&id=web-1&lease=1",
    )
    .await;
    assert_eq!(status, 403, "a read-only console refuses a drain");
    assert_eq!(reg.status().health, coordination::registry::Health::Healthy);
    assert_eq!(
        revision_now(&etcd),
        before,
        "no refused POST wrote anything"
    );

    // With the CSRF token from the confirmation page, the same writer's rollback goes through
    // (so it is the CSRF check that refused the others); a foreign Origin is still refused.
    let (status, page) = raw(
        &served.url,
        "GET",
        &format!("/rollback?prefix={P}&version={v_bound}"),
        &auth,
        "",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the confirmation carries a CSRF token")
        .to_string();
    let seen = page
        .split("name=\"seen\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let good = format!("prefix={P}&version={v_bound}&seen={seen}&comment=undo&csrf={csrf}");
    let foreign = [
        ("Authorization", bearer.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let (status, _) = raw(&served.url, "POST", "/rollback", &foreign, &good).await;
    assert_eq!(status, 403, "a foreign origin is refused");
    let (status, body) = raw(&served.url, "POST", "/rollback", &auth, &good).await;
    assert_eq!(status, 303, "{body}");
    assert!(eventually!(WAIT, cfg.load().value().database.pool == 4));
    let after = versions(&cfg, 3).await;
    assert_eq!(after[2].author.as_deref(), Some("alice"));
    // A stale confirmation (the prefix changed since) is a conflict, not a blind write.
    let (status, body) = raw(&served.url, "POST", "/rollback", &auth, &good).await;
    assert_eq!(status, 409, "{body}");
    b.client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_listen_needs_the_explicit_flag() {
    let etcd = Etcd::start().await;
    let stderr = serve_refused(&etcd, &["--listen".as_ref(), "0.0.0.0:0".as_ref()]);
    assert!(stderr.contains("--insecure-listen"), "{stderr}");
    // A writers file that is not one is refused by line, never echoing a token.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("writers");
    std::fs::write(&file, "alice:alice-console-token-0123456789\nbob:short\n").unwrap();
    let stderr = serve_refused(
        &etcd,
        &[
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--writers-file".as_ref(),
            file.as_os_str(),
        ],
    );
    assert!(
        stderr.contains("line 2") && !stderr.contains("alice-console-token"),
        "{stderr}"
    );
}

/// `coordctl serve ARGS`, which must refuse to start (exit code 2): its stderr.
fn serve_refused(etcd: &Etcd, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_coordctl"))
        .args(["--endpoints", &etcd.endpoint()])
        .arg("serve")
        .args(args)
        .env_remove("ETCD_ENDPOINTS")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

/// An HTTP/1.1 request over TLS to `url` (`https://…`), trusting only `ca_pem`: the status code
/// and the whole response.
async fn tls_request(
    url: &str,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    let addr = url.strip_prefix("https://").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector.connect(name, tcp).await.expect("TLS handshake");
    exchange(stream, addr, method, path, &[], body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_serves_https_with_its_own_certificate() {
    let etcd = Etcd::start().await;
    let (_coord, _cfg) = bind(&etcd).await;
    let pki = support::tls::Pki::new("console-test-ca");
    let leaf = pki.server();
    let served = serve_with(
        &etcd,
        true,
        &[
            "--tls-cert".as_ref(),
            leaf.cert_file.as_os_str(),
            "--tls-key".as_ref(),
            leaf.key_file.as_os_str(),
        ],
    )
    .await;
    let url = &served.url;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // A rustls client that trusts only the test CA gets the pages, with the certificate's name
    // checked; a writer's session cookie is marked Secure.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, page) = tls_request(url, pki.ca_pem(), "GET", "/", "").await;
        assert_eq!(status, 200, "{page}");
        if page.contains(&format!("data-prefix=\"{P}\"")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the prefix is listed: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, response) = tls_request(
        url,
        pki.ca_pem(),
        "POST",
        "/login",
        &format!("token={TOKEN}"),
    )
    .await;
    assert_eq!(status, 303, "{response}");
    let cookie = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("a session cookie: {response}"));
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    // Plain HTTP to the same port gets no HTTP answer.
    let addr = url.strip_prefix("https://").unwrap();
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer))
        .await
        .expect("the console closes a plain HTTP connection");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // A real browser loads the pages over HTTPS (told to accept the test CA's certificate).
    let b = browser_with(&["--ignore-certificate-errors"]).await;
    b.goto(&format!("{url}/")).await;
    let row = b.text(&format!("tr[data-prefix='{P}']")).await;
    assert!(row.contains("WebConfig"), "{row}");
    assert!(b
        .client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with("https://"));

    // A certificate without its key, or a key that is not one, is refused before serving.
    let listen = [
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--tls-cert".as_ref(),
    ];
    let stderr = serve_refused(
        &etcd,
        &[&listen[..], &[leaf.cert_file.as_os_str()]].concat(),
    );
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let stderr = serve_refused(
        &etcd,
        &[
            &listen[..],
            &[
                leaf.cert_file.as_os_str(),
                "--tls-key".as_ref(),
                leaf.cert_file.as_os_str(),
            ],
        ]
        .concat(),
    );
    assert!(stderr.contains("private key"), "{stderr}");
}

/// `Console::serve` in this process on a free loopback port, with options `set`: its address
/// and the serving task.
async fn serve_here(
    etcd: &Etcd,
    set: impl FnOnce(coordination::console::ConsoleOptions) -> coordination::console::ConsoleOptions,
) -> (String, tokio::task::JoinHandle<coordination::Result<()>>) {
    use coordination::console::{Console, ConsoleOptions};
    let coord = etcd.coordinator().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let console = Console::new(&coord, set(ConsoleOptions::new()));
    (addr, tokio::spawn(console.serve(listener)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slow_to_send_its_headers_is_dropped() {
    let etcd = Etcd::start().await;
    let (addr, served) =
        serve_here(&etcd, |o| o.with_header_timeout(Duration::from_millis(500))).await;

    // Half a request, then nothing: the console closes the connection once the timeout passes.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed, not left open");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed after the timeout, not at once: {:?}",
        started.elapsed()
    );
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));

    // A client that sends its request in time is served.
    let (status, page) = raw(&format!("http://{addr}"), "GET", "/", &[], "").await;
    assert_eq!(status, 200, "{page}");
    served.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_a_client_waits_for_one_to_close() {
    let etcd = Etcd::start().await;
    let (addr, served) = serve_here(&etcd, |o| o.with_max_connections(1)).await;

    // The one connection allowed: a page's live stream, which stays open.
    let mut live = tokio::net::TcpStream::connect(&addr).await.unwrap();
    live.write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(WAIT, live.read(&mut head))
        .await
        .expect("the live stream answers")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );

    // A second client is not served while the stream is open, and is once it closes.
    let second = tokio::spawn({
        let url = format!("http://{addr}");
        async move { raw(&url, "GET", "/", &[], "").await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!second.is_finished(), "served past the limit");
    drop(live);
    let (status, page) = tokio::time::timeout(WAIT, second)
        .await
        .expect("served once the stream closed")
        .unwrap();
    assert_eq!(status, 200, "{page}");
    served.abort();
}
