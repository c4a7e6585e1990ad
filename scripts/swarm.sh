#!/usr/bin/env bash
# Launch a local swarm of N seedswarm node processes on 127.0.0.1 on the
# built-in task, show a live table, and end with a verdict: every node holds
# the same version vector and digest, every node settled, and accuracy
# reached the target (RUN_DIR/swarm.json holds the figures).
#
#   scripts/swarm.sh                 # 4 nodes, 2500 updates each
#   N=6 UPDATES=1000 scripts/swarm.sh
#   SEEDSWARM_BIN=target/release/seedswarm scripts/swarm.sh
#   FIRST_ORDER=1 scripts/swarm.sh   # the last node trains first-order
#   PSK=1 scripts/swarm.sh           # a private swarm: one pre-shared key, TCP only
#   OWNER=1 scripts/swarm.sh         # a permissioned run: an owner key admits each node
#
# Environment: N (nodes), UPDATES (own updates per node), PACE (seconds
# between node starts; default 0.1 beyond 16 nodes), CONFIG, TARGET_ACC
# (default 0.9), RUN_DIR (default runs/swarm-<time>), SEEDSWARM_BIN,
# FIRST_ORDER (how many of the nodes, counted from the last, run
# --mode first-order; default 0) and FO_ROUNDS (their own updates, i.e.
# compressed deltas, default 100) and PSK (1: every node gets one new
# pre-shared key, RUN_DIR/swarm.key; QUIC is then off) and OWNER (1: a new
# owner key RUN_DIR/owner.key makes the run permissioned, RUN_DIR/run.toml,
# and each node starts with its admission, RUN_DIR/node-i/admission).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-4}
UPDATES=${UPDATES:-2500}
FIRST_ORDER=${FIRST_ORDER:-0}
FO_ROUNDS=${FO_ROUNDS:-100}
CONFIG=${CONFIG:-configs/demo.toml}
TARGET_ACC=${TARGET_ACC:-0.9}
RUN_DIR=${RUN_DIR:-runs/swarm-$(date +%Y%m%d-%H%M%S)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/seedswarm-target}

if [[ -z "${SEEDSWARM_BIN:-}" ]]; then
  SEEDSWARM_BIN="$CARGO_TARGET_DIR/debug/seedswarm"
  if [[ -e "$SEEDSWARM_BIN" ]]; then
    cargo build --quiet --bin seedswarm # incremental: quiet
  else
    echo "first build of seedswarm and its dependencies (libp2p, candle): 10–20 minutes on 2 cores; cargo's progress follows"
    cargo build --bin seedswarm
  fi
fi
mkdir -p "$RUN_DIR"
# Each node holds a connection to most others: room for 64 nodes and more.
ulimit -n 4096 2>/dev/null || true
private=()
if [[ "${PSK:-0}" == 1 ]]; then
  "$SEEDSWARM_BIN" keygen --psk "$RUN_DIR/swarm.key"
  private=(--psk "$RUN_DIR/swarm.key")
fi
if [[ "${OWNER:-0}" == 1 ]]; then
  owner=$("$SEEDSWARM_BIN" owner-key "$RUN_DIR/owner.key" | grep '^owner = ')
  awk -v line="$owner" '{ print } /^\[run\]$/ && !done { print line; done = 1 }' "$CONFIG" >"$RUN_DIR/run.toml"
  CONFIG="$RUN_DIR/run.toml"
fi
echo "swarm of $N nodes ($FIRST_ORDER first-order), $UPDATES updates each (first-order: $FO_ROUNDS deltas), config $CONFIG, logs in $RUN_DIR"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup INT TERM

start_node() {
  local i=$1; shift
  local dir="$RUN_DIR/node-$i"
  local own=(--max-updates "$UPDATES")
  if (( i >= N - FIRST_ORDER )); then
    own=(--mode first-order --max-updates "$FO_ROUNDS")
  fi
  mkdir -p "$dir"
  local admitted=()
  if [[ "${OWNER:-0}" == 1 ]]; then
    local peer
    peer=$("$SEEDSWARM_BIN" peer-id --data-dir "$dir")
    "$SEEDSWARM_BIN" admit --owner-key "$RUN_DIR/owner.key" --config "$CONFIG" \
      --peer "$peer" --out "$dir/admission" >"$dir/admit.log" 2>&1
    admitted=(--record "$dir/admission")
  fi
  "$SEEDSWARM_BIN" node --config "$CONFIG" --data-dir "$dir" \
    --listen /ip4/127.0.0.1/tcp/0 --listen /ip4/127.0.0.1/udp/0/quic-v1 \
    --no-mdns --min-peers $((N - 1)) "${own[@]}" --http 127.0.0.1:0 \
    --summary "$dir/summary.json" "${private[@]}" "${admitted[@]}" "$@" >"$dir/stdout.log" 2>"$dir/stderr.log" &
  pids+=($!)
}

start_node 0
# Node 0's TCP address (with peer id) is the bootstrap address for the others.
boot=""
for _ in $(seq 1 100); do
  boot=$(grep -m1 -o 'listening on /ip4/127.0.0.1/tcp/[0-9]*/p2p/[A-Za-z0-9]*' "$RUN_DIR/node-0/stdout.log" 2>/dev/null | sed 's/^listening on //' || true)
  [[ -n "$boot" ]] && break
  sleep 0.1
done
if [[ -z "$boot" ]]; then
  echo "node 0 did not start; see $RUN_DIR/node-0/stderr.log" >&2
  cleanup
  exit 1
fi
# Paced start-up for big swarms: the bootstrap node takes the dials a few
# at a time (PACE seconds between starts; default 0.1 s beyond 16 nodes).
PACE=${PACE:-$( (( N > 16 )) && echo 0.1 || echo 0)}
for i in $(seq 1 $((N - 1))); do
  start_node "$i" --bootstrap "$boot"
  [[ "$PACE" != 0 ]] && sleep "$PACE"
done

# Each node serves /status, /metrics and a dashboard; the table polls /status.
for i in $(seq 0 $((N - 1))); do
  for _ in $(seq 1 100); do
    url=$(grep -m1 -o 'dashboard http://[0-9.:]*' "$RUN_DIR/node-$i/stdout.log" 2>/dev/null | sed 's/^dashboard //' || true)
    [[ -n "$url" ]] && break
    sleep 0.1
  done
  echo "$url" >"$RUN_DIR/node-$i/url"
  echo "node-$i dashboard $url/"
done
python3 scripts/swarm_table.py "$RUN_DIR" "$N" "${pids[@]}"
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
python3 scripts/swarm_table.py --verdict "$RUN_DIR" "$N" "$TARGET_ACC" || failed=1
exit $failed
