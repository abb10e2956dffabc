use coordination::CoordConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
struct Chat {
    port: u16,
}

fn main() {}
