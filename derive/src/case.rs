//! serde's `rename_all` rules, applied to field names as serde_derive applies them.

/// One `#[serde(rename_all = "…")]` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RenameRule {
    /// `lowercase`
    Lower,
    /// `UPPERCASE`
    Upper,
    /// `PascalCase`
    Pascal,
    /// `camelCase`
    Camel,
    /// `snake_case`
    Snake,
    /// `SCREAMING_SNAKE_CASE`
    ScreamingSnake,
    /// `kebab-case`
    Kebab,
    /// `SCREAMING-KEBAB-CASE`
    ScreamingKebab,
}

const RULES: &[(&str, RenameRule)] = &[
    ("lowercase", RenameRule::Lower),
    ("UPPERCASE", RenameRule::Upper),
    ("PascalCase", RenameRule::Pascal),
    ("camelCase", RenameRule::Camel),
    ("snake_case", RenameRule::Snake),
    ("SCREAMING_SNAKE_CASE", RenameRule::ScreamingSnake),
    ("kebab-case", RenameRule::Kebab),
    ("SCREAMING-KEBAB-CASE", RenameRule::ScreamingKebab),
];

impl RenameRule {
    /// The rule serde calls `name`, if there is one (serde itself reports an unknown name).
    pub(crate) fn from_name(name: &str) -> Option<RenameRule> {
        RULES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
    }

    /// A snake_case field name as serde renames it under this rule.
    pub(crate) fn apply_to_field(self, field: &str) -> String {
        match self {
            RenameRule::Lower | RenameRule::Snake => field.to_string(),
            RenameRule::Upper | RenameRule::ScreamingSnake => field.to_ascii_uppercase(),
            RenameRule::Pascal => {
                let mut pascal = String::new();
                let mut capitalize = true;
                for ch in field.chars() {
                    if ch == '_' {
                        capitalize = true;
                    } else if capitalize {
                        pascal.push(ch.to_ascii_uppercase());
                        capitalize = false;
                    } else {
                        pascal.push(ch);
                    }
                }
                pascal
            }
            RenameRule::Camel => {
                let pascal = RenameRule::Pascal.apply_to_field(field);
                let mut chars = pascal.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                    None => pascal,
                }
            }
            RenameRule::Kebab => field.replace('_', "-"),
            RenameRule::ScreamingKebab => field.to_ascii_uppercase().replace('_', "-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_serde_rule_renames_fields_like_serde() {
        let cases = [
            ("lowercase", "api_token", "api_token"),
            ("UPPERCASE", "api_token", "API_TOKEN"),
            ("PascalCase", "api_token", "ApiToken"),
            ("camelCase", "api_token", "apiToken"),
            ("snake_case", "api_token", "api_token"),
            ("SCREAMING_SNAKE_CASE", "api_token", "API_TOKEN"),
            ("kebab-case", "api_token", "api-token"),
            ("SCREAMING-KEBAB-CASE", "api_token", "API-TOKEN"),
            ("camelCase", "password", "password"),
            ("PascalCase", "password", "Password"),
            ("camelCase", "db_pass_2", "dbPass2"),
        ];
        for (rule, field, renamed) in cases {
            let rule = RenameRule::from_name(rule).expect(rule);
            assert_eq!(rule.apply_to_field(field), renamed, "{rule:?}");
        }
        assert_eq!(RenameRule::from_name("Title Case"), None);
    }
}
