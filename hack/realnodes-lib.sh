# Helpers of hack/realnodes.sh: one real node (containerd + kubelet) and the host-wide kube-proxy
# and CoreDNS (hack/realnodes-host.sh records and restores the host). Source it; do not run it.

STATE_DIR=${TSUNAGU_STATE:-$REPO_ROOT/.cluster}
KUBECONFIG_PATH="$STATE_DIR/kubeconfig"
REAL_DIR="$STATE_DIR/real"
REAL_REGION=${REAL_REGION:-kanto}
# The region of each node in order (e.g. kanto,kanto,kyushu); unset: REAL_NODES nodes, all in
# REAL_REGION. REAL_NODES defaults to the length of the list.
IFS=, read -r -a REAL_NODE_REGIONS <<<"${REAL_REGIONS:-}"
REAL_NODES=${REAL_NODES:-${#REAL_NODE_REGIONS[@]}}
((REAL_NODES > 0)) || REAL_NODES=2
REAL_GPUS=${REAL_GPUS:-2}
REAL_GPU_PRODUCT=${REAL_GPU_PRODUCT:-NVIDIA-H100-80GB-HBM3}
# Taints the nodes register with (KEY=VALUE:EFFECT,…), e.g. to keep other pods off them.
REAL_TAINTS=${REAL_TAINTS:-}
# Pod subnets 10.233.<n>.0/24, one per node; kubelets listen on REAL_PORT_BASE + 2n.
REAL_POD_PREFIX=${REAL_POD_PREFIX:-10.233}
REAL_PORT_BASE=${REAL_PORT_BASE:-11250}
CNI_BIN_DIR=${CNI_BIN_DIR:-/usr/lib/cni}
# Images built by hack/image.sh and imported into every node's containerd.
REAL_IMAGES=${REAL_IMAGES:-pause trainer operator}

kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ctr_() { ctr --address "$REAL_DIR/nodes/$1/containerd.sock" --namespace k8s.io "${@:2}"; }

# The region of node N: its entry in REAL_REGIONS, the last entry past the end, else REAL_REGION.
node_region() {
  local count=${#REAL_NODE_REGIONS[@]}
  if ((count == 0)); then echo "$REAL_REGION"
  elif (($1 < count)); then echo "${REAL_NODE_REGIONS[$1]}"
  else echo "${REAL_NODE_REGIONS[count - 1]}"
  fi
}

node_name() { echo "real-$(node_region "$1")-$1"; }

host_ip() {
  local ip
  ip=$(ip -4 route get 192.0.2.255 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
  [[ -n $ip ]] || ip=$(ip -4 -o addr show scope global | awk '{sub("/.*", "", $4); print $4; exit}')
  echo "$ip"
}

# The Debian packages real nodes need, installed with apt-get when missing (root only). No
# package daemon is started: a policy-rc.d says no while they install, and each node runs a
# containerd of its own.
REAL_NODE_PACKAGES=(containerd runc containernetworking-plugins iptables debootstrap gcc libc6-dev)

install_host_packages() {
  [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null || return 0
  local missing=() package
  for package in "${REAL_NODE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$package")
  done
  (( ${#missing[@]} )) || return 0
  local added_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  log "installing ${missing[*]} with apt-get (first use of real nodes)"
  if ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
    apt-get update -qq || log "apt-get update failed"
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || log "apt-get install ${missing[*]} failed"
  [[ -n "$added_policy" ]] && rm -f /usr/sbin/policy-rc.d
  return 0
}

# The state directory of real nodes that run here for another cluster, if any: they share the
# host's kube-proxy chains, port 53, bridge names and kubelet ports with ours.
other_real_nodes() {
  local line dir
  while read -r line; do
    dir=${line#*--config }
    dir=${dir%%/real/nodes/*}
    [[ $dir == "$STATE_DIR" ]] && continue
    echo "$dir"
    return 0
  done < <(pgrep -a containerd 2>/dev/null | grep -- '--config .*/real/nodes/.*/containerd.toml' || true)
  return 1
}

# Says in one line why real nodes cannot run here, or nothing (exit 0) when they can.
check_host() {
  install_host_packages
  local why="" other
  if [[ $(id -u) != 0 ]]; then why="real nodes need root (containerd, cgroups, network namespaces)"
  elif ! command -v containerd >/dev/null || ! command -v runc >/dev/null || ! command -v ctr >/dev/null; then
    why="containerd, ctr and runc are not installed (apt-get install containerd runc)"
  elif [[ ! -x $CNI_BIN_DIR/bridge || ! -x $CNI_BIN_DIR/host-local ]]; then
    why="no CNI plugins in $CNI_BIN_DIR (apt-get install containernetworking-plugins)"
  elif ! command -v iptables >/dev/null || ! command -v debootstrap >/dev/null || ! command -v gcc >/dev/null; then
    why="iptables, debootstrap and gcc are needed (apt-get install iptables debootstrap gcc)"
  elif [[ ! -d /sys/fs/cgroup/cpu && ! -f /sys/fs/cgroup/cgroup.controllers ]]; then
    why="no usable cgroup hierarchy under /sys/fs/cgroup"
  elif ! grep -qw overlay /proc/filesystems; then why="the kernel has no overlay filesystem"
  elif [[ -z $(host_ip) ]]; then why="no global IPv4 address to give the nodes"
  elif other=$(other_real_nodes); then
    why="real nodes of another cluster run on this host ($other): one host runs one set (one kube-proxy, CoreDNS on port 53)"
  fi
  if [[ -n $why ]]; then
    echo "cannot run real nodes: $why"
    return 1
  fi
}

# --- processes ---------------------------------------------------------------------------------

# write_config FILE < CONTENT: replaces FILE only when CONTENT differs. kube-proxy exits when its
# configuration file is written, even with the same content, and `up` runs again on every test
# run: a rewrite would leave Services created afterwards without rules.
write_config() {
  local file=$1
  cat >"$file.new"
  if cmp -s "$file.new" "$file"; then rm -f "$file.new"; else mv -f "$file.new" "$file"; fi
}

# start_daemon PIDFILE LOG COMMAND...: runs COMMAND in its own session, detached.
start_daemon() {
  local pidfile=$1 logfile=$2
  shift 2
  if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then return 0; fi
  setsid "$@" >"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# stop_pidfiles PIDFILE...: SIGTERM to all at once, SIGKILL to what is left after 10 s.
stop_pidfiles() {
  local pidfile pids=() pid waited=0
  for pidfile in "$@"; do
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$pidfile"
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((waited++ < 100)); do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

# --- one node ----------------------------------------------------------------------------------

cgroup_roots() {
  local name=$1 controller
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    echo "/sys/fs/cgroup/tsunagu-$name"
    return
  fi
  for controller in /sys/fs/cgroup/*/; do
    [[ -f $controller/cgroup.procs ]] && echo "${controller%/}/tsunagu-$name"
  done
}

write_containerd_config() {
  local dir=$1 index=$2
  write_config "$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$("$HACK_DIR/image.sh" tag pause)"
  # Without CAP_SYS_RESOURCE a container cannot be given a lower oom_score_adj than ours.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$dir/cni"
EOF
  mkdir -p "$dir/cni"
  write_config "$dir/cni/10-tsunagu.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "tsunagu-$index",
  "plugins": [
    {
      "type": "bridge", "bridge": "tsn$index", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$dir/cni-ipam",
        "ranges": [[{"subnet": "$REAL_POD_PREFIX.$((index + 1)).0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

write_kubelet_config() {
  local dir=$1 name=$2 index=$3 ip=$4
  write_config "$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: $((REAL_PORT_BASE + 2 * index))
readOnlyPort: 0
healthzPort: 0
containerRuntimeEndpoint: unix://$dir/containerd.sock
cgroupDriver: cgroupfs
# Each kubelet owns its cgroup subtree: one removes the pod cgroups it does not know.
cgroupRoot: /tsunagu-$name
failCgroupV1: false
failSwapOn: false
# No KUBE-FIREWALL rules in the host's iptables (the 127/8 drop would reach other clusters).
makeIPTablesUtilChains: false
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDNS: [$ip]
clusterDomain: cluster.local
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 20
# Each kubelet removes the log directories of pods it does not know: one directory per node.
podLogsDir: $dir/pod-logs
volumePluginDir: $dir/volume-plugins
EOF
}

start_node() {
  local index=$1 name dir ip root region
  name=$(node_name "$index")
  region=$(node_region "$index")
  dir="$REAL_DIR/nodes/$name"
  ip=$(host_ip)
  mkdir -p "$dir/kubelet" "$dir/logs"
  for root in $(cgroup_roots "$name"); do mkdir -p "$root"; done
  write_containerd_config "$dir" "$index"
  write_kubelet_config "$dir" "$name" "$index" "$ip"
  start_daemon "$dir/containerd.pid" "$dir/logs/containerd.log" containerd --config "$dir/containerd.toml"
  wait_for 30 "containerd of $name" ctr --address "$dir/containerd.sock" version
  local image archive
  for image in $REAL_IMAGES; do
    archive=$("$HACK_DIR/image.sh" "$image")
    # An archive's name carries its content key: one imported already is not imported again.
    [[ -f $dir/imported/${archive##*/} ]] && continue
    ctr_ "$name" images import "$archive" >/dev/null \
      || die "could not import the $image image into $name's containerd"
    mkdir -p "$dir/imported" && touch "$dir/imported/${archive##*/}"
  done
  start_daemon "$dir/kubelet.pid" "$dir/logs/kubelet.log" "$K8S_NODE_BIN/kubelet" \
    --config "$dir/kubelet.yaml" --kubeconfig "$KUBECONFIG_PATH" --root-dir "$dir/kubelet" \
    --cert-dir "$dir/pki" --hostname-override "$name" --node-ip "$ip" \
    ${REAL_TAINTS:+--register-with-taints "$REAL_TAINTS"} \
    --node-labels "type=real,topology.kubernetes.io/region=$region,topology.kubernetes.io/zone=$region-$index,nvidia.com/gpu.product=$REAL_GPU_PRODUCT,nvidia.com/gpu.count=$REAL_GPUS" \
    --v 1
}

node_ready() {
  [[ $(kubectl_ get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# No device plugin: the GPUs are an extended resource written into the node status, which the
# kubelet keeps and counts when it admits a pod.
advertise_gpus() {
  kubectl_ patch node "$1" --subresource=status --type=json \
    -p "[{\"op\":\"add\",\"path\":\"/status/capacity/nvidia.com~1gpu\",\"value\":\"$REAL_GPUS\"}]" >/dev/null \
    || die "could not write GPUs into the status of node $1"
  wait_for 60 "node $1 to show $REAL_GPUS allocatable GPUs" gpus_allocatable "$1"
}

gpus_allocatable() {
  [[ $(kubectl_ get node "$1" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}') == "$REAL_GPUS" ]]
}

# Pods go through the kubelet (so their sandboxes, veths and netns are torn down by CNI), then
# whatever is left in containerd is killed, then the cgroups are removed.
drain_pods() {
  local dir name
  [[ -f $KUBECONFIG_PATH ]] || return 0
  for dir in "$REAL_DIR"/nodes/*/; do
    [[ -d $dir ]] || continue
    name=$(basename "$dir")
    kubectl_ delete pods --all-namespaces --field-selector "spec.nodeName=$name" --grace-period=1 \
      --wait=false >/dev/null 2>&1 || true
  done
  local deadline=$(( $(date +%s) + 60 ))
  while (( $(date +%s) < deadline )); do
    local left=0
    for dir in "$REAL_DIR"/nodes/*/; do
      [[ -d $dir ]] || continue
      left=$(( left + $(ctr_ "$(basename "$dir")" tasks ls -q 2>/dev/null | wc -l) ))
    done
    ((left == 0)) && break
    sleep 1
  done
}

# After the kubelets: containers left in containerd are killed, then containerd, its shims and
# anything still in the node's cgroups, and the cgroups go.
stop_node_runtime() {
  local name=$1 dir="$REAL_DIR/nodes/$1" task container
  [[ -S $dir/containerd.sock ]] || return 0
  for task in $(ctr_ "$name" tasks ls -q 2>/dev/null); do
    ctr_ "$name" tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
    ctr_ "$name" tasks delete -f "$task" >/dev/null 2>&1 || true
  done
  for container in $(ctr_ "$name" containers ls -q 2>/dev/null); do
    ctr_ "$name" containers delete "$container" >/dev/null 2>&1 || true
  done
}

remove_node_cgroups() {
  local name=$1 dir="$REAL_DIR/nodes/$1" root pid killed=0
  # Shims outlive containerd by design; any left are ours by the socket path they were given.
  for pid in $(pgrep -f -- "-address $dir/containerd.sock" 2>/dev/null); do
    kill -9 "$pid" 2>/dev/null && killed=1
  done
  for root in $(cgroup_roots "$name"); do
    [[ -d $root ]] || continue
    for pid in $(find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null); do
      kill -9 "$pid" 2>/dev/null && killed=1
    done
  done
  ((killed == 0)) || sleep 0.5
  for root in $(cgroup_roots "$name"); do
    [[ -d $root ]] || continue
    find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || log "WARNING: could not remove cgroup $root"
  done
}

# --- host-wide services ------------------------------------------------------------------------

start_coredns() {
  local ip
  ip=$(host_ip)
  write_config "$REAL_DIR/Corefile" <<EOF
.:53 {
    bind $ip
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_PATH
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 5
}
EOF
  start_daemon "$REAL_DIR/coredns.pid" "$REAL_DIR/coredns.log" "$COREDNS_BIN/coredns" -conf "$REAL_DIR/Corefile"
}

start_kube_proxy() {
  write_config "$REAL_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG_PATH}
mode: iptables
hostnameOverride: $(node_name 0)
clusterCIDR: $REAL_POD_PREFIX.0.0/16
healthzBindAddress: 127.0.0.1:$((REAL_PORT_BASE + 6))
metricsBindAddress: 127.0.0.1:$((REAL_PORT_BASE + 7))
# Leave the host's conntrack table and timeouts as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
  start_daemon "$REAL_DIR/kube-proxy.pid" "$REAL_DIR/kube-proxy.log" "$K8S_NODE_BIN/kube-proxy" \
    --config "$REAL_DIR/kube-proxy.yaml"
}
