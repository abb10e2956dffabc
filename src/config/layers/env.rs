//! The environment layer: `CHAT_DATABASE__HOST=db1` sets field `database.host`.

use std::ffi::OsString;

use crate::config::tree::{Blocked, LayerTree};
use crate::config::value::StringFields;
use crate::error::{Error, ErrorKind, Result};
use crate::provenance::{Origin, Source};

/// Builds the environment layer from `vars`: every variable named `<prefix><PATH>` where `PATH`
/// is the field path with `__` between segments (`CHAT_DATABASE__HOST` → `database.host`;
/// a single `_` stays inside a field name: `CHAT_MAX_CONNS` → `max_conns`). Names are matched
/// case-sensitively on the prefix and lowercased after it. Values are parsed like etcd values.
///
/// Variables are read as the OS gives them: one whose name does not start with `prefix` is
/// ignored whatever its bytes; one of the layer's own prefix whose name or value is not UTF-8 is
/// an error naming it.
pub(crate) fn env_layer(
    prefix: &str,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    fields: &StringFields,
) -> Result<LayerTree> {
    let mut found: Vec<(Vec<String>, String, String)> = Vec::new();
    for (name, value) in vars {
        if !name.as_encoded_bytes().starts_with(prefix.as_bytes()) {
            continue;
        }
        let (name, value) = match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => (name, value),
            (Err(name), _) => {
                return Err(bad(
                    &name.to_string_lossy(),
                    "variable name is not valid UTF-8",
                ))
            }
            (Ok(name), Err(_)) => return Err(bad(&name, "value is not valid UTF-8")),
        };
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(bad(&name, "empty field name between `__` separators"));
        }
        found.push((path, name, value));
    }
    // Shallow paths first so that deeper variables win for their field.
    found.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.1.cmp(&b.1)));
    let mut tree = LayerTree::default();
    for (path, name, raw) in found {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        let value = fields
            .parse_for(&segments, raw.as_bytes())
            .map_err(|msg| bad(&name, &msg).with_field(path.join(".")))?;
        let source = Source::new(Origin::Env(name.clone()));
        tree.insert(&segments, value, &source).map_err(|Blocked(at)| {
            bad(
                &name,
                &format!("field `{at}` is set to a value that is not an object, so nothing can be set below it"),
            )
        })?;
    }
    Ok(tree)
}

fn bad(name: &str, msg: &str) -> Error {
    Error::new(ErrorKind::Validation, msg).with_origin(&Origin::Env(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree::merge;
    use crate::provenance::Layer;
    use serde_json::json;

    #[test]
    fn double_underscore_nests_and_prefix_filters() {
        let vars = [
            ("CHAT_DATABASE__HOST", "db1"),
            ("CHAT_MAX_CONNS", "7"),
            ("OTHER_PORT", "1"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let tree = env_layer("CHAT_", vars, &StringFields::new(json!({}))).unwrap();
        let (v, s) = merge([&tree]);
        assert_eq!(v, json!({"database": {"host": "db1"}, "max_conns": 7}));
        assert_eq!(
            s.get("max_conns").origin.key().as_deref(),
            Some("CHAT_MAX_CONNS")
        );
    }

    #[test]
    fn bad_variable_is_named() {
        let vars = [("CHAT_A", "[1,"), ("CHAT_B", "x")]
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let err = env_layer("CHAT_", vars, &StringFields::new(json!({}))).unwrap_err();
        assert_eq!(err.key(), Some("CHAT_A"));
        assert_eq!(err.layer(), Some(Layer::Env));
    }

    #[test]
    fn non_utf8_variables() {
        use std::os::unix::ffi::OsStringExt;
        let foreign = (
            OsString::from_vec(b"OTHER_\xff".to_vec()),
            OsString::from_vec(vec![0xfe]),
        );
        let fields = StringFields::new(json!({}));
        let ok = (OsString::from("CHAT_PORT"), OsString::from("1"));
        let tree = env_layer("CHAT_", [foreign.clone(), ok.clone()], &fields).unwrap();
        assert_eq!(merge([&tree]).0, json!({"port": 1}));

        let own = (
            OsString::from("CHAT_NAME"),
            OsString::from_vec(vec![0xfe, b'x']),
        );
        let err = env_layer("CHAT_", [foreign.clone(), own], &fields).unwrap_err();
        assert_eq!(err.key(), Some("CHAT_NAME"));
        assert!(err.message().contains("not valid UTF-8"));

        let own_name = (
            OsString::from_vec(b"CHAT_\xff".to_vec()),
            OsString::from("1"),
        );
        let err = env_layer("CHAT_", [own_name], &fields).unwrap_err();
        assert!(err.message().contains("name is not valid UTF-8"), "{err}");
        assert_eq!(err.layer(), Some(Layer::Env));

        let deep = (
            OsString::from(format!("CHAT_{}", vec!["A"; 10_000].join("__"))),
            OsString::from("1"),
        );
        let err = env_layer("CHAT_", [deep], &fields).unwrap_err();
        assert!(err.message().contains("over the limit of 64"), "{err}");
    }
}
