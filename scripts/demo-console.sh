#!/usr/bin/env bash
# The console demo: installs what is missing, starts a throwaway etcd, three instances of
# examples/history.rs, a lock held with `etcdctl lock`, and `coordctl serve` (the operator web
# console) with one writer, and prints the console's URL and the writer's token.
#
#   ./scripts/demo.sh console          runs until Ctrl-C
#   ./scripts/demo.sh console 60       stops by itself after 60 s
#   CI=true ./scripts/demo.sh console  fetches the pages once, checks them, and stops
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
coord_ensure_deps

SECONDS_TO_RUN="${1:-}"
if [ -z "$SECONDS_TO_RUN" ] && [ "${CI:-}" = true ]; then SECONDS_TO_RUN=0; fi
case "$SECONDS_TO_RUN" in
  ''|*[!0-9]*) [ -z "$SECONDS_TO_RUN" ] || { echo "usage: $0 [SECONDS]" >&2; exit 2; } ;;
esac

LOCK_PID=""
CONSOLE_PID=""
demo_cleanup() {
  if [ -n "$LOCK_PID" ]; then pkill -P "$LOCK_PID" 2>/dev/null || true; kill "$LOCK_PID" 2>/dev/null || true; fi
  # A background job of a script ignores SIGINT; the console stops on SIGTERM.
  if [ -n "$CONSOLE_PID" ]; then kill "$CONSOLE_PID" 2>/dev/null || true; fi
}
coord_demo_setup console history
P=/apps/demo/config

ctl put "$P/port" 8080 >/dev/null
ctl put "$P/database/host" db1.internal >/dev/null
for name in a b c; do
  ETCD_ENDPOINTS="$ETCD_ENDPOINT" INSTANCE="$name" "$TARGET/debug/examples/history" \
    >"$ETCD_DATA/$name.out" 2>&1 &
  PIDS+=($!)
done
for name in a b c; do
  for _ in $(seq 1 100); do grep -q "watching" "$ETCD_DATA/$name.out" 2>/dev/null && break; sleep 0.1; done
done
echo "==> three instances bound $P"

# A few versions to look at: a publish, a patch, an external change.
cat >"$ETCD_DATA/release-1.yaml" <<'YAML'
port: 9000
greeting: welcome
database:
  host: db2.internal
  pool: 10
  password: s3cret-pass
YAML
coordctl config apply "$P" -f "$ETCD_DATA/release-1.yaml" -m "release 1" >/dev/null
coordctl config put "$P" database.pool 20 -m "more connections" >/dev/null
ctl put "$P/greeting" hi >/dev/null
sleep 0.5

# A lock held by etcdctl (Go's concurrency.Mutex layout), shown on the locks page.
etcdctl --endpoints "$ETCD_ENDPOINT" lock demo/nightly sleep 3600 >/dev/null 2>&1 &
LOCK_PID=$!

TOKEN=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
printf 'demo:%s\n' "$TOKEN" >"$ETCD_DATA/writers"
chmod 600 "$ETCD_DATA/writers"
PORT=$(coord_free_port)
COORD_CONSOLE_WRITERS_FILE="$ETCD_DATA/writers" "$TARGET/debug/coordctl" --endpoints "$ETCD_ENDPOINT" \
  serve --listen "127.0.0.1:$PORT" --lock demo/nightly >"$ETCD_DATA/console.out" 2>&1 &
CONSOLE_PID=$!
PIDS+=($CONSOLE_PID)
URL=""
for _ in $(seq 1 100); do
  URL=$(grep -o 'http://[^ ]*' "$ETCD_DATA/console.out" 2>/dev/null | head -1 || true)
  [ -n "$URL" ] && break
  sleep 0.1
done
if [ -z "$URL" ]; then echo "error: the console did not start:" >&2; cat "$ETCD_DATA/console.out" >&2; exit 1; fi

printf '\n\033[1m==> console at %s\033[0m\n' "$URL"
echo "    read-only for everyone; to write, log in at ${URL}login with the token $TOKEN"
echo "    history: ${URL}history?prefix=$P"

if [ -n "$SECONDS_TO_RUN" ]; then
  printf '\n\033[1m$ curl -s %s | grep -o "%s"\033[0m\n' "$URL" "$P"
  curl -sf "$URL" | grep -o "$P" | head -1
  printf '\033[1m$ curl -s "%shistory?prefix=%s" | grep -c "<tr id=\\"v-"\033[0m\n' "$URL" "$P"
  versions=$(curl -sf "${URL}history?prefix=$P" | grep -o '<tr id="v-' | wc -l)
  echo "$versions versions listed"
  [ "$versions" -ge 3 ] || { echo "error: expected at least 3 versions on the history page" >&2; exit 1; }
  curl -sf "${URL}locks" | grep -q 'demo/nightly' || { echo "error: the lock is not on the locks page" >&2; exit 1; }
  echo "the locks page shows demo/nightly"
  sleep "$SECONDS_TO_RUN"
  echo "==> stopping"
  exit 0
fi
echo "    Ctrl-C to stop."
wait "$CONSOLE_PID"
