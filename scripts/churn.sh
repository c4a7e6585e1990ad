#!/usr/bin/env bash
# Churn scenario on a local swarm: while N nodes train, repeatedly kill a
# random node with SIGKILL; every other kill it is restarted from its data
# dir, otherwise it stays dead and a fresh node joins instead. Ends with one
# verdict line: the surviving nodes hold equal digests and version vectors,
# and no update a dead node had published before dying is missing.
#
#   scripts/churn.sh                          # 4 nodes, 4 kills
#   N=5 KILLS=6 UPDATES=6000 scripts/churn.sh
#   SEEDSWARM_BIN=target/release/seedswarm scripts/churn.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-4}
KILLS=${KILLS:-4}
UPDATES=${UPDATES:-4000}
CONFIG=${CONFIG:-configs/demo.toml}
RUN_DIR=${RUN_DIR:-runs/churn-$(date +%Y%m%d-%H%M%S)}
SEED=${SEED:-$RANDOM}
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
RANDOM=$SEED
echo "churn: $N nodes, $KILLS kills, $UPDATES updates per node, seed $SEED, logs in $RUN_DIR"

declare -A pid url
running=()
next=0
cleanup() { for p in "${pid[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

bootstrap_args() {
  local args=()
  for n in "${running[@]}"; do
    local a
    a=$(grep -m1 -o 'listening on /ip4/127.0.0.1/tcp/[0-9]*/p2p/[A-Za-z0-9]*' "$RUN_DIR/$n/stdout.log" 2>/dev/null | sed 's/^listening on //' || true)
    [[ -n "$a" ]] && args+=(--bootstrap "$a")
  done
  echo "${args[@]}"
}

start() { # name min_peers
  local n=$1 minp=$2 dir="$RUN_DIR/$1"
  mkdir -p "$dir"
  # shellcheck disable=SC2046
  "$SEEDSWARM_BIN" node --config "$CONFIG" --data-dir "$dir" --no-mdns \
    --listen /ip4/127.0.0.1/tcp/0 --http 127.0.0.1:0 --min-peers "$minp" \
    --max-updates "$UPDATES" --summary "$dir/summary.json" $(bootstrap_args) \
    >>"$dir/stdout.log" 2>>"$dir/stderr.log" &
  pid[$n]=$!
  for _ in $(seq 1 100); do
    url[$n]=$(grep -o 'dashboard http://[0-9.:]*' "$dir/stdout.log" 2>/dev/null | tail -1 | sed 's/^dashboard //' || true)
    [[ -n "${url[$n]}" ]] && grep -q "listening on" "$dir/stdout.log" && break
    sleep 0.1
  done
  running+=("$n")
}

status_field() { # name field
  python3 - "$1" "$2" <<'PY'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/status", timeout=2) as r:
        print(json.load(r).get(sys.argv[2], ""))
except Exception:
    print("")
PY
}

for i in $(seq 0 $((N - 1))); do start "node-$((next++))" $((i == 0 ? 0 : 1)); done
: >"$RUN_DIR/deaths.tsv"   # origin, published_through at death, restarted?
for k in $(seq 1 "$KILLS"); do
  sleep "0.$((RANDOM % 9 + 3))"
  victim=${running[$((RANDOM % ${#running[@]}))]}
  origin=$(status_field "${url[$victim]}" origin)
  published=$(status_field "${url[$victim]}" published_through)
  kill -9 "${pid[$victim]}" 2>/dev/null || true
  wait "${pid[$victim]}" 2>/dev/null || true
  running=("${running[@]/$victim}")
  running=($(printf '%s\n' "${running[@]}" | grep . || true))
  if ((k % 2 == 1)); then
    echo "kill $k: $victim (published ${published:-?}) - restarting it from its data dir"
    printf '%s\t%s\trestarted\n' "$origin" "${published:-0}" >>"$RUN_DIR/deaths.tsv"
    start "$victim" 1
  else
    echo "kill $k: $victim (published ${published:-?}) - stays dead; node-$next joins"
    printf '%s\t%s\tdead\n' "$origin" "${published:-0}" >>"$RUN_DIR/deaths.tsv"
    start "node-$((next++))" 1
  fi
done

failed=0
for n in "${running[@]}"; do wait "${pid[$n]}" || failed=1; done
trap - EXIT
python3 - "$RUN_DIR" "$UPDATES" "${running[@]}" <<'PY'
import json, sys
run_dir, updates, alive = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
sums = []
for n in alive:
    try:
        sums.append(json.load(open(f"{run_dir}/{n}/summary.json")))
    except (OSError, ValueError):
        print(f"CHURN VERDICT: FAIL - {n} wrote no summary (see {run_dir}/{n}/stderr.log)")
        sys.exit(1)
digests = {s["digest"] for s in sums}
vvs = {json.dumps(s["version_vector"], sort_keys=True) for s in sums}
vv = sums[0]["version_vector"]
lost = 0
kills = restarts = 0
for line in open(f"{run_dir}/deaths.tsv"):
    origin, published, fate = line.rstrip("\n").split("\t")
    kills += 1
    restarts += fate == "restarted"
    lost += max(0, int(published or 0) - vv.get(origin, 0))
ok = len(digests) == 1 and len(vvs) == 1 and lost == 0
print(
    f"CHURN VERDICT: {'PASS' if ok else 'FAIL'} - {len(sums)} surviving nodes, digests "
    f"{'equal' if len(digests) == 1 else 'DIFFER'} ({next(iter(digests))[:16]}), version vectors "
    f"{'equal' if len(vvs) == 1 else 'DIFFER'}, lost updates {lost} "
    f"({kills} kills, {restarts} restarts, {kills - restarts} left dead; "
    f"{sum(vv.values())} updates from {len(vv)} origins, accuracy {sums[0]['accuracy']:.3f})"
)
sys.exit(0 if ok else 1)
PY
rc=$?
exit $((rc | failed))
