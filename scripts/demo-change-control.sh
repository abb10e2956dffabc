#!/usr/bin/env bash
# The change-control demo, end to end: installs what is missing, starts a throwaway etcd, runs
# two instances of examples/history.rs, sets a policy (one approval, by someone other than the
# author), and drives the change with `coordctl`: a refused direct put, a proposal by alice, her
# own approval refused, bob's approval, the apply every instance converges on, and the history
# naming the proposal and its approver; then the template and the reference docs from the
# published schema. Stops everything on exit or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
coord_ensure_deps

coord_demo_setup cli history
# Each command names its author (--author), as reviewers and approvers differ.
coordctl() { env -u COORDCTL_AUTHOR "$TARGET/debug/coordctl" --endpoints "$ETCD_ENDPOINT" "$@"; }
P=/apps/demo/config

say "etcdctl put $P/port 8080; etcdctl put $P/database/host db1.internal"
ctl put "$P/port" 8080 >/dev/null
ctl put "$P/database/host" db1.internal >/dev/null

for name in a b; do
  ETCD_ENDPOINTS="$ETCD_ENDPOINT" INSTANCE="$name" "$TARGET/debug/examples/history" \
    > >(tee "$ETCD_DATA/$name.out") 2>&1 &
  PIDS+=($!)
done
for name in a b; do
  for _ in $(seq 1 100); do grep -q "watching" "$ETCD_DATA/$name.out" 2>/dev/null && break; sleep 0.1; done
done
sleep 0.5

cat >"$ETCD_DATA/policy.yaml" <<'YAML'
approvals: 1          # one approval before a change applies
self_approval: false  # not by its author
approvers: [bob, carol]
YAML
say "coordctl config policy $P --set -f policy.yaml"
cat "$ETCD_DATA/policy.yaml"
coordctl config policy "$P" --set -f "$ETCD_DATA/policy.yaml"

say "coordctl config put $P database.pool 20        # a direct publish: refused by the policy"
coordctl config put "$P" database.pool 20 --author alice || echo "(exit code $?: nothing was written)"

say "coordctl config propose $P --set database.pool=20 --author alice -m 'more connections'"
ID=$(coordctl --json config propose "$P" --set database.pool=20 --author alice -m "more connections" \
  | grep -o '"id": "[^"]*"' | head -1 | cut -d'"' -f4)
echo "proposal $ID"

say "coordctl config proposals $P"
coordctl config proposals "$P"

say "coordctl config proposal show $ID"
coordctl config proposal show "$ID"

say "coordctl config approve $ID --author alice     # her own change: refused"
coordctl config approve "$ID" --author alice || echo "(exit code $?)"

say "coordctl config approve $ID --author bob"
coordctl config approve "$ID" --author bob

say "coordctl config apply $ID --author bob"
REV=$(coordctl --json config apply "$ID" --author bob | grep -o '"revision": [0-9]*' | head -1 | grep -o '[0-9]*$')
echo "applied as version $REV"

converged=1
for name in a b; do
  ok=0
  for _ in $(seq 1 100); do grep -q "applied revision $REV:" "$ETCD_DATA/$name.out" && { ok=1; break; }; sleep 0.1; done
  [ "$ok" = 1 ] || converged=0
done
echo
if [ "$converged" = 1 ]; then
  echo "==> every instance applied revision $REV:"
  for name in a b; do grep "applied revision $REV:" "$ETCD_DATA/$name.out" | tail -1; done
else
  echo "error: not every instance applied revision $REV" >&2
  exit 1
fi

say "coordctl config history $P                     # author, approver and proposal id"
coordctl config history "$P"

say "coordctl config put $P port 9090 --break-glass --reason 'incident: port clash' --author oncall"
coordctl config put "$P" port 9090 --break-glass --reason "incident: port clash" --author oncall

say "coordctl config template $P"
coordctl config template "$P"

say "coordctl config docs $P --format markdown"
coordctl config docs "$P" --format markdown
echo
echo "==> stopping"
