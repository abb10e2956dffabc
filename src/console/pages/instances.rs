//! `/instances`: for each prefix, the convergence table (instances per revision), each live
//! instance's receipt (revision served, status, health, last rejection), and the rollout:
//! steps, bake countdown, state and transitions, with pause, resume, promote and abort.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::prefixes::published;
use super::{enc, field, see_other};
use crate::console::app::{crate_error, Shared};
use crate::console::auth::Principal;
use crate::console::csrf;
use crate::console::templates::{csrf_field, page as layout, Nav};
use crate::error::{Error, ErrorKind};
use crate::fleet::{Fleet, Instances, Phase, RolloutState};

#[derive(Debug, Deserialize)]
pub(crate) struct InstancesQuery {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ago(unix_ms: u64) -> String {
    let s = now_ms().saturating_sub(unix_ms) / 1000;
    format!("{s} s ago")
}

fn convergence(instances: &Instances) -> Markup {
    let total = instances.list.len();
    html! {
        table.convergence {
            thead { tr { th { "revision" } th { "instances" } } }
            tbody {
                @for (revision, n) in instances.by_revision().iter().rev() {
                    tr data-revision=(revision) { td { (revision) } td { (n) "/" (total) } }
                }
            }
        }
        table.instances {
            thead { tr { th { "instance" } th { "labels" } th { "app" } th { "revision" } th { "since" } th { "status" } th { "health" } th { "last rejection" } } }
            tbody {
                @for i in &instances.list {
                    @let r = &i.receipt;
                    tr.instance data-instance=(r.instance) data-revision=(r.revision) {
                        td { code { (r.instance) } }
                        td { @for (k, v) in &r.labels { code { (k) "=" (v) } " " } }
                        td { @if let Some(app) = &r.app { (app.name) " " (app.version) } }
                        td.revision { (r.revision) @if r.processed != r.revision { span.muted { " (processed " (r.processed) ")" } } }
                        td { (ago(r.serving_since_unix_ms)) }
                        td { (r.status.as_str()) @if let Some(why) = &i.stale { br; span.field-error { "stale: " (why) } } }
                        td { @if r.health.is_healthy() { "healthy" } @else { span.field-error { (format!("{:?}", r.health)) } } }
                        td.rejection {
                            @if let Some(rej) = &r.rejection {
                                "revision " (rej.revision)
                                @if let Some(f) = &rej.field { " · field " code.field-error { (f) } }
                                br; span.muted { (rej.error) }
                            } @else { span.muted { "—" } }
                        }
                    }
                }
            }
        }
    }
}

fn rollout(state: &Shared, who: Option<&Principal>, prefix: &str, r: &RolloutState) -> Markup {
    let action = |name: &str, label: &str, danger: bool| {
        html! {
            @if let Some(who) = who {
                form.inline method="post" action="/rollout" {
                    (csrf_field(state, who))
                    input type="hidden" name="prefix" value=(prefix);
                    input type="hidden" name="action" value=(name);
                    @if name == "abort" { input type="text" name="reason" placeholder="reason (required)" required; " " }
                    button.danger[danger] id=(format!("rollout-{name}")) type="submit" { (label) }
                }
                " "
            }
        }
    };
    html! {
        section.rollout data-status=(r.status.as_str()) {
            h3 { "Rollout " code { (r.id) } " · " span.kind { (r.status.as_str()) } }
            p { "by " (r.author) " · " (r.comment) " · selector " code { (r.selector.to_string()) } }
            p { "steps: "
                @for (i, s) in r.steps.iter().enumerate() {
                    @if i as u32 == r.step && r.status.is_active() { strong { "[" (s.to_string()) "]" } } @else { (s.to_string()) }
                    " "
                }
            }
            @if r.status.is_active() {
                p { "step " (r.step + 1) " of " (r.steps.len()) ", cohort of " (r.cohort.len()) ": "
                    @for c in &r.cohort { code { (c) } " " } }
                p {
                    @match r.phase {
                        Phase::Applying { since_unix_ms } => { "applying since " (ago(since_unix_ms)) }
                        Phase::Baking { until_unix_ms } => {
                            "baking: " span.countdown data-until=(until_unix_ms) { (until_unix_ms.saturating_sub(now_ms()) / 1000) " s left" }
                        }
                    }
                }
                p.actions {
                    @if r.status.as_str() == "running" { (action("pause", "Pause", false)) } @else { (action("resume", "Resume", false)) }
                    (action("promote", "Promote", false))
                    (action("abort", "Abort", true))
                }
            }
            @if let Some(reason) = &r.reason { p.error-box { (reason) } }
            @if let Some(v) = r.published { p { "published as version " (v) } }
            details { summary { (r.transitions.len()) " transitions" }
                ul { @for t in &r.transitions { li { (t.author) ": " (t.what) } } } }
        }
    }
}

/// `GET /instances[?prefix=P]`.
pub(crate) async fn page(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<InstancesQuery>,
) -> Response {
    let who = state.who(&headers);
    let result = async {
        let prefixes: Vec<String> = match &q.prefix {
            Some(p) => vec![p.clone()],
            None => published(&state.coord)
                .await?
                .into_iter()
                .map(|p| p.prefix)
                .collect(),
        };
        let mut out = Vec::new();
        for prefix in prefixes {
            let fleet = Fleet::open(&state.coord, &prefix)?;
            let instances = fleet.instances().await?;
            let rollout = fleet.rollout().await?;
            out.push((prefix, instances, rollout));
        }
        Ok::<_, Error>(out)
    }
    .await;
    let sections = match result {
        Ok(s) => s,
        Err(e) => return crate_error(&state, who.as_ref(), &e),
    };
    let body = html! {
        h1 { "Instances & rollouts" }
        @if let Some(done) = &q.done { p.flash #flash { "Rollout: " (done) "." } }
        @if sections.is_empty() { p #empty { "No bound prefix yet." } }
        @for (prefix, instances, r) in &sections {
            section.fleet data-prefix=(prefix) {
                h2 { code { (prefix) } " · " (instances.list.len()) " live instance(s) · prefix at revision " (instances.prefix_revision) }
                (convergence(instances))
                @match r {
                    Some(r) => (rollout(&state, who.as_ref(), prefix, r)),
                    None => p.muted { "No rollout yet." },
                }
            }
        }
    };
    layout(
        &state,
        who.as_ref(),
        Nav::Instances,
        "Instances & rollouts",
        true,
        body,
    )
    .into_response()
}

/// `POST /rollout`: pause, resume, promote or abort the prefix's rollout, as the writer.
pub(crate) async fn act(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let who = match csrf::writer(&state, &headers, &form) {
        Ok(who) => who,
        Err(page) => return page,
    };
    let prefix = field(&form, "prefix").to_string();
    let action = field(&form, "action").to_string();
    let result = async {
        let fleet = Fleet::open(&state.coord, &prefix)?;
        match action.as_str() {
            "pause" => fleet.pause_rollout(&who.user).await,
            "resume" => fleet.resume_rollout(&who.user).await,
            "promote" => fleet.promote_rollout(&who.user).await,
            "abort" => {
                let reason = field(&form, "reason");
                if reason.is_empty() {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        "an abort needs a reason",
                    ));
                }
                fleet.abort_rollout(&who.user, reason).await
            }
            other => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("`{other}` is not a rollout action (pause, resume, promote, abort)"),
            )),
        }
    }
    .await;
    match result {
        Ok(r) => see_other(&format!(
            "/instances?prefix={}&done={}",
            enc(&prefix),
            enc(&format!("{action}, now {}", r.status.as_str()))
        )),
        Err(e) => crate_error(&state, Some(&who), &e),
    }
}
