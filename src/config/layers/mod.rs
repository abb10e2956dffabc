//! The sources of configuration values, one file per layer: the local file, the etcd prefix, a
//! rollout's staged values (the overlay) and the environment. (The lowest layer, defaults, is the type's own `#[serde(default)]`.)

mod env;
mod etcd;
mod file;
mod overlay;

pub(crate) use env::env_layer;
pub(crate) use etcd::EtcdLayer;
pub(crate) use file::{file_layer, read_file, FileContent, FileWatch};
pub(crate) use overlay::Overlay;
