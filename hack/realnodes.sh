#!/usr/bin/env bash
# Real kubelet nodes beside the kwok nodes of a hack/cluster.sh cluster: each with its own
# containerd, kubelet root, cgroup root and CNI bridge, in a named region, with GPUs written into
# its node status; one kube-proxy and one CoreDNS for the host. Called by hack/cluster.sh when
# REAL_NODES > 0; the host's state it changes (sysctls, iptables, mounts, network namespaces) is
# recorded first and put back by `down`.
#   hack/realnodes.sh check   exit 0 when this machine can run real nodes, else say why (one line)
#   hack/realnodes.sh up      start REAL_NODES nodes in REAL_REGION, or one per entry of
#                             REAL_REGIONS (kanto,kanto,kyushu) in that region (idempotent)
#   hack/realnodes.sh down    stop them and restore the host
#   hack/realnodes.sh host-ip the address the nodes, the API server and CoreDNS are reached at
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$HACK_DIR/realnodes-lib.sh"
source "$HACK_DIR/realnodes-host.sh"

up() {
  check_host || exit 1
  [[ -f $KUBECONFIG_PATH ]] || die "no cluster kubeconfig at $KUBECONFIG_PATH (hack/cluster.sh up first)"
  "$HACK_DIR/tools.sh" node
  mkdir -p "$REAL_DIR"
  [[ -f $REAL_DIR/host.before ]] || record_host
  local image
  for image in $REAL_IMAGES; do "$HACK_DIR/image.sh" "$image" >/dev/null; done
  start_coredns
  local index
  for ((index = 0; index < REAL_NODES; index++)); do
    start_node "$index"
  done
  start_kube_proxy
  for ((index = 0; index < REAL_NODES; index++)); do
    wait_for 120 "node $(node_name "$index") to become Ready" node_ready "$(node_name "$index")"
    advertise_gpus "$(node_name "$index")"
  done
  log "real nodes ready: $(for ((i = 0; i < REAL_NODES; i++)); do printf '%s ' "$(node_name "$i")"; done)"
}

down() {
  [[ -d $REAL_DIR ]] || { log "no real nodes to stop"; return 0; }
  drain_pods
  local names=() name
  for name in "$REAL_DIR"/nodes/*/; do if [[ -d $name ]]; then names+=("$(basename "$name")"); fi; done
  stop_pidfiles "$REAL_DIR"/nodes/*/kubelet.pid "$REAL_DIR/kube-proxy.pid" "$REAL_DIR/coredns.pid"
  for name in "${names[@]}"; do stop_node_runtime "$name"; done
  stop_pidfiles "$REAL_DIR"/nodes/*/containerd.pid
  for name in "${names[@]}"; do remove_node_cgroups "$name"; done
  [[ -x $K8S_NODE_BIN/kube-proxy ]] && "$K8S_NODE_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  restore_host
  rm -rf "$REAL_DIR"
  log "real nodes are down; the host is as it was"
}

case ${1:-} in
  check) check_host ;;
  host-ip) host_ip ;;
  up) up ;;
  down) down ;;
  *) echo "usage: $0 check|host-ip|up|down" >&2; exit 2 ;;
esac
