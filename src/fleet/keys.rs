//! Where the fleet's keys live in etcd, for one bound prefix.
//!
//! For the prefix `<ns>/apps/chat/config/` (namespace `<ns>`, possibly empty):
//!
//! | key | what | lease |
//! |---|---|---|
//! | `<ns>/__coordination/instances/apps/chat/config/<instance-id>` | one instance's [receipt](super::Receipt) (JSON) | the instance's |
//! | `<ns>/__coordination/schemas/apps/chat/config/<schema-hash>` | the JSON Schema of a type some instance runs | none |
//! | `<ns>/__coordination/rollouts/apps/chat/config/state` | the current (or last) [rollout](super::RolloutState) (JSON) | none |
//! | `<ns>/__coordination/rollouts/apps/chat/config/staged/<key>` | the staged release: one key per key of the candidate | none |
//! | `<ns>/__coordination/rollouts/apps/chat/config/log/<rollout-id>` | finished rollouts, moved here when the next one starts | none |
//! | `<ns>/__coordination/rollouts/apps/chat/config/lock/<lease:x>` | the controller lock (the crate's mutex) | the controller's |

/// The fleet keys of one bound prefix.
#[derive(Clone, Debug)]
pub(crate) struct FleetKeys {
    prefix: String,
    instances: String,
    schemas: String,
    root: String,
}

impl FleetKeys {
    /// `namespace` is the coordinator's (no trailing `/`, may be empty); `prefix` is the full
    /// bound prefix, namespace included, ending with `/`.
    pub(crate) fn new(namespace: &str, prefix: &str) -> Self {
        let relative = prefix.strip_prefix(namespace).unwrap_or(prefix);
        let relative = relative.trim_end_matches('/');
        let relative = if relative.starts_with('/') {
            relative.to_string()
        } else {
            format!("/{relative}")
        };
        FleetKeys {
            prefix: prefix.to_string(),
            instances: format!("{namespace}/__coordination/instances{relative}/"),
            schemas: format!("{namespace}/__coordination/schemas{relative}/"),
            root: format!("{namespace}/__coordination/rollouts{relative}/"),
        }
    }

    /// The full bound prefix (namespace included, ending with `/`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix every receipt lives under (ending with `/`).
    pub(crate) fn instances(&self) -> &str {
        &self.instances
    }

    /// The receipt key of `id`.
    pub(crate) fn instance(&self, id: &str) -> String {
        format!("{}{id}", self.instances)
    }

    /// The key of the schema with `hash`.
    pub(crate) fn schema(&self, hash: &str) -> String {
        format!("{}{hash}", self.schemas)
    }

    /// The prefix of everything a rollout keeps (state, staged release, log, lock).
    pub(crate) fn rollouts(&self) -> &str {
        &self.root
    }

    /// The rollout state key.
    pub(crate) fn state(&self) -> String {
        format!("{}state", self.root)
    }

    /// The prefix of the staged release's keys (ending with `/`).
    pub(crate) fn staged(&self) -> String {
        format!("{}staged/", self.root)
    }

    /// The staged key for a key of the bound prefix (the same path below `staged/`).
    pub(crate) fn staged_key(&self, key: &str) -> String {
        let rel = key.strip_prefix(&self.prefix).unwrap_or(key);
        format!("{}{rel}", self.staged())
    }

    /// The key of the bound prefix a staged key stands for.
    pub(crate) fn unstaged_key(&self, staged: &str) -> String {
        let staged_prefix = self.staged();
        let rel = staged.strip_prefix(&staged_prefix).unwrap_or(staged);
        format!("{}{rel}", self.prefix)
    }

    /// Where a finished rollout is kept once the next one starts.
    pub(crate) fn log(&self, id: &str) -> String {
        format!("{}log/{id}", self.root)
    }

    /// The name of the controller lock (namespace added by the lock itself).
    pub(crate) fn lock_name(&self, namespace: &str) -> String {
        let root = self.root.strip_prefix(namespace).unwrap_or(&self.root);
        format!("{root}lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_prefix() {
        let k = FleetKeys::new("/t", "/t/apps/chat/");
        assert_eq!(
            k.instance("a-1"),
            "/t/__coordination/instances/apps/chat/a-1"
        );
        assert_eq!(k.schema("abc"), "/t/__coordination/schemas/apps/chat/abc");
        assert_eq!(k.state(), "/t/__coordination/rollouts/apps/chat/state");
        assert_eq!(
            k.staged_key("/t/apps/chat/db/pool"),
            "/t/__coordination/rollouts/apps/chat/staged/db/pool"
        );
        assert_eq!(
            k.unstaged_key("/t/__coordination/rollouts/apps/chat/staged/db/pool"),
            "/t/apps/chat/db/pool"
        );
        assert_eq!(k.lock_name("/t"), "/__coordination/rollouts/apps/chat/lock");
    }
}
