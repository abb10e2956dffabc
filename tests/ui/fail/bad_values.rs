use coordination::CoordConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "apps/chat/", env_prefix = "", validate = "not a path")]
struct Chat {
    port: u16,
}

fn main() {}
