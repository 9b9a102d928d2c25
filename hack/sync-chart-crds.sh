#!/usr/bin/env bash
# crds/ is the one source of the CRDs; the chart ships copies in charts/tsunagu/crds/ because Helm
# only installs CRDs from inside the chart. Run this after changing crds/; a unit test
# (tests/unit/test_chart_files.py) fails while the copies differ.
#   hack/sync-chart-crds.sh           copy crds/*.yaml into the chart, removing copies with no source
#   hack/sync-chart-crds.sh --check   exit 1 and name the files that differ, change nothing
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SOURCE_DIR="$REPO_ROOT/crds"
CHART_DIR="$REPO_ROOT/charts/tsunagu/crds"

mode=${1:-sync}
case $mode in
  sync | --check) ;;
  *) die "usage: $(basename "$0") [--check]" ;;
esac

shopt -s nullglob
sources=("$SOURCE_DIR"/*.yaml)
(( ${#sources[@]} > 0 )) || die "no CRDs in $SOURCE_DIR"

drift=()
for source in "${sources[@]}"; do
  copy="$CHART_DIR/$(basename "$source")"
  cmp -s "$source" "$copy" || drift+=("$(basename "$source")")
done
for copy in "$CHART_DIR"/*.yaml; do
  [[ -e $SOURCE_DIR/$(basename "$copy") ]] || drift+=("$(basename "$copy") (no longer in crds/)")
done

if [[ $mode == --check ]]; then
  if (( ${#drift[@]} > 0 )); then
    log "the chart's CRDs differ from crds/: ${drift[*]}; run hack/sync-chart-crds.sh"
    exit 1
  fi
  log "the chart's CRDs match crds/"
  exit 0
fi

mkdir -p "$CHART_DIR"
for copy in "$CHART_DIR"/*.yaml; do
  [[ -e $SOURCE_DIR/$(basename "$copy") ]] || rm -f "$copy"
done
cp "${sources[@]}" "$CHART_DIR/"
log "copied ${#sources[@]} CRDs into charts/tsunagu/crds/${drift:+ (changed: ${drift[*]})}"
