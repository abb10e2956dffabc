//! Parsing and checking `#[coord(...)]` on the container and its fields.
//!
//! Every mistake is collected (as serde_derive's `Ctxt` does) and spanned at the offending
//! attribute, so one compile shows all of them.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Data, DeriveInput, Expr, ExprPath, LitStr};

use crate::serde_attr;

/// The attribute's name.
pub(crate) const COORD: &str = "coord";
/// `prefix = "/apps/chat/config"` (required).
pub(crate) const PREFIX: &str = "prefix";
/// `file = "config/chat.yaml"`.
pub(crate) const FILE: &str = "file";
/// `env_prefix = "CHAT_"`.
pub(crate) const ENV_PREFIX: &str = "env_prefix";
/// `validate = "path::to::fn"`.
pub(crate) const VALIDATE: &str = "validate";
/// `secrets = "database.password, api.token"` on the struct.
pub(crate) const SECRETS: &str = "secrets";
/// `#[coord(secret)]` on a field.
pub(crate) const SECRET: &str = "secret";
/// `#[coord(full_reload)]` on the struct: every reload deserializes the whole value.
pub(crate) const FULL_RELOAD: &str = "full_reload";

/// The keys `#[coord(...)]` takes on the struct.
const KNOWN: &[&str] = &[PREFIX, FILE, ENV_PREFIX, VALIDATE, SECRETS, FULL_RELOAD];
/// The keys `#[coord(...)]` takes on a field.
const KNOWN_ON_FIELD: &[&str] = &[SECRET];

/// The checked container attributes.
pub(crate) struct Container {
    pub(crate) prefix: LitStr,
    pub(crate) file: Option<LitStr>,
    pub(crate) env_prefix: Option<LitStr>,
    pub(crate) validate: Option<ExprPath>,
    /// Dotted paths of secret fields (serde names), from `secrets = "…"` and field-level
    /// `#[coord(secret)]`, without repeats.
    pub(crate) secrets: Vec<String>,
    /// `#[coord(full_reload)]`: no incremental rebuild.
    pub(crate) full_reload: bool,
}

/// Collects every error instead of stopping at the first (as serde_derive's `Ctxt` does).
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }
}

/// One string-valued container key: refuses a second value.
struct Slot<T> {
    name: &'static str,
    value: Option<T>,
    /// The key was given, even if its value was refused.
    seen: bool,
}

impl<T> Slot<T> {
    fn new(name: &'static str) -> Self {
        Slot {
            name,
            value: None,
            seen: false,
        }
    }

    fn set(&mut self, span: Span, value: T, errors: &mut Errors) {
        if self.value.is_some() {
            errors.push(syn::Error::new(
                span,
                format!("duplicate `{}` in #[coord(...)]: give it once", self.name),
            ));
        } else {
            self.value = Some(value);
        }
    }
}

/// The container's keys while parsing.
struct Slots {
    prefix: Slot<LitStr>,
    file: Slot<LitStr>,
    env_prefix: Slot<LitStr>,
    validate: Slot<LitStr>,
    secrets: Slot<LitStr>,
    full_reload: Option<Span>,
}

/// Reads `#[coord(...)]` on the struct and its fields, rejecting non-structs, unknown and
/// repeated keys, bad values, malformed `secrets` and a missing `prefix`.
pub(crate) fn parse(input: &DeriveInput) -> Result<Container, syn::Error> {
    let mut errors = Errors::default();
    match &input.data {
        Data::Struct(_) => {}
        Data::Enum(e) => errors.push(syn::Error::new(
            e.enum_token.span,
            "#[derive(CoordConfig)] works on structs only: a config prefix maps to the fields of a struct",
        )),
        Data::Union(u) => errors.push(syn::Error::new(
            u.union_token.span,
            "#[derive(CoordConfig)] works on structs only: a config prefix maps to the fields of a struct",
        )),
    }

    let mut slots = Slots {
        prefix: Slot::new(PREFIX),
        file: Slot::new(FILE),
        env_prefix: Slot::new(ENV_PREFIX),
        validate: Slot::new(VALIDATE),
        secrets: Slot::new(SECRETS),
        full_reload: None,
    };
    let mut first_attr: Option<&Attribute> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident(COORD)) {
        first_attr.get_or_insert(attr);
        parse_container_attr(attr, &mut slots, &mut errors);
    }

    let rule = serde_attr::rename_all(&input.attrs);
    // The struct-level list first, then the marked fields in declaration order.
    let mut marked = Vec::new();
    // The serde names of the fields, where they are all known (no tuple or flattened fields).
    let mut names = Some(Vec::new());
    if let Data::Struct(data) = &input.data {
        for field in &data.fields {
            let serde = serde_attr::field(&field.attrs);
            let name = serde_attr::field_name(field, rule);
            match (&name, serde.flatten, names.as_mut()) {
                (Some(n), false, Some(all)) => all.push(n.clone()),
                _ => names = None,
            }
            let Some(span) = field_secret(field, &mut errors) else {
                continue;
            };
            match name {
                _ if serde.flatten => errors.push(syn::Error::new(
                    span,
                    "#[coord(secret)] cannot mark a #[serde(flatten)] field: its fields sit at the struct's level; list them in #[coord(secrets = \"…\")] on the struct",
                )),
                Some(name) => marked.push(name),
                None => errors.push(syn::Error::new(
                    span,
                    "#[coord(secret)] needs a named field",
                )),
            }
        }
    }
    let listed = match &slots.secrets.value {
        Some(list) => secret_paths(list, names.as_deref(), &input.ident, &mut errors),
        None => Vec::new(),
    };
    let mut unique = Vec::with_capacity(listed.len() + marked.len());
    for s in listed.into_iter().chain(marked) {
        if !unique.contains(&s) {
            unique.push(s);
        }
    }

    if let Some(p) = &slots.prefix.value {
        let value = p.value();
        if !value.starts_with('/') || value.len() < 2 || value.ends_with('/') {
            errors.push(syn::Error::new(
                p.span(),
                "`prefix` must start with `/`, name at least one segment and not end with `/`, e.g. \"/apps/chat/config\"",
            ));
        }
    }
    if let Some(e) = &slots.env_prefix.value {
        if e.value().is_empty() {
            errors.push(syn::Error::new(e.span(), "`env_prefix` must not be empty"));
        }
    }
    let validate = slots
        .validate
        .value
        .as_ref()
        .and_then(|lit| match lit.parse::<ExprPath>() {
            Ok(path) => Some(path),
            Err(_) => {
                errors.push(syn::Error::new(
                    lit.span(),
                    "`validate` takes the path of a function, e.g. validate = \"Self::check\"",
                ));
                None
            }
        });
    if !slots.prefix.seen {
        let message = "missing `prefix`: add #[coord(prefix = \"/apps/<name>/config\")] to bind this struct to an etcd key prefix";
        errors.push(match first_attr {
            Some(attr) => syn::Error::new_spanned(attr, message),
            None => syn::Error::new(input.ident.span(), message),
        });
    }
    errors.finish()?;
    Ok(Container {
        prefix: slots.prefix.value.expect("a refused prefix is an error"),
        file: slots.file.value,
        env_prefix: slots.env_prefix.value,
        validate,
        secrets: unique,
        full_reload: slots.full_reload.is_some(),
    })
}

/// Reads one `#[coord(...)]` on the struct. A bad key or value is recorded and parsing goes
/// on with the next key.
fn parse_container_attr(attr: &Attribute, slots: &mut Slots, errors: &mut Errors) {
    let result = attr.parse_nested_meta(|meta| {
        let name = path_name(&meta);
        let slot = match name.as_str() {
            PREFIX => &mut slots.prefix,
            FILE => &mut slots.file,
            ENV_PREFIX => &mut slots.env_prefix,
            VALIDATE => &mut slots.validate,
            SECRETS => &mut slots.secrets,
            FULL_RELOAD => {
                let span = meta.path.segments[0].ident.span();
                if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                    errors.push(meta.error("`full_reload` takes no value: #[coord(full_reload)]"));
                    serde_attr::skip(&meta)?;
                } else if slots.full_reload.is_some() {
                    errors.push(syn::Error::new(
                        span,
                        "duplicate `full_reload` in #[coord(...)]: give it once",
                    ));
                } else {
                    slots.full_reload = Some(span);
                }
                return Ok(());
            }
            SECRET => {
                errors.push(meta.error(
                    "`secret` goes on a field (#[coord(secret)] above it); on the struct, list dotted paths with secrets = \"a.b, c.d\"",
                ));
                return serde_attr::skip(&meta);
            }
            other => {
                errors.push(meta.error(format!(
                    "unknown #[coord] attribute `{other}`; expected one of: {}",
                    KNOWN.join(", ")
                )));
                return serde_attr::skip(&meta);
            }
        };
        slot.seen = true;
        if !meta.input.peek(syn::Token![=]) {
            errors.push(meta.error(format!(
                "`{name}` takes a string: {name} = \"…\""
            )));
            return serde_attr::skip(&meta);
        }
        let span = meta.path.segments[0].ident.span();
        let value: Expr = meta.value()?.parse()?;
        match serde_attr::string(value.clone()) {
            Some(lit) => slot.set(span, lit, errors),
            None => errors.push(syn::Error::new_spanned(
                value,
                format!("`{name}` takes a string literal: {name} = \"…\""),
            )),
        }
        Ok(())
    });
    if let Err(e) = result {
        errors.push(e);
    }
}

/// Where the field carries `#[coord(secret)]`, the span of (the first) `secret`. Other keys, a
/// value after `secret` and a repeated `secret` are errors.
fn field_secret(field: &syn::Field, errors: &mut Errors) -> Option<Span> {
    let mut secret: Option<Span> = None;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident(COORD)) {
        let result = attr.parse_nested_meta(|meta| {
            let name = path_name(&meta);
            if name != SECRET {
                let hint = if KNOWN.contains(&name.as_str()) {
                    format!(" (`{name}` goes on the struct)")
                } else {
                    String::new()
                };
                errors.push(meta.error(format!(
                    "unknown #[coord] field attribute `{name}`{hint}; expected: {}",
                    KNOWN_ON_FIELD.join(", ")
                )));
                return serde_attr::skip(&meta);
            }
            if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
                errors.push(meta.error("`secret` takes no value: write #[coord(secret)]"));
                serde_attr::skip(&meta)?;
            }
            if secret.is_some() {
                errors.push(meta.error("duplicate `secret` in #[coord(...)]: give it once"));
            } else {
                secret = Some(meta.path.segments[0].ident.span());
            }
            Ok(())
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    secret
}

/// The dotted paths listed by `secrets = "a.b, c.d"`. Each must be non-empty, made of
/// non-empty segments without spaces, and (where the struct's serde field names are all known)
/// start with one of them.
fn secret_paths(
    list: &LitStr,
    fields: Option<&[String]>,
    ident: &syn::Ident,
    errors: &mut Errors,
) -> Vec<String> {
    let text = list.value();
    let mut items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.len() > 1 && items.last() == Some(&"") {
        items.pop(); // a trailing comma
    }
    if items.iter().all(|p| p.is_empty()) {
        errors.push(syn::Error::new(
            list.span(),
            "`secrets` names no field: list dotted field paths separated by commas, e.g. \"database.password, api.token\"",
        ));
        return Vec::new();
    }
    let mut paths = Vec::new();
    for item in items {
        let well_formed = !item.is_empty()
            && item.split('.').all(|segment| {
                !segment.is_empty()
                    && !segment
                        .chars()
                        .any(|c| c.is_whitespace() || c == '"' || c == '\'')
            });
        if !well_formed {
            errors.push(syn::Error::new(
                list.span(),
                format!(
                    "`secrets`: `{item}` is not a dotted field path; list paths separated by commas, e.g. \"database.password, api.token\""
                ),
            ));
            continue;
        }
        let first = item.split('.').next().unwrap_or_default();
        if let Some(fields) = fields {
            if !fields.iter().any(|f| f == first) {
                errors.push(syn::Error::new(
                    list.span(),
                    format!(
                        "`secrets`: `{item}` names no field of `{ident}` (its fields, as serde names them: {})",
                        fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                    ),
                ));
                continue;
            }
        }
        paths.push(item.to_string());
    }
    paths
}

/// The key's name as written (`a::b` for a path), for messages.
fn path_name(meta: &ParseNestedMeta<'_>) -> String {
    meta.path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    fn messages(input: DeriveInput) -> Vec<String> {
        match parse(&input) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn secret_fields_use_serde_names() {
        let input: DeriveInput = parse_quote! {
            #[coord(prefix = "/apps/a", secrets = "db.password, apiToken")]
            #[serde(rename_all = "camelCase")]
            struct A {
                #[coord(secret)]
                api_token: String,
                #[coord(secret)]
                #[serde(rename = "Key")]
                signing_key: String,
                db: Db,
            }
        };
        let c = parse(&input).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.secrets, ["db.password", "apiToken", "Key"]);
    }

    #[test]
    fn every_mistake_is_reported() {
        let input: DeriveInput = parse_quote! {
            #[coord(prefix = 5, bogus = "x", secret, file)]
            #[coord(secrets = "a..b, nothere, , c")]
            struct A {
                #[coord(secret = true, hidden)]
                #[coord(secret)]
                a: String,
                c: u8,
            }
        };
        let all = messages(input);
        for expected in [
            "`prefix` takes a string literal",
            "unknown #[coord] attribute `bogus`",
            "`secret` goes on a field",
            "`file` takes a string",
            "`a..b` is not a dotted field path",
            "`` is not a dotted field path",
            "`nothere` names no field of `A`",
            "`secret` takes no value",
            "unknown #[coord] field attribute `hidden`",
            "duplicate `secret`",
        ] {
            assert!(
                all.iter().any(|m| m.contains(expected)),
                "no `{expected}` in {all:#?}"
            );
        }
        // A refused `prefix` is not also reported as missing.
        assert_eq!(all.len(), 10, "{all:#?}");
    }

    #[test]
    fn values_from_macro_fragments_are_seen_through_their_group() {
        let lit: syn::Expr = syn::Expr::Group(syn::ExprGroup {
            attrs: Vec::new(),
            group_token: Default::default(),
            expr: Box::new(parse_quote!("camelCase")),
        });
        assert_eq!(
            serde_attr::string(lit).map(|l| l.value()).as_deref(),
            Some("camelCase")
        );
    }

    #[test]
    fn a_flattened_struct_disables_the_field_name_check() {
        let input: DeriveInput = parse_quote! {
            #[coord(prefix = "/apps/a", secrets = "inner_field")]
            struct A {
                #[serde(flatten)]
                inner: Inner,
            }
        };
        assert_eq!(
            parse(&input).ok().map(|c| c.secrets),
            Some(vec!["inner_field".to_string()])
        );
    }
}
