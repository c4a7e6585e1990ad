#!/usr/bin/env bash
# Scrape a local seedswarm swarm with a real Prometheus (Debian's
# `prometheus` package) on 127.0.0.1: write a scrape configuration with one
# static target per node, start Prometheus with its own data dir, print its
# URL, and stop it on exit (Ctrl-C, TERM).
#
#   scripts/prometheus.sh runs/swarm-20260101-120000     # RUN_DIR of scripts/swarm.sh
#   scripts/prometheus.sh http://127.0.0.1:9100 http://127.0.0.1:9101
#   scripts/prometheus.sh a=http://10.0.0.1:9100/metrics b=10.0.0.2:9100
#   scripts/prometheus.sh --config-only RUN_DIR          # write the config, print it, exit
#
# A target is a RUN_DIR of scripts/swarm.sh (its node-*/url files, or the
# "metrics http://…" line of node-*/stdout.log; the label is the node's
# directory name), or a node's http address (http://HOST:PORT, optional path,
# default /metrics; `NAME=` in front sets the label, else node-<i>).
# Every target gets a `node` label; the job is `seedswarm`.
#
# Environment: PROM_DIR (config, data and log; default runs/prometheus-<time>),
# PROM_PORT (default: a free port), PROMETHEUS_BIN (default: prometheus on
# PATH, installed with apt-get when missing and running as root),
# PROM_READY_TIMEOUT (seconds, default 30).
#
# Exit codes: 0 when stopped by Ctrl-C or TERM, 1 on errors, 2 on bad usage,
# 3 when no usable Prometheus binary is available (not installed and not
# installable).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

config_only=0
args=()
for a in "$@"; do
  case "$a" in
    -h|--help) usage; exit 0 ;;
    --config-only) config_only=1 ;;
    -*) echo "prometheus.sh: unknown option $a" >&2; exit 2 ;;
    *) args+=("$a") ;;
  esac
done
if (( ${#args[@]} == 0 )); then
  usage >&2
  exit 2
fi

PROM_DIR=${PROM_DIR:-runs/prometheus-$(date +%Y%m%d-%H%M%S)}
PROM_READY_TIMEOUT=${PROM_READY_TIMEOUT:-30}

# --- targets -----------------------------------------------------------------
# Each entry: "label<TAB>host:port<TAB>/path".
targets=()
add_url() { # label url
  local label=$1 url=$2 rest hostport path
  rest=${url#http://}
  if [[ "$rest" == https://* ]]; then
    echo "prometheus.sh: $url: only http:// is served by seedswarm nodes" >&2
    exit 2
  fi
  hostport=${rest%%/*}
  path=/${rest#"$hostport"}
  path=${path#/}
  [[ "$path" == "" || "$path" == "/" ]] && path=/metrics
  if ! [[ "$hostport" =~ ^[A-Za-z0-9._-]+:[0-9]+$|^\[[0-9A-Fa-f:.]+\]:[0-9]+$ ]]; then
    echo "prometheus.sh: $url: expected http://HOST:PORT[/path]" >&2
    exit 2
  fi
  if ! [[ "$label" =~ ^[A-Za-z0-9._:-]+$ ]]; then
    echo "prometheus.sh: $label: a node label may hold letters, digits and ._:-" >&2
    exit 2
  fi
  targets+=("$label"$'\t'"$hostport"$'\t'"$path")
}

n=0
for a in "${args[@]}"; do
  if [[ -d "$a" ]]; then
    found=0
    for dir in "$a"/node-*/; do
      [[ -d "$dir" ]] || continue
      dir=${dir%/}
      url=""
      [[ -s "$dir/url" ]] && url=$(head -n1 "$dir/url")
      if [[ -z "$url" && -f "$dir/stdout.log" ]]; then
        url=$(grep -m1 -o 'metrics http://[^ ]*' "$dir/stdout.log" | sed 's/^metrics //' || true)
      fi
      if [[ -z "$url" ]]; then
        echo "prometheus.sh: $dir: no http address (node started without --http?)" >&2
        continue
      fi
      add_url "$(basename "$dir")" "$url"
      found=$((found + 1))
      n=$((n + 1))
    done
    if (( found == 0 )); then
      echo "prometheus.sh: $a: no node-*/ with an http address" >&2
      exit 2
    fi
  else
    label="node-$n"
    url=$a
    if [[ "$a" == *=* ]]; then label=${a%%=*}; url=${a#*=}; fi
    add_url "$label" "$url"
    n=$((n + 1))
  fi
done

# --- configuration -----------------------------------------------------------
mkdir -p "$PROM_DIR/data"
PROM_DIR=$(cd "$PROM_DIR" && pwd)
config="$PROM_DIR/prometheus.yml"
{
  echo "# Written by scripts/prometheus.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)."
  echo "global:"
  echo "  scrape_interval: 2s"
  echo "  scrape_timeout: 2s"
  echo "  evaluation_interval: 2s"
  echo "scrape_configs:"
  echo "  - job_name: seedswarm"
  echo "    scheme: http"
  echo "    metrics_path: /metrics"
  echo "    static_configs:"
  for t in "${targets[@]}"; do
    IFS=$'\t' read -r label hostport path <<<"$t"
    echo "      - targets: ['$hostport']"
    echo "        labels:"
    echo "          node: '$label'"
    if [[ "$path" != /metrics ]]; then
      echo "          __metrics_path__: '$path'"
    fi
  done
} >"$config"

if (( config_only )); then
  cat "$config"
  exit 0
fi

# --- binary ------------------------------------------------------------------
PROMETHEUS_BIN=${PROMETHEUS_BIN:-$(command -v prometheus || true)}
if [[ -z "$PROMETHEUS_BIN" ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "prometheus not found; installing Debian's package (apt-get install prometheus)…"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends prometheus >"$PROM_DIR/apt.log" 2>&1; then
      apt-get update >>"$PROM_DIR/apt.log" 2>&1 || true
      apt-get install -y --no-install-recommends prometheus >>"$PROM_DIR/apt.log" 2>&1 || true
    fi
    PROMETHEUS_BIN=$(command -v prometheus || true)
    if [[ -z "$PROMETHEUS_BIN" ]]; then
      echo "prometheus.sh: apt-get could not install prometheus; see $PROM_DIR/apt.log" >&2
      exit 3
    fi
  else
    echo "prometheus.sh: prometheus not found. Install it (Debian/Ubuntu: sudo apt-get install prometheus;" >&2
    echo "  or a release from https://prometheus.io/download/) and put it on PATH or set PROMETHEUS_BIN." >&2
    exit 3
  fi
fi
if ! [[ -x "$PROMETHEUS_BIN" ]]; then
  echo "prometheus.sh: PROMETHEUS_BIN=$PROMETHEUS_BIN is not an executable" >&2
  exit 3
fi
version=$("$PROMETHEUS_BIN" --version 2>&1 | head -n1 || true)
if ! [[ "$version" =~ ^prometheus,\ version\ ([0-9]+)\.([0-9]+) ]]; then
  echo "prometheus.sh: $PROMETHEUS_BIN does not look like Prometheus (--version says: $version)" >&2
  exit 3
fi
major=${BASH_REMATCH[1]}
if (( major < 2 )); then
  echo "prometheus.sh: $version is too old; need Prometheus 2.x or newer" >&2
  exit 3
fi

promtool=$(dirname "$PROMETHEUS_BIN")/promtool
if [[ -x "$promtool" ]] && ! "$promtool" check config "$config" >"$PROM_DIR/promtool.log" 2>&1; then
  echo "prometheus.sh: promtool rejects $config:" >&2
  cat "$PROM_DIR/promtool.log" >&2
  exit 1
fi

# --- start -------------------------------------------------------------------
if [[ -z "${PROM_PORT:-}" ]]; then
  PROM_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
url="http://127.0.0.1:$PROM_PORT"

http_get() { # url -> body on stdout, non-zero when not 2xx
  if command -v curl >/dev/null; then
    curl -fsS --max-time 2 "$1"
  else
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' "$1"
  fi
}

prom_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$prom_pid" ]] && kill -0 "$prom_pid" 2>/dev/null; then
    kill -TERM "$prom_pid" 2>/dev/null || true
    # Prometheus flushes its head block on TERM; give it a few seconds.
    for _ in $(seq 1 50); do
      kill -0 "$prom_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
    echo "prometheus stopped (config, data and log stay in $PROM_DIR)"
  fi
  rm -f "$PROM_DIR/url"
  exit "$rc"
}
trap cleanup EXIT
# Ctrl-C or TERM is the normal way to stop it: exit 0 after cleaning up.
trap 'exit 0' INT TERM

"$PROMETHEUS_BIN" \
  --config.file="$config" \
  --storage.tsdb.path="$PROM_DIR/data" \
  --storage.tsdb.retention.time=7d \
  --web.listen-address="127.0.0.1:$PROM_PORT" \
  >"$PROM_DIR/prometheus.log" 2>&1 &
prom_pid=$!

deadline=$((SECONDS + PROM_READY_TIMEOUT))
until http_get "$url/-/ready" >/dev/null 2>&1; do
  if ! kill -0 "$prom_pid" 2>/dev/null; then
    echo "prometheus.sh: prometheus exited during start; last lines of $PROM_DIR/prometheus.log:" >&2
    tail -n 20 "$PROM_DIR/prometheus.log" >&2
    prom_pid=""
    exit 1
  fi
  if (( SECONDS >= deadline )); then
    echo "prometheus.sh: $url/-/ready not ready after ${PROM_READY_TIMEOUT}s; see $PROM_DIR/prometheus.log" >&2
    exit 1
  fi
  sleep 0.2
done

echo "$url" >"$PROM_DIR/url"
echo "$version; ${#targets[@]} targets, config $config"
for t in "${targets[@]}"; do
  IFS=$'\t' read -r label hostport path <<<"$t"
  echo "  $label  http://$hostport$path"
done
echo "prometheus $url  (targets: $url/targets, graph: $url/graph); Ctrl-C stops it"

# Stay in the foreground until Prometheus exits or we are told to stop.
set +e
wait "$prom_pid"
rc=$?
set -e
prom_pid=""
echo "prometheus.sh: prometheus exited with status $rc; see $PROM_DIR/prometheus.log" >&2
exit 1
