#!/usr/bin/env bash
# The demo: data in Tokyo, Tokyo busy, jobs placed elsewhere by *measured* latency — some of them
# into another cluster.
#   hack/demo.sh up             (make demo) bring both clusters up (hack/cluster.sh), run the story
#   hack/demo.sh down           stop everything `up` started and delete what it applied
#   hack/demo.sh clusters-down  (make demo-down, after `down`) stop the hub and the member cluster
#
# Two clusters: the hub, "your Tokyo data centre" (CLUSTER_NAME, TSUNAGU_STATE: the data, a busy
# GPU fleet, your other sites, the operator), and a member, "a GPU cloud in Fukuoka", a cluster of
# its own (kube-apiserver, etcd, scheduler, controller-manager, kwok GPU nodes of
# hack/topology/fukuoka-cloud.yaml) named $CLUSTER_NAME-fukuoka, its state in the hub's
# ($TSUNAGU_STATE/member-fukuoka; DEMO_MEMBER_CLUSTER_NAME, DEMO_MEMBER_STATE choose others).
# The hub reaches it through the Cluster object fukuoka-cloud, whose Secret holds the member's
# kubeconfig; Region fukuoka names it in clusterRef, so gangs placed in Fukuoka are made in the
# member.
#
# `up` starts, on this machine: one `tsunagu probe` per region on loopback with delay proxies
# between them (hack/demo_network.py), a Prometheus scraping them (hack/prometheus.sh), and the
# operator, run as the Helm chart's ServiceAccount (a TokenRequest token, nothing more), reading
# the latency from that Prometheus. The chart itself is installed into the cluster (its pod runs
# on a simulated kwok node, where nothing executes). Then examples/ is applied and the outcome is
# read back from the TrainingJobs' status. Pid files and logs live in .cluster/demo/.
#
# Where real nodes can run (root, and `hack/realnodes.sh check` passes, as for the tests), the
# member cluster also gets two real kubelet nodes in Fukuoka (NVIDIA-L4 GPUs, tainted so only the job
# meant for them goes there), and one more TrainingJob, smoke-allreduce, really runs on them: its
# ranks rendezvous, read a sample of the Tokyo data through a delay proxy of Tokyo-Fukuoka's
# RTT, all-reduce and print. Elsewhere the demo runs kwok only and says why, in one line.
# DEMO_REAL_NODES=off chooses kwok only.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER_NAME=${CLUSTER_NAME:-tsunagu}
CLUSTER_STATE="${TSUNAGU_STATE:-$REPO_ROOT/.cluster}"
STATE="$CLUSTER_STATE/demo"
# The hub's nodes: the sites of hack/topology/japan.yaml but Fukuoka, whose GPUs are the member's.
HUB_TOPOLOGY="$HACK_DIR/topology/tokyo-hub.yaml"
# The member cluster, "a GPU cloud in Fukuoka", and how the hub names it.
MEMBER=fukuoka-cloud
MEMBER_REGION=fukuoka
MEMBER_SECRET=$MEMBER-kubeconfig
MEMBER_CLUSTER_NAME=${DEMO_MEMBER_CLUSTER_NAME:-$CLUSTER_NAME-fukuoka}
MEMBER_STATE=${DEMO_MEMBER_STATE:-$CLUSTER_STATE/member-fukuoka}
MEMBER_ENV=(CLUSTER_NAME="$MEMBER_CLUSTER_NAME" TSUNAGU_STATE="$MEMBER_STATE"
  TOPOLOGY="$HACK_DIR/topology/fukuoka-cloud.yaml")
PYTHON=${PYTHON:-$REPO_ROOT/.venv/bin/python}
KUBECTL="$K8S_BIN/kubectl"
HELM="$HELM_BIN/helm"
ADMIN_KUBECONFIG=$("$HACK_DIR/cluster.sh" kubeconfig)
MEMBER_KUBECONFIG=$(env "${MEMBER_ENV[@]}" "$HACK_DIR/cluster.sh" kubeconfig)
# The real nodes of the demo: in the member, in Fukuoka, where the data is 15 ms away
# (hack/demo_network.py).
REAL_DEMO_REGION=fukuoka
REAL_DEMO_ENV=(REAL_REGIONS=$REAL_DEMO_REGION,$REAL_DEMO_REGION REAL_GPUS=2 REAL_GPU_PRODUCT=NVIDIA-L4
  REAL_TAINTS=tsunagu.io/real-node=true:NoSchedule "REAL_IMAGES=pause trainer")
REAL_JOB=smoke-allreduce
OPERATOR_KUBECONFIG="$STATE/operator.kubeconfig"
CHART_NAMESPACE=tsunagu-system
RELEASE=tsunagu
PROM_PORT=${DEMO_PROM_PORT:-9090}
METRICS_PORT=${DEMO_METRICS_PORT:-8080}
LIVENESS_PORT=${DEMO_LIVENESS_PORT:-8081}
PROM_URL="http://127.0.0.1:$PROM_PORT"
EXAMPLES="$REPO_ROOT/examples"

# wait_for silences its predicate; a predicate that finds a dead process reports on fd 3.
exec 3>&2
gone() {
  tail -n 30 "$2" >&3 || true
  printf '[tsunagu] error: %s exited (log: %s)\n' "$1" "$2" >&3
  exit 1
}

kubectl_() { "$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
member_kubectl() { "$KUBECTL" --kubeconfig "$MEMBER_KUBECONFIG" "$@"; }
prometheus_() { PROM_PORT=$PROM_PORT TSUNAGU_STATE="$STATE/prometheus" "$HACK_DIR/prometheus.sh" "$@" 3>&-; }

# The pid in FILE if that process is alive and its command line contains PATTERN (a recycled pid
# belongs to someone else and is never signalled).
live_pid() {
  local file=$1 pattern=$2 pid
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "$pattern" || return 1
  echo "$pid"
}

# Whether the process we just started (pid in FILE) is still alive. Not live_pid: right after
# the fork, before the exec, its command line is still this script's.
started() { kill -0 "$(<"$1")" 2>/dev/null; }

# SIGTERM, then up to 20 s for a clean exit, then SIGKILL.
stop_pid() {
  local pid=$1 what=$2 deadline=$(( $(date +%s) + 20 ))
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(date +%s) >= deadline )); then
      log "$what (pid $pid) ignored SIGTERM for 20 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  log "stopped $what (pid $pid)"
}

cluster_answers() { kubectl_ get --raw /readyz >/dev/null 2>&1; }
member_answers() { member_kubectl get --raw /readyz >/dev/null 2>&1; }

# REAL=1 when the demo runs on real nodes too; says which way it goes, in one line.
choose_mode() {
  local why=""
  REAL=""
  if [[ ${DEMO_REAL_NODES:-auto} == off ]]; then why="DEMO_REAL_NODES=off"
  elif ! why=$(TSUNAGU_STATE=$MEMBER_STATE "$HACK_DIR/realnodes.sh" check 2>&1); then
    why=${why#cannot run real nodes: }
  elif [[ -d $MEMBER_STATE/kwok/clusters/$MEMBER_CLUSTER_NAME && ! -f $MEMBER_STATE/kwokctl-real-nodes.yaml ]]; then
    why="the member cluster was made without real nodes; make demo-down, then make demo, to get them"
  else
    REAL=1
    log "real nodes: 2 kubelets in $REAL_DEMO_REGION (the member cluster) run the $REAL_JOB job's pods for real; the other nodes are simulated by kwok"
    return 0
  fi
  log "kwok only (every node simulated, no pod really runs): $why"
}

cluster_up() {
  log "starting the hub '$CLUSTER_NAME' (your Tokyo data centre and your other sites)"
  TOPOLOGY=$HUB_TOPOLOGY "$HACK_DIR/cluster.sh" up >/dev/null || die "the hub cluster did not come up"
  log "starting the member '$MEMBER_CLUSTER_NAME' (a GPU cloud in Fukuoka: a control plane of its own)"
  if [[ -n $REAL ]]; then
    env "${MEMBER_ENV[@]}" "${REAL_DEMO_ENV[@]}" "$HACK_DIR/cluster.sh" up >/dev/null \
      || die "the member cluster did not come up"
  else
    env "${MEMBER_ENV[@]}" "$HACK_DIR/cluster.sh" up >/dev/null || die "the member cluster did not come up"
  fi
}

# The member joins the hub as docs/clusters.md says: the chart in member mode in the member (the
# hub's identity there, with only what the hub does in a member, namespaces included: the hub
# creates the jobs' namespaces, so nothing is prepared in it by hand), a kubeconfig of that
# identity (hack/member-kubeconfig.sh) in a Secret of the operator's namespace that the chart
# lets the operator read, a Cluster object naming the Secret, and Region fukuoka pointed at it.
connect_member() {
  log "installing the chart in the member in member mode (the hub's identity there, and its role)"
  "$HELM" upgrade --install "$RELEASE" "$REPO_ROOT/charts/tsunagu" --kubeconfig "$MEMBER_KUBECONFIG" \
    --namespace "$CHART_NAMESPACE" --create-namespace --skip-crds \
    --set mode=member --set member.createNamespaces=true \
    --wait --timeout 60s >"$STATE/helm-member.log" 2>&1 \
    || { cat "$STATE/helm-member.log" >&2; die "helm install in the member failed"; }
  KUBECTL=$KUBECTL "$HACK_DIR/member-kubeconfig.sh" --kubeconfig "$MEMBER_KUBECONFIG" \
    --namespace "$CHART_NAMESPACE" --service-account "$RELEASE-hub" --name "$MEMBER" \
    --duration 24h --output "$STATE/member.kubeconfig" >"$STATE/member-kubeconfig.log" 2>&1 \
    || { cat "$STATE/member-kubeconfig.log" >&2; die "no kubeconfig of the hub's identity in the member"; }
  log "connecting the member: Secret $CHART_NAMESPACE/$MEMBER_SECRET, Cluster $MEMBER, Region $MEMBER_REGION in it"
  kubectl_ create secret generic "$MEMBER_SECRET" -n "$CHART_NAMESPACE" \
    --from-file=kubeconfig="$STATE/member.kubeconfig" --dry-run=client -o yaml \
    | kubectl_ apply --server-side --force-conflicts -f - >/dev/null
  rm -f "$STATE/member.kubeconfig"
  kubectl_ apply --server-side --force-conflicts -f - >/dev/null <<MANIFEST
apiVersion: tsunagu.io/v1alpha1
kind: Cluster
metadata:
  name: $MEMBER
spec:
  kubeconfigSecretRef: {name: $MEMBER_SECRET}
  createNamespaces: true
MANIFEST
  # A patch, not an apply of 10-regions.yaml: a later apply of the examples leaves clusterRef be.
  kubectl_ patch region "$MEMBER_REGION" --type merge \
    -p "{\"spec\":{\"clusterRef\":{\"name\":\"$MEMBER\"}}}" >/dev/null
}

# The member answered the hub and its region takes work.
member_connected() {
  local reachable available
  reachable=$(kubectl_ get cluster.tsunagu.io "$MEMBER" \
    -o jsonpath='{.status.conditions[?(@.type=="Reachable")].status}' 2>/dev/null)
  available=$(kubectl_ get region "$MEMBER_REGION" \
    -o jsonpath='{.status.conditions[?(@.type=="Available")].status}' 2>/dev/null)
  [[ $reachable == True && $available == True ]]
}

# The job that runs on the real nodes, and its data: a sample of Tokyo's claims served over HTTP
# by hack/demo_network.py through a delay proxy of Tokyo-Fukuoka's RTT.
real_job_manifest() {
  cat <<EOF
apiVersion: tsunagu.io/v1alpha1
kind: Dataset
metadata:
  name: claims-sample
  namespace: team-a
spec:
  homeRegion: tokyo
  residency: {mode: RemoteAccess, deniedRegions: [hokkaido]}
  access: {endpoint: "$(<"$STATE/network/dataset-url")"}
  sizeGiB: 1
  classification: personal data (a sample of the insurance claims)
---
apiVersion: tsunagu.io/v1alpha1
kind: TrainingJob
metadata:
  name: $REAL_JOB
  namespace: team-a
spec:
  datasetRef: {name: claims-sample}
  replicas: 2
  gpusPerReplica: 2          # one rank per real node
  gpuProduct: NVIDIA-L4      # only the real nodes in $REAL_DEMO_REGION have these
  priority: 1
  # No latency budget: it goes wherever there are L4s, however busy this machine makes the RTT.
  placement: {mode: Bind, objective: Fastest}
  template:
    spec:
      terminationGracePeriodSeconds: 1
      tolerations: [{key: tsunagu.io/real-node, operator: Exists, effect: NoSchedule}]
      containers:
        - name: trainer
          image: $("$HACK_DIR/image.sh" tag trainer)
          imagePullPolicy: Never
          env: [{name: TRAINER_RECORDS, value: "3"}]
EOF
}

real_job_finished() {
  local reason
  reason=$(kubectl_ get trainingjob "$REAL_JOB" -n team-a \
    -o jsonpath='{.status.conditions[?(@.type=="Finished")].reason}' 2>/dev/null)
  if [[ $reason == Failed ]]; then
    kubectl_ describe trainingjob "$REAL_JOB" -n team-a >&3 || true
    printf '[tsunagu] error: %s failed\n' "$REAL_JOB" >&3
    exit 1
  fi
  [[ $reason == Succeeded ]]
}

# The pods are the member's: the hub made them there.
print_real_logs() {
  local rank node
  printf '\nThe %s ranks really ran in the member (kubectl --kubeconfig %s logs -n team-a %s-RANK):\n' \
    "$REAL_JOB" "$MEMBER_KUBECONFIG" "$REAL_JOB"
  for rank in 0 1; do
    node=$(member_kubectl get pod "$REAL_JOB-$rank" -n team-a -o jsonpath='{.spec.nodeName}')
    printf '  --- rank %s on %s\n' "$rank" "$node"
    member_kubectl logs "$REAL_JOB-$rank" -n team-a | sed 's/^/  /'
  done
}

start_network() {
  log "starting the latency network: one probe per region, delay proxies between them"
  rm -f "$STATE/network/ready"
  local dataset=()
  if [[ -n $REAL ]]; then
    dataset=(--dataset-listen "$(TSUNAGU_STATE=$MEMBER_STATE "$HACK_DIR/realnodes.sh" host-ip)")
  fi
  "$PYTHON" "$HACK_DIR/demo_network.py" serve "$STATE/network" "${dataset[@]}" \
    >"$STATE/network.log" 2>&1 </dev/null 3>&- &
  echo $! >"$STATE/network.pid"
  network_ready() {
    started "$STATE/network.pid" || gone "the latency network" "$STATE/network.log"
    [[ -f $STATE/network/ready ]]
  }
  wait_for 60 "the probes to answer" network_ready
  NETWORK_READY_AT=$(date +%s)
}

# The operator reads p95 + jitter over a 20 s window; the first seconds of the probes (five
# Python processes starting at once) are noisy. Decisions wait until that noise left the window.
measurements_settled() { (( $(date +%s) >= NETWORK_READY_AT + 25 )); }

install_chart() {
  log "installing the Helm chart into $CHART_NAMESPACE (Pod Security: restricted)"
  kubectl_ apply --server-side -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $CHART_NAMESPACE
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
EOF
  "$HELM" upgrade --install "$RELEASE" "$REPO_ROOT/charts/tsunagu" --kubeconfig "$ADMIN_KUBECONFIG" \
    --namespace "$CHART_NAMESPACE" --set operator.prometheus.url="$PROM_URL" \
    --set "clusters.kubeconfigSecrets={$MEMBER_SECRET}" \
    --wait --timeout 120s >"$STATE/helm.log" 2>&1 \
    || { cat "$STATE/helm.log" >&2; die "helm install failed"; }
}

# A kubeconfig that is the chart's ServiceAccount and nothing more: the operator below can do
# exactly what the chart's RBAC grants.
write_operator_kubeconfig() {
  local token server ca
  token=$(kubectl_ create token "$RELEASE" -n "$CHART_NAMESPACE" --duration 24h) \
    || die "could not get a token for ServiceAccount $CHART_NAMESPACE/$RELEASE"
  server=$(kubectl_ config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl_ config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  rm -f "$OPERATOR_KUBECONFIG"
  local k=("$KUBECTL" --kubeconfig "$OPERATOR_KUBECONFIG")
  "${k[@]}" config set-cluster demo --server="$server" >/dev/null
  if [[ -n $ca ]]; then
    "${k[@]}" config set clusters.demo.certificate-authority-data "$ca" >/dev/null
  else
    "${k[@]}" config set-cluster demo --insecure-skip-tls-verify=true >/dev/null
  fi
  "${k[@]}" config set-credentials "$RELEASE" --token="$token" >/dev/null
  "${k[@]}" config set-context "$RELEASE" --cluster=demo --user="$RELEASE" >/dev/null
  "${k[@]}" config use-context "$RELEASE" >/dev/null
  chmod 600 "$OPERATOR_KUBECONFIG"
}

start_operator() {
  port_free "$METRICS_PORT"
  port_free "$LIVENESS_PORT"
  log "starting the operator as ServiceAccount $CHART_NAMESPACE/$RELEASE, latency from $PROM_URL"
  KUBECONFIG="$OPERATOR_KUBECONFIG" "$PYTHON" -m tsunagu.cli run \
    --prometheus-url "$PROM_URL" --latency-interval 2 \
    --metrics-port "$METRICS_PORT" --liveness-port "$LIVENESS_PORT" --log-format plain \
    >"$STATE/operator.log" 2>&1 </dev/null 3>&- &
  echo $! >"$STATE/operator.pid"
  operator_healthy() {
    started "$STATE/operator.pid" || gone "the operator" "$STATE/operator.log"
    curl -fsS -o /dev/null "http://127.0.0.1:$LIVENESS_PORT/healthz"
  }
  wait_for 60 "the operator to answer on /healthz" operator_healthy
}

# True once the operator shows, in Region tokyo's status, a Prometheus measurement to every
# other region: from here on decisions use the measured network, not the declared links.
latency_measured() {
  local sources
  sources=$(kubectl_ get region tokyo -o jsonpath='{range .status.links[*]}{.source}{"\n"}{end}')
  (( $(grep -c '^Prometheus$' <<<"$sources") >= 4 ))
}

every_job_decided() {
  local reasons total
  total=$(kubectl_ get trainingjobs -n team-a --no-headers 2>/dev/null | wc -l)
  reasons=$(kubectl_ get trainingjobs -n team-a \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Scheduled")].reason}{"\n"}{end}')
  (( total > 0 )) && (( $(grep -c . <<<"$reasons") == total ))
}

# The story's outcome: every job placed but the one whose data is Pinned to full Tokyo. On a busy
# machine the probes' first minutes measure more than the links' RTT (scheduling delay counts),
# so a job may first be refused a budget and be placed once the measurements settle.
PINNED_JOB=scan-segmentation
story_settled() {
  local waiting
  waiting=$(kubectl_ get trainingjobs -n team-a \
    -o jsonpath='{range .items[*]}{.metadata.name} {.status.region}{"\n"}{end}' | awk 'NF == 1' | xargs)
  [[ $waiting == "$PINNED_JOB" ]]
}

# Every placed job runs all its replicas (or has already finished with all of them).
placed_jobs_running() {
  local replicas running succeeded
  while read -r replicas running succeeded; do
    [[ -z $replicas || $replicas == "${running:-0}" || $replicas == "${succeeded:-0}" ]] || return 1
  done < <(kubectl_ get trainingjobs -n team-a -o jsonpath='{range .items[?(@.status.region)]}{.spec.replicas} {.status.runningReplicas} {.status.succeededReplicas}{"\n"}{end}')
}

up() {
  local started=$SECONDS
  need curl
  [[ -x $PYTHON ]] || die "no Python at $PYTHON (run 'make venv')"
  choose_mode
  cluster_up
  cluster_answers || die "the hub cluster does not answer"
  member_answers || die "the member cluster does not answer"
  down_processes
  mkdir -p "$STATE"
  # A failed `up` leaves no process behind (the objects stay for a look; `down` removes them).
  trap 'code=$?; if (( code != 0 )); then log "demo failed; stopping its processes"; down_processes; fi' EXIT
  start_network
  prometheus_ up "$STATE/network/prometheus.yml" >/dev/null
  install_chart
  write_operator_kubeconfig

  log "applying examples/: namespaces, Regions, Datasets, and the inference fleet that fills Tokyo"
  kubectl_ apply --server-side --force-conflicts -f "$EXAMPLES/00-namespaces.yaml" \
    -f "$EXAMPLES/10-regions.yaml" -f "$EXAMPLES/20-datasets.yaml" \
    -f "$EXAMPLES/30-tokyo-busy.yaml" >/dev/null
  kubectl_ rollout status deployment/inference-tokyo -n serving --timeout=90s >/dev/null \
    || die "the inference fleet did not start in Tokyo"
  connect_member

  start_operator
  wait_for 60 "Cluster $MEMBER to be reachable and Region $MEMBER_REGION available" member_connected
  wait_for 120 "measured latency (Prometheus) in Region tokyo's status" latency_measured
  log "letting the first 20 s of measurements (start-up noise) leave the p95 window"
  wait_for 60 "steady measurements" measurements_settled

  log "submitting the TrainingJobs (examples/40-trainingjobs.yaml)"
  kubectl_ apply --server-side --force-conflicts -f "$EXAMPLES/40-trainingjobs.yaml" >/dev/null
  if [[ -n $REAL ]]; then
    log "submitting $REAL_JOB, for the real nodes in $REAL_DEMO_REGION"
    real_job_manifest >"$STATE/real-job.yaml"
    kubectl_ apply --server-side --force-conflicts -f "$STATE/real-job.yaml" >/dev/null
  fi
  wait_for 60 "a decision for every TrainingJob" every_job_decided
  if ! (wait_for 120 "every job but $PINNED_JOB placed" story_settled) 2>/dev/null; then
    log "after 120 s more jobs than $PINNED_JOB still wait: the measured RTTs (this machine's load counts) exceed their budgets; the summary says which"
  fi
  wait_for 60 "the placed jobs' workers to run" placed_jobs_running
  if [[ -n $REAL ]]; then wait_for 120 "$REAL_JOB to finish on the real nodes" real_job_finished; fi

  KUBECTL=$KUBECTL "$PYTHON" "$HACK_DIR/demo_network.py" summary --kubeconfig "$ADMIN_KUBECONFIG" \
    --member "$MEMBER=$MEMBER_KUBECONFIG"
  if [[ -n $REAL ]]; then print_real_logs; fi
  cat <<EOF

Demo up in $(( SECONDS - started )) s. Look around:
  export KUBECONFIG=$ADMIN_KUBECONFIG    # the hub
  kubectl get trainingjobs -A            kubectl describe trainingjob -n team-a vision-pretrain
  kubectl get regions,clusters.tsunagu.io   kubectl get pods -n team-a -o wide
  kubectl --kubeconfig $MEMBER_KUBECONFIG get pods -n team-a -o wide   # the member
  Prometheus $PROM_URL (tsunagu_probe_rtt_seconds)   operator metrics http://127.0.0.1:$METRICS_PORT/metrics
  operator log $STATE/operator.log
Free Tokyo (kubectl scale deployment/inference-tokyo -n serving --replicas=2) and watch
scan-segmentation start at home. Stop everything with: make demo-down
EOF
}

# The local processes only: operator, Prometheus, probes and proxies.
down_processes() {
  local pid
  if pid=$(live_pid "$STATE/operator.pid" tsunagu.cli); then stop_pid "$pid" operator; fi
  rm -f "$STATE/operator.pid"
  if [[ -d $STATE/prometheus ]]; then prometheus_ down >/dev/null 2>&1 || true; fi
  if pid=$(live_pid "$STATE/network.pid" demo_network.py); then stop_pid "$pid" "latency network"; fi
  rm -f "$STATE/network.pid"
  # A probe outlives the network process only if that was killed; its pid was recorded.
  if [[ -f $STATE/network/probes.pids ]]; then
    while read -r pid; do
      [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "tsunagu.cli probe" \
        && stop_pid "$pid" "probe"
    done <"$STATE/network/probes.pids"
    rm -f "$STATE/network/probes.pids"
  fi
}

down() {
  if cluster_answers && live_pid "$STATE/operator.pid" tsunagu.cli >/dev/null; then
    # A job placed in the member holds the finalizer tsunagu.io/member-objects until the
    # operator has removed what it made there: delete the jobs while the operator still runs.
    log "deleting the TrainingJobs (the operator removes their gangs, in the member too)"
    kubectl_ delete trainingjobs -n team-a --all --wait --timeout=60s >/dev/null 2>&1 || true
  fi
  down_processes
  if cluster_answers; then
    # Finalizers no one is left to remove (the operator was not running, or the member was away):
    # what they waited for goes with the member's namespace below, or with the member itself.
    local object
    for object in $(kubectl_ get trainingjobs,datasets -n team-a -o name 2>/dev/null); do
      kubectl_ patch -n team-a "$object" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done
    log "deleting the example objects, the member's Cluster and Secret, and the chart"
    if [[ -f $STATE/real-job.yaml ]]; then
      kubectl_ delete -f "$STATE/real-job.yaml" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    fi
    kubectl_ delete -f "$EXAMPLES" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    kubectl_ delete cluster.tsunagu.io "$MEMBER" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    kubectl_ delete secret "$MEMBER_SECRET" -n "$CHART_NAMESPACE" --ignore-not-found >/dev/null 2>&1 || true
    "$HELM" uninstall "$RELEASE" --namespace "$CHART_NAMESPACE" --kubeconfig "$ADMIN_KUBECONFIG" \
      >/dev/null 2>&1 || true
    kubectl_ delete namespace "$CHART_NAMESPACE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  if member_answers; then
    member_kubectl delete namespace team-a --ignore-not-found --wait=false >/dev/null 2>&1 || true
    "$HELM" uninstall "$RELEASE" --namespace "$CHART_NAMESPACE" --kubeconfig "$MEMBER_KUBECONFIG" \
      >/dev/null 2>&1 || true
  fi
  rm -f "$OPERATOR_KUBECONFIG" "$STATE/real-job.yaml" "$STATE/member.kubeconfig"
  log "demo stopped"
}

# Both clusters of the demo, member first (its real nodes, if any, with it).
clusters_down() {
  env "${MEMBER_ENV[@]}" "$HACK_DIR/cluster.sh" down
  "$HACK_DIR/cluster.sh" down
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  clusters-down) clusters_down ;;
  *) die "usage: $(basename "$0") up|down|clusters-down" ;;
esac
