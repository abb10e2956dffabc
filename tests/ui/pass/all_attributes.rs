use coordination::CoordConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(
    prefix = "/apps/chat/config",
    file = "config/chat.yaml",
    env_prefix = "CHAT_",
    validate = "Chat::check"
)]
struct Chat {
    port: u16,
}

impl Chat {
    fn check(&self) -> Result<(), &'static str> {
        if self.port == 0 {
            return Err("port must not be 0");
        }
        Ok(())
    }
}

// Attributes may also be split over several #[coord] lines.
#[derive(Serialize, Deserialize, JsonSchema, CoordConfig)]
#[coord(prefix = "/apps/other")]
#[coord(env_prefix = "OTHER_")]
struct Other<T> {
    value: T,
}

fn main() {
    assert_eq!(<Chat as CoordConfig>::PREFIX, "/apps/chat/config");
    assert_eq!(<Chat as CoordConfig>::FILE, Some("config/chat.yaml"));
    assert_eq!(<Chat as CoordConfig>::ENV_PREFIX, Some("CHAT_"));
    assert!(Chat { port: 0 }.validate().is_err());
    assert!(Chat { port: 1 }.validate().is_ok());
    assert_eq!(<Other<u8> as CoordConfig>::ENV_PREFIX, Some("OTHER_"));
    assert_eq!(<Other<u8> as CoordConfig>::FILE, None);
}
