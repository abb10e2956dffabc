use coordination::CoordConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/chat/config", secrets = "database..password, databse.password")]
struct Chat {
    database: Database,
}

#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/other", secrets = " , ")]
struct Other {
    port: u16,
}

#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/third", secrets = 5)]
struct Third {
    port: u16,
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct Database {
    password: String,
}

fn main() {}
