#!/usr/bin/env bash
# The history demo, end to end: installs what is missing, starts a throwaway etcd, runs three
# instances of examples/history.rs, and operates on their config with `coordctl`: a validated
# apply and put, a refused invalid put, an external etcdctl change, the history, a diff and a
# fleet-wide rollback that every instance converges on. Stops everything on exit or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
coord_ensure_deps

coord_demo_setup cli history
revision_of() { grep -o '"revision": [0-9]*' | head -1 | grep -o '[0-9]*$'; }
P=/apps/demo/config

say "etcdctl put $P/port 8080; etcdctl put $P/database/host db1.internal"
ctl put "$P/port" 8080 >/dev/null
ctl put "$P/database/host" db1.internal >/dev/null

for name in a b c; do
  ETCD_ENDPOINTS="$ETCD_ENDPOINT" INSTANCE="$name" "$TARGET/debug/examples/history" \
    > >(tee "$ETCD_DATA/$name.out") 2>&1 &
  PIDS+=($!)
done
for name in a b c; do
  for _ in $(seq 1 100); do grep -q "watching" "$ETCD_DATA/$name.out" 2>/dev/null && break; sleep 0.1; done
done
sleep 0.5

say "coordctl config schema $P | head -5        # published by the instances at bind"
coordctl config schema "$P" | head -5

cat >"$ETCD_DATA/release-1.yaml" <<'YAML'
port: 9000
greeting: welcome
database:
  host: db2.internal
  pool: 10
  password: s3cret-pass
YAML
say "coordctl config apply $P -f release-1.yaml -m 'release 1'"
cat "$ETCD_DATA/release-1.yaml"
V1=$(coordctl --json config apply "$P" -f "$ETCD_DATA/release-1.yaml" -m "release 1" | revision_of)
echo "published version $V1"
sleep 0.5

say "coordctl config put $P database.pool 20 -m 'more connections'"
coordctl config put "$P" database.pool 20 -m "more connections"
sleep 0.5

say "coordctl config put $P database.pool 500      # violates the schema (pool <= 100): refused"
coordctl config put "$P" database.pool 500 || echo "(exit code $?: nothing was written)"

say "etcdctl put $P/greeting hi                   # a change by another client: recorded as external"
ctl put "$P/greeting" hi >/dev/null
sleep 0.5

say "coordctl config history $P"
coordctl config history "$P"

V0=$(coordctl --json config history "$P" | grep -o '"revision": [0-9]*' | tail -1 | grep -o '[0-9]*$')
say "coordctl config diff $P $V0 $V1                # what release 1 changed; secrets show as ***"
coordctl config diff "$P" "$V0" "$V1"

say "coordctl config diff $P $V1 current           # what changed since"
coordctl config diff "$P" "$V1" current

say "coordctl config rollback $P $V1 -m 'back to release 1'"
RB=$(coordctl --json config rollback "$P" "$V1" -m "back to release 1" | revision_of)
echo "restored version $V1 as version $RB"

converged=1
for name in a b c; do
  ok=0
  for _ in $(seq 1 100); do grep -q "applied revision $RB:" "$ETCD_DATA/$name.out" && { ok=1; break; }; sleep 0.1; done
  [ "$ok" = 1 ] || converged=0
done
echo
if [ "$converged" = 1 ]; then
  echo "==> every instance converged on revision $RB:"
  for name in a b c; do grep "applied revision $RB:" "$ETCD_DATA/$name.out" | tail -1; done
else
  echo "error: not every instance applied revision $RB" >&2
  exit 1
fi

say "coordctl config history $P"
coordctl config history "$P"
say "coordctl config get $P"
coordctl config get "$P"
echo
echo "==> stopping"
