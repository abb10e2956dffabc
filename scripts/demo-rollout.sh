#!/usr/bin/env bash
# The rollout demo, end to end: installs what is missing, starts a throwaway etcd, runs five
# instances of examples/fleet.rs with different labels, and drives staged rollouts with
# `coordctl`: a bad value that stops at the canary and reverts automatically, then a good one
# that walks 1 → 40% → 100% and completes, with `coordctl config instances` at each step.
# Stops everything on exit or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
coord_ensure_deps

coord_demo_setup cli fleet
P=/apps/shop/config

say "etcdctl put $P/greeting hello; etcdctl put $P/pool/max 10"
ctl put "$P/greeting" hello >/dev/null
ctl put "$P/pool/max" 10 >/dev/null

LABELS=("zone=eu-1a,tier=canary" "zone=eu-1a,tier=main" "zone=eu-1b,tier=main" "zone=eu-1b,tier=main" "zone=us-1,tier=main")
for i in 0 1 2 3 4; do
  ETCD_ENDPOINTS="$ETCD_ENDPOINT" INSTANCE="shop-$i" COORD_LABELS="${LABELS[$i]}" \
    "$TARGET/debug/examples/fleet" > >(tee "$ETCD_DATA/shop-$i.out") 2>&1 &
  PIDS+=($!)
done
for i in 0 1 2 3 4; do
  for _ in $(seq 1 100); do grep -q "watching" "$ETCD_DATA/shop-$i.out" 2>/dev/null && break; sleep 0.1; done
done
sleep 0.5

say "coordctl config instances $P"
coordctl config instances "$P"

# 1. A bad value: the canary's validate() refuses it; the rollout reverts by itself.
cat >"$ETCD_DATA/bad.yaml" <<'YAML'
greeting: hello
pool:
  max: 900
YAML
say "coordctl config rollout start $P -f bad.yaml --steps 1,100% --bake 3s --selector tier=canary -m 'bigger pool'"
cat "$ETCD_DATA/bad.yaml"
set +e
coordctl config rollout start "$P" -f "$ETCD_DATA/bad.yaml" --steps 1,100% --bake 3s \
  --selector tier=canary -m "bigger pool"
echo "(exit $? : reverted)"
set -e
sleep 0.5
say "coordctl config instances $P          # nobody serves pool.max 900; the canary's rejection is listed"
coordctl config instances "$P"

# 2. A good value: 1 instance, then 40%, then published to all, baking 2 s per step.
cat >"$ETCD_DATA/good.yaml" <<'YAML'
greeting: welcome
pool:
  max: 50
YAML
say "coordctl config rollout start $P -f good.yaml --steps 1,40%,100% --bake 2s -m 'welcome, pool 50'"
cat "$ETCD_DATA/good.yaml"
coordctl config rollout start "$P" -f "$ETCD_DATA/good.yaml" --steps 1,40%,100% --bake 2s \
  -m "welcome, pool 50" > "$ETCD_DATA/rollout.out" 2>&1 &
ROLLOUT=$!
seen=""
while kill -0 "$ROLLOUT" 2>/dev/null; do
  now=$(coordctl --json config rollout status "$P" 2>/dev/null | grep -o '"\(step\|status\)": [^,]*' | tr -d '\n' || true)
  if [ -n "$now" ] && [ "$now" != "$seen" ]; then
    seen="$now"
    say "coordctl config instances $P          # $now"
    coordctl config instances "$P"
  fi
  sleep 0.2
done
wait "$ROLLOUT"
cat "$ETCD_DATA/rollout.out"
sleep 0.3
say "coordctl config instances $P          # every instance serves the published version"
coordctl config instances "$P"
say "coordctl config history $P"
coordctl config history "$P"
say "coordctl config rollout status $P"
coordctl config rollout status "$P"
