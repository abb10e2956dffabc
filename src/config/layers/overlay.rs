//! The rollout overlay: a rollout's staged values, applied above the etcd layer (below the
//! environment) on the instances of the current step's cohort. The values are the staged keys
//! under `/__coordination/rollouts/<prefix>/staged/`, read with the etcd layer's own rules, so
//! a value's provenance names the staged key it came from.

use crate::config::tree::LayerTree;
use crate::config::value::StringFields;
use crate::error::Result;

use super::EtcdLayer;

/// What the receipt task asks the reload task to lay over the etcd layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Overlay {
    /// The rollout id.
    pub(crate) rollout: String,
    /// The step the instance is in the cohort at.
    pub(crate) step: u32,
    /// The staged prefix (ending with `/`): staged keys are read relative to it.
    pub(crate) prefix: String,
    /// The staged keys (full keys), raw values and `mod_revision`s.
    pub(crate) kvs: Vec<(Vec<u8>, Vec<u8>, i64)>,
}

impl Overlay {
    /// The layer tree, or the first bad staged key (naming it).
    pub(crate) fn tree(&self, max_value_bytes: usize, fields: &StringFields) -> Result<LayerTree> {
        let mut layer = EtcdLayer::new(self.prefix.clone(), max_value_bytes);
        for (key, value, mod_revision) in &self.kvs {
            layer.put(key, value, *mod_revision, fields);
        }
        layer.tree(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree::merge;
    use serde_json::json;

    #[test]
    fn staged_keys_become_a_layer_that_names_them() {
        let overlay = Overlay {
            rollout: "r1".into(),
            step: 0,
            prefix: "/__coordination/rollouts/p/staged/".into(),
            kvs: vec![
                (
                    b"/__coordination/rollouts/p/staged/pool/max".to_vec(),
                    b"20".to_vec(),
                    7,
                ),
                (
                    b"/__coordination/rollouts/p/staged/greeting".to_vec(),
                    b"hi".to_vec(),
                    7,
                ),
            ],
        };
        let fields = StringFields::new(json!({}));
        let tree = overlay.tree(1024, &fields).unwrap();
        let (value, sources) = merge([&tree]);
        assert_eq!(value, json!({"greeting": "hi", "pool": {"max": 20}}));
        let source = sources.get("pool.max");
        assert_eq!(
            source.origin.key().as_deref(),
            Some("/__coordination/rollouts/p/staged/pool/max")
        );
        let bad = Overlay {
            kvs: vec![(
                b"/__coordination/rollouts/p/staged/pool".to_vec(),
                b"{unclosed".to_vec(),
                8,
            )],
            ..overlay
        };
        let e = bad.tree(1024, &fields).unwrap_err();
        assert_eq!(e.key(), Some("/__coordination/rollouts/p/staged/pool"));
    }
}
