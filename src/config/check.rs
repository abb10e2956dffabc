//! Checking a merged candidate: serde deserialization, JSON Schema constraints, the type's hook.

use std::marker::PhantomData;

use serde_json::Value;

use super::coord_config::CoordConfig;
use super::source::Sources;
use super::value::StringFields;
use crate::error::{Error, ErrorKind, Result};

/// Turns a merged JSON tree into a `T`, or an error that names the failing field and where its
/// value came from. Built once per bound config (the schema is compiled once).
pub(crate) struct Checker<T> {
    schema: Value,
    validator: jsonschema::Validator,
    _type: PhantomData<fn() -> T>,
}

impl<T: CoordConfig> Checker<T> {
    /// Generates `T`'s JSON Schema and compiles it.
    pub(crate) fn new() -> Result<Self> {
        let schema = schemars::schema_for!(T).to_value();
        let validator = jsonschema::validator_for(&schema).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the JSON Schema of `{}` does not compile: {e}",
                    std::any::type_name::<T>()
                ),
            )
        })?;
        Ok(Checker {
            schema,
            validator,
            _type: PhantomData,
        })
    }

    /// `T`'s JSON Schema (draft 2020-12).
    pub(crate) fn schema(&self) -> &Value {
        &self.schema
    }

    /// Which fields are strings, for parsing raw etcd and environment values.
    pub(crate) fn string_fields(&self) -> StringFields {
        StringFields::new(self.schema.clone())
    }

    /// Deserializes (failing field path from `serde_path_to_error`), then checks the schema's
    /// constraints, then `T::validate`.
    pub(crate) fn check(&self, merged: &Value, sources: &Sources) -> Result<T> {
        self.check_unmasked(merged, sources).map_err(mask::<T>)
    }

    fn check_unmasked(&self, merged: &Value, sources: &Sources) -> Result<T> {
        let value: T = serde_path_to_error::deserialize(merged).map_err(|e| {
            let mut path = dotted(e.path());
            let message = e.inner().to_string();
            if let Some(missing) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                path = join(&path, missing);
            }
            locate(Error::new(ErrorKind::Validation, message), &path, sources)
        })?;
        // `is_valid` is the fast path; errors are collected only for a candidate that fails.
        if !self.validator.is_valid(merged) {
            if let Some(e) = self.validator.iter_errors(merged).next() {
                let path = pointer_to_dotted(e.instance_path().as_str());
                let message = format!("schema: {e}");
                return Err(locate(
                    Error::new(ErrorKind::Validation, message),
                    &path,
                    sources,
                ));
            }
        }
        value.validate().map_err(|reason| {
            Error::new(
                ErrorKind::Validation,
                format!("rejected by validate(): {reason}"),
            )
        })?;
        Ok(value)
    }
}

impl<T: CoordConfig> Checker<T> {
    /// Checks a whole value (serialized to JSON): schema constraints, then `T::validate`.
    pub(crate) fn check_value(&self, value: &T) -> Result<()> {
        self.check_value_unmasked(value).map_err(mask::<T>)
    }

    fn check_value_unmasked(&self, value: &T) -> Result<()> {
        let json = serde_json::to_value(value).map_err(|e| {
            Error::new(
                ErrorKind::Validation,
                format!("value does not serialize: {e}"),
            )
        })?;
        let round_trip: T = serde_path_to_error::deserialize(&json).map_err(|e| {
            Error::new(ErrorKind::Validation, e.inner().to_string()).with_field(dotted(e.path()))
        })?;
        drop(round_trip);
        if let Some(e) = self.validator.iter_errors(&json).next() {
            let path = pointer_to_dotted(e.instance_path().as_str());
            return Err(Error::new(ErrorKind::Validation, format!("schema: {e}")).with_field(path));
        }
        value.validate().map_err(|reason| {
            Error::new(
                ErrorKind::Validation,
                format!("rejected by validate(): {reason}"),
            )
        })
    }
}

/// Whether `path` is, or is below, one of `T::SECRETS`.
pub(crate) fn is_secret<T: CoordConfig>(path: &str) -> bool {
    T::SECRETS
        .iter()
        .any(|s| path == *s || (path.starts_with(s) && path.as_bytes().get(s.len()) == Some(&b'.')))
}

/// Replaces the message of an error about a secret field, which may quote the value.
fn mask<T: CoordConfig>(error: Error) -> Error {
    match error.field().map(str::to_string) {
        Some(field) if is_secret::<T>(&field) => error.with_message(format!(
            "invalid value for secret field `{field}` (value *** not shown)"
        )),
        _ => error,
    }
}

/// Adds the field path and, where the layers supplied that field, its layer and key.
fn locate(err: Error, path: &str, sources: &Sources) -> Error {
    let err = err.with_field(path);
    let found = if path.is_empty() {
        None
    } else {
        sources.find_within(path)
    };
    match found {
        Some(source) => {
            let err = err.with_layer(source.layer);
            match &source.origin {
                Some(origin) => err.with_key(origin.clone()),
                None => err,
            }
        }
        None => err,
    }
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        let part = match segment {
            Segment::Seq { index } => index.to_string(),
            Segment::Map { key } => key.clone(),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => "?".to_string(),
        };
        out = join(&out, &part);
    }
    out
}

/// `/database/port` → `database.port` (JSON Pointer unescaping `~1` and `~0`).
pub(crate) fn pointer_to_dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointer_becomes_dotted_path() {
        assert_eq!(pointer_to_dotted("/database/port"), "database.port");
        assert_eq!(pointer_to_dotted("/a~1b/0"), "a/b.0");
        assert_eq!(pointer_to_dotted(""), "");
    }
}
