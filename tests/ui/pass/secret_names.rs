use coordination::CoordConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Each of serde's `rename_all` cases: the secret path is the field's name in the document.
macro_rules! case {
    ($name:ident, $rule:literal, $expected:literal) => {
        #[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
        #[coord(prefix = "/apps/case")]
        #[serde(rename_all = $rule)]
        #[allow(dead_code)]
        struct $name {
            #[coord(secret)]
            api_token: String,
            port: u16,
        }
        assert_eq!(<$name as CoordConfig>::SECRETS, &[$expected], $rule);
    };
}

// A field's `rename` wins over `rename_all`; with two sides, the deserialize side counts;
// the struct-level paths come first, then the marked fields, without repeats.
#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/mixed", secrets = "dbConfig.password, KEY,")]
#[serde(rename_all(serialize = "SCREAMING_SNAKE_CASE", deserialize = "camelCase"))]
struct Mixed {
    #[coord(secret)]
    #[serde(rename = "KEY")]
    signing_key: String,
    #[coord(secret)]
    #[serde(rename(serialize = "out", deserialize = "in"))]
    two_sided: String,
    #[coord(secret)]
    r#type: String,
    db_config: Db,
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct Db {
    password: String,
}

fn main() {
    case!(Lower, "lowercase", "api_token");
    case!(Upper, "UPPERCASE", "API_TOKEN");
    case!(Pascal, "PascalCase", "ApiToken");
    case!(Camel, "camelCase", "apiToken");
    case!(Snake, "snake_case", "api_token");
    case!(ScreamingSnake, "SCREAMING_SNAKE_CASE", "API_TOKEN");
    case!(Kebab, "kebab-case", "api-token");
    case!(ScreamingKebab, "SCREAMING-KEBAB-CASE", "API-TOKEN");
    assert_eq!(
        <Mixed as CoordConfig>::SECRETS,
        &["dbConfig.password", "KEY", "in", "type"]
    );
}
