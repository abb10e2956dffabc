//! Checking a merged candidate: serde deserialization, JSON Schema constraints, the type's hook.
//!
//! Every violation is reported, not only the first (up to [`MAX_LISTED`] in the message), so an
//! operator can fix a bad document in one round trip; the error's provenance is the first
//! violation's. Secret values never appear: a message about a value that is, contains or lies
//! inside a secret field shows `***` instead of the value (see [`crate::secrets`]).

use crate::provenance::join_path as join;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use jsonschema::error::ValidationErrorKind;
use jsonschema::ValidationError;
use serde_json::Value;

use super::coord_config::CoordConfig;
use super::rebuild::ChangedPaths;
use super::unknown::value_at;
use crate::error::{Error, ErrorKind, Result};
use crate::provenance::{Source, Sources};
use crate::secrets::{SecretPaths, MASK};

/// At most this many violations are listed in one error message; the rest are counted.
pub(crate) const MAX_LISTED: usize = 20;

/// Turns a merged JSON tree into a `T`, or an error that names the failing field and where its
/// value came from. Built once per bound config (the schema is compiled once).
pub(crate) struct Checker<T> {
    schema: Value,
    validator: jsonschema::Validator,
    /// Validators for sub-schemas (by the address of their node in `schema`), compiled on first
    /// use by incremental checks; `None` where the node's schema does not compile alone.
    subs: Mutex<HashMap<usize, Option<Arc<jsonschema::Validator>>>>,
    _type: PhantomData<fn() -> T>,
}

/// Keywords of a schema node above a changed field that do not look at the values of the
/// node's fields (beyond `properties` and `additionalProperties`, which the check descends
/// through): an incremental check may skip such a node, as it may the [`METADATA`] keywords.
/// `required`, `minProperties` and `maxProperties` look at which fields exist, so they also stop
/// the descent where a field appeared or disappeared.
const STRUCTURAL: &[&str] = &[
    "type",
    "properties",
    "additionalProperties",
    "required",
    "minProperties",
    "maxProperties",
    "$schema",
    "$defs",
    "definitions",
    "format",
];

/// Keywords that describe a node without constraining it.
const METADATA: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$comment",
];

/// The schema that accepts anything (a field of a map, or of an object without
/// `additionalProperties`).
static ANY: Value = Value::Bool(true);

/// A subtree to check after the merged tree was updated in place.
#[derive(Debug)]
pub(crate) struct Region {
    /// Its field path (segments).
    pub(crate) path: Vec<String>,
    /// Whether the field at `path` appeared or disappeared.
    pub(crate) fields_changed: bool,
}

/// One problem with a candidate: the dotted field path and a message with secrets masked.
#[derive(Debug)]
struct Violation {
    path: String,
    message: String,
    /// The violation is about the object's members (a missing or unexpected property), so it
    /// covers a serde error reported at a path below it.
    about_members: bool,
}

impl<T: CoordConfig> Checker<T> {
    /// Generates `T`'s JSON Schema and compiles it.
    pub(crate) fn new() -> Result<Self> {
        Self::compile(Self::generate_schema())
    }

    /// `T`'s JSON Schema (what [`schema`](Self::schema) gives once compiled).
    pub(crate) fn generate_schema() -> Value {
        schemars::schema_for!(T).to_value()
    }

    /// Compiles `schema` (`T`'s, from [`generate_schema`](Self::generate_schema)), after
    /// checking it against its meta-schema.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if the schema does not compile.
    pub(crate) fn compile(schema: Value) -> Result<Self> {
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
            subs: Mutex::new(HashMap::new()),
            _type: PhantomData,
        })
    }

    /// The check after an in-place update, or `None` when it cannot vouch for the candidate
    /// (the caller then runs [`check`](Self::check) on the whole document, which gives the
    /// authoritative answer and error).
    ///
    /// `previous` must be the value deserialized from a document that differs from `doc` only
    /// at the `changed` paths, and that document must have passed the whole check; `regions`
    /// are the subtrees those changes may have made invalid. Each region is validated against
    /// its sub-schema where the schema above it is structural (see [`STRUCTURAL`]); otherwise
    /// the whole document is validated. The value is rebuilt through
    /// [`CoordConfig::incremental`] (a full deserialization where it declines), and `validate()`
    /// runs on the whole value.
    pub(crate) fn check_incremental(
        &self,
        previous: &T,
        doc: &Value,
        changed: &[Vec<String>],
        regions: &[&Region],
    ) -> Option<T> {
        let Value::Object(root) = doc else {
            return None;
        };
        let mut whole_checked = false;
        for region in regions {
            if region.path.is_empty() {
                if !whole_checked && !self.validator.is_valid(doc) {
                    return None;
                }
                whole_checked = true;
                continue;
            }
            match self.sub_validator(&region.path, region.fields_changed) {
                Some(Some(validator)) => {
                    if let Some(value) = value_at(root, &region.path) {
                        if !validator.is_valid(value) {
                            return None;
                        }
                    }
                }
                Some(None) => {}
                None if whole_checked => {}
                None => {
                    if !self.validator.is_valid(doc) {
                        return None;
                    }
                    whole_checked = true;
                }
            }
        }
        let paths = ChangedPaths::new(changed.iter().map(Vec::as_slice));
        let value = match T::incremental(previous, doc, &paths) {
            Some(Ok(value)) => value,
            _ => serde::Deserialize::deserialize(doc).ok()?,
        };
        value.validate().ok()?;
        Some(value)
    }

    /// The validator for the subtree at `path`: `Some(None)` when any value is valid there,
    /// `None` when the schema above `path` is not structural or the sub-schema does not compile
    /// alone.
    fn sub_validator(
        &self,
        path: &[String],
        fields_changed: bool,
    ) -> Option<Option<Arc<jsonschema::Validator>>> {
        let node = self.node_at(path, fields_changed)?;
        let object = match node {
            Value::Bool(true) => return Some(None),
            Value::Object(o) if o.keys().all(|k| METADATA.contains(&k.as_str())) => {
                return Some(None)
            }
            Value::Object(o) => o,
            _ => return None,
        };
        let key = node as *const Value as usize;
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        let compiled = subs.entry(key).or_insert_with(|| {
            let mut alone = object.clone();
            for shared in ["$defs", "definitions", "$schema"] {
                if let Some(v) = self.schema.get(shared) {
                    alone.entry(shared).or_insert_with(|| v.clone());
                }
            }
            jsonschema::validator_for(&Value::Object(alone))
                .ok()
                .map(Arc::new)
        });
        compiled.clone().map(Some)
    }

    /// The schema node for the field at `path`, descending only through structural nodes.
    fn node_at(&self, path: &[String], fields_changed: bool) -> Option<&Value> {
        let mut node = &self.schema;
        for (i, segment) in path.iter().enumerate() {
            let object = self.structural(node)?;
            if fields_changed && i + 1 == path.len() {
                let counts = ["minProperties", "maxProperties"]
                    .iter()
                    .any(|k| object.contains_key(*k));
                let required = object
                    .get("required")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|f| f.as_str() == Some(segment)));
                if counts || required {
                    return None;
                }
            }
            node = match object.get("properties").and_then(|p| p.get(segment)) {
                Some(child) => child,
                None => match object.get("additionalProperties") {
                    None | Some(Value::Bool(true)) => &ANY,
                    Some(Value::Bool(false)) => return None,
                    Some(child) => child,
                },
            };
            if object.contains_key("patternProperties") {
                return None;
            }
        }
        Some(node)
    }

    /// `node` as a structural object schema, following `$ref` and the non-null branch of an
    /// `Option` (`anyOf`/`oneOf` of a schema and `{"type": "null"}`: the value here is an
    /// object, which the null branch never accepts).
    fn structural<'a>(&'a self, mut node: &'a Value) -> Option<&'a serde_json::Map<String, Value>> {
        for _ in 0..16 {
            let object = node.as_object()?;
            let only_metadata_besides = |keyword: &str| {
                object
                    .keys()
                    .all(|k| k == keyword || METADATA.contains(&k.as_str()))
            };
            if let Some(reference) = object.get("$ref") {
                if !only_metadata_besides("$ref") {
                    return None;
                }
                let pointer = reference.as_str()?.strip_prefix('#')?;
                node = self.schema.pointer(pointer)?;
                continue;
            }
            if let Some((keyword, branches)) = ["anyOf", "oneOf"]
                .iter()
                .find_map(|k| object.get(*k).map(|b| (*k, b)))
            {
                if !only_metadata_besides(keyword) {
                    return None;
                }
                let branches = branches.as_array()?;
                let is_null = |b: &Value| b.get("type").and_then(Value::as_str) == Some("null");
                match branches.as_slice() {
                    [a, b] if is_null(b) && !is_null(a) => node = a,
                    [a, b] if is_null(a) && !is_null(b) => node = b,
                    _ => return None,
                }
                continue;
            }
            return object
                .keys()
                .all(|k| STRUCTURAL.contains(&k.as_str()) || METADATA.contains(&k.as_str()))
                .then_some(object);
        }
        None
    }

    /// `T`'s JSON Schema (draft 2020-12).
    pub(crate) fn schema(&self) -> &Value {
        &self.schema
    }

    /// Deserializes (failing field path from `serde_path_to_error`), checks the schema's
    /// constraints, then runs `T::validate`. A deserialization error and every schema violation
    /// are reported together; the error's field, layer and key are the first one's.
    ///
    /// With `big` (a document of thousands of keys), the schema's constraints are checked on a
    /// second thread while the value is deserialized.
    pub(crate) fn check(&self, merged: &Value, sources: &Sources, big: bool) -> Result<T> {
        self.evaluate(merged, big)
            .map_err(|failed| self.explain(failed, merged, Some(sources)))
    }

    /// Checks a whole value (serialized to JSON): serde round trip, schema constraints, then
    /// `T::validate`.
    pub(crate) fn check_value(&self, value: &T) -> Result<()> {
        let json = serde_json::to_value(value).map_err(|e| {
            let secrets = SecretPaths::new(T::SECRETS);
            let shown = if secrets.is_empty() {
                e.to_string()
            } else {
                // The value could not be turned into JSON, so it cannot be searched for
                // secrets: say only that it failed.
                "a field failed to serialize".to_string()
            };
            Error::new(
                ErrorKind::Validation,
                format!("value does not serialize: {shown}"),
            )
        })?;
        self.evaluate(&json, false)
            .map(drop)
            .map_err(|failed| self.explain(failed, &json, None))
    }

    /// [`check`](Self::check) without the provenance: the value, or what is wrong with it, for
    /// [`explain`](Self::explain) to turn into the error (provenance is looked up only for a
    /// candidate that fails).
    fn evaluate(&self, doc: &Value, big: bool) -> std::result::Result<T, Failed> {
        let secrets = SecretPaths::new(T::SECRETS);
        let mut violations = Vec::new();
        // `is_valid` is the fast path; errors are collected only for a candidate that fails.
        let (deserialized, valid) = if big {
            std::thread::scope(|scope| {
                let valid = scope.spawn(|| self.validator.is_valid(doc));
                let deserialized = <T as serde::Deserialize>::deserialize(doc);
                let valid = valid
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (deserialized, valid)
            })
        } else {
            let deserialized = <T as serde::Deserialize>::deserialize(doc);
            (deserialized, self.validator.is_valid(doc))
        };
        // Plain deserialization first: tracking the field path costs on every node, and is
        // needed only to report a failure, so a failing value is deserialized again with it
        // (deserializing the same JSON is deterministic: it fails the same way).
        let parsed = match deserialized {
            Ok(value) => Some(value),
            Err(_) => match serde_path_to_error::deserialize::<_, T>(doc) {
                Ok(value) => Some(value),
                Err(e) => {
                    violations.push(serde_violation(&e, secrets));
                    None
                }
            },
        };
        if !valid {
            let mut found = Vec::new();
            for error in self.validator.iter_errors(doc) {
                schema_violations(&error, secrets, &mut found);
            }
            let serde_path = violations.first().map(|v: &Violation| v.path.clone());
            found.retain(|v| !serde_path.as_deref().is_some_and(|p| v.covers(p)));
            violations.extend(found);
        }
        let value = match parsed {
            Some(value) if violations.is_empty() => value,
            _ => return Err(Failed(Failure::Violations(violations))),
        };
        value
            .validate()
            .map_err(|reason| Failed(Failure::Validate(reason)))?;
        Ok(value)
    }

    /// The error for what [`evaluate`](Self::evaluate) found wrong with `doc`, naming the layer
    /// and key of the first violation from `sources`; no secret value of `doc` is shown.
    fn explain(&self, failed: Failed, doc: &Value, sources: Option<&Sources>) -> Error {
        let error = match failed.0 {
            Failure::Violations(violations) => {
                report(&violations, sources).expect("a failed check has a violation")
            }
            Failure::Validate(reason) => Error::new(
                ErrorKind::Validation,
                format!("rejected by validate(): {reason}"),
            ),
        };
        // Whatever a message still quotes (a custom `Deserialize` impl's wording, a
        // `validate()` reason), no secret value of the candidate is shown.
        let message = SecretPaths::new(T::SECRETS).scrub(error.message(), doc);
        error.with_message(message)
    }
}

/// What [`Checker::evaluate`] found wrong with a candidate.
#[derive(Debug)]
pub(crate) struct Failed(Failure);

#[derive(Debug)]
enum Failure {
    /// A deserialization error and schema violations (at least one).
    Violations(Vec<Violation>),
    /// `T::validate`'s reason.
    Validate(String),
}

impl Violation {
    /// Whether this schema violation says what a serde error at `serde_path` says.
    fn covers(&self, serde_path: &str) -> bool {
        self.path == serde_path
            || (self.about_members && {
                let below = serde_path.strip_prefix(self.path.as_str());
                self.path.is_empty() || below.is_some_and(|rest| rest.starts_with('.'))
            })
    }
}

/// The violation a deserialization error describes, its value masked where the field holds a
/// secret.
fn serde_violation(
    e: &serde_path_to_error::Error<serde_json::Error>,
    secrets: SecretPaths<'_>,
) -> Violation {
    let mut path = dotted(e.path());
    let message = e.inner().to_string();
    if let Some(missing) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        path = join(&path, missing);
    }
    let message = if secrets.holds_secret(&path) {
        mask_serde_message(&message, &path)
    } else {
        message
    };
    Violation {
        path,
        message,
        about_members: false,
    }
}

/// A serde message with the quoted value replaced by `***`, keeping what was expected.
fn mask_serde_message(message: &str, path: &str) -> String {
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(lead) {
            if let Some(at) = rest.rfind(", expected ") {
                let unexpected = &rest[..at];
                let kind = [
                    "string",
                    "integer",
                    "floating point",
                    "boolean",
                    "character",
                ]
                .into_iter()
                .find(|k| unexpected.starts_with(&format!("{k} ")))
                .map_or(String::new(), |k| format!("{k} "));
                return format!("{lead}{kind}{MASK}{}", &rest[at..]);
            }
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        if let Some(at) = rest.rfind(", expected ") {
            return format!("unknown variant {MASK}{}", &rest[at..]);
        }
    }
    // These name fields or counts, never values.
    if [
        "missing field `",
        "unknown field `",
        "duplicate field `",
        "invalid length ",
    ]
    .iter()
    .any(|p| message.starts_with(p))
    {
        return message.to_string();
    }
    format!("invalid value for secret field `{path}` (value {MASK} not shown)")
}

/// The violations a schema error describes. An `anyOf`/`oneOf` (such as the one schemars
/// writes for an `Option<Struct>`) where only one alternative is of the right type is reported
/// as that alternative's own violations, which say which field is wrong and why.
fn schema_violations(
    error: &ValidationError<'_>,
    secrets: SecretPaths<'_>,
    out: &mut Vec<Violation>,
) {
    if let ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } =
        error.kind()
    {
        let here = error.instance_path().as_str();
        let mut plausible = context.iter().filter(|branch| {
            !branch.iter().all(|e| {
                matches!(e.kind(), ValidationErrorKind::Type { .. })
                    && e.instance_path().as_str() == here
            })
        });
        if let (Some(branch), None) = (plausible.next(), plausible.next()) {
            for e in branch {
                schema_violations(e, secrets, out);
            }
            return;
        }
    }
    out.push(Violation {
        path: pointer_to_dotted(error.instance_path().as_str()),
        message: format!("schema: {}", secrets.schema_error(error)),
        about_members: matches!(
            error.kind(),
            ValidationErrorKind::Required { .. }
                | ValidationErrorKind::AdditionalProperties { .. }
                | ValidationErrorKind::UnevaluatedProperties { .. }
        ),
    });
}

/// One error for all violations: the first one's message (alone, or followed by the list of
/// all of them, each with its field path and key) and provenance. `None` if there are none.
fn report(violations: &[Violation], sources: Option<&Sources>) -> Option<Error> {
    let first = violations.first()?;
    let message = if violations.len() == 1 {
        first.message.clone()
    } else {
        let mut listed: Vec<String> = violations
            .iter()
            .take(MAX_LISTED)
            .map(|v| {
                let key = sources
                    .and_then(|s| source_of(&v.path, s))
                    .and_then(|s| s.origin.key())
                    .map_or(String::new(), |k| format!(" (key `{k}`)"));
                let at = if v.path.is_empty() { "(root)" } else { &v.path };
                format!("`{at}`{key}: {}", v.message)
            })
            .collect();
        if violations.len() > MAX_LISTED {
            listed.push(format!("and {} more", violations.len() - MAX_LISTED));
        }
        format!("{} problems: {}", violations.len(), listed.join("; "))
    };
    let error = Error::new(ErrorKind::Validation, message);
    Some(match sources {
        Some(sources) => locate(error, &first.path, sources),
        None => error.with_field(first.path.clone()),
    })
}

/// The layer entry that supplied `path` (or something below it).
fn source_of<'s>(path: &str, sources: &'s Sources) -> Option<&'s Source> {
    if path.is_empty() {
        None
    } else {
        sources.find_within(path)
    }
}

/// Adds the field path and, where the layers supplied that field, its layer and key.
fn locate(err: Error, path: &str, sources: &Sources) -> Error {
    let err = err.with_field(path);
    match source_of(path, sources) {
        Some(source) => err.with_origin(&source.origin),
        None => err,
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

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Vault {
        #[serde(default)]
        db: Option<Db>,
        #[serde(default)]
        #[schemars(length(max = 2))]
        tags: Vec<String>,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Db {
        #[schemars(range(min = 1024))]
        port: u16,
        password: String,
    }

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Item {
        #[schemars(range(max = 10))]
        weight: u8,
    }

    impl CoordConfig for Vault {
        const PREFIX: &'static str = "/t/vault";
        const SECRETS: &'static [&'static str] = &["db.password"];
        fn validate(&self) -> std::result::Result<(), String> {
            match &self.db {
                Some(db) if db.password == "letmein-now" => {
                    Err(format!("password {} is on the banned list", db.password))
                }
                _ => Ok(()),
            }
        }
    }

    fn vault(port: u16, password: &str) -> Vault {
        Vault {
            db: Some(Db {
                port,
                password: password.into(),
            }),
            tags: Vec::new(),
            items: Vec::new(),
        }
    }

    /// The error of checking `doc`, the same whether the schema is checked beside the
    /// deserialization (a big document) or after it.
    fn check(doc: Value) -> Error {
        let checker = Checker::<Vault>::new().unwrap();
        let after = checker.check(&doc, &Sources::default(), false).unwrap_err();
        let beside = checker.check(&doc, &Sources::default(), true).unwrap_err();
        assert_eq!(
            (beside.message(), beside.field(), beside.kind()),
            (after.message(), after.field(), after.kind())
        );
        after
    }

    #[test]
    fn an_option_of_a_struct_reports_the_failing_field_not_the_object() {
        let e = Checker::<Vault>::new()
            .unwrap()
            .check_value(&vault(80, "hunter2-secret"))
            .unwrap_err();
        assert_eq!(e.field(), Some("db.port"));
        assert_eq!(e.message(), "schema: 80 is less than the minimum of 1024");
    }

    #[test]
    fn errors_about_a_value_holding_a_secret_mask_it() {
        // The object holding the secret has the wrong shape as a whole (both `anyOf` branches
        // fail on type), so the schema error is about that object; serde reads the sequence
        // as the struct's fields by position.
        let e = check(serde_json::json!({"db": ["hunter2-secret", 1]}));
        let shown = format!("{e:#} {e:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("`db`: schema: *** is not valid under any"),
            "{shown}"
        );
        // The secret itself, with a serde error that quotes it.
        let e = check(serde_json::json!({"db": {"port": 2000, "password": 12345678}}));
        assert_eq!(e.field(), Some("db.password"));
        assert!(!e.message().contains("12345678"), "{e}");
        assert!(
            e.message()
                .starts_with("invalid type: integer ***, expected a string"),
            "{e}"
        );
    }

    #[test]
    fn a_validate_reason_quoting_a_secret_is_scrubbed() {
        let e = Checker::<Vault>::new()
            .unwrap()
            .check_value(&vault(2000, "letmein-now"))
            .unwrap_err();
        assert_eq!(
            e.message(),
            "rejected by validate(): password *** is on the banned list"
        );
    }

    #[test]
    fn every_violation_is_listed_up_to_the_cap() {
        let e =
            check(serde_json::json!({"tags": ["a", "b", "c"], "db": {"port": 1, "password": "x"}}));
        assert!(e.message().starts_with("2 problems: `"), "{e}");
        assert!(e.message().contains("`tags`: schema: "), "{e}");
        assert!(
            e.message().contains("`db.port`: schema: 1 is less than"),
            "{e}"
        );

        let items: Vec<Value> = (0..MAX_LISTED + 7)
            .map(|_| serde_json::json!({"weight": 50}))
            .collect();
        let e = check(serde_json::json!({ "items": items }));
        assert_eq!(e.field(), Some("items.0.weight"));
        let message = e.message();
        assert!(
            message.starts_with(&format!("{} problems: ", MAX_LISTED + 7)),
            "{message}"
        );
        assert_eq!(
            message.matches("greater than the maximum").count(),
            MAX_LISTED
        );
        assert!(message.ends_with("; and 7 more"), "{message}");
    }

    #[test]
    fn a_serde_error_is_not_repeated_by_the_schema_error_for_the_same_field() {
        // A missing field: serde says so at `db.port`, the schema at `db`; one violation.
        let e = check(serde_json::json!({"db": {"password": "x"}}));
        assert_eq!(e.field(), Some("db.port"));
        assert_eq!(e.message(), "missing field `port`");
        // A wrong type: both at `tags.0`.
        let e = check(serde_json::json!({"tags": [5]}));
        assert_eq!(e.field(), Some("tags.0"));
        assert!(e.message().starts_with("invalid type: integer `5`"), "{e}");
    }

    #[test]
    fn serde_messages_about_secrets_keep_what_was_expected() {
        let cases = [
            (
                r#"invalid type: string "s3cr, expected it", expected u32"#,
                "invalid type: string ***, expected u32",
            ),
            (
                "invalid value: integer `7`, expected a port",
                "invalid value: integer ***, expected a port",
            ),
            (
                "unknown variant `hunter2`, expected one of `a`, `b`",
                "unknown variant ***, expected one of `a`, `b`",
            ),
            ("missing field `password`", "missing field `password`"),
            (
                "something custom with hunter2",
                "invalid value for secret field `db.password` (value *** not shown)",
            ),
        ];
        for (message, masked) in cases {
            assert_eq!(mask_serde_message(message, "db.password"), masked);
        }
    }
}
