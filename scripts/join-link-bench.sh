#!/usr/bin/env bash
# Join over a real link: two network namespaces joined by a veth pair whose
# both ends are limited by tc tbf to RATE (each of RATES in turn). Node A
# trains a SmolLM2-size replica (configs/join-bench.toml: 134,512,666
# trainable parameters) to each log length of LENGTHS and serves it; node B
# joins it from an empty data dir by snapshot and by replay (and, with
# AUTO=1, with --join auto) and stops once it holds A's digest. Baseline in
# the same run and over the same link: the raw f32 weights (4 bytes per
# parameter) sent over one plain TCP connection. Prints a table and writes
# RUN_DIR/join-link.json. Needs root (ip netns, tc).
#
#   sudo scripts/join-link-bench.sh
#   RATES="100mbit" LENGTHS="50 200" AUTO=1 sudo -E scripts/join-link-bench.sh
#
# "join" is B's wall time from its start to the live digest (its process
# exits once it agrees with A), which includes ~1.2 s of listening to
# heartbeats before it decides how to join.
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"100mbit 1gbit"}
LENGTHS=${LENGTHS:-"50 200"}
AUTO=${AUTO:-0}
CONFIG=${CONFIG:-configs/join-bench.toml}
PARAMS=${PARAMS:-134512666}
RUN_DIR=${RUN_DIR:-runs/join-link-$(date +%Y%m%d-%H%M%S)}
PREFIX=${PREFIX:-ssj$$}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/seedswarm-target}

if [[ $(id -u) -ne 0 ]]; then
  echo "join-link-bench.sh needs root (ip netns, tc)" >&2
  exit 2
fi
if [[ -z "${SEEDSWARM_BIN:-}" ]]; then
  # The dev profile (dependencies at opt-level 3), as scripts/swarm.sh.
  cargo build --quiet --bin seedswarm
  SEEDSWARM_BIN="$CARGO_TARGET_DIR/debug/seedswarm"
fi
SEEDSWARM_BIN=$(realpath "$SEEDSWARM_BIN")
mkdir -p "$RUN_DIR"
RUN_DIR=$(realpath "$RUN_DIR")
NA="$PREFIX-a" NB="$PREFIX-b"
apid=""
cleanup() {
  [[ -n "$apid" ]] && kill "$apid" 2>/dev/null || true
  wait 2>/dev/null || true
  ip netns del "$NA" 2>/dev/null || true
  ip netns del "$NB" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ip netns add "$NA"
ip netns add "$NB"
ip -n "$NA" link set lo up
ip -n "$NB" link set lo up
ip link add eth0 netns "$NA" type veth peer name eth0 netns "$NB"
ip -n "$NA" addr add 10.88.0.1/24 dev eth0
ip -n "$NB" addr add 10.88.0.2/24 dev eth0
ip -n "$NA" link set eth0 up
ip -n "$NB" link set eth0 up

set_rate() {
  # Burst: at least rate / HZ; 1 MiB covers 1 Gbit/s.
  for ns in "$NA" "$NB"; do
    ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate "$1" burst 1mb latency 100ms
  done
}

# Raw f32 weights over one TCP connection on the link (receiver's clock).
raw_copy() {
  local bytes=$((4 * PARAMS))
  ip netns exec "$NB" python3 - "$bytes" >"$RUN_DIR/raw.out" <<'PY' &
import socket, sys, time
n = int(sys.argv[1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.88.0.2", 5001)); s.listen(1)
c, _ = s.accept(); t0 = time.perf_counter(); got = 0
buf = bytearray(1 << 20)
while got < n:
    k = c.recv_into(buf)
    if k == 0: break
    got += k
print(f"{time.perf_counter() - t0:.3f} {got}")
PY
  local rpid=$!
  sleep 0.5
  ip netns exec "$NA" python3 - "$bytes" <<'PY'
import socket, sys
n = int(sys.argv[1]); c = socket.create_connection(("10.88.0.2", 5001))
block = b"\x5a" * (1 << 20); sent = 0
while sent < n:
    k = min(len(block), n - sent); c.sendall(block[:k]); sent += k
c.close()
PY
  wait "$rpid"
  cut -d' ' -f1 "$RUN_DIR/raw.out"
}

start_a() {
  local updates=$1
  ip netns exec "$NA" "$SEEDSWARM_BIN" node --config "$CONFIG" --data-dir "$RUN_DIR/a" \
    --listen /ip4/10.88.0.1/tcp/4001 --no-mdns --max-updates "$updates" --serve \
    >>"$RUN_DIR/a.stdout" 2>>"$RUN_DIR/a.stderr" &
  apid=$!
  for _ in $(seq 1 3000); do
    if python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["training_done"] and s["own_updates"]>=int(sys.argv[2]) else 1)' \
      "$RUN_DIR/a/status.json" "$updates" 2>/dev/null; then
      return 0
    fi
    kill -0 "$apid" 2>/dev/null || { echo "node A exited; see $RUN_DIR/a.stderr" >&2; exit 1; }
    sleep 0.2
  done
  echo "node A did not reach $updates updates" >&2
  exit 1
}

stop_a() {
  kill -INT "$apid" 2>/dev/null || true
  wait "$apid" 2>/dev/null || true
  apid=""
}

join_b() {
  local mode=$1 tag=$2
  local dir="$RUN_DIR/b-$tag"
  rm -rf "$dir"
  local peer
  peer=$(grep -m1 -o 'peer id [A-Za-z0-9]*' "$RUN_DIR/a.stdout" | sed 's/^peer id //')
  local t0 t1
  t0=$(date +%s.%N)
  ip netns exec "$NB" "$SEEDSWARM_BIN" node --config "$CONFIG" --data-dir "$dir" \
    --listen /ip4/10.88.0.2/tcp/4001 --no-mdns --max-updates 0 --join "$mode" \
    --bootstrap "/ip4/10.88.0.1/tcp/4001/p2p/$peer" --summary "$dir.json" \
    >"$dir.stdout" 2>"$dir.stderr"
  t1=$(date +%s.%N)
  python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$t1"
}

modes="snapshot replay"
[[ "$AUTO" == 1 ]] && modes="$modes auto"
echo "join over a tbf-limited veth link: rates $RATES, log lengths $LENGTHS, modes $modes; $PARAMS parameters; logs in $RUN_DIR"
rows=()
last=0
for len in $LENGTHS; do
  start_a "$len"
  digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["digest"])' "$RUN_DIR/a/status.json")
  for rate in $RATES; do
    set_rate "$rate"
    raw=$(raw_copy)
    for mode in $modes; do
      wall=$(join_b "$mode" "$len-$rate-$mode")
      rows+=("$len $rate $mode $wall $raw $digest $RUN_DIR/b-$len-$rate-$mode.json")
      echo "  log $len, $rate, $mode: join ${wall} s (raw f32 copy ${raw} s)"
    done
  done
  stop_a
  last=$len
done

python3 - "$RUN_DIR" "${rows[@]}" <<'PY'
import json, sys
run = sys.argv[1]
out = []
print(f"{'log':>5} {'link':>8} {'mode':>9} {'join s':>8} {'raw copy s':>10} {'join/raw':>8} {'fetched MB':>10} {'chosen':>9} digest")
for row in sys.argv[2:]:
    length, rate, mode, wall, raw, digest, summ = row.split(" ")
    s = json.load(open(summ))
    r = {
        "log_updates": int(length), "link": rate, "mode": mode,
        "join_wall_seconds": float(wall), "raw_f32_copy_seconds": float(raw),
        "join_over_raw": float(wall) / float(raw),
        "snapshot_bytes": s.get("snapshot_bytes_fetched"), "chosen": s.get("join"),
        "join_seconds": s.get("join_seconds"), "digest_equal": s.get("digest") == digest,
    }
    out.append(r)
    print(f"{length:>5} {rate:>8} {mode:>9} {r['join_wall_seconds']:>8.2f} {r['raw_f32_copy_seconds']:>10.2f} "
          f"{r['join_over_raw']:>8.2f} {(r['snapshot_bytes'] or 0) / 1e6:>10.1f} {str(r['chosen']):>9} "
          f"{'equal' if r['digest_equal'] else 'DIFFERENT'}")
json.dump(out, open(f"{run}/join-link.json", "w"), indent=1)
sys.exit(0 if all(r["digest_equal"] for r in out) else 1)
PY
