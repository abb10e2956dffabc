#!/usr/bin/env bash
# The main job, end to end: installs what is missing, starts a throwaway etcd on a free loopback
# port, runs examples/quickstart.rs against it and changes the config with etcdctl while it runs
# (a valid change, a multi-key transaction, an invalid value). Stops everything on exit or Ctrl-C.
#
#   ./scripts/demo.sh            the config quickstart (above)
#   ./scripts/demo.sh lock       examples/lock.rs: two holders take turns, fencing tokens rise
#   ./scripts/demo.sh election   examples/election.rs: campaign, proclaim, resign, observe
#   ./scripts/demo.sh registry   examples/registry.rs: register, pick, drain, kill
#   ./scripts/demo.sh metrics    examples/metrics.rs: a Prometheus /metrics endpoint on loopback;
#                                a valid and an invalid change, then the scrape
#   ./scripts/demo.sh history    three instances, and coordctl: history, diff, rollback
#                                (scripts/demo-history.sh, on an etcd of its own)
#   ./scripts/demo.sh change-control   a policy, a proposal by alice, bob's approval, the apply
#                                (scripts/demo-change-control.sh, on an etcd of its own)
#   ./scripts/demo.sh console    three instances, a lock and the operator web console; prints its
#                                URL (scripts/demo-console.sh; `console 60` stops after 60 s,
#                                and with CI=true it checks the pages once and stops)
#   ./scripts/demo.sh rollout    five labelled instances, and coordctl: a staged rollout of a bad
#                                value that stops at the canary and reverts, then a good one
#                                that completes (scripts/demo-rollout.sh, on an etcd of its own)
#   ./scripts/demo.sh all        all of the above, one after the other (the console checked
#                                once, then stopped)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
coord_ensure_deps

WHAT="${1:-quickstart}"
case "$WHAT" in
  quickstart|lock|election|registry|metrics|all) ;;
  history) exec scripts/demo-history.sh ;;
  change-control) exec scripts/demo-change-control.sh ;;
  console) exec scripts/demo-console.sh "${@:2}" ;;
  rollout) exec scripts/demo-rollout.sh ;;
  *) echo "usage: $0 [quickstart|lock|election|registry|metrics|history|change-control|rollout|console|all]" >&2; exit 2 ;;
esac

QS_PID=""
cleanup() {
  if [ -n "$QS_PID" ]; then kill -INT "$QS_PID" 2>/dev/null || true; wait "$QS_PID" 2>/dev/null || true; fi
  coord_stop_etcd
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> building the examples"
cargo build --quiet --examples

coord_start_etcd
echo "==> etcd running at $ETCD_ENDPOINT (data in $ETCD_DATA)"

run_example() {
  printf '\n\033[1m==> examples/%s.rs\033[0m\n' "$1"
  ETCD_ENDPOINTS="$ETCD_ENDPOINT" "${CARGO_TARGET_DIR:-target}/debug/examples/$1"
}
if [ "$WHAT" != quickstart ] && [ "$WHAT" != all ] && [ "$WHAT" != metrics ]; then
  run_example "$WHAT"
  exit 0
fi
ctl() { etcdctl --endpoints "$ETCD_ENDPOINT" "$@"; }
P=/apps/chat/config

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

if [ "$WHAT" = metrics ]; then
  METRICS_ADDR="127.0.0.1:$(coord_free_port)"
  ctl put "$P/port" 8080 >/dev/null
  OUT="$ETCD_DATA/metrics.out"
  METRICS_ADDR="$METRICS_ADDR" ETCD_ENDPOINTS="$ETCD_ENDPOINT" \
    "${CARGO_TARGET_DIR:-target}/debug/examples/metrics" > >(tee "$OUT") 2>&1 &
  QS_PID=$!
  for _ in $(seq 1 100); do grep -q "bound" "$OUT" 2>/dev/null && break; sleep 0.1; done
  say "etcdctl put $P/port 9090                       # a valid change"
  ctl put "$P/port" 9090 >/dev/null
  say "etcdctl put $P/port not-a-port                 # an invalid value"
  ctl put "$P/port" not-a-port >/dev/null
  sleep 0.5
  say "curl -s http://$METRICS_ADDR/metrics | grep '^coordination_config_'"
  curl -s "http://$METRICS_ADDR/metrics" | grep '^coordination_config_' | grep -v '_bucket{'
  exit 0
fi

say "etcdctl put $P/port 8080; etcdctl put $P/database '{\"host\": \"db1.internal\", \"pool\": 10}'"
ctl put "$P/port" 8080 >/dev/null
ctl put "$P/database" '{"host": "db1.internal", "pool": 10}' >/dev/null

OUT="$ETCD_DATA/quickstart.out"
ETCD_ENDPOINTS="$ETCD_ENDPOINT" "${CARGO_TARGET_DIR:-target}/debug/examples/quickstart" > >(tee "$OUT") 2>&1 &
QS_PID=$!
for _ in $(seq 1 100); do grep -q "watching" "$OUT" 2>/dev/null && break; sleep 0.1; done

sleep 0.5
say "etcdctl put $P/port 9090                       # a valid change"
ctl put "$P/port" 9090 >/dev/null
sleep 0.5
say "etcdctl txn: port=9091, database/host=db2.internal, database/pool=20   # one transaction, three keys"
ctl txn >/dev/null <<TXN

put $P/port 9091
put $P/database/host db2.internal
put $P/database/pool 20


TXN
sleep 0.5
say "etcdctl put $P/port not-a-port                 # an invalid value"
ctl put "$P/port" not-a-port >/dev/null
sleep 0.5
say "etcdctl put $P/port 9092                       # fixed"
ctl put "$P/port" 9092 >/dev/null
sleep 0.5
say "etcdctl put $P/database/pool 500               # violates the schema (pool <= 100)"
ctl put "$P/database/pool" 500 >/dev/null
sleep 0.5
say "etcdctl del $P/database/pool                   # deleted: falls back to the document's pool"
ctl del "$P/database/pool" >/dev/null
sleep 0.8
echo
echo "==> stopping the quickstart"
kill -INT "$QS_PID" 2>/dev/null || true
wait "$QS_PID" 2>/dev/null || true
QS_PID=""
if [ "$WHAT" = all ]; then
  for example in lock election registry; do run_example "$example"; done
  coord_stop_etcd
  printf '\n\033[1m==> scripts/demo-history.sh\033[0m\n'
  scripts/demo-history.sh
  printf '\n\033[1m==> scripts/demo-change-control.sh\033[0m\n'
  scripts/demo-change-control.sh
  printf '\n\033[1m==> scripts/demo-console.sh 0\033[0m\n'
  scripts/demo-console.sh 0
  printf '\n\033[1m==> scripts/demo-rollout.sh\033[0m\n'
  scripts/demo-rollout.sh
fi
