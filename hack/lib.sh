# Shared helpers for the hack/ scripts. Source it; do not run it.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"

TSUNAGU_CACHE="${TSUNAGU_CACHE:-$HOME/.cache/tsunagu}"
TOOLS_BIN="$TSUNAGU_CACHE/bin"
K8S_BIN="$TOOLS_BIN/kubernetes-$K8S_VERSION"
K8S_NODE_BIN="$TOOLS_BIN/kubernetes-node-$K8S_VERSION"
COREDNS_BIN="$TOOLS_BIN/coredns-$COREDNS_VERSION"
ETCD_BIN="$TOOLS_BIN/etcd-$ETCD_VERSION"
KWOK_BIN="$TOOLS_BIN/kwok-$KWOK_VERSION"
# Helm is built to assume the Kubernetes version we run (its default assumption is 1.20).
HELM_BIN="$TOOLS_BIN/helm-$HELM_VERSION-kube$K8S_VERSION"

log() { printf '[tsunagu] %s\n' "$*" >&2; }
die() { printf '[tsunagu] error: %s\n' "$*" >&2; exit 1; }

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed or not on PATH"
  done
}

# Fails with a message naming the port when something already listens on it.
port_free() {
  local port=$1
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port on 127.0.0.1 is already in use"
  fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds or the deadline passes.
wait_for() {
  local deadline=$(( $(date +%s) + $1 )) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || die "timed out waiting for $what"
    sleep 0.5
  done
}
