//! Writing the `CoordConfig` impl.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::attr::{self, Container};

/// The impl, or the errors plus a placeholder impl (so that uses of the type elsewhere do not
/// add "trait not implemented" errors on top of the real one).
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    match attr::parse(input) {
        Ok(container) => implement(input, &container),
        Err(errors) => {
            let compile_errors = errors.to_compile_error();
            let placeholder = placeholder(input);
            quote! { #compile_errors #placeholder }
        }
    }
}

fn implement(input: &DeriveInput, c: &Container) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let prefix = &c.prefix;
    let file = option(c.file.as_ref());
    let env_prefix = option(c.env_prefix.as_ref());
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
            #validate
        }
    }
}

fn option(lit: Option<&syn::LitStr>) -> TokenStream {
    match lit {
        Some(l) => quote!(::core::option::Option::Some(#l)),
        None => quote!(::core::option::Option::None),
    }
}

/// Only for structs (an enum or union gets nothing; the trait's other bounds would fail anyway
/// and the one error we emitted says why).
fn placeholder(input: &DeriveInput) -> TokenStream {
    if !matches!(input.data, syn::Data::Struct(_)) {
        return TokenStream::new();
    }
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        impl #impl_generics ::coordination::__private::CoordConfig for #ident #ty_generics #where_clause {
            const PREFIX: &'static str = "/";
        }
    }
}
