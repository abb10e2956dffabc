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

const KNOWN: &[&str] = &[PREFIX, FILE, ENV_PREFIX, VALIDATE];

/// The checked container attributes.
pub(crate) struct Container {
    pub(crate) prefix: LitStr,
    pub(crate) file: Option<LitStr>,
    pub(crate) env_prefix: Option<LitStr>,
    pub(crate) validate: Option<ExprPath>,
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
        );
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
    })
}

fn parse_one(
    attr: &Attribute,
    errors: &mut Errors,
    prefix: &mut Option<LitStr>,
    file: &mut Option<LitStr>,
    env_prefix: &mut Option<LitStr>,
    validate: &mut Option<ExprPath>,
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
