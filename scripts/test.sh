#!/usr/bin/env bash
# Installs what is missing (Debian packages: protoc, protobuf includes, etcd, etcdctl), then runs
# the whole test suite: unit tests, integration tests against real etcd processes that the tests
# start themselves, derive UI tests and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
coord_ensure_deps
cargo test --workspace --all-features "$@"
