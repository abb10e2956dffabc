use coordination::CoordConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/chat/config")]
enum Chat {
    A,
    B,
}

fn main() {}
