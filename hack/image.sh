#!/usr/bin/env bash
# Container images without Docker or a registry: a Debian root filesystem made by debootstrap
# (cached by what goes into it), packed with hack/image/archive.py into a `docker save` archive
# that `ctr -n k8s.io images import` reads. Pods use them with imagePullPolicy: Never.
#   hack/image.sh pause|trainer|operator   build (or reuse) the image archive; prints its path
#   hack/image.sh tag NAME                 print the image reference of NAME
# Root only (debootstrap chroots); the archives are cached under $TSUNAGU_CACHE/images.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE_CACHE="$TSUNAGU_CACHE/images"
ROOTFS_CACHE="$TSUNAGU_CACHE/rootfs"
ROOTFS_SUITE=${ROOTFS_SUITE:-bookworm}
ROOTFS_MIRROR=${ROOTFS_MIRROR:-http://deb.debian.org/debian}
ROOTFS_PACKAGES=python3
PYTHON=${PYTHON:-$REPO_ROOT/.venv/bin/python}

image_tag() {
  case $1 in
    pause) echo "tsunagu.local/pause:1" ;;
    trainer) echo "tsunagu.local/trainer:dev" ;;
    operator) echo "tsunagu.local/operator:dev" ;;
    *) die "unknown image '$1' (pause, trainer or operator)" ;;
  esac
}

key_of() { sha256sum | cut -c1-12; }

# write_image NAME ARCHIVE.py-ARGS...: writes the archive of NAME, replacing older builds of it.
write_image() {
  local name=$1 out=$2
  shift 2
  python3 "$HACK_DIR/image/archive.py" "$out.new" --tag "$(image_tag "$name")" "$@" \
    || die "could not write the $name image archive"
  rm -f "$IMAGE_CACHE/$name"-*.tar
  mv "$out.new" "$out"
}

# The Debian base layer: minbase plus python3, without apt's caches and the docs.
rootfs_layer() {
  local key out tree
  key=$(printf '%s|%s|minbase|%s\n' "$ROOTFS_SUITE" "$ROOTFS_MIRROR" "$ROOTFS_PACKAGES" | key_of)
  out="$ROOTFS_CACHE/debian-$ROOTFS_SUITE-$key.tar"
  if [[ ! -f $out ]]; then
    need debootstrap
    [[ $(id -u) == 0 ]] || die "debootstrap needs root to build the image root filesystem"
    mkdir -p "$ROOTFS_CACHE"
    tree=$(mktemp -d "$ROOTFS_CACHE/tree.XXXXXX")
    log "debootstrap $ROOTFS_SUITE minbase + $ROOTFS_PACKAGES (cold: a few minutes)"
    debootstrap --variant=minbase --include="${ROOTFS_PACKAGES// /,}" "$ROOTFS_SUITE" "$tree" \
      "$ROOTFS_MIRROR" >"$ROOTFS_CACHE/debootstrap.log" 2>&1 \
      || { rm -rf "$tree"; die "debootstrap failed (log: $ROOTFS_CACHE/debootstrap.log)"; }
    rm -rf "$tree"/var/cache/apt/*.bin "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/* \
      "$tree"/usr/share/doc/* "$tree"/usr/share/man/* "$tree"/usr/share/locale/* "$tree"/var/log/*
    tar --numeric-owner --sort=name --mtime=@0 -C "$tree" -cf "$out.partial" . \
      && mv "$out.partial" "$out"
    rm -rf "$tree"
  fi
  echo "$out"
}

# layer_from_dir DIR OUT: a reproducible layer tarball of DIR's contents, owned by root.
layer_from_dir() {
  tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$1" -cf "$2" .
}

build_pause() {
  local key out work
  key=$(cat "$HACK_DIR/image/pause.c" "$HACK_DIR/image/archive.py" | key_of)
  out="$IMAGE_CACHE/pause-$key.tar"
  if [[ ! -f $out ]]; then
    need gcc
    work=$(mktemp -d)
    mkdir -p "$work/root"
    gcc -Os -static -s -o "$work/root/pause" "$HACK_DIR/image/pause.c" || die "could not compile pause.c"
    layer_from_dir "$work/root" "$work/layer.tar"
    write_image pause "$out" --layer "$work/layer.tar" \
      --entrypoint '["/pause"]'
    rm -rf "$work"
  fi
  echo "$out"
}

build_trainer() {
  local base key out work
  base=$(rootfs_layer)
  key=$( (basename "$base"; cat "$HACK_DIR/trainer/trainer.py" "$HACK_DIR/image/archive.py") | key_of)
  out="$IMAGE_CACHE/trainer-$key.tar"
  if [[ ! -f $out ]]; then
    work=$(mktemp -d)
    mkdir -p "$work/root/opt/tsunagu"
    install -m 0644 "$HACK_DIR/trainer/trainer.py" "$work/root/opt/tsunagu/trainer.py"
    layer_from_dir "$work/root" "$work/layer.tar"
    write_image trainer "$out" \
      --layer "$base" --layer "$work/layer.tar" \
      --entrypoint '["python3", "-u", "/opt/tsunagu/trainer.py"]' --user 65534
    rm -rf "$work"
  fi
  echo "$out"
}

# The operator as the Dockerfile builds it: a venv at /opt/tsunagu made by the image's own Python
# (so its scripts and symlinks point inside the image), holding the project's wheel and its
# dependencies, without pip; run as the numeric non-root user. The wheels are fetched on the
# host; the install in the image tree needs no network.
build_operator() {
  local base key out work pip_wheel
  base=$(rootfs_layer)
  key=$( (basename "$base"; cat "$REPO_ROOT/pyproject.toml" "$HACK_DIR/image/archive.py" "${BASH_SOURCE[0]}"
          find "$REPO_ROOT/operator" -type f -name '*.py' -print0 | sort -z | xargs -0 cat) | key_of)
  out="$IMAGE_CACHE/operator-$key.tar"
  if [[ ! -f $out ]]; then
    [[ -x $PYTHON ]] || die "no Python at $PYTHON (run 'make venv')"
    [[ $(id -u) == 0 ]] || die "building the operator image needs root (chroot)"
    work=$(mktemp -d "$IMAGE_CACHE/operator.XXXXXX")
    mkdir -p "$work/tree" "$work/tree/wheels"
    "$PYTHON" -m pip wheel -q -w "$work/tree/wheels" "$REPO_ROOT" >"$work/pip.log" 2>&1 \
      && "$PYTHON" -m pip download -q --no-deps -d "$work/tree/wheels" pip >>"$work/pip.log" 2>&1 \
      || die "could not fetch the wheels (log: $work/pip.log)"
    pip_wheel=$(cd "$work/tree/wheels" && ls pip-*.whl)
    tar -C "$work/tree" -xf "$base"
    chroot "$work/tree" /usr/bin/python3 -m venv --without-pip /opt/tsunagu \
      && chroot "$work/tree" /opt/tsunagu/bin/python "/wheels/$pip_wheel/pip" install -q --no-index \
           --no-cache-dir --no-compile --find-links /wheels tsunagu >>"$work/pip.log" 2>&1 \
      && chroot "$work/tree" /opt/tsunagu/bin/tsunagu --help >/dev/null \
      || die "could not install tsunagu into the image tree (log: $work/pip.log)"
    tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$work/tree" -cf "$work/layer.tar" \
      opt/tsunagu
    write_image operator "$out" \
      --layer "$base" --layer "$work/layer.tar" \
      --env PATH=/opt/tsunagu/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 \
      --entrypoint '["tsunagu"]' --cmd '["run"]' --user 65532:65532
    rm -rf "$work"
  fi
  echo "$out"
}

mkdir -p "$IMAGE_CACHE"
case ${1:-} in
  pause) build_pause ;;
  trainer) build_trainer ;;
  operator) build_operator ;;
  tag) image_tag "${2:?usage: image.sh tag NAME}" ;;
  *) echo "usage: $0 pause|trainer|operator|tag NAME" >&2; exit 2 ;;
esac
