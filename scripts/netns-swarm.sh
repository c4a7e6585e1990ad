#!/usr/bin/env bash
# A swarm of N nodes in separate network namespaces (ip netns + veth + a
# bridge in a hub namespace; nothing is added to the host's own namespace),
# with tc netem latency and loss on every link and a partition that heals:
# half the nodes are moved to a second bridge for a while, then moved back.
# Ends with the verdict of scripts/swarm.sh (equal digests, accuracy). Needs root.
#
#   sudo scripts/netns-swarm.sh
#   DELAY=40ms JITTER=10ms LOSS=2 PARTITION_AT=2 PARTITION_FOR=5 sudo -E scripts/netns-swarm.sh
#
# Addresses: 10.77.0.1 … 10.77.0.N on the namespaces' eth0; nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-4}
UPDATES=${UPDATES:-6000}
CONFIG=${CONFIG:-configs/demo.toml}
DELAY=${DELAY:-20ms}
JITTER=${JITTER:-5ms}
LOSS=${LOSS:-1}
PARTITION_AT=${PARTITION_AT:-2}
PARTITION_FOR=${PARTITION_FOR:-4}
TARGET_ACC=${TARGET_ACC:-0.9}
RUN_DIR=${RUN_DIR:-runs/netns-$(date +%Y%m%d-%H%M%S)}
PREFIX=${PREFIX:-ssw$$}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/seedswarm-target}

if [[ $(id -u) -ne 0 ]]; then
  echo "netns-swarm.sh needs root (ip netns, tc)" >&2
  exit 2
fi
if [[ -z "${SEEDSWARM_BIN:-}" ]]; then
  cargo build --quiet --bin seedswarm
  SEEDSWARM_BIN="$CARGO_TARGET_DIR/debug/seedswarm"
fi
SEEDSWARM_BIN=$(realpath "$SEEDSWARM_BIN")
mkdir -p "$RUN_DIR"
HUB="$PREFIX-hub"
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for i in $(seq 0 $((N - 1))); do ip netns del "$PREFIX-$i" 2>/dev/null || true; done
  ip netns del "$HUB" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ip netns add "$HUB"
ip -n "$HUB" link set lo up
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link add br1 type bridge
ip -n "$HUB" link set br0 up
ip -n "$HUB" link set br1 up
for i in $(seq 0 $((N - 1))); do
  ns="$PREFIX-$i"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "v$PREFIX$i" type veth peer name eth0 netns "$ns"
  ip link set "v$PREFIX$i" netns "$HUB"
  ip -n "$HUB" link set "v$PREFIX$i" master br0 up
  ip -n "$ns" addr add "10.77.0.$((i + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
  if ! ip netns exec "$ns" tc qdisc add dev eth0 root netem delay "$DELAY" "$JITTER" loss "$LOSS%" 2>/dev/null; then
    if [[ "${REQUIRE_NETEM:-0}" == 1 ]]; then
      echo "tc netem is not available in this kernel (sch_netem); REQUIRE_NETEM=1" >&2
      exit 1
    fi
    [[ $i -eq 0 ]] && echo "warning: tc netem is not available in this kernel (sch_netem): running without latency and loss" >&2
    NETEM=off
  fi
done
echo "netns swarm: $N nodes, netem ${NETEM:-delay $DELAY±$JITTER loss $LOSS%}, partition at ${PARTITION_AT}s for ${PARTITION_FOR}s, logs in $RUN_DIR"

start_node() {
  local i=$1; shift
  local dir="$RUN_DIR/node-$i"
  mkdir -p "$dir"
  ip netns exec "$PREFIX-$i" "$SEEDSWARM_BIN" node --config "$CONFIG" --data-dir "$dir" \
    --listen "/ip4/10.77.0.$((i + 1))/tcp/4001" --listen "/ip4/10.77.0.$((i + 1))/udp/4001/quic-v1" \
    --no-mdns --min-peers $((N - 1)) --max-updates "$UPDATES" \
    --summary "$dir/summary.json" "$@" >"$dir/stdout.log" 2>"$dir/stderr.log" &
  pids+=($!)
}
start_node 0
peer=""
for _ in $(seq 1 100); do
  peer=$(grep -m1 -o 'peer id [A-Za-z0-9]*' "$RUN_DIR/node-0/stdout.log" 2>/dev/null | sed 's/^peer id //' || true)
  [[ -n "$peer" ]] && break
  sleep 0.1
done
[[ -n "$peer" ]] || { echo "node 0 did not start; see $RUN_DIR/node-0/stderr.log" >&2; exit 1; }
for i in $(seq 1 $((N - 1))); do start_node "$i" --bootstrap "/ip4/10.77.0.1/tcp/4001/p2p/$peer"; done

# Wait until training has started (node 0 has published), then partition.
for _ in $(seq 1 300); do
  own=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("own_updates",0))' "$RUN_DIR/node-0/status.json" 2>/dev/null || echo 0)
  [[ "$own" -gt 0 ]] && break
  sleep 0.2
done
sleep "$PARTITION_AT"
half=$((N / 2))
echo "partition: nodes 0..$((half - 1)) | $half..$((N - 1))"
for i in $(seq "$half" $((N - 1))); do ip -n "$HUB" link set "v$PREFIX$i" master br1; done
sleep "$PARTITION_FOR"
echo "heal"
for i in $(seq "$half" $((N - 1))); do ip -n "$HUB" link set "v$PREFIX$i" master br0; done

python3 scripts/swarm_table.py "$RUN_DIR" "$N" "${pids[@]}"
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
python3 scripts/swarm_table.py --verdict "$RUN_DIR" "$N" "$TARGET_ACC" || failed=1
exit $failed
