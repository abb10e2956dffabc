//! Writing the `CoordConfig` impl.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, LitStr};

use crate::attr::{self, Container};
use crate::serde_attr;

/// The impl, or the errors plus a placeholder impl (so that uses of the type elsewhere do not
/// add "trait not implemented" errors on top of the real one).
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    match attr::parse(input) {
        Ok(container) => implement(input, &container),
        Err(errors) => {
            let compile_errors = errors.to_compile_error();
            // An enum or union gets no placeholder: its one error already says why.
            let placeholder = matches!(input.data, syn::Data::Struct(_)).then(|| {
                let container = Container {
                    prefix: LitStr::new("/placeholder", proc_macro2::Span::call_site()),
                    file: None,
                    env_prefix: None,
                    validate: None,
                    secrets: Vec::new(),
                    full_reload: true,
                };
                implement(input, &container)
            });
            quote! { #compile_errors #placeholder }
        }
    }
}

fn implement(input: &DeriveInput, c: &Container) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    // A generic struct is a config only where its parameters make it one; say so on the impl
    // rather than demanding bounds on the struct.
    let mut where_clause = where_clause.cloned();
    if !input.generics.params.is_empty() {
        where_clause
            .get_or_insert_with(|| syn::parse_quote!(where))
            .predicates
            .push(syn::parse_quote!(
                Self: ::coordination::__private::Serialize
                    + ::coordination::__private::DeserializeOwned
                    + ::coordination::__private::JsonSchema
                    + ::core::marker::Send
                    + ::core::marker::Sync
                    + 'static
            ));
    }
    let prefix = &c.prefix;
    let file = option(c.file.as_ref());
    let env_prefix = option(c.env_prefix.as_ref());
    let secrets = &c.secrets;
    let validate = c.validate.as_ref().map(|path| {
        quote! {
            fn validate(&self) -> ::coordination::__private::Result<(), ::coordination::__private::String> {
                #path(self).map_err(|e| ::coordination::__private::ToString::to_string(&e))
            }
        }
    });
    let rebuild = (!c.full_reload).then(|| rebuild_body(input)).flatten();
    let incremental = rebuild.as_ref().map(|_| {
        quote! {
            fn incremental(
                previous: &Self,
                doc: &::coordination::__private::Value,
                changed: &::coordination::__private::ChangedPaths<'_>,
            ) -> ::core::option::Option<::coordination::__private::Result<Self, ::coordination::__private::JsonError>> {
                ::core::option::Option::Some(<Self as ::coordination::__private::Rebuild>::rebuild(previous, doc, changed))
            }
        }
    });
    let rebuild_impl = rebuild.map(|body| rebuild_impl(input, body));
    quote! {
        impl #impl_generics ::coordination::__private::CoordConfig for #ident #ty_generics #where_clause {
            const PREFIX: &'static str = #prefix;
            const FILE: ::core::option::Option<&'static str> = #file;
            const ENV_PREFIX: ::core::option::Option<&'static str> = #env_prefix;
            const SECRETS: &'static [&'static str] = &[#(#secrets),*];
            const APP: ::core::option::Option<(&'static str, &'static str)> =
                match (::core::option_env!("CARGO_PKG_NAME"), ::core::option_env!("CARGO_PKG_VERSION")) {
                    (::core::option::Option::Some(name), ::core::option::Option::Some(version)) => {
                        ::core::option::Option::Some((name, version))
                    }
                    _ => ::core::option::Option::None,
                };
            #validate
            #incremental
        }
        #rebuild_impl
    }
}

/// `#[derive(Rebuild)]`: field-by-field where the struct allows it, a full deserialization
/// otherwise.
pub(crate) fn derive_rebuild(input: &DeriveInput) -> TokenStream {
    if !matches!(input.data, syn::Data::Struct(_)) {
        return syn::Error::new_spanned(
            &input.ident,
            "#[derive(Rebuild)] works on structs only; other types rebuild by deserializing in full",
        )
        .to_compile_error();
    }
    let body = rebuild_body(input).unwrap_or_else(|| {
        quote! { <Self as ::coordination::__private::Deserialize>::deserialize(doc) }
    });
    rebuild_impl(input, body)
}

fn rebuild_impl(input: &DeriveInput, body: TokenStream) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        impl #impl_generics ::coordination::__private::Rebuild for #ident #ty_generics #where_clause {
            fn rebuild(
                previous: &Self,
                doc: &::coordination::__private::Value,
                changed: &::coordination::__private::ChangedPaths<'_>,
            ) -> ::coordination::__private::Result<Self, ::coordination::__private::JsonError> {
                #body
            }
        }
    }
}

/// The body of `Rebuild::rebuild` for a struct whose document is read field by field with each
/// field's own `Deserialize` (named fields, no generics, no serde item that changes how a field
/// is read); `None` for any other struct, which is then always deserialized in full.
fn rebuild_body(input: &DeriveInput) -> Option<TokenStream> {
    let syn::Data::Struct(data) = &input.data else {
        return None;
    };
    if !input.generics.params.is_empty() {
        return None;
    }
    let syn::Fields::Named(named) = &data.fields else {
        return None;
    };
    let container = serde_attr::item_names(&input.attrs);
    if container
        .iter()
        .any(|i| serde_attr::CONTAINER_NOT_BY_FIELD.contains(&i.as_str()))
    {
        return None;
    }
    let deny_unknown = container.iter().any(|i| i == "deny_unknown_fields");
    let rule = serde_attr::rename_all(&input.attrs);
    let mut names = Vec::new();
    let mut fields = Vec::new();
    for field in &named.named {
        let items = serde_attr::item_names(&field.attrs);
        if items
            .iter()
            .any(|i| serde_attr::FIELD_NOT_BY_NAME.contains(&i.as_str()))
        {
            return None;
        }
        let name = serde_attr::field_name(field, rule)?;
        let member = field.ident.as_ref()?;
        let ty = &field.ty;
        fields.push(quote! {
            #member: if changed.touches(#name) {
                match object.get(#name) {
                    ::core::option::Option::Some(value) => (&&::coordination::__private::Probe::<#ty>::new())
                        .rebuild_field(&previous.#member, value, &changed.below(#name))?,
                    ::core::option::Option::None => return <Self as ::coordination::__private::Deserialize>::deserialize(doc),
                }
            } else {
                (&&::coordination::__private::Probe::<#ty>::new()).keep_field(&previous.#member, object.get(#name))?
            }
        });
        names.push(name);
    }
    let unknown = deny_unknown.then(|| {
        quote! {
            if changed.fields().iter().any(|f| ![#(#names),*].contains(f)) {
                return <Self as ::coordination::__private::Deserialize>::deserialize(doc);
            }
        }
    });
    Some(quote! {
        #[allow(unused_imports)]
        use ::coordination::__private::{KeepClone as _, KeepDeserialize as _, ViaDeserialize as _, ViaRebuild as _};
        let object = match doc {
            ::coordination::__private::Value::Object(object) if !changed.is_whole() => object,
            _ => return <Self as ::coordination::__private::Deserialize>::deserialize(doc),
        };
        #unknown
        ::coordination::__private::Result::Ok(Self { #(#fields),* })
    })
}

fn option(lit: Option<&LitStr>) -> TokenStream {
    match lit {
        Some(l) => quote!(::core::option::Option::Some(#l)),
        None => quote!(::core::option::Option::None),
    }
}
