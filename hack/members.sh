#!/usr/bin/env bash
# The member clusters of the multi-cluster tests (issue 17, tests/support/members.py): two kwok
# clusters of their own beside the hub (the test cluster of hack/cluster.sh), each a real
# kube-apiserver, etcd, kube-scheduler and kube-controller-manager with kwok GPU nodes of one
# region. Their names and state derive from the hub's, so every checkout's hub has its own:
#   member N: CLUSTER_NAME=${CLUSTER_NAME}-mN, TSUNAGU_STATE=${TSUNAGU_STATE}-mN, TOPOLOGY below.
#   hack/members.sh up [N]          bring both up (or member N); idempotent, reused when up
#   hack/members.sh down [N]        take both down (or member N); no process is left
#   hack/members.sh kubeconfig N    member N's admin kubeconfig path
#   hack/members.sh workdir N       kwokctl's directory of member N (tests/support/controlplane.py)
#   hack/members.sh env N           member N's CLUSTER_NAME, TSUNAGU_STATE and TOPOLOGY, as shell
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HUB_NAME=${CLUSTER_NAME:-tsunagu}
HUB_STATE=${TSUNAGU_STATE:-$REPO_ROOT/.cluster}
HUB_STATE=${HUB_STATE%/}
# Member N's topology: one region each, 4 nodes of 8 GPUs.
TOPOLOGIES=(member-fukuoka member-hokkaido)
MEMBERS=(1 2)

check_member() {
  [[ ${1:-} =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= ${#TOPOLOGIES[@]})) \
    || die "no member '${1:-}' (members are 1..${#TOPOLOGIES[@]})"
}

# Runs hack/cluster.sh for member N; nothing of the hub's own settings (its topology, node count,
# real nodes, another cluster type) leaks into it.
member_cluster() {
  local n=$1
  shift
  check_member "$n"
  env -u NODES_PER_REGION -u REAL_NODES -u REAL_REGIONS -u REAL_REGION -u KUBECONFIG \
    CLUSTER=kwok CLUSTER_NAME="$HUB_NAME-m$n" TSUNAGU_STATE="$HUB_STATE-m$n" \
    TOPOLOGY="$HACK_DIR/topology/${TOPOLOGIES[n - 1]}.yaml" \
    "$HACK_DIR/cluster.sh" "$@"
}

# Both at once: hack/cluster.sh creates one cluster at a time on the machine (its port lock),
# the rest (nodes, readiness) overlaps. Each member's output goes to its state directory.
up() {
  local n index ns=("$@") pids=() failed=0
  for n in "${ns[@]}"; do
    mkdir -p "$HUB_STATE-m$n"
    member_cluster "$n" up >"$HUB_STATE-m$n/up.log" 2>&1 &
    pids+=("$!")
  done
  for index in "${!pids[@]}"; do
    n=${ns[index]}
    if wait "${pids[index]}"; then
      log "member $n ($HUB_NAME-m$n) is up"
    else
      failed=1
      log "member $n ($HUB_NAME-m$n) did not come up:"
      tail -n 20 "$HUB_STATE-m$n/up.log" >&2
    fi
  done
  ((failed == 0)) || die "a member cluster did not come up (logs: $HUB_STATE-mN/up.log)"
}

down() {
  local n
  for n in "$@"; do member_cluster "$n" down; done
}

members=("${MEMBERS[@]}")
[[ -n ${2:-} ]] && { check_member "$2"; members=("$2"); }
case ${1:-} in
  up) up "${members[@]}" ;;
  down) down "${members[@]}" ;;
  kubeconfig) check_member "${2:-}"; echo "$HUB_STATE-m$2/kubeconfig" ;;
  workdir) check_member "${2:-}"; member_cluster "$2" workdir ;;
  env)
    check_member "${2:-}"
    printf 'CLUSTER_NAME=%q TSUNAGU_STATE=%q TOPOLOGY=%q\n' "$HUB_NAME-m$2" "$HUB_STATE-m$2" \
      "$HACK_DIR/topology/${TOPOLOGIES[$2 - 1]}.yaml"
    ;;
  *) echo "usage: $0 up|down [N] | kubeconfig|workdir|env N" >&2; exit 2 ;;
esac
