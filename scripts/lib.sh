# Shared by scripts/demo.sh, scripts/test.sh and .ci/run. Source it; do not run it.
# Installs what the project needs from Debian's packages, and starts/stops a throwaway etcd.

# The Debian packages: protoc and the well-known .proto files (etcd-client's build script needs
# both), the etcd server and the etcdctl client; Go with etcd's Go client and grpc-go sources,
# which tests/go_interop.rs builds a Go program against (offline, GOPATH mode); Prometheus, whose
# promtool checks and unit-tests the alerting rules docs/alerts.yml (tests/alerts.rs).
COORD_APT_PACKAGES=(protobuf-compiler libprotobuf-dev etcd-server etcd-client
  golang-go golang-etcd-server-dev golang-google-grpc-dev prometheus)

coord_missing_packages() {
  local missing=()
  command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
  [ -f /usr/include/google/protobuf/timestamp.proto ] || missing+=(libprotobuf-dev)
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
  command -v go >/dev/null 2>&1 || missing+=(golang-go)
  [ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3/naming/resolver ] \
    || missing+=(golang-etcd-server-dev)
  [ -d /usr/share/gocode/src/google.golang.org/grpc/health ] || missing+=(golang-google-grpc-dev)
  # promtool checks and unit-tests docs/alerts.yml (tests/alerts.rs).
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  # tests/console.rs: headless Chromium through chromedriver.
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  echo "${missing[@]:-}"
}

# Installs any missing package with apt-get (as root, or through sudo).
coord_ensure_deps() {
  local missing
  missing=$(coord_missing_packages)
  if [ -n "$missing" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "error: missing: $missing, and apt-get is not available on this machine." >&2
      echo "Install the equivalents of: ${COORD_APT_PACKAGES[*]} (protoc, the protobuf well-known" >&2
      echo "includes, etcd 3.4+ and etcdctl, Go, promtool, Chromium and chromedriver, curl), then run this script again." >&2
      exit 1
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "error: missing $missing; run as root or install sudo" >&2; exit 1
      fi
    fi
    echo "==> installing: $missing (apt-get)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install a Rust toolchain (rustup, Rust >= 1.85)." >&2
    exit 1
  fi
  export ETCDCTL_API=3
}

coord_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || echo $(( 20000 + RANDOM % 20000 ))
}

# Starts a single-member etcd on free loopback ports with a temp data dir. Sets ETCD_ENDPOINT,
# ETCD_PID and ETCD_DATA; call coord_stop_etcd (e.g. from a trap) to stop it and remove the dir.
coord_start_etcd() {
  local client_port peer_port
  client_port=$(coord_free_port)
  peer_port=$(coord_free_port)
  ETCD_DATA=$(mktemp -d -t coord-etcd.XXXXXX)
  ETCD_ENDPOINT="http://127.0.0.1:${client_port}"
  etcd --name demo --data-dir "$ETCD_DATA/data" \
    --listen-client-urls "$ETCD_ENDPOINT" --advertise-client-urls "$ETCD_ENDPOINT" \
    --listen-peer-urls "http://127.0.0.1:${peer_port}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${peer_port}" \
    --initial-cluster "demo=http://127.0.0.1:${peer_port}" \
    --logger=zap --log-level=warn >"$ETCD_DATA/etcd.log" 2>&1 &
  ETCD_PID=$!
  local i
  for i in $(seq 1 100); do
    if etcdctl --endpoints "$ETCD_ENDPOINT" endpoint health >/dev/null 2>&1; then
      export ETCD_ENDPOINT ETCD_PID ETCD_DATA
      return 0
    fi
    sleep 0.1
  done
  echo "error: etcd did not start; its log:" >&2
  cat "$ETCD_DATA/etcd.log" >&2
  return 1
}

coord_stop_etcd() {
  if [ -n "${ETCD_PID:-}" ]; then
    kill "$ETCD_PID" 2>/dev/null || true
    wait "$ETCD_PID" 2>/dev/null || true
    ETCD_PID=""
  fi
  if [ -n "${ETCD_DATA:-}" ]; then
    rm -rf "$ETCD_DATA"
    ETCD_DATA=""
  fi
}

# The operator demos' common start (scripts/demo-*.sh): on exit, stops the processes in PIDS
# (after the script's own `demo_cleanup`, if it defines one) and etcd; builds coordctl with
# FEATURES and the given examples, starts a throwaway etcd, and defines `ctl` (etcdctl),
# `coordctl` (author alice unless COORDCTL_AUTHOR is set) and `say` (prints a command).
#   coord_demo_setup FEATURES EXAMPLE...
PIDS=()
coord_demo_cleanup() {
  if declare -F demo_cleanup >/dev/null; then demo_cleanup; fi
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  coord_stop_etcd
}
coord_demo_setup() {
  local features="$1"
  shift
  trap coord_demo_cleanup EXIT
  trap 'exit 130' INT TERM
  local examples=()
  for example in "$@"; do examples+=(--example "$example"); done
  echo "==> building coordctl (feature $features) and the $* example"
  cargo build --quiet --features "$features" --bin coordctl "${examples[@]}"
  TARGET="${CARGO_TARGET_DIR:-target}"
  coord_start_etcd
  echo "==> etcd running at $ETCD_ENDPOINT (data in $ETCD_DATA)"
  ctl() { etcdctl --endpoints "$ETCD_ENDPOINT" "$@"; }
  coordctl() { COORDCTL_AUTHOR="${COORDCTL_AUTHOR:-alice}" "$TARGET/debug/coordctl" --endpoints "$ETCD_ENDPOINT" "$@"; }
  say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
}
