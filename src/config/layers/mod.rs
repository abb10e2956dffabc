//! The sources of configuration values, one file per layer: the local file, the etcd prefix, a
//! rollout's staged values (the overlay) and the environment. (The lowest layer, defaults, is the type's own `#[serde(default)]`.)

mod env;
mod etcd;
mod etcd_read;
mod file;
mod overlay;

pub(crate) use env::env_layer;
pub(crate) use etcd::{EtcdLayer, ReadKv};
pub(crate) use etcd_read::{read_layer, LayerRead};
pub(crate) use file::{file_layer, read_file, FileContent, FileWatch};
pub(crate) use overlay::Overlay;
