#!/usr/bin/env bash
# `make bench`: every benchmark of the project, each printing its own figures.
#   BENCH=engine,sim,latency,operator,takeover,throughput (default: all)   which ones to run
#   BENCH_BACKLOG=10000                                 pending jobs of the takeover benchmark
#   BENCH_NODES_PER_REGION=200                          cluster size for the operator benchmark
# Figures and the commands that produced them are kept in docs/benchmarks.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$REPO_ROOT/.venv/bin/python"
BENCH=${BENCH:-engine,sim,latency,operator,takeover,throughput}
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
if wants operator; then
  log "operator: gangs bound vs kube-scheduler on ${BENCH_NODES_PER_REGION:-200} nodes per region"
  # A cluster of its own, so the test cluster keeps its small size; removed afterwards.
  export CLUSTER_NAME=tsunagu-bench TSUNAGU_STATE="$REPO_ROOT/.cluster/bench"
  export NODES_PER_REGION=${BENCH_NODES_PER_REGION:-200}
  hack/cluster.sh up >/dev/null
  trap 'hack/cluster.sh down' EXIT
  "$K8S_BIN/kubectl" --kubeconfig "$(hack/cluster.sh kubeconfig)" apply --server-side -f crds >/dev/null
  "$K8S_BIN/kubectl" --kubeconfig "$(hack/cluster.sh kubeconfig)" wait --for=condition=Established \
    crd/regions.tsunagu.io crd/datasets.tsunagu.io crd/trainingjobs.tsunagu.io >/dev/null
  "$PY" hack/bench_operator.py
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
