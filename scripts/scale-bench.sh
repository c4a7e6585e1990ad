#!/usr/bin/env bash
# How the swarm's cost grows with its size: runs scripts/swarm.sh (real
# processes on 127.0.0.1, built-in model) at each N of NS with the same
# total number of updates (TOTAL, split evenly), then prints one table:
# N, wire bytes in per update (all protocols), accuracy, slowest node's
# wall time (training and settling), nodes settled, peak RSS per node and
# the verdict. Every run's figures stay in RUN_DIR/n<N>/swarm.json; the
# table is also written to RUN_DIR/scale.json.
#
#   scripts/scale-bench.sh                       # NS="4 16 32", TOTAL=32000
#   NS="4 16 32 64" TOTAL=32000 scripts/scale-bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."

NS=${NS:-"4 16 32"}
TOTAL=${TOTAL:-32000}
RUN_DIR=${RUN_DIR:-runs/scale-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN_DIR"
echo "scale benchmark: N in {$NS}, $TOTAL updates in all, logs in $RUN_DIR ($(nproc) cores)"
for n in $NS; do
  echo "== N=$n: $((TOTAL / n)) updates each"
  N=$n UPDATES=$((TOTAL / n)) RUN_DIR="$RUN_DIR/n$n" scripts/swarm.sh >"$RUN_DIR/n$n.log" 2>&1
  tail -n 2 "$RUN_DIR/n$n.log"
done
python3 - "$RUN_DIR" $NS <<'EOF'
import json, sys
run_dir, ns = sys.argv[1], sys.argv[2:]
rows = []
print(f"{'N':>4} {'B/update':>9} {'accuracy':>15} {'wall s':>7} {'settled':>8} {'RSS MiB':>8}  verdict")
for n in ns:
    try:
        s = json.load(open(f"{run_dir}/n{n}/swarm.json"))
    except OSError:
        print(f"{n:>4} (no figures: see {run_dir}/n{n}.log)")
        continue
    rows.append(s)
    acc = f"{s['accuracy_min']:.3f}..{s['accuracy_max']:.3f}"
    print(
        f"{n:>4} {s['wire_bytes_in_per_update']:>9.1f} {acc:>15} {s['wall_seconds']:>7.1f} "
        f"{s['settled']:>3}/{s['nodes']:<4} {s['peak_rss_mib_mean']:>8.1f}  "
        + ("PASS" if s["pass"] else "FAIL")
    )
json.dump(rows, open(f"{run_dir}/scale.json", "w"), indent=1)
EOF
