use coordination::CoordConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/chat/config")]
struct Chat {
    #[coord(secret = true, hidden)]
    #[coord(secret)]
    password: String,
    #[coord(prefix = "/apps/other")]
    port: u16,
}

fn main() {}
