#!/usr/bin/env bash
# Installs what is missing (Debian packages: protoc, protobuf includes, etcd, etcdctl), then runs
# the whole test suite: unit tests, integration tests against real etcd processes that the tests
# start themselves, derive UI tests and doc tests. Ends with one line totalling every test binary:
# `N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
coord_ensure_deps

log=$(mktemp -t coord-test.XXXXXX)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-features "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ {
       for (i = 2; i <= NF; i++) {
         if ($i ~ /^passed;?$/) passed += $(i - 1)
         if ($i ~ /^failed;?$/) failed += $(i - 1)
       }
     }
     END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
