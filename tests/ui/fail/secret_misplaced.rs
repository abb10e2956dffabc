use coordination::CoordConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/chat/config", secret)]
struct Chat {
    #[coord(secret)]
    #[serde(flatten)]
    credentials: Credentials,
}

#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/tuple")]
struct Tuple(#[coord(secret)] String);

#[derive(Serialize, Deserialize, JsonSchema)]
struct Credentials {
    password: String,
}

fn main() {}
