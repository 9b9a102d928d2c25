# What real nodes change on the host (sysctls, iptables and nft tables, mounts, links, runtime
# directories), recorded by `up` before anything starts and put back by `down`. Sourced by
# hack/realnodes.sh after hack/realnodes-lib.sh; do not run it.

# What the kubelet, kube-proxy and the CNI bridge plugin may change.
TOUCHED_SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.forwarding net.ipv6.conf.all.forwarding
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet
  net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)

iptables_rules() {
  local family
  for family in iptables ip6tables; do
    command -v "$family-save" >/dev/null || continue
    "$family-save" 2>/dev/null | sed -e '/^#/d' -e 's/\[[0-9]*:[0-9]*\]//' | sed "s/^/$family /"
  done
}

# Directories containerd, the CNI plugins and the kubelet create on first use whatever they are
# told (the kubelet's device-plugin socket and container log links have fixed paths).
RUNTIME_DIRS=(/run/containerd /run/netns /var/lib/cni /opt/containerd /var/lib/kubelet
  /var/log/containers /var/log/pods)

nft_tables() { command -v nft >/dev/null && nft list tables 2>/dev/null | sort || true; }

# iptables-nft creates a table the first time a rule goes into it; an empty one we created goes.
remove_new_empty_tables() {
  local family table name
  command -v nft >/dev/null || return 0
  while read -r _ family name; do
    case $family in ip) table=iptables ;; ip6) table=ip6tables ;; *) continue ;; esac
    if ! "$table" -t "$name" -S 2>/dev/null | grep -qv '^-P '; then
      nft delete table "$family" "$name" 2>/dev/null || true
    fi
  done < <(nft_tables | comm -23 - "$REAL_DIR/nft.before")
}

record_host() {
  local key dir
  for key in "${TOUCHED_SYSCTLS[@]}"; do
    if sysctl -n "$key" >/dev/null 2>&1; then printf '%s=%s\n' "$key" "$(sysctl -n "$key")"; fi
  done >"$REAL_DIR/sysctl.before"
  iptables_rules >"$REAL_DIR/iptables.before"
  awk '{print $5}' /proc/self/mountinfo | sort >"$REAL_DIR/mounts.before"
  ip -o link show | awk -F': ' '{sub("@.*", "", $2); print $2}' | sort >"$REAL_DIR/links.before"
  nft_tables >"$REAL_DIR/nft.before"
  for dir in "${RUNTIME_DIRS[@]}"; do if [[ -e $dir ]]; then echo "$dir"; fi; done >"$REAL_DIR/dirs.before"
  touch "$REAL_DIR/host.before"
}

# Removes the KUBE-* and CNI-* chains (and the jumps to them) that kube-proxy, the kubelet or
# the CNI plugins left, in every table of both families.
remove_kube_chains() {
  local family table chain rule
  for family in iptables ip6tables; do
    command -v "$family-save" >/dev/null || continue
    for table in filter nat mangle raw; do
      "$family" -t "$table" -S >/dev/null 2>&1 || continue
      while read -r rule; do
        eval "$family -t $table ${rule/-A /-D }" 2>/dev/null || true
      done < <("$family" -t "$table" -S | grep -E '^-A [A-Z]+ .*-j (KUBE|CNI)-' | grep -vE '^-A (KUBE|CNI)-')
      for chain in $("$family" -t "$table" -S | sed -n 's/^-N \(\(KUBE\|CNI\)-[^ ]*\).*/\1/p'); do
        "$family" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$family" -t "$table" -S | sed -n 's/^-N \(\(KUBE\|CNI\)-[^ ]*\).*/\1/p'); do
        "$family" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

restore_host() {
  [[ -f $REAL_DIR/host.before ]] || return 0
  local line key value mount link
  while IFS='=' read -r key value; do
    [[ $(sysctl -n "$key" 2>/dev/null) == "$value" ]] || sysctl -qw "$key=$value" >/dev/null 2>&1 \
      || log "WARNING: could not restore sysctl $key=$value"
  done <"$REAL_DIR/sysctl.before"
  remove_kube_chains
  remove_new_empty_tables
  if ! diff -q <(iptables_rules) "$REAL_DIR/iptables.before" >/dev/null; then
    log "WARNING: iptables differ from before the real nodes started:"
    diff <(iptables_rules) "$REAL_DIR/iptables.before" | head -n 20 >&2 || true
  fi
  # Deepest first, so a mount inside another goes before it.
  for mount in $(awk '{print $5}' /proc/self/mountinfo | sort | comm -23 - "$REAL_DIR/mounts.before" | sort -r); do
    umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || log "WARNING: could not unmount $mount"
  done
  rm -f /run/netns/cni-* 2>/dev/null || true
  for link in $(ip -o link show | awk -F': ' '{sub("@.*", "", $2); print $2}' | sort | comm -23 - "$REAL_DIR/links.before"); do
    ip link delete "$link" 2>/dev/null || true
  done
  for line in "${RUNTIME_DIRS[@]}"; do
    grep -qxF "$line" "$REAL_DIR/dirs.before" && continue
    # Sockets, links and empty directories only: a regular file found there is never ours to delete.
    find "$line" -depth \( -type s -o -type l \) -delete 2>/dev/null || true
    find "$line" -depth -type d -empty -delete 2>/dev/null || true
  done
}
