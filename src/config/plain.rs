//! The common shapes of a raw value, read without the YAML parser: a decimal integer or bool,
//! a plain word (`alice`, `1.10`, `eu-west-1`, `hello world`) and a one-line flow mapping of
//! plain words (`{weight: 1, label: blue}`).
//!
//! Each shape is a small subset of YAML whose meaning is fixed: the text is split where the
//! YAML parser would split it, and every scalar is resolved by the same function and the same
//! string-field rule as the parser's own path ([`resolve_plain`], `is_string_only`). Anything
//! outside the subset (quotes, `#`, `:` or brackets inside a word, several lines, a key twice,
//! a word that does not resolve) is declined with `None` and read by the YAML parser, which
//! also gives the error. A property test holds each shape's result equal to the parser's.

use serde_json::{Map, Value};

use super::value::{Lookups, StringFields};
use super::yaml::resolve_plain;

/// `Some` for text that is exactly a decimal integer without a leading zero (fits i64 or u64),
/// `true` or `false`: what YAML would make of it, without running the YAML parser.
pub(super) fn plain_scalar(text: &str) -> Option<Value> {
    match text {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if !plain {
        return None;
    }
    if let Ok(n) = text.parse::<i64>() {
        return Some(Value::from(n));
    }
    text.parse::<u64>().ok().map(Value::from)
}

/// What YAML makes of `text` if it is a plain word or a one-line flow mapping of plain words
/// (see the module docs); `None` for any other text. `node` is the schema of the value's place
/// in the bound type and `depth` the nesting levels it may still have (a mapping needs 1);
/// `lookups` remembers schema lookups from one value to the next.
pub(super) fn simple<'a>(
    text: &str,
    fields: &'a StringFields,
    node: Option<&'a Value>,
    depth: usize,
    lookups: &mut Lookups<'a>,
) -> Option<Value> {
    let text = text.trim_matches(' ');
    if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        return (depth >= 1)
            .then(|| flow_mapping(inner, fields, node, lookups))
            .flatten();
    }
    if is_word(text) {
        return word(text, node.is_some_and(|n| lookups.string_only(fields, n)));
    }
    None
}

/// The entries of a flow mapping (the text between the braces): `key: word` pairs separated
/// by commas, each key a plain identifier-like word. Read in one pass: a key, optional spaces,
/// `: `, the word up to the next comma (trailing spaces dropped).
fn flow_mapping<'a>(
    inner: &str,
    fields: &'a StringFields,
    node: Option<&'a Value>,
    lookups: &mut Lookups<'a>,
) -> Option<Value> {
    let mut map = Map::new();
    let b = inner.as_bytes();
    let skip_spaces = |mut i: usize| {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        i
    };
    let mut i = skip_spaces(0);
    if i == b.len() {
        return Some(Value::Object(map));
    }
    loop {
        let start = i;
        while b
            .get(i)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
        {
            i += 1;
        }
        let key = &inner[start..i];
        i = skip_spaces(i);
        if !is_key(key) || b.get(i) != Some(&b':') || b.get(i + 1) != Some(&b' ') {
            return None;
        }
        let start = skip_spaces(i + 2);
        let end = memchr::memchr(b',', &b[start..]).map_or(b.len(), |at| start + at);
        let value = inner[start..end].trim_end_matches(' ');
        if !is_word(value) {
            return None;
        }
        let string_only = node.is_some_and(|n| lookups.field_string_only(fields, n, key));
        let value = word(value, string_only)?;
        if map.insert(key.to_string(), value).is_some() {
            return None;
        }
        if end == b.len() {
            return Some(Value::Object(map));
        }
        i = skip_spaces(end + 1);
    }
}

/// A plain word's value by YAML 1.2's core schema, kept as text where the schema wants a
/// string (`string_only`); `None` where it does not resolve (`.inf`), so the parser reports it.
fn word(text: &str, string_only: bool) -> Option<Value> {
    let value = resolve_plain(text).ok()?;
    if string_only && matches!(value, Value::Number(_) | Value::Bool(_)) {
        return Some(Value::String(text.to_string()));
    }
    Some(value)
}

/// What a byte may be in a word: one that may start a part (a letter, digit or `_`), one that
/// may only follow (`.`, `+`, `-`; or start a part directly before a byte of the first kind),
/// the space between parts, or none of these.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Start,
    Inner,
    Space,
    Other,
}

const CLASSES: [Class; 256] = {
    let mut classes = [Class::Other; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        classes[b] = if c.is_ascii_alphanumeric() || c == b'_' {
            Class::Start
        } else if c == b'.' || c == b'+' || c == b'-' {
            Class::Inner
        } else if c == b' ' {
            Class::Space
        } else {
            Class::Other
        };
        b += 1;
    }
    classes
};

/// A plain scalar the YAML parser reads as its text in any context: words of letters, digits
/// and `_ . + -` separated by single spaces, each starting with a letter, digit or `_` (or one
/// of `. + -` directly before one), so none can be an indicator (`- `, `---`, `...`).
fn is_word(text: &str) -> bool {
    let b = text.as_bytes();
    let class = |i: usize| b.get(i).map_or(Class::Other, |&c| CLASSES[c as usize]);
    if !all_word_bytes(b) {
        return false;
    }
    // Every part starts right: at the start and after each space (so no part is empty).
    let mut start = 0;
    loop {
        match (class(start), class(start + 1)) {
            (Class::Start, _) | (Class::Inner, Class::Start) => {}
            _ => return false,
        }
        match memchr::memchr(b' ', &b[start..]) {
            Some(at) => start += at + 1,
            None => return true,
        }
    }
}

/// Whether every byte may be in a word (its class is not [`Class::Other`]). Written without
/// the table and without an early exit inside a block, so that the compiler checks a block of
/// bytes at once (long values are mostly such words).
fn all_word_bytes(b: &[u8]) -> bool {
    fn word_byte(c: u8) -> bool {
        c.is_ascii_alphanumeric()
            | (c == b'_')
            | (c == b'.')
            | (c == b'+')
            | (c == b'-')
            | (c == b' ')
    }
    let block = |bytes: &[u8]| bytes.iter().fold(true, |ok, &c| ok & word_byte(c));
    let mut blocks = b.chunks_exact(32);
    blocks.all(block) && block(blocks.remainder())
}

/// A mapping key: letters, digits, `_` and `-`, starting with a letter, digit or `_`.
fn is_key(text: &str) -> bool {
    let b = text.as_bytes();
    matches!(b.first(), Some(c) if c.is_ascii_alphanumeric() || *c == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::{self, Budget};
    use proptest::prelude::*;
    use serde_json::json;

    fn fields() -> StringFields {
        StringFields::new(json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "port": {"type": "integer"},
                "items": {
                    "type": "object",
                    "additionalProperties": {"$ref": "#/definitions/Item"}
                }
            },
            "definitions": {
                "Item": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string"},
                        "weight": {"type": "integer"}
                    }
                }
            }
        }))
    }

    /// The YAML parser's reading of `text` (what the fast path must equal).
    fn parsed(text: &str, fields: &StringFields, node: Option<&Value>) -> Result<Value, String> {
        let budget = Budget {
            depth: 8,
            nodes: text.len() + 4096,
            alias_nodes: text.len() / 4 + 4096,
            depth_limit: 8,
        };
        yaml::parse(text, fields, node, budget)
    }

    #[test]
    fn integers_and_bools_agree_with_yaml() {
        for text in [
            "0",
            "7",
            "-7",
            "8080",
            "18446744073709551615",
            "-9223372036854775808",
            "true",
            "false",
        ] {
            let yaml: Value = serde_yaml::from_str(text).unwrap();
            assert_eq!(plain_scalar(text), Some(yaml), "{text}");
        }
        for text in [
            "007", "-0", "1.5", "1e3", "0x10", "+1", "True", " 1", "1 ", "-",
        ] {
            assert_eq!(plain_scalar(text), None, "{text}");
        }
    }

    #[test]
    fn words_and_flow_mappings_read_as_yaml_reads_them() {
        let f = fields();
        let item = f.schema().pointer("/definitions/Item");
        assert_eq!(
            simple(
                "{weight: 1, label: 0123}",
                &f,
                item,
                4,
                &mut Lookups::default()
            ),
            Some(json!({"weight": 1, "label": "0123"}))
        );
        assert_eq!(
            simple(
                "{weight: 1.5, label: 1.10}",
                &f,
                item,
                4,
                &mut Lookups::default()
            ),
            Some(json!({"weight": 1.5, "label": "1.10"}))
        );
        assert_eq!(
            simple("hello world", &f, None, 4, &mut Lookups::default()),
            Some(json!("hello world"))
        );
        assert_eq!(
            simple("-1.5e3", &f, None, 4, &mut Lookups::default()),
            Some(json!(-1500.0))
        );
        assert_eq!(
            simple("{}", &f, None, 4, &mut Lookups::default()),
            Some(json!({}))
        );
        // Declined: the parser reads (or refuses) these itself.
        for text in [
            "{a: 1, a: 2}",
            "{a: 1,}",
            "{a:1}",
            "{a: 'x'}",
            "{a: [1]}",
            "{a: x # c}",
            "a: 1",
            "- a",
            "---",
            ".inf",
            "a\nb",
            "{a: 1}\n",
        ] {
            assert_eq!(
                simple(text, &f, None, 4, &mut Lookups::default()),
                None,
                "{text}"
            );
        }
        assert_eq!(
            simple("{a: 1}", &f, None, 0, &mut Lookups::default()),
            None,
            "too deep"
        );
    }

    /// Text made of the pieces the fast path looks at, and of the ones that end it.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => "[a-z]{1,6}",
            4 => "[0-9]{1,4}",
            1 => "0[0-9]{1,3}",
            1 => "-?[0-9]{1,3}\\.[0-9]{0,3}(e[+-]?[0-9]{1,2})?",
            1 => Just("true".to_string()),
            1 => Just("False".to_string()),
            1 => Just("null".to_string()),
            1 => Just("~".to_string()),
            1 => Just(".inf".to_string()),
            1 => Just("0x1F".to_string()),
            1 => Just("+12".to_string()),
            1 => Just("-".to_string()),
            1 => Just(".".to_string()),
            1 => Just("_x".to_string()),
            1 => Just("a-b".to_string()),
            1 => Just("a.b".to_string()),
            1 => Just("label".to_string()),
            1 => Just("weight".to_string()),
            1 => Just("name".to_string()),
            1 => Just("port".to_string()),
        ]
    }

    fn spaces() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => Just(String::new()),
            3 => Just(" ".to_string()),
            1 => Just("  ".to_string()),
        ]
    }

    fn separator() -> impl Strategy<Value = String> {
        prop_oneof![
            12 => Just(": ".to_string()),
            1 => Just(":".to_string()),
            1 => Just(": # ".to_string()),
            1 => Just(" : ".to_string()),
            1 => Just(":  ".to_string()),
        ]
    }

    /// A word: pieces joined by spaces (sometimes two) or by `:`, `#`, `,` and quotes.
    fn word_text() -> impl Strategy<Value = String> {
        let joint = prop_oneof![
            12 => Just(" ".to_string()),
            1 => Just("  ".to_string()),
            4 => Just(String::new()),
            1 => Just(":".to_string()),
            1 => Just(" #".to_string()),
            1 => Just("'".to_string()),
            1 => Just("\"".to_string()),
            1 => Just("[".to_string()),
        ];
        (piece(), proptest::collection::vec((joint, piece()), 0..3)).prop_map(|(first, rest)| {
            let mut s = first;
            for (j, p) in rest {
                s.push_str(&j);
                s.push_str(&p);
            }
            s
        })
    }

    fn mapping_text() -> impl Strategy<Value = String> {
        let entry = (spaces(), piece(), separator(), word_text(), spaces())
            .prop_map(|(a, k, sep, v, b)| format!("{a}{k}{sep}{v}{b}"));
        (
            spaces(),
            proptest::collection::vec(entry, 0..5),
            prop_oneof![4 => Just(String::new()), 1 => Just(",".to_string())],
            spaces(),
        )
            .prop_map(|(before, entries, trailing, after)| {
                format!("{before}{{{}{trailing}}}{after}", entries.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn a_simple_shape_reads_as_the_yaml_parser_reads_it(
            text in prop_oneof![word_text(), mapping_text()],
            at in prop_oneof![Just(None), Just(Some("/definitions/Item")), Just(Some("/properties/name"))],
        ) {
            let f = fields();
            let node = at.and_then(|p| f.schema().pointer(p));
            if let Some(fast) = simple(&text, &f, node, 4, &mut Lookups::default()) {
                prop_assert_eq!(Ok(fast), parsed(&text, &f, node), "text {:?}", text);
            }
        }
    }

    #[test]
    fn the_block_check_agrees_with_the_byte_classes() {
        for c in 0..=255u8 {
            for len in [1, 31, 32, 33, 64, 70] {
                let mut text = vec![b'a'; len];
                text[len - 1] = c;
                let want = CLASSES[c as usize] != Class::Other;
                assert_eq!(all_word_bytes(&text), want, "byte {c} at {}", len - 1);
                text[len - 1] = b'a';
                text[0] = c;
                assert_eq!(all_word_bytes(&text), want, "byte {c} at 0 of {len}");
            }
        }
        assert!(all_word_bytes(b""));
    }

    #[test]
    fn the_shapes_of_common_values_take_the_fast_path() {
        let f = fields();
        let item = f.schema().pointer("/definitions/Item");
        for text in [
            "{weight: 1, label: blue}",
            "{ weight: 12 , label: a b c }",
            "eu-west-1",
            "1.10",
            "v2.3.4-rc.1",
        ] {
            let fast = simple(text, &f, item, 4, &mut Lookups::default());
            assert!(fast.is_some(), "{text}");
            assert_eq!(Ok(fast.unwrap()), parsed(text, &f, item), "{text}");
        }
    }
}
