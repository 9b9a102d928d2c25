#!/usr/bin/env bash
# The test cluster: a real kube-apiserver, etcd, kube-scheduler and kube-controller-manager run as
# local processes by kwokctl, with kwok simulating GPU nodes and pod lifecycles.
#   hack/cluster.sh up          create (or restart) the cluster and its GPU nodes; idempotent
#   hack/cluster.sh down        delete it; no process is left running
#   hack/cluster.sh status      exit 0 when the cluster answers
#   hack/cluster.sh kubeconfig  print the kubeconfig path
#   hack/cluster.sh workdir     print kwokctl's directory of the cluster (kwok only): its kwok.yaml
#                               has each component's command line, pids/ and logs/ its processes
#   hack/cluster.sh nodes [N]   (re)create N GPU nodes per region from $TOPOLOGY
# CLUSTER=kwok (default) | kind (needs a Docker engine) | existing (uses $KUBECONFIG as it is).
# NODES_PER_REGION overrides the topology's node count; TOPOLOGY picks another topology file.
# REAL_NODES=N adds N real kubelet nodes (hack/realnodes.sh; root only) in region REAL_REGION, or
# REAL_REGIONS=kanto,kanto,kyushu one node per entry in the region named; the cluster must be
# created with them (the kwok controller then manages only the kwok nodes).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER=${CLUSTER:-kwok}
CLUSTER_NAME=${CLUSTER_NAME:-tsunagu}
STATE_DIR=${TSUNAGU_STATE:-$REPO_ROOT/.cluster}
TOPOLOGY=${TOPOLOGY:-$HACK_DIR/topology/japan.yaml}
export KWOK_WORKDIR="$STATE_DIR/kwok"
KUBECONFIG_PATH="$STATE_DIR/kubeconfig"
PYTHON=${PYTHON:-$REPO_ROOT/.venv/bin/python}
if [[ -z ${REAL_NODES:-} && -n ${REAL_REGIONS:-} ]]; then
  IFS=, read -r -a _regions <<<"$REAL_REGIONS"
  REAL_NODES=${#_regions[@]}
fi
REAL_NODES=${REAL_NODES:-0}
export REAL_NODES

# Never handed the port lock's descriptor (fd 9): the components kwokctl starts would keep it.
kwokctl_() { "$KWOK_BIN/kwokctl" --name "$CLUSTER_NAME" "$@" 9>&-; }
kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

answers() { kubectl_ get --raw /readyz >/dev/null 2>&1; }

kubeconfig_path() {
  case $CLUSTER in
    existing) echo "${KUBECONFIG:?CLUSTER=existing needs KUBECONFIG}" ;;
    *) echo "$KUBECONFIG_PATH" ;;
  esac
}

create_nodes() {
  local per_region=${1:-${NODES_PER_REGION:-}}
  log "creating GPU nodes from $(basename "$TOPOLOGY")${per_region:+ ($per_region per region)}"
  [[ -x $PYTHON ]] || die "no Python at $PYTHON (run 'make venv' or set PYTHON)"
  "$PYTHON" "$HACK_DIR/topology.py" nodes "$TOPOLOGY" ${per_region:+--nodes-per-region "$per_region"} \
    >"$STATE_DIR/nodes.json" || die "could not generate nodes from $TOPOLOGY"
  local expected
  expected=$("$PYTHON" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["items"]))' "$STATE_DIR/nodes.json")
  ((expected > 0)) || return 0
  kubectl_ apply --server-side --force-conflicts -f "$STATE_DIR/nodes.json" >/dev/null \
    || die "could not create the GPU nodes"
  if [[ $CLUSTER == kind ]]; then patch_kind_gpus; fi
  wait_for 300 "$expected GPU nodes to become Ready" nodes_ready "$expected"
}

nodes_ready() {
  local ready
  ready=$(kubectl_ get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)
  (( ready >= $1 ))
}

# kwokctl hands each component of a new cluster the first port counting down from 32767 on which
# nothing listens, counting afresh in every kwokctl process: two clusters created at the same
# time (the member clusters of the multi-cluster tests, or two checkouts' test clusters) are
# handed the same ports, and whichever starts second cannot listen. Clusters are therefore
# created and started one at a time on the machine, each after the previous one listens.
port_lock() {
  mkdir -p "$TSUNAGU_CACHE"
  exec 9>"$TSUNAGU_CACHE/kwokctl-ports.lock"
  flock -w 600 9 || die "timed out after 600 s waiting for another kwokctl to start its cluster"
}
port_unlock() { flock -u 9; exec 9>&-; }

up_kwok() {
  mkdir -p "$STATE_DIR"
  if ((REAL_NODES > 0)); then
    local why
    why=$(TSUNAGU_STATE=$STATE_DIR "$HACK_DIR/realnodes.sh" check) || die "$why"
  fi
  "$HACK_DIR/tools.sh"
  local bin
  for bin in "$K8S_BIN/kube-apiserver" "$K8S_BIN/kube-controller-manager" "$K8S_BIN/kube-scheduler" \
    "$K8S_BIN/kubectl" "$ETCD_BIN/etcd" "$KWOK_BIN/kwok" "$KWOK_BIN/kwokctl"; do
    [[ -x $bin ]] || die "missing tool $bin (hack/tools.sh did not build it)"
  done
  # kwokctl calls kubectl from PATH; make it ours, never a download.
  export PATH="$K8S_BIN:$PATH"
  export KWOK_KUBE_VERSION=$K8S_VERSION
  # Held until every component listens: see port_lock.
  port_lock
  if [[ -d $KWOK_WORKDIR/clusters/$CLUSTER_NAME ]]; then
    if answers; then
      log "cluster '$CLUSTER_NAME' is already up"
    else
      log "starting the existing cluster '$CLUSTER_NAME'"
      kwokctl_ start cluster --timeout 120s >"$STATE_DIR/kwokctl.log" 2>&1 || {
        log "restart failed (see $STATE_DIR/kwokctl.log); recreating the cluster"
        kwokctl_ delete cluster >/dev/null 2>&1 || true
        create_kwok_cluster
      }
    fi
  else
    create_kwok_cluster
  fi
  port_unlock
  # Written aside and moved: tests reading the kubeconfig meanwhile never see a half-written file.
  kwokctl_ get kubeconfig >"$KUBECONFIG_PATH.tmp" || die "could not read the cluster's kubeconfig"
  mv -f "$KUBECONFIG_PATH.tmp" "$KUBECONFIG_PATH"
  wait_for 120 "the API server to answer" answers
  create_nodes
  if ((REAL_NODES > 0)); then "$HACK_DIR/realnodes.sh" up; fi
}

# With real nodes, the kwok controller must leave them alone, and the API server must reach
# their kubelets (logs, exec) by InternalIP and be reachable from pods (the `kubernetes` Service).
real_node_args() {
  ((REAL_NODES > 0)) || return 0
  local ip
  ip=$(TSUNAGU_STATE=$STATE_DIR "$HACK_DIR/realnodes.sh" host-ip)
  # kwokctl v0.8.0 files a component's second --extra-args under the index of the argument, not
  # of the component: giving every component its first argument before any second one works.
  # Pods reach the API server at the `kubernetes` Service's first IP (10.0.0.1 by default) and
  # check its certificate, which kwokctl makes for loopback only unless told more names.
  cat >"$STATE_DIR/kwokctl-real-nodes.yaml" <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  kubeApiserverCertSANs: ["10.0.0.1", "$ip", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
EOF
  printf '%s\n' --config "$STATE_DIR/kwokctl-real-nodes.yaml" \
    --extra-args kube-apiserver=kubelet-preferred-address-types=InternalIP \
    --extra-args kwok-controller=manage-all-nodes=false \
    --extra-args kwok-controller=manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --extra-args kube-apiserver=bind-address=0.0.0.0 \
    --extra-args "kube-apiserver=advertise-address=$ip"
}

create_kwok_cluster() {
  local extra=()
  # Present exactly when the cluster was made for real nodes (hack/demo.sh reads it).
  rm -f "$STATE_DIR/kwokctl-real-nodes.yaml"
  mapfile -t extra < <(real_node_args)
  log "creating the kwok cluster '$CLUSTER_NAME' (kube-apiserver, etcd, kube-scheduler, kube-controller-manager $K8S_VERSION)"
  kwokctl_ create cluster --runtime binary \
    --kube-apiserver-binary "$K8S_BIN/kube-apiserver" \
    --kube-controller-manager-binary "$K8S_BIN/kube-controller-manager" \
    --kube-scheduler-binary "$K8S_BIN/kube-scheduler" \
    --kwok-controller-binary "$KWOK_BIN/kwok" \
    --etcd-binary "$ETCD_BIN/etcd" \
    --config "$HACK_DIR/kwok/stages.yaml" \
    --kubeconfig "$STATE_DIR/kwokctl-kubeconfig" \
    --disable-qps-limits "${extra[@]}" \
    --wait 120s --timeout 180s >"$STATE_DIR/kwokctl.log" 2>&1 \
    || { tail -n 20 "$STATE_DIR/kwokctl.log" >&2; die "kwokctl could not create the cluster (log: $STATE_DIR/kwokctl.log)"; }
}

up_kind() {
  need kind docker
  "$HACK_DIR/tools.sh"
  if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
    kind create cluster --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG_PATH" || die "kind create cluster failed"
  fi
  kind get kubeconfig --name "$CLUSTER_NAME" >"$KUBECONFIG_PATH"
  # kind has real kubelets; our GPU nodes are still simulated by kwok running against it.
  "$KWOK_BIN/kwok" --kubeconfig "$KUBECONFIG_PATH" --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --config "$HACK_DIR/kwok/stages.yaml" >"$STATE_DIR/kwok.log" 2>&1 &
  echo $! >"$STATE_DIR/kwok.pid"
  create_nodes
}

patch_kind_gpus() {
  local node
  for node in $(kubectl_ get nodes -l type=kwok -o name); do
    kubectl_ patch "$node" --subresource=status --type=merge \
      -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"8\"},\"allocatable\":{\"nvidia.com/gpu\":\"8\"}}}" >/dev/null
  done
}

up() {
  case $CLUSTER in
    kwok) up_kwok ;;
    kind) up_kind ;;
    existing)
      KUBECONFIG_PATH=$(kubeconfig_path)
      answers || die "the cluster in KUBECONFIG=$KUBECONFIG_PATH does not answer"
      ;;
    *) die "CLUSTER must be kwok, kind or existing (got '$CLUSTER')" ;;
  esac
  log "cluster ready: $(kubectl_ get nodes -l type=kwok --no-headers 2>/dev/null | wc -l) GPU nodes, $(kubectl_ get nodes -l type=real --no-headers 2>/dev/null | wc -l) real nodes"
  echo "export KUBECONFIG=$(kubeconfig_path)"
}

down() {
  if [[ -d $STATE_DIR/real ]]; then TSUNAGU_STATE=$STATE_DIR "$HACK_DIR/realnodes.sh" down; fi
  case $CLUSTER in
    kwok)
      if [[ -d $KWOK_WORKDIR/clusters/$CLUSTER_NAME ]]; then
        PATH="$K8S_BIN:$PATH" kwokctl_ delete cluster >/dev/null 2>&1 || true
      fi
      # Nothing may outlive `down`: stop any component kwokctl lost track of.
      pkill -f -- "$KWOK_WORKDIR/clusters/$CLUSTER_NAME" 2>/dev/null || true
      ;;
    kind)
      [[ -f $STATE_DIR/kwok.pid ]] && kill "$(cat "$STATE_DIR/kwok.pid")" 2>/dev/null || true
      kind delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
      ;;
    existing) log "CLUSTER=existing: nothing to delete" ;;
  esac
  rm -f "$KUBECONFIG_PATH" "$STATE_DIR/kwokctl-real-nodes.yaml"
  log "cluster '$CLUSTER_NAME' is down"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) KUBECONFIG_PATH=$(kubeconfig_path); answers && log "cluster answers" || { log "cluster is down"; exit 1; } ;;
  kubeconfig) kubeconfig_path ;;
  workdir) [[ $CLUSTER == kwok ]] || die "CLUSTER=$CLUSTER has no kwokctl directory"; echo "$KWOK_WORKDIR/clusters/$CLUSTER_NAME" ;;
  nodes) KUBECONFIG_PATH=$(kubeconfig_path); create_nodes "${2:-}" ;;
  *) echo "usage: $0 up|down|status|kubeconfig|workdir|nodes [N]" >&2; exit 2 ;;
esac
