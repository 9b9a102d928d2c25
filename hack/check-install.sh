#!/usr/bin/env bash
# Installs tsunagu the way the Dockerfile's builder stage does, without a Docker engine:
# copy the files the Dockerfile copies, build the wheel, install it into a fresh venv, drop the
# install tools, and run the entry points the image and the chart use. A broken package (missing
# module, dependency or entry point, a file the Dockerfile copies that is gone) fails here.
#   hack/check-install.sh            uses python3 (override with PYTHON=…; must be ≥ 3.11)
#   KEEP=1 hack/check-install.sh     keeps the temporary directory for a look inside
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PYTHON=${PYTHON:-python3}
need "$PYTHON"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PYTHON is $("$PYTHON" -V 2>&1); the image and pyproject.toml need Python ≥ 3.11"

work=$(mktemp -d "${TMPDIR:-/tmp}/tsunagu-install.XXXXXX")
if [[ -n ${KEEP:-} ]]; then
  log "keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi

# The build inputs are read from the Dockerfile's builder stage (its COPY lines without --from),
# so this check and the image can never disagree about what the wheel is built from.
mapfile -t inputs < <(awk '
  /^FROM / { stage++ }
  stage == 1 && /^COPY / && !/--from/ { for (i = 2; i < NF; i++) print $i }
' "$REPO_ROOT/Dockerfile")
(( ${#inputs[@]} > 0 )) || die "found no COPY line in the Dockerfile's builder stage"
mkdir -p "$work/src"
for input in "${inputs[@]}"; do
  [[ -e $REPO_ROOT/$input ]] || die "the Dockerfile copies '$input', but it does not exist"
  cp -R "$REPO_ROOT/$input" "$work/src/"
done
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +

log "building the wheel from: ${inputs[*]}"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$work/src" >"$work/build.log" 2>&1 \
  || { tail -n 30 "$work/build.log" >&2; die "building the wheel failed"; }
wheels=("$work"/dist/tsunagu-*.whl)
[[ -f ${wheels[0]} ]] || die "pip built no tsunagu wheel"

log "installing $(basename "${wheels[0]}") into a fresh venv"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "${wheels[0]}" >"$work/install.log" 2>&1 \
  || { tail -n 30 "$work/install.log" >&2; die "installing the wheel into a fresh venv failed"; }
"$work/venv/bin/pip" uninstall --quiet --yes pip setuptools wheel >/dev/null 2>&1 || true

# Run from the temp dir so `import tsunagu` can only find the installed copy, never the source tree.
cd "$work"
check() {
  local out
  out=$("$work/venv/bin/tsunagu" "$@" 2>&1) || { printf '%s\n' "$out" | tail -n 20 >&2; die "'tsunagu $*' failed"; }
}
for command in "--help" "plan --help" "run --help" "probe --help"; do
  # shellcheck disable=SC2086 # each entry is a command line to split
  check $command
  log "ok: tsunagu $command"
done
origin=$("$work/venv/bin/python" -c 'import tsunagu; print(tsunagu.__file__)')
[[ $origin == "$work/venv/"* ]] || die "tsunagu was imported from $origin, not from the installed wheel"
log "install check passed"
