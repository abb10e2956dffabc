//! `#[derive(CoordConfig)]` for the `coordination` crate. Use it through
//! `coordination::CoordConfig`; this crate is an implementation detail, pinned with `=`.
//!
//! Stages: [`attr`] parses and checks `#[coord(...)]` (collecting every error, each spanned at
//! the offending token), with [`serde_attr`] and [`case`] supplying the serde names of the
//! fields (`rename`, `rename_all`); [`expand`] writes the impl. On error the compile errors are
//! emitted together with a placeholder impl, so the user sees only the real mistakes, not a
//! cascade of "trait not implemented" errors.

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

mod attr;
mod case;
mod expand;
mod serde_attr;

/// Implements `coordination::CoordConfig` from `#[coord(...)]` attributes.
///
/// On the struct:
///
/// | attribute | required | meaning |
/// |---|---|---|
/// | `prefix = "/apps/chat/config"` | yes | the etcd key prefix (starts with `/`, no trailing `/`) |
/// | `file = "config/chat.yaml"` | no | the local file layer (YAML, or JSON for `.json`) |
/// | `env_prefix = "CHAT_"` | no | the environment layer's variable prefix (not empty) |
/// | `validate = "path::to::fn"` | no | `fn(&Self) -> Result<(), E: Display>`, run on every candidate |
/// | `secrets = "database.password, api.token"` | no | dotted paths of secret fields, also in nested types; each must start with a field of the struct |
///
/// On a field:
///
/// | attribute | meaning |
/// |---|---|
/// | `secret` | the field is secret (takes no value) |
///
/// A secret field's value, and everything below it, is shown as `***` in error messages, logs,
/// diffs and history listings, and left out of the last-known-good cache. Paths use the names
/// serde gives the fields: a field's `#[serde(rename = "…")]` and the struct's
/// `#[serde(rename_all = "…")]` (every serde case; with `rename_all(serialize = …,
/// deserialize = …)` the `deserialize` side, as the document is what gets deserialized) are
/// honoured. `#[coord(secret)]` cannot mark a `#[serde(flatten)]` field; list the flattened
/// fields in `secrets` instead.
///
/// Every mistake is a compile error spanned at the offending attribute, and all of them are
/// reported at once: a missing `prefix`, an unknown or repeated key, a value that is not a
/// string, `secret` given a value or used on the struct, a malformed `secrets` list, use on an
/// enum or union.
///
/// The `coordination` crate's `CoordConfig` trait documentation has a full example.
#[proc_macro_derive(CoordConfig, attributes(coord))]
pub fn derive_coord_config(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}

/// Implements `coordination::Rebuild` for a struct nested in a config type, so that a reload
/// which changed one of its fields deserializes only that field and clones the others.
///
/// The struct must also derive `Deserialize`. A struct whose document is not read field by
/// field (generic, tuple, `#[serde(transparent, from, try_from, untagged, tag)]`, or with a
/// field marked `flatten`, `skip`, `skip_deserializing`, `deserialize_with`, `with`, `alias`)
/// gets an impl that deserializes it in full, which is always correct.
#[proc_macro_derive(Rebuild)]
pub fn derive_rebuild(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive_rebuild(&input).into()
}
