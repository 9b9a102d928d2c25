#!/usr/bin/env bash
# Builds the Kubernetes control plane, etcd, kwok and Helm, and for real nodes kubelet, kube-proxy
# and CoreDNS, from their Go modules, once per version, into $TSUNAGU_CACHE/bin/<tool>-<version>/.
# Idempotent.
#   hack/tools.sh                build whatever is missing
#   hack/tools.sh node           build only the real-node tools (kubelet, kube-proxy, coredns)
#   hack/tools.sh coscheduling   build kube-scheduler with scheduler-plugins' Coscheduling (bench only)
#   hack/tools.sh jobset         build the JobSet controller manager (integration tests)
#   hack/tools.sh benchlimit     build the Go client of hack/bench_limit.py (bench only)
#   hack/tools.sh path NAME      print the path of one built binary
#   hack/tools.sh module NAME    print the module's source directory (scheduler-plugins, jobset),
#                                downloading it if needed; their CRDs are read from there at run time
# The gang peers are not part of the default set: `make test` never builds them.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Built against our Kubernetes' staging modules, so keyed by both versions (as Helm is).
COSCHED_BIN="$TOOLS_BIN/scheduler-plugins-$SCHEDULER_PLUGINS_VERSION-kube$K8S_VERSION"
JOBSET_BIN="$TOOLS_BIN/jobset-$JOBSET_VERSION-kube$K8S_VERSION"
# Our own Go code (standard library only): keyed by its content.
BENCHLIMIT_BIN="$TOOLS_BIN/benchlimit-$(cat "$HACK_DIR"/benchlimit/* | sha256sum | cut -c1-12)"

export CGO_ENABLED=0
BUILD_FLAGS=(-trimpath)

tool_path() {
  case "$1" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl) echo "$K8S_BIN/$1" ;;
    kubelet|kube-proxy) echo "$K8S_NODE_BIN/$1" ;;
    coredns) echo "$COREDNS_BIN/coredns" ;;
    etcd) echo "$ETCD_BIN/etcd" ;;
    kwok|kwokctl) echo "$KWOK_BIN/$1" ;;
    helm) echo "$HELM_BIN/helm" ;;
    coscheduling-scheduler) echo "$COSCHED_BIN/coscheduling-scheduler" ;;
    jobset-manager) echo "$JOBSET_BIN/jobset-manager" ;;
    benchlimit) echo "$BENCHLIMIT_BIN/benchlimit" ;;
    *) die "unknown tool '$1'" ;;
  esac
}

# A fresh wrapper module: dependencies whose own go.mod carries replace directives
# cannot be built by `go install`, so we require them from a module of our own.
new_wrapper() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/tsunagu-build.XXXXXX")
  printf 'module tsunagu.io/toolbuild\n\ngo 1.26\n' >"$dir/go.mod"
  echo "$dir"
}

# When the checksum database cannot be reached, say so and turn it off for these builds only.
check_sumdb() {
  local probe out
  probe=$(new_wrapper)
  if ! out=$(cd "$probe" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" 2>&1); then
    if grep -qiE 'verifying|sumdb|checksum' <<<"$out"; then
      log "WARNING: the Go checksum database ($(go env GOSUMDB)) is unreachable;"
      log "WARNING: building the pinned tools with GOSUMDB=off (this process only)"
      export GOSUMDB=off
    else
      rm -rf "$probe"
      die "cannot download Go modules (is the Go module proxy reachable?): $(tail -n 1 <<<"$out")"
    fi
  fi
  rm -rf "$probe"
}

# Appends to the wrapper module in $1 a replace of every staging module of k8s.io/kubernetes
# $K8S_VERSION (k8s.io/X => ./staging/src/k8s.io/X, published as k8s.io/X v0.<minor>.<patch>) and
# of k8s.io/kubernetes itself: whatever the required modules ask for, the build is of our cluster's.
replace_staging() {
  local dir=$1 gomod staging ver=${K8S_VERSION#v} m
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f $gomod ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
  staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
  [[ -n $staging ]] || die "no staging modules found in $gomod"
  {
    printf '\nreplace (\n\tk8s.io/kubernetes => k8s.io/kubernetes %s\n' "$K8S_VERSION"
    for m in $staging; do printf '\t%s => %s v0.%s\n' "$m" "$m" "${ver#1.}"; done
    printf ')\n'
  } >>"$dir/go.mod"
}

# A wrapper module requiring k8s.io/kubernetes at $K8S_VERSION; prints its directory.
kubernetes_wrapper() {
  local dir
  dir=$(new_wrapper)
  printf '\nrequire k8s.io/kubernetes %s\n' "$K8S_VERSION" >>"$dir/go.mod"
  replace_staging "$dir"
  echo "$dir"
}

kubernetes_ldflags() {
  local ld="-s -w" pkg minor
  minor=$(cut -d. -f2 <<<"${K8S_VERSION#v}")
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ld"
}

# build_kubernetes_into DIR CMD...: builds k8s.io/kubernetes/cmd/CMD... into DIR, atomically.
build_kubernetes_into() {
  local out=$1 dir cmd pkgs=()
  shift
  for cmd in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  dir=$(kubernetes_wrapper)
  mkdir -p "$out.tmp"
  (cd "$dir" && GOFLAGS=-mod=mod go build "${BUILD_FLAGS[@]}" -ldflags "$(kubernetes_ldflags)" \
      -o "$out.tmp/" "${pkgs[@]}") \
    || die "building $* $K8S_VERSION failed (see the Go output above)"
  rm -rf "$dir" "$out" && mv "$out.tmp" "$out"
}

build_kubernetes() {
  [[ -x $K8S_BIN/kube-apiserver && -x $K8S_BIN/kube-controller-manager && -x $K8S_BIN/kube-scheduler && -x $K8S_BIN/kubectl ]] && return 0
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $K8S_VERSION (cold: ~15 min)"
  build_kubernetes_into "$K8S_BIN" kube-apiserver kube-controller-manager kube-scheduler kubectl
}

# The binaries of a real node live apart from the control plane's, so either set builds alone.
build_kubernetes_node() {
  [[ -x $K8S_NODE_BIN/kubelet && -x $K8S_NODE_BIN/kube-proxy ]] && return 0
  log "building kubelet and kube-proxy $K8S_VERSION (cold: ~6 min)"
  build_kubernetes_into "$K8S_NODE_BIN" kubelet kube-proxy
}

build_coredns() {
  [[ -x $COREDNS_BIN/coredns ]] && return 0
  log "building coredns $COREDNS_VERSION"
  local dir ld="-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
  dir=$(new_wrapper)
  printf '\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >>"$dir/go.mod"
  mkdir -p "$COREDNS_BIN.tmp"
  (cd "$dir" && GOFLAGS=-mod=mod go build "${BUILD_FLAGS[@]}" -ldflags "$ld" \
      -o "$COREDNS_BIN.tmp/coredns" github.com/coredns/coredns) \
    || die "building coredns $COREDNS_VERSION failed (see the Go output above)"
  rm -rf "$dir" "$COREDNS_BIN" && mv "$COREDNS_BIN.tmp" "$COREDNS_BIN"
}

build_etcd() {
  [[ -x $ETCD_BIN/etcd ]] && return 0
  log "building etcd $ETCD_VERSION"
  local dir
  dir=$(new_wrapper)
  printf '\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >>"$dir/go.mod"
  mkdir -p "$ETCD_BIN.tmp"
  (cd "$dir" && GOFLAGS=-mod=mod go build "${BUILD_FLAGS[@]}" -ldflags "-s -w" \
      -o "$ETCD_BIN.tmp/etcd" go.etcd.io/etcd/server/v3) \
    || die "building etcd $ETCD_VERSION failed (see the Go output above)"
  rm -rf "$dir" "$ETCD_BIN" && mv "$ETCD_BIN.tmp" "$ETCD_BIN"
}

build_kwok() {
  [[ -x $KWOK_BIN/kwok && -x $KWOK_BIN/kwokctl ]] && return 0
  log "building kwok and kwokctl $KWOK_VERSION"
  local dir ld="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
  dir=$(new_wrapper)
  printf '\nrequire sigs.k8s.io/kwok %s\n' "$KWOK_VERSION" >>"$dir/go.mod"
  mkdir -p "$KWOK_BIN.tmp"
  (cd "$dir" && GOFLAGS=-mod=mod go build "${BUILD_FLAGS[@]}" -ldflags "$ld" -o "$KWOK_BIN.tmp/" \
      sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl) \
    || die "building kwok $KWOK_VERSION failed (see the Go output above)"
  rm -rf "$dir" "$KWOK_BIN" && mv "$KWOK_BIN.tmp" "$KWOK_BIN"
}

build_helm() {
  [[ -x $HELM_BIN/helm ]] && return 0
  log "building helm $HELM_VERSION (for Kubernetes $K8S_VERSION)"
  local dir ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" pkg minor
  minor=$(cut -d. -f2 <<<"${K8S_VERSION#v}")
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  dir=$(new_wrapper)
  printf '\nrequire helm.sh/helm/v3 %s\n' "$HELM_VERSION" >>"$dir/go.mod"
  mkdir -p "$HELM_BIN.tmp"
  (cd "$dir" && GOFLAGS=-mod=mod go build "${BUILD_FLAGS[@]}" -ldflags "$ld" -o "$HELM_BIN.tmp/helm" \
      helm.sh/helm/v3/cmd/helm) \
    || die "building helm $HELM_VERSION failed (see the Go output above)"
  rm -rf "$dir" "$HELM_BIN" && mv "$HELM_BIN.tmp" "$HELM_BIN"
}

# kube-scheduler $K8S_VERSION with Coscheduling registered, as scheduler-plugins' own
# cmd/scheduler does, but with Coscheduling only: its other plugins (Trimaran, network-aware,
# NodeResourceTopology, SySched) bring dependencies (gonum, the security-profiles operator) that
# would double the build for nothing the benchmark runs.
build_coscheduling() {
  [[ -x $COSCHED_BIN/coscheduling-scheduler ]] && return 0
  log "building kube-scheduler $K8S_VERSION with Coscheduling of scheduler-plugins $SCHEDULER_PLUGINS_VERSION (cold: ~2.5 min)"
  local dir
  dir=$(new_wrapper)
  printf '\nrequire sigs.k8s.io/scheduler-plugins %s\n' "$SCHEDULER_PLUGINS_VERSION" >>"$dir/go.mod"
  replace_staging "$dir"
  cat >"$dir/main.go" <<'GO'
// kube-scheduler with scheduler-plugins' Coscheduling plugin registered.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	_ "sigs.k8s.io/scheduler-plugins/apis/config/scheme" // decodes CoschedulingArgs
	"sigs.k8s.io/scheduler-plugins/pkg/coscheduling"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand(app.WithPlugin(coscheduling.Name, coscheduling.New))))
}
GO
  mkdir -p "$COSCHED_BIN.tmp"
  (cd "$dir" && GOFLAGS=-mod=mod go build "${BUILD_FLAGS[@]}" -ldflags "$(kubernetes_ldflags)" \
      -o "$COSCHED_BIN.tmp/coscheduling-scheduler" .) \
    || die "building Coscheduling $SCHEDULER_PLUGINS_VERSION failed (see the Go output above)"
  rm -rf "$dir" "$COSCHED_BIN" && mv "$COSCHED_BIN.tmp" "$COSCHED_BIN"
}

# JobSet's controller manager (its module root is the main package), on our staging modules.
build_jobset() {
  [[ -x $JOBSET_BIN/jobset-manager ]] && return 0
  log "building the JobSet controller manager $JOBSET_VERSION for Kubernetes $K8S_VERSION (cold: ~2 min)"
  local dir ld="-s -w -X sigs.k8s.io/jobset/pkg/version.GitVersion=$JOBSET_VERSION"
  dir=$(new_wrapper)
  printf '\nrequire sigs.k8s.io/jobset %s\n' "$JOBSET_VERSION" >>"$dir/go.mod"
  replace_staging "$dir"
  mkdir -p "$JOBSET_BIN.tmp"
  (cd "$dir" && GOFLAGS=-mod=mod go build "${BUILD_FLAGS[@]}" -ldflags "$ld" \
      -o "$JOBSET_BIN.tmp/jobset-manager" sigs.k8s.io/jobset) \
    || die "building JobSet $JOBSET_VERSION failed (see the Go output above)"
  rm -rf "$dir" "$JOBSET_BIN" && mv "$JOBSET_BIN.tmp" "$JOBSET_BIN"
}

build_benchlimit() {
  [[ -x $BENCHLIMIT_BIN/benchlimit ]] && return 0
  log "building hack/benchlimit"
  mkdir -p "$BENCHLIMIT_BIN.tmp"
  (cd "$HACK_DIR/benchlimit" && go build "${BUILD_FLAGS[@]}" -ldflags "-s -w" \
      -o "$BENCHLIMIT_BIN.tmp/benchlimit" .) || die "building hack/benchlimit failed"
  rm -rf "$BENCHLIMIT_BIN" && mv "$BENCHLIMIT_BIN.tmp" "$BENCHLIMIT_BIN"
}

# The source of a pinned module in the Go module cache (where its CRDs are), downloaded if needed.
module_dir() {
  local module dir
  case "$1" in
    scheduler-plugins) module="sigs.k8s.io/scheduler-plugins@$SCHEDULER_PLUGINS_VERSION" ;;
    jobset) module="sigs.k8s.io/jobset@$JOBSET_VERSION" ;;
    *) die "unknown module '$1' (scheduler-plugins or jobset)" ;;
  esac
  if ! command -v go >/dev/null 2>&1; then  # the module cache of an earlier build, if any
    dir="${GOMODCACHE:-${GOPATH:-$HOME/go}/pkg/mod}/$module"
    [[ -d $dir ]] || die "'go' is not installed and $module is not in the module cache"
    echo "$dir"
    return
  fi
  dir=$(new_wrapper)
  (cd "$dir" && go mod download -json "$module") | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'
  rm -rf "$dir"
}

main() {
  case ${1:-} in
    path) tool_path "${2:?usage: tools.sh path NAME}"; return ;;
    module) module_dir "${2:?usage: tools.sh module NAME}"; return ;;
  esac
  # A cached peer needs no Go toolchain (the JobSet tests then run where Go is missing).
  case ${1:-} in
    coscheduling) [[ -x $COSCHED_BIN/coscheduling-scheduler ]] && return 0 ;;
    jobset) [[ -x $JOBSET_BIN/jobset-manager ]] && return 0 ;;
    benchlimit) [[ -x $BENCHLIMIT_BIN/benchlimit ]] && return 0 ;;
  esac
  need go
  if [[ ${1:-} == benchlimit ]]; then build_benchlimit; return; fi
  check_sumdb
  case ${1:-} in
    coscheduling) build_coscheduling; log "Coscheduling's scheduler ready under $COSCHED_BIN"; return ;;
    jobset) build_jobset; log "JobSet controller ready under $JOBSET_BIN"; return ;;
  esac
  if [[ ${1:-} == node ]]; then
    build_kubernetes_node
    build_coredns
    log "real-node tools ready under $TOOLS_BIN"
    return
  fi
  build_etcd
  build_kwok
  build_helm
  build_kubernetes
  build_kubernetes_node
  build_coredns
  log "tools ready under $TOOLS_BIN"
}

main "$@"
