//! Writing the `CoordConfig` impl.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, LitStr};

use crate::attr::{self, Container};

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
        }
    }
}

fn option(lit: Option<&LitStr>) -> TokenStream {
    match lit {
        Some(l) => quote!(::core::option::Option::Some(#l)),
        None => quote!(::core::option::Option::None),
    }
}
