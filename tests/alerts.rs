//! docs/alerts.yml: valid Prometheus rules (`promtool check rules`), whose unit tests on
//! recorded series pass (`promtool test rules docs/alerts.test.yml`), over metric names that
//! docs/observability.md documents.

use std::path::{Path, PathBuf};
use std::process::Command;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

/// Runs `promtool ARGS` in docs/ and fails with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(docs())
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run promtool ({e}): install it (Debian: `apt-get install prometheus`; \
             scripts/lib.sh's coord_ensure_deps does) to check docs/alerts.yml"
        ),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn the_alerting_rules_are_valid() {
    let out = promtool(&["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
}

#[test]
fn the_alerting_rules_fire_on_the_recorded_series() {
    let out = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_metric_the_rules_use_is_documented() {
    let rules = std::fs::read_to_string(docs().join("alerts.yml")).unwrap();
    let guide = std::fs::read_to_string(docs().join("observability.md")).unwrap();
    let mut used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("coordination_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 6, "{used:?}");
    for name in used {
        assert!(
            guide.contains(&format!("`{name}`")),
            "docs/alerts.yml uses `{name}`, which docs/observability.md does not document"
        );
    }
}
