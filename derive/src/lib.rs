//! `#[derive(CoordConfig)]` for the `coordination` crate. Use it through
//! `coordination::CoordConfig`; this crate is an implementation detail, pinned with `=`.
//!
//! Stages: [`attr`] parses and checks `#[coord(...)]` (collecting every error, each spanned at
//! the offending token), [`expand`] writes the impl. On error the compile errors are emitted
//! together with a placeholder impl, so the user sees only the real mistake, not a cascade of
//! "trait not implemented" errors.

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

mod attr;
mod expand;

/// Implements `coordination::CoordConfig`. See the documentation of the re-export in
/// `coordination` for the attributes.
#[proc_macro_derive(CoordConfig, attributes(coord))]
pub fn derive_coord_config(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
