use coordination::CoordConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(file = "config/chat.yaml")]
struct Chat {
    port: u16,
}

fn main() {}
