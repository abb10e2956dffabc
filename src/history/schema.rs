//! The bound type's JSON Schema, published next to the config at
//! `<ns>/__coordination/schema/<prefix>` so tools can validate without the Rust type.
//!
//! The value is the type's JSON Schema (draft 2020-12, from `schemars`) with one extra
//! annotation keyword, ignored by validators:
//! `"x-coordination": {"type": "<Rust type>", "prefix": "<full prefix>", "secrets": ["a.b"],
//! "env_prefix": "CHAT_"}` (`env_prefix` only when the handle reads an environment layer: the
//! variable `CHAT_DATABASE__POOL` overrides `database.pool`; the etcd key of a field is the
//! prefix and its path with `/`, `<prefix>database/pool`).
//! Each instance writes it at bind unless it is already identical, so during a rolling deploy
//! the last instance to start wins.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde_json::{json, Value};

use crate::config::pointer_to_dotted;
use crate::error::{Error, ErrorKind, Permission, Result};
use crate::secrets::SecretPaths;

/// The annotation keyword holding the type name, prefix and secret paths.
pub(crate) const ANNOTATION: &str = "x-coordination";

/// The document published for a type: its schema plus the annotation.
pub(crate) fn document(
    schema: &Value,
    type_name: &str,
    prefix: &str,
    secrets: &[&str],
    env_prefix: Option<&str>,
) -> Value {
    let mut doc = schema.clone();
    if let Value::Object(map) = &mut doc {
        let mut annotation = json!({"type": type_name, "prefix": prefix, "secrets": secrets});
        if let Some(env) = env_prefix {
            annotation["env_prefix"] = json!(env);
        }
        map.insert(ANNOTATION.into(), annotation);
    }
    doc
}

/// The environment variable prefix named by a published document.
pub(crate) fn env_prefix_of(doc: &Value) -> Option<String> {
    doc.get(ANNOTATION)
        .and_then(|a| a.get("env_prefix"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The secret paths named by a published document.
pub(crate) fn secrets_of(doc: &Value) -> Vec<String> {
    doc.get(ANNOTATION)
        .and_then(|a| a.get("secrets"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `doc` at `key` unless that exact text is already there. Returns whether it wrote.
pub(crate) async fn publish(client: &Client, key: &str, doc: &Value) -> Result<bool> {
    let text = serde_json::to_vec(doc).map_err(|e| {
        Error::new(ErrorKind::Etcd, format!("encoding the JSON Schema: {e}")).with_source(e)
    })?;
    let resp = client
        .clone()
        .txn(
            Txn::new()
                // A value compare on a missing key fails, so "equal" is the guard.
                .when([Compare::value(key, CompareOp::Equal, text.clone())])
                .or_else([TxnOp::put(key, text, None)]),
        )
        .await
        .map_err(|e| {
            Error::etcd(format_args!("publishing the JSON Schema at `{key}`"), e).needs(
                Permission::ReadWrite,
                &format!("`{key}`"),
                key,
            )
        })?;
    Ok(!resp.succeeded())
}

/// The published document at `key`, if any.
pub(crate) async fn read(client: &Client, key: &str) -> Result<Option<Value>> {
    let resp = client.clone().get(key, None).await.map_err(|e| {
        Error::etcd(format_args!("reading the JSON Schema at `{key}`"), e).needs(
            Permission::Read,
            &format!("`{key}`"),
            key,
        )
    })?;
    resp.kvs()
        .first()
        .map(|kv| {
            serde_json::from_slice(kv.value()).map_err(|e| {
                Error::new(
                    ErrorKind::Validation,
                    format!("the JSON Schema at `{key}` is not JSON: {e}"),
                )
                .with_key(key)
            })
        })
        .transpose()
}

/// A compiled published schema.
pub(crate) struct SchemaCheck {
    validator: jsonschema::Validator,
}

impl SchemaCheck {
    /// Compiles `doc`.
    ///
    /// # Errors
    /// [`ErrorKind::Validation`] if it is not a valid JSON Schema.
    pub(crate) fn new(doc: &Value) -> Result<Self> {
        let validator = jsonschema::validator_for(doc).map_err(|e| {
            Error::new(
                ErrorKind::Validation,
                format!("the published JSON Schema does not compile: {e}"),
            )
        })?;
        Ok(SchemaCheck { validator })
    }

    /// Checks a document; with `partial`, missing required properties are allowed (another
    /// layer, the file or the environment, may supply them). The error names the field, with
    /// the message hidden for a secret field.
    pub(crate) fn check(&self, doc: &Value, partial: bool, secrets: &[String]) -> Result<()> {
        for error in self.validator.iter_errors(doc) {
            if partial
                && matches!(
                    error.kind(),
                    jsonschema::error::ValidationErrorKind::Required { .. }
                )
            {
                continue;
            }
            let path = pointer_to_dotted(error.instance_path().as_str());
            let message = format!("schema: {}", SecretPaths::new(secrets).schema_error(&error));
            return Err(Error::new(ErrorKind::Validation, message).with_field(path));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_field_and_hide_secrets() {
        let schema = json!({
            "type": "object",
            "required": ["port"],
            "properties": {
                "port": {"type": "integer", "minimum": 1},
                "db": {"type": "object", "properties": {"password": {"type": "string", "minLength": 8}}}
            }
        });
        let doc = document(&schema, "Chat", "/p/", &["db.password"], Some("CHAT_"));
        let secrets = secrets_of(&doc);
        assert_eq!(secrets, vec!["db.password".to_string()]);
        assert_eq!(env_prefix_of(&doc).as_deref(), Some("CHAT_"));
        let none = document(&schema, "Chat", "/p/", &[], None);
        assert_eq!(env_prefix_of(&none), None);
        let check = SchemaCheck::new(&doc).unwrap();
        let e = check
            .check(&json!({"port": 0}), false, &secrets)
            .unwrap_err();
        assert_eq!(e.field(), Some("port"));
        assert!(check.check(&json!({}), true, &secrets).is_ok());
        assert!(check.check(&json!({}), false, &secrets).is_err());
        let e = check
            .check(&json!({"db": {"password": "s3cr3t"}}), true, &secrets)
            .unwrap_err();
        assert_eq!(e.field(), Some("db.password"));
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
}
