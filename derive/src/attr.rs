//! Parsing and checking `#[coord(...)]` on the container.

use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Expr, ExprPath, LitStr};

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

const KNOWN: &[&str] = &[PREFIX, FILE, ENV_PREFIX, VALIDATE, SECRETS];

/// The checked container attributes.
pub(crate) struct Container {
    pub(crate) prefix: LitStr,
    pub(crate) file: Option<LitStr>,
    pub(crate) env_prefix: Option<LitStr>,
    pub(crate) validate: Option<ExprPath>,
    /// Dotted paths of secret fields, from `secrets = "…"` and field-level `#[coord(secret)]`.
    pub(crate) secrets: Vec<String>,
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

/// Reads `#[coord(...)]`, rejecting non-structs, unknown and repeated keys, bad values and a
/// missing `prefix`.
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

    let mut prefix: Option<LitStr> = None;
    let mut file: Option<LitStr> = None;
    let mut env_prefix: Option<LitStr> = None;
    let mut validate: Option<ExprPath> = None;
    let mut secrets_attr: Option<LitStr> = None;
    let mut first_attr: Option<&Attribute> = None;

    for attr in input.attrs.iter().filter(|a| a.path().is_ident(COORD)) {
        first_attr.get_or_insert(attr);
        parse_one(
            attr,
            &mut errors,
            &mut prefix,
            &mut file,
            &mut env_prefix,
            &mut validate,
            &mut secrets_attr,
        );
    }
    let mut secrets: Vec<String> = match &secrets_attr {
        Some(list) => {
            let paths: Vec<String> = list
                .value()
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            if paths.iter().any(|p| p.split('.').any(str::is_empty)) {
                errors.push(syn::Error::new(
                    list.span(),
                    "`secrets` takes dotted field paths separated by commas, e.g. \"database.password, api.token\"",
                ));
            }
            paths
        }
        None => Vec::new(),
    };
    if let Data::Struct(data) = &input.data {
        for field in &data.fields {
            if field_is_secret(field, &mut errors) {
                match field_name(field) {
                    Some(name) => secrets.push(name),
                    None => errors.push(syn::Error::new_spanned(
                        field,
                        "#[coord(secret)] needs a named field",
                    )),
                }
            }
        }
    }

    if let Some(p) = &prefix {
        let value = p.value();
        if !value.starts_with('/') || value.len() < 2 || value.ends_with('/') {
            errors.push(syn::Error::new(
                p.span(),
                "`prefix` must start with `/`, name at least one segment and not end with `/`, e.g. \"/apps/chat/config\"",
            ));
        }
    }
    if let Some(e) = &env_prefix {
        if e.value().is_empty() {
            errors.push(syn::Error::new(e.span(), "`env_prefix` must not be empty"));
        }
    }
    if prefix.is_none() {
        let message = "missing `prefix`: add #[coord(prefix = \"/apps/<name>/config\")] to bind this struct to an etcd key prefix";
        errors.push(match first_attr {
            Some(attr) => syn::Error::new_spanned(attr, message),
            None => syn::Error::new(input.ident.span(), message),
        });
    }
    errors.finish()?;
    Ok(Container {
        prefix: prefix.expect("checked above"),
        file,
        env_prefix,
        validate,
        secrets,
    })
}

/// Whether the field carries `#[coord(secret)]`; other keys on a field are errors.
fn field_is_secret(field: &syn::Field, errors: &mut Errors) -> bool {
    let mut secret = false;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident(COORD)) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(SECRET) {
                if secret {
                    errors.push(meta.error("duplicate `secret` in #[coord(...)]: give it once"));
                }
                secret = true;
                Ok(())
            } else {
                Err(meta.error("unknown #[coord] field attribute; expected: secret"))
            }
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    secret
}

/// The field's name as serde sees it: `#[serde(rename = "…")]` if given, else the identifier.
fn field_name(field: &syn::Field) -> Option<String> {
    let ident = field.ident.as_ref()?;
    let mut name = ident.to_string().trim_start_matches("r#").to_string();
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") && meta.input.peek(syn::Token![=]) {
                let lit: LitStr = meta.value()?.parse()?;
                name = lit.value();
            } else if meta.input.peek(syn::Token![=]) {
                let _: Expr = meta.value()?.parse()?;
            } else if meta.input.peek(syn::token::Paren) {
                let _content;
                syn::parenthesized!(_content in meta.input);
            }
            Ok(())
        });
    }
    Some(name)
}

fn parse_one(
    attr: &Attribute,
    errors: &mut Errors,
    prefix: &mut Option<LitStr>,
    file: &mut Option<LitStr>,
    env_prefix: &mut Option<LitStr>,
    validate: &mut Option<ExprPath>,
    secrets: &mut Option<LitStr>,
) {
    let result = attr.parse_nested_meta(|meta| {
        let Some(ident) = meta.path.get_ident().map(ToString::to_string) else {
            return Err(meta.error(unknown_message("this")));
        };
        let slot_is_set = match ident.as_str() {
            PREFIX => prefix.is_some(),
            FILE => file.is_some(),
            ENV_PREFIX => env_prefix.is_some(),
            VALIDATE => validate.is_some(),
            SECRETS => secrets.is_some(),
            other => {
                // Skip the value so parsing can go on to the next key.
                if meta.input.peek(syn::Token![=]) {
                    let _: Expr = meta.value()?.parse()?;
                }
                errors.push(meta.error(unknown_message(other)));
                return Ok(());
            }
        };
        let lit: LitStr = meta.value()?.parse()?;
        if slot_is_set {
            errors.push(syn::Error::new(
                meta.path.span(),
                format!("duplicate `{ident}` in #[coord(...)]: give it once"),
            ));
            return Ok(());
        }
        match ident.as_str() {
            PREFIX => *prefix = Some(lit),
            FILE => *file = Some(lit),
            ENV_PREFIX => *env_prefix = Some(lit),
            SECRETS => *secrets = Some(lit),
            _ => match lit.parse::<ExprPath>() {
                Ok(path) => *validate = Some(path),
                Err(_) => errors.push(syn::Error::new(
                    lit.span(),
                    "`validate` takes the path of a function, e.g. validate = \"Self::check\"",
                )),
            },
        }
        Ok(())
    });
    if let Err(e) = result {
        errors.push(e);
    }
}

fn unknown_message(name: &str) -> String {
    format!(
        "unknown #[coord] attribute `{name}`; expected one of: {}",
        KNOWN.join(", ")
    )
}
