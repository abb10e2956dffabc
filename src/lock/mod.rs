//! Distributed lock with fencing tokens, interoperable with `etcdctl lock` (in progress).
