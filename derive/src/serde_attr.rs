//! The parts of `#[serde(...)]` that decide a field's name in the document: the container's
//! `rename_all` and a field's `rename` (the `deserialize` side where the two sides differ, as
//! the document is what gets deserialized) and `flatten`.
//!
//! Malformed serde attributes are left for serde_derive to report; this only reads what it
//! understands.

use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, ExprLit, Lit, LitStr};

use crate::case::RenameRule;

const SERDE: &str = "serde";
const RENAME: &str = "rename";
const RENAME_ALL: &str = "rename_all";
const FLATTEN: &str = "flatten";
const DESERIALIZE: &str = "deserialize";

/// The container's `rename_all` rule for deserializing, if any.
pub(crate) fn rename_all(attrs: &[Attribute]) -> Option<RenameRule> {
    let mut rule = None;
    for_each_meta(attrs, |meta| {
        if meta.path.is_ident(RENAME_ALL) {
            if let Some(name) = deserialize_side(meta)? {
                rule = RenameRule::from_name(&name.value()).or(rule);
            }
        } else {
            skip(meta)?;
        }
        Ok(())
    });
    rule
}

/// What serde says about one field.
pub(crate) struct FieldSerde {
    /// `rename = "…"` (or `rename(deserialize = "…")`).
    pub(crate) rename: Option<String>,
    /// `flatten`: the field's own fields sit at the struct's level.
    pub(crate) flatten: bool,
}

/// Reads a field's `#[serde(...)]`.
pub(crate) fn field(attrs: &[Attribute]) -> FieldSerde {
    let mut out = FieldSerde {
        rename: None,
        flatten: false,
    };
    for_each_meta(attrs, |meta| {
        if meta.path.is_ident(RENAME) {
            if let Some(name) = deserialize_side(meta)? {
                out.rename = Some(name.value());
            }
        } else if meta.path.is_ident(FLATTEN) {
            out.flatten = true;
            skip(meta)?;
        } else {
            skip(meta)?;
        }
        Ok(())
    });
    out
}

/// The name a field has in the document: its `rename`, else its identifier under the
/// container's `rename_all`. `None` for a tuple field.
pub(crate) fn field_name(field: &syn::Field, rule: Option<RenameRule>) -> Option<String> {
    let ident = field.ident.as_ref()?;
    if let Some(rename) = self::field(&field.attrs).rename {
        return Some(rename);
    }
    let name = ident.to_string();
    let name = name.trim_start_matches("r#");
    Some(match rule {
        Some(rule) => rule.apply_to_field(name),
        None => name.to_string(),
    })
}

/// The names of the items of every `#[serde(...)]` attribute (`default`, `rename`, `with`, …).
pub(crate) fn item_names(attrs: &[Attribute]) -> Vec<String> {
    let mut out = Vec::new();
    for_each_meta(attrs, |meta| {
        if let Some(ident) = meta.path.get_ident() {
            out.push(ident.to_string());
        }
        skip(meta)
    });
    out
}

/// Container items after which a struct's document is not read field by field, each with
/// `Deserialize` for the field's type: such a struct is always deserialized in full.
pub(crate) const CONTAINER_NOT_BY_FIELD: &[&str] = &[
    "transparent",
    "from",
    "try_from",
    "remote",
    "untagged",
    "tag",
    "content",
    "variant_identifier",
    "field_identifier",
];

/// Field items after which a field is not simply `Deserialize` of its type at its name.
pub(crate) const FIELD_NOT_BY_NAME: &[&str] = &[
    "flatten",
    "skip",
    "skip_deserializing",
    "deserialize_with",
    "with",
    "alias",
    "borrow",
];

/// Runs `f` on every item of every `#[serde(...)]` attribute, ignoring what does not parse.
fn for_each_meta(attrs: &[Attribute], mut f: impl FnMut(&ParseNestedMeta<'_>) -> syn::Result<()>) {
    for attr in attrs.iter().filter(|a| a.path().is_ident(SERDE)) {
        let _ = attr.parse_nested_meta(|meta| f(&meta));
    }
}

/// `key = "x"` gives `x`; `key(serialize = "a", deserialize = "b")` gives `b` (or `None`
/// without a `deserialize` side).
fn deserialize_side(meta: &ParseNestedMeta<'_>) -> syn::Result<Option<LitStr>> {
    if meta.input.peek(syn::Token![=]) {
        return Ok(string(meta.value()?.parse()?));
    }
    let mut found = None;
    if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| {
            if inner.path.is_ident(DESERIALIZE) && inner.input.peek(syn::Token![=]) {
                found = string(inner.value()?.parse()?);
            } else {
                skip(&inner)?;
            }
            Ok(())
        })?;
    }
    Ok(found)
}

/// The string literal `expr` is, seeing through the invisible groups a `macro_rules!`
/// fragment (`$name:literal`) is wrapped in.
pub(crate) fn string(expr: Expr) -> Option<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s),
        Expr::Group(group) => string(*group.expr),
        _ => None,
    }
}

/// Consumes the value of an item this module does not care about: `= expr` or `(...)`.
pub(crate) fn skip(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: proc_macro2::TokenStream = content.parse()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    fn names(input: syn::DeriveInput) -> Vec<String> {
        let rule = rename_all(&input.attrs);
        let syn::Data::Struct(data) = input.data else {
            panic!("a struct")
        };
        data.fields
            .iter()
            .map(|f| field_name(f, rule).unwrap())
            .collect()
    }

    #[test]
    fn field_names_follow_rename_all_and_rename() {
        let input: syn::DeriveInput = parse_quote! {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields, rename_all = "camelCase")]
            struct A {
                api_token: String,
                #[serde(default, rename = "DB")]
                database_url: String,
                #[serde(rename(serialize = "out", deserialize = "in_name"))]
                two_sided: u8,
                r#type: u8,
            }
        };
        assert_eq!(names(input), ["apiToken", "DB", "in_name", "type"]);
    }

    #[test]
    fn rename_all_uses_the_deserialize_side() {
        let input: syn::DeriveInput = parse_quote! {
            #[serde(rename_all(serialize = "UPPERCASE", deserialize = "kebab-case"))]
            struct A { api_token: String }
        };
        assert_eq!(names(input), ["api-token"]);
        let input: syn::DeriveInput = parse_quote! {
            #[serde(rename_all(serialize = "UPPERCASE"))]
            struct A { api_token: String }
        };
        assert_eq!(names(input), ["api_token"]);
    }

    #[test]
    fn flatten_is_seen_among_other_items() {
        let input: syn::DeriveInput = parse_quote! {
            struct A {
                #[serde(default, with = "x", flatten)]
                inner: Inner,
                #[serde(default)]
                plain: u8,
            }
        };
        let syn::Data::Struct(data) = input.data else {
            panic!("a struct")
        };
        let flags: Vec<bool> = data
            .fields
            .iter()
            .map(|f| field(&f.attrs).flatten)
            .collect();
        assert_eq!(flags, [true, false]);
    }
}
