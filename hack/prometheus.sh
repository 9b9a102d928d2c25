#!/usr/bin/env bash
# Runs a throwaway Prometheus on 127.0.0.1 for tests, benchmarks and the demo.
#
#   hack/prometheus.sh up CONFIG.yml   install if missing, start, wait for /-/ready, print the URL
#   hack/prometheus.sh down            stop it; no process is left behind
#   hack/prometheus.sh status          print the URL and exit 0 when running, exit 1 otherwise
#
# Environment: PROM_PORT (default 9090), PROM_LISTEN (the address to listen on, default 127.0.0.1;
# the host's address when pods must reach it), TSUNAGU_STATE (default <repo>/.cluster/prometheus) holds
# the data dir, the pid file and the log, so several instances can run side by side in different
# state dirs. `down` keeps the data so `up` again continues the same TSDB.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROM_PORT="${PROM_PORT:-9090}"
PROM_LISTEN="${PROM_LISTEN:-127.0.0.1}"
STATE_DIR="${TSUNAGU_STATE:-$REPO_ROOT/.cluster/prometheus}"
PID_FILE="$STATE_DIR/prometheus.pid"
LOG_FILE="$STATE_DIR/prometheus.log"
DATA_DIR="$STATE_DIR/data"
URL="http://$PROM_LISTEN:$PROM_PORT"
READY_TIMEOUT_SECONDS="${PROM_READY_TIMEOUT:-60}"

usage() {
  printf 'usage: %s up CONFIG.yml | down | status\n' "$(basename "$0")" >&2
  exit 2
}

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(<"$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  printf '%s' "$pid"
}

# The Debian package would start its own daemon on 9090 from its maintainer scripts; a
# policy-rc.d that answers 101 ("action forbidden") keeps invoke-rc.d from doing so.
install_prometheus() {
  command -v prometheus >/dev/null 2>&1 && return 0
  need apt-get
  local added_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  log "installing prometheus with apt-get"
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    apt-get update -qq || die "apt-get update failed"
  fi
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || { [[ -n "$added_policy" ]] && rm -f /usr/sbin/policy-rc.d; die "apt-get install prometheus failed"; }
  [[ -n "$added_policy" ]] && rm -f /usr/sbin/policy-rc.d
  # Belt and braces: stop a package daemon if one got started anyway (it runs as user prometheus).
  local stray
  for stray in $(pgrep -u prometheus -x prometheus 2>/dev/null || true); do
    log "stopping the daemon the package started (pid $stray)"
    kill "$stray" 2>/dev/null || true
  done
  command -v prometheus >/dev/null 2>&1 || die "'prometheus' is still not on PATH after installing"
}

cmd_up() {
  local config=${1:-}
  [[ -n "$config" ]] || usage
  [[ -f "$config" ]] || die "config file '$config' does not exist"
  need curl
  if pid="$(running_pid)"; then
    die "prometheus already running from $STATE_DIR (pid $pid); run '$0 down' first"
  fi
  install_prometheus
  port_free "$PROM_PORT"
  mkdir -p "$DATA_DIR"
  prometheus --config.file="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")" \
    --storage.tsdb.path="$DATA_DIR" \
    --web.listen-address="$PROM_LISTEN:$PROM_PORT" \
    --web.enable-lifecycle \
    >"$LOG_FILE" 2>&1 </dev/null &
  local pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"
  local deadline=$(( $(date +%s) + READY_TIMEOUT_SECONDS ))
  until curl -fsS -o /dev/null "$URL/-/ready" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      tail -n 20 "$LOG_FILE" >&2 || true
      die "prometheus exited during start-up (log: $LOG_FILE)"
    fi
    if (( $(date +%s) >= deadline )); then
      cmd_down >/dev/null 2>&1 || true
      die "prometheus on port $PROM_PORT not ready after ${READY_TIMEOUT_SECONDS}s (log: $LOG_FILE)"
    fi
    sleep 0.2
  done
  log "prometheus ready (pid $pid, data in $DATA_DIR)"
  printf '%s\n' "$URL"
}

cmd_down() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    log "prometheus is not running (state $STATE_DIR)"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( $(date +%s) + 30 ))
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(date +%s) >= deadline )); then
      log "prometheus (pid $pid) ignored SIGTERM for 30s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  # Reap the zombie when this shell is the parent, so nothing remains in the process table.
  wait "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  log "prometheus stopped (pid $pid)"
}

cmd_status() {
  local pid
  if pid="$(running_pid)" && curl -fsS -o /dev/null "$URL/-/ready" 2>/dev/null; then
    printf '%s\n' "$URL"
    return 0
  fi
  log "prometheus is not running on port $PROM_PORT (state $STATE_DIR)"
  return 1
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) usage ;;
esac
