//! The page layout (navigation, who is logged in, the etcd banner), the style sheet and the
//! script that keeps pages live.

use maud::{html, Markup, DOCTYPE};

use super::app::ConsoleState;
use super::auth::Principal;
use super::csrf;

/// Which navigation entry is current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nav {
    Prefixes,
    Instances,
    Locks,
    Registry,
    None,
}

/// A whole page. `live`: whether the script re-renders `<main>` when etcd changes (off for
/// forms and confirmations, so nothing moves under the operator's hands).
pub(crate) fn page(
    state: &ConsoleState,
    who: Option<&Principal>,
    nav: Nav,
    title: &str,
    live: bool,
    body: Markup,
) -> Markup {
    let lost = state.live.lost();
    let entry = |this: Nav, href: &str, label: &str| {
        html! { a href=(href) class=(if nav == this { "current" } else { "" }) { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · coordination console" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    span.brand { "coordination" }
                    nav {
                        (entry(Nav::Prefixes, "/", "Prefixes"))
                        (entry(Nav::Instances, "/instances", "Instances & rollouts"))
                        (entry(Nav::Locks, "/locks", "Locks & elections"))
                        (entry(Nav::Registry, "/registry", "Registry"))
                    }
                    span.who {
                        @match who {
                            Some(p) => {
                                "writer " strong #user { (p.user) } " "
                                form.inline method="post" action="/logout" {
                                    input type="hidden" name=(csrf::FIELD) value=(csrf::token(state, p));
                                    button.link type="submit" { "log out" }
                                }
                            }
                            None => {
                                @if state.writers.is_empty() { span.badge { "read-only console" } }
                                @else { span.badge { "read-only" } " " a href="/login" { "log in to write" } }
                            }
                        }
                    }
                }
                div #etcd-banner .banner hidden[lost.is_none()] {
                    @if let Some(error) = &lost { "The console has lost etcd: " (error) ". Pages show what was last read." }
                }
                main #main data-live=(if live { "on" } else { "off" }) data-seen=(state.live.seen()) {
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field for a write form.
pub(crate) fn csrf_field(state: &ConsoleState, who: &Principal) -> Markup {
    html! { input type="hidden" name=(csrf::FIELD) value=(csrf::token(state, who)); }
}

/// Shows a JSON value compactly.
pub(crate) fn value(v: Option<&serde_json::Value>) -> Markup {
    html! {
        @match v {
            None => span.absent { "(absent)" },
            Some(serde_json::Value::String(s)) if s == crate::secrets::MASK => span.secret { "***" },
            Some(v) => code { (v.to_string()) },
        }
    }
}

/// The style sheet.
pub(crate) const STYLE: &str = r#"
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dde5; --bg:#f6f7f9; --accent:#2457c5; --bad:#b3261e; --ok:#1b7f3b; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; align-items:center; gap:24px; padding:10px 24px; background:#1d2330; color:#fff; }
header a { color:#cfd6e4; text-decoration:none; margin-right:16px; }
header a.current { color:#fff; font-weight:600; border-bottom:2px solid #7aa2ff; }
.brand { font-weight:700; letter-spacing:.02em; }
.who { margin-left:auto; color:#cfd6e4; }
.who a { margin:0; }
main { padding:20px 24px; max-width:1200px; }
h1 { font-size:20px; margin:4px 0 16px; }
h2 { font-size:16px; margin:24px 0 8px; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef1f6; font-weight:600; }
code, pre, textarea { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:13px; }
pre { background:#fff; border:1px solid var(--line); padding:10px; overflow:auto; }
textarea { width:100%; min-height:280px; padding:8px; }
input[type=text] { padding:5px 8px; min-width:320px; }
button, .button { background:var(--accent); color:#fff; border:0; border-radius:4px; padding:6px 12px; cursor:pointer; text-decoration:none; display:inline-block; font-size:13px; }
button.danger, .button.danger { background:var(--bad); }
button.link { background:none; color:#cfd6e4; padding:0; text-decoration:underline; }
form.inline { display:inline; }
.badge { background:#3a4356; color:#fff; border-radius:10px; padding:1px 8px; font-size:12px; }
.kind { border-radius:10px; padding:1px 8px; font-size:12px; background:#e5e9f2; }
.kind.rollback { background:#fde7c8; } .kind.publish { background:#d8ecdf; }
.secret { color:var(--muted); font-style:italic; }
.absent { color:var(--muted); }
.banner { background:var(--bad); color:#fff; padding:8px 24px; font-weight:600; }
.flash { background:#d8ecdf; border:1px solid var(--ok); padding:8px 12px; margin-bottom:12px; }
.error-box { background:#fbe4e2; border:1px solid var(--bad); padding:8px 12px; margin:12px 0; }
.field-error { color:var(--bad); font-weight:700; }
.muted { color:var(--muted); }
.actions a, .actions button { margin-right:6px; }
"#;

/// The script: follows `/events` and re-renders `<main>` in place (no reload) after a change;
/// shows the banner while the console has lost etcd or cannot be reached.
pub(crate) const SCRIPT: &str = r#"(function () {
  "use strict";
  var timer = null, unreachable = false, lost = null, asked = 0, shown = 0;
  function banner() {
    var b = document.getElementById("etcd-banner");
    if (!b) return;
    var text = unreachable ? "The console cannot be reached; retrying." :
      (lost ? "The console has lost etcd: " + lost + ". Pages show what was last read." : "");
    b.textContent = text;
    b.hidden = !text;
  }
  function refresh() {
    var main = document.getElementById("main");
    if (!main || main.getAttribute("data-live") !== "on") return;
    // Answers may come back out of order: an older one never replaces a newer one.
    var mine = ++asked;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } })
      .then(function (r) { return r.text(); })
      .then(function (text) {
        if (mine < shown) return;
        shown = mine;
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("main");
        if (!fresh) return;
        main.innerHTML = fresh.innerHTML;
        main.setAttribute("data-seen", fresh.getAttribute("data-seen") || "0");
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {});
  }
  function schedule() {
    if (timer) return;
    timer = setTimeout(function () { timer = null; refresh(); }, 100);
  }
  // Bake countdowns tick between refreshes.
  setInterval(function () {
    var all = document.querySelectorAll("[data-until]");
    for (var i = 0; i < all.length; i++) {
      var left = Math.max(0, Math.round((Number(all[i].getAttribute("data-until")) - Date.now()) / 1000));
      all[i].textContent = left + " s left";
    }
  }, 1000);
  if (!window.EventSource) return;
  var events = null;
  function open() {
    events = new EventSource("/events");
    events.addEventListener("change", schedule);
    events.addEventListener("etcd", function (e) {
      var was = lost;
      lost = e.data === "ok" ? null : e.data;
      banner();
      if (was && !lost) schedule();
    });
    // A change between the page's render and the stream's opening sends no `change`: the
    // stream's first `seen` is then newer than the page's.
    events.addEventListener("seen", function (e) {
      var main = document.getElementById("main");
      if (main && Number(e.data) > Number(main.getAttribute("data-seen") || "0")) schedule();
    });
    events.onopen = function () { if (unreachable) { unreachable = false; banner(); schedule(); } };
    events.onerror = function () { unreachable = true; banner(); };
  }
  // A page left for another (or kept in the back-forward cache) gives its connection back:
  // browsers allow only a few per host over HTTP/1.1.
  window.addEventListener("pagehide", function () { if (events) { events.close(); events = null; } });
  window.addEventListener("pageshow", function (e) { if (!events) { open(); if (e.persisted) schedule(); } });
  open();
})();
"#;
