//! The publish gate: a candidate is checked against the JSON Schema of every type the live
//! instances run (found by the schema hash in their receipts), so that a version an older
//! binary still running would reject is refused before it is written, naming those instances.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::receipt::{AppInfo, Receipt};
use crate::error::{Error, ErrorKind, Result};
use crate::history::{schema_secrets, SchemaCheck};

/// Hex digits of the SHA-256 kept as a schema hash.
const HASH_DIGITS: usize = 12;

/// The schema hash of a type: the first 12 hex digits of the SHA-256 of its JSON Schema as
/// compact JSON.
pub(crate) fn schema_hash(schema: &Value) -> String {
    let digest = Sha256::digest(serde_json::to_vec(schema).unwrap_or_default());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..HASH_DIGITS].to_string()
}

/// One schema running in the fleet that would reject a candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GateFinding {
    /// The schema hash.
    pub schema_hash: String,
    /// The application name and version those instances report (the first seen), if any.
    pub app: Option<AppInfo>,
    /// The instances running it, sorted.
    pub instances: Vec<String>,
    /// The field the schema refuses, where known.
    pub field: Option<String>,
    /// Why (secret values masked).
    pub error: String,
}

impl fmt::Display for GateFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.instances.len();
        write!(
            f,
            "{n} instance{} running schema {}",
            if n == 1 { "" } else { "s" },
            self.schema_hash
        )?;
        if let Some(app) = &self.app {
            write!(f, " ({app})")?;
        }
        f.write_str(" would reject")?;
        if let Some(field) = &self.field {
            write!(f, " `{field}`")?;
        }
        let error = self.error.strip_prefix("schema: ").unwrap_or(&self.error);
        write!(f, ": {error} [{}]", self.instances.join(", "))
    }
}

/// The findings as one refusal.
pub(crate) fn refusal(findings: &[GateFinding]) -> Error {
    let lines: Vec<String> = findings.iter().map(ToString::to_string).collect();
    let mut e = Error::new(
        ErrorKind::Validation,
        format!(
            "refused by the fleet gate: {} (override with --force / with_gate_forced, which is recorded)",
            lines.join("; ")
        ),
    );
    if let Some(field) = findings.iter().find_map(|f| f.field.clone()) {
        e = e.with_field(field);
    }
    e
}

/// The findings for `document` (the etcd layer's document) over the `schemas` found
/// (hash → published document) for the live `receipts`. A hash whose schema is not published
/// is skipped.
pub(crate) fn findings(
    document: &Value,
    receipts: &[Receipt],
    schemas: &BTreeMap<String, Value>,
) -> Result<Vec<GateFinding>> {
    let mut by_hash: BTreeMap<&str, Vec<&Receipt>> = BTreeMap::new();
    for r in receipts {
        by_hash.entry(r.schema_hash.as_str()).or_default().push(r);
    }
    let mut out = Vec::new();
    for (hash, running) in by_hash {
        let Some(doc) = schemas.get(hash) else {
            continue;
        };
        let check = SchemaCheck::new(doc)?;
        let secrets = schema_secrets(doc);
        if let Err(e) = check.check(document, true, &secrets) {
            let mut instances: Vec<String> = running.iter().map(|r| r.instance.clone()).collect();
            instances.sort();
            out.push(GateFinding {
                schema_hash: hash.to_string(),
                app: running.iter().find_map(|r| r.app.clone()),
                instances,
                field: e.field().map(str::to_string),
                error: e.message().to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::receipt::{Health, InstanceStatus};
    use serde_json::json;

    fn receipt(id: &str, hash: &str) -> Receipt {
        Receipt {
            instance: id.into(),
            labels: BTreeMap::new(),
            app: Some(AppInfo {
                name: "chat".into(),
                version: "1.4.2".into(),
            }),
            schema_hash: hash.into(),
            revision: 1,
            processed: 1,
            serving_since_unix_ms: 0,
            status: InstanceStatus::Live,
            health: Health::Healthy,
            rejection: None,
            rollout: None,
            updated_unix_ms: 0,
            writes: 1,
        }
    }

    #[test]
    fn an_older_schema_refuses_and_is_named() {
        let old = json!({"type": "object", "properties": {"pool": {"type": "object",
            "properties": {"max": {"type": "integer", "maximum": 100}}}}});
        let new = json!({"type": "object", "properties": {"pool": {"type": "object",
            "properties": {"max": {"type": "integer"}}}}});
        let (ho, hn) = (schema_hash(&old), schema_hash(&new));
        assert_eq!(ho.len(), 12);
        assert_ne!(ho, hn);
        let fleet = vec![receipt("a", &ho), receipt("b", &ho), receipt("c", &hn)];
        let schemas = BTreeMap::from([(ho.clone(), old), (hn, new)]);
        let found = findings(&json!({"pool": {"max": 500}}), &fleet, &schemas).unwrap();
        assert_eq!(found.len(), 1);
        let text = found[0].to_string();
        assert!(
            text.starts_with(&format!(
                "2 instances running schema {ho} (chat 1.4.2) would reject `pool.max`"
            )),
            "{text}"
        );
        assert!(findings(&json!({"pool": {"max": 50}}), &fleet, &schemas)
            .unwrap()
            .is_empty());
        assert!(refusal(&found).to_string().contains("--force"));
    }
}
