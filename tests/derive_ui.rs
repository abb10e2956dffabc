//! Compile-time behaviour of `#[derive(CoordConfig)]`: what compiles, and the errors (spanned at
//! the offending attribute) for what does not.

#[test]
fn derive_ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
