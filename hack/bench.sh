#!/usr/bin/env bash
# `make bench`: every benchmark of the project, each printing its own figures.
#   BENCH=engine,sim,latency,operator,podgroups,takeover,throughput,members (default: all)   which ones to run
#   BENCH_BACKLOG=10000                                 pending jobs of the takeover benchmark
#   BENCH_NODES_PER_REGION=200                          cluster size for the operator and pod-group benchmarks
#   BENCH_CLUSTER_NAME=tsunagu-bench                    their cluster (its state under .cluster/)
#   BENCH_MEMBERS_PREFIX=tsunagu-bench-mc               the member benchmark's clusters: PREFIX-hub,
#                                                       PREFIX-a, PREFIX-b (states under .cluster/)
#   BENCH_MEMBERS_HUB_NODES_PER_REGION=110 BENCH_MEMBERS_NODES=170   their sizes (hub: 5 regions)
#   BENCH_MEMBERS_ARGS="--jobs 500 --memory-jobs 10000 --memory-nodes 1000"   hack/bench_members.py
# Figures and the commands that produced them are kept in docs/benchmarks.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$REPO_ROOT/.venv/bin/python"
BENCH=${BENCH:-engine,sim,latency,operator,podgroups,takeover,throughput,members}
wants() { [[ ",$BENCH," == *",$1,"* ]]; }
cd "$REPO_ROOT"

if wants engine; then
  log "decision engine: 47 regions × 5,000 nodes, 10,000-job backlog"
  "$PY" hack/bench_engine.py
fi
if wants sim; then
  log "simulator: tsunagu vs baseline policies, --topology japan --seed 1"
  "$PY" -m tsunagu.cli simulate --topology japan --seed 1
fi
if wants latency; then
  log "latency: reaction time from an RTT change to the measured matrix (5 s scrape)"
  "$PY" hack/bench_latency.py
fi
if wants throughput; then
  log "throughput: a data-reading loop through the delay proxy at 0–40 ms vs the data-stall model"
  "$PY" hack/bench_throughput.py
fi
# The operator and pod-group benchmarks share one cluster of their own (1,000 nodes by default),
# so the test cluster keeps its small size; it is made once and removed afterwards.
bench_cluster_up() {
  [[ -n ${BENCH_CLUSTER_UP:-} ]] && return 0
  export CLUSTER_NAME=${BENCH_CLUSTER_NAME:-tsunagu-bench}
  export TSUNAGU_STATE="$REPO_ROOT/.cluster/${CLUSTER_NAME#tsunagu-}"
  export NODES_PER_REGION=${BENCH_NODES_PER_REGION:-200}
  hack/cluster.sh up >/dev/null
  trap 'hack/cluster.sh down' EXIT
  "$K8S_BIN/kubectl" --kubeconfig "$(hack/cluster.sh kubeconfig)" apply --server-side -f crds >/dev/null
  "$K8S_BIN/kubectl" --kubeconfig "$(hack/cluster.sh kubeconfig)" wait --for=condition=Established \
    crd/regions.tsunagu.io crd/datasets.tsunagu.io crd/trainingjobs.tsunagu.io >/dev/null
  BENCH_CLUSTER_UP=1
}
if wants operator; then
  log "operator: gangs bound vs kube-scheduler on ${BENCH_NODES_PER_REGION:-200} nodes per region"
  bench_cluster_up
  "$PY" hack/bench_operator.py
fi
if wants podgroups; then
  log "pod groups: kube-scheduler, Coscheduling $SCHEDULER_PLUGINS_VERSION, tsunagu, and the API server's limit"
  # Coscheduling's kube-scheduler and the Go client of the limit are built here only (cached).
  hack/tools.sh coscheduling
  hack/tools.sh benchlimit
  bench_cluster_up
  "$PY" hack/bench_podgroups.py
fi
if wants takeover; then
  log "leadership: start-up with ${BENCH_BACKLOG:-10000} pending jobs, takeover after kill -9, faults"
  # A cluster of its own at the test cluster's size; removed afterwards.
  (
    export CLUSTER_NAME=tsunagu-bench-lease TSUNAGU_STATE="$REPO_ROOT/.cluster/bench-lease"
    hack/cluster.sh up >/dev/null
    trap 'hack/cluster.sh down' EXIT
    "$K8S_BIN/kubectl" --kubeconfig "$(hack/cluster.sh kubeconfig)" apply --server-side -f crds >/dev/null
    "$K8S_BIN/kubectl" --kubeconfig "$(hack/cluster.sh kubeconfig)" wait --for=condition=Established \
      crd/regions.tsunagu.io crd/datasets.tsunagu.io crd/trainingjobs.tsunagu.io >/dev/null
    "$PY" hack/bench_takeover.py --backlog "${BENCH_BACKLOG:-10000}"
  )
fi
if wants members; then
  log "member clusters: a hub and two members (their own control planes) behind a 15 ms RTT proxy"
  # Three clusters of their own, made here and removed afterwards: the hub with enough GPUs for
  # the whole burst on its own (the one-cluster side), each member about a third of it.
  (
    prefix=${BENCH_MEMBERS_PREFIX:-tsunagu-bench-mc}
    state="$REPO_ROOT/.cluster/${prefix#tsunagu-}"
    hub=(CLUSTER_NAME="$prefix-hub" TSUNAGU_STATE="$state-hub"
      NODES_PER_REGION="${BENCH_MEMBERS_HUB_NODES_PER_REGION:-110}")
    a=(CLUSTER_NAME="$prefix-a" TSUNAGU_STATE="$state-a" TOPOLOGY="$HACK_DIR/topology/fukuoka-cloud.yaml"
      NODES_PER_REGION="${BENCH_MEMBERS_NODES:-170}")
    b=(CLUSTER_NAME="$prefix-b" TSUNAGU_STATE="$state-b" TOPOLOGY="$HACK_DIR/topology/fukuoka-cloud.yaml"
      NODES_PER_REGION="${BENCH_MEMBERS_NODES:-170}")
    trap 'env "${a[@]}" hack/cluster.sh down; env "${b[@]}" hack/cluster.sh down; env "${hub[@]}" hack/cluster.sh down' EXIT
    env "${hub[@]}" hack/cluster.sh up >/dev/null
    env "${a[@]}" hack/cluster.sh up >/dev/null
    env "${b[@]}" hack/cluster.sh up >/dev/null
    hub_kubeconfig=$(env "${hub[@]}" hack/cluster.sh kubeconfig)
    "$K8S_BIN/kubectl" --kubeconfig "$hub_kubeconfig" apply --server-side -f crds >/dev/null
    "$K8S_BIN/kubectl" --kubeconfig "$hub_kubeconfig" wait --for=condition=Established \
      crd/regions.tsunagu.io crd/datasets.tsunagu.io crd/trainingjobs.tsunagu.io crd/clusters.tsunagu.io >/dev/null
    # shellcheck disable=SC2086  # BENCH_MEMBERS_ARGS is a list of flags
    KUBECTL="$K8S_BIN/kubectl" "$PY" hack/bench_members.py --hub "$hub_kubeconfig" \
      --member "cloud-a=$(env "${a[@]}" hack/cluster.sh kubeconfig)" \
      --member "cloud-b=$(env "${b[@]}" hack/cluster.sh kubeconfig)" ${BENCH_MEMBERS_ARGS:-}
  )
fi
