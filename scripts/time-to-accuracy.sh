#!/usr/bin/env bash
# Dev accuracy against updates and wall time, per perturbation structure and
# seed: `seedswarm train` on CONFIG for each VARIANT and SEED (a copy of the
# config with run.seed = SEED, the variant's [run.structure] and, when set,
# the schedule's LR), evaluating every EVAL_EVERY updates, then a table of
# mean ± spread over the seeds at each evaluation and the time each variant
# first reached each accuracy in TARGETS. The run seed names the run, so a
# seed changes the perturbations and the sample order together.
#
# Variants: dense (plain MeZO), layers (LeZO: LAYERS layer groups per
# update), magnitude (Sparse MeZO: the DENSITY fraction of smallest base
# weights of each tensor). Needs the assets for the SmolLM2 configs
# (scripts/fetch-assets.sh). Writes RUN_DIR/<variant>-<seed>.json (the train
# summaries, curve included) and RUN_DIR/table.json.
# Usage: [CONFIG=configs/smollm2-sst2.toml] [VARIANTS="dense layers magnitude"]
#        [SEEDS="1 2 3"] [STEPS=100] [EVAL_EVERY=50] [LAYERS=8] [DENSITY=0.25]
#        [LR=...] [THREADS=2] [TARGETS="0.6 0.7 0.8"] [PROFILE=release|dev]
#        [RUN_DIR=DIR] scripts/time-to-accuracy.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
config="${CONFIG:-configs/smollm2-sst2.toml}"
variants="${VARIANTS:-dense layers magnitude}"
seeds="${SEEDS:-1 2 3}"
steps="${STEPS:-100}"
eval_every="${EVAL_EVERY:-50}"
layers="${LAYERS:-8}"
density="${DENSITY:-0.25}"
threads="${THREADS:-2}"
targets="${TARGETS:-0.6 0.7 0.8}"
run="${RUN_DIR:-$root/runs/time-to-accuracy-$(date +%Y%m%d-%H%M%S)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/seedswarm-target}"
export RAYON_NUM_THREADS="$threads"

source scripts/seedswarm-bin.sh
mkdir -p "$run"

for v in $variants; do
    case "$v" in
        dense) structure="" ;;
        layers) structure=$'[run.structure]\nkind = "layers"\nlayers = '"$layers" ;;
        magnitude) structure=$'[run.structure]\nkind = "magnitude"\ndensity = '"$density" ;;
        *) echo "time-to-accuracy: unknown variant $v (dense, layers, magnitude)" >&2; exit 2 ;;
    esac
    for s in $seeds; do
        cfg="$run/$v-$s.toml"
        # run.seed is the first `seed =` line, the schedule's lr the first `lr =`.
        sed -e "0,/^seed = .*/s//seed = $s/" "$config" >"$cfg"
        if [[ -n "${LR:-}" ]]; then
            sed -i -e "0,/^lr = .*/s//lr = $LR/" "$cfg"
        fi
        if ! grep -q "^seed = $s\$" "$cfg"; then
            echo "time-to-accuracy: $config has no top-level 'seed =' line" >&2
            exit 2
        fi
        [[ -z "$structure" ]] || printf '\n%s\n' "$structure" >>"$cfg"
        sed -i -e "s/^eval_every = .*/eval_every = $eval_every/" "$cfg"
        echo "time-to-accuracy: $v seed $s ($steps updates, $threads threads)"
        "$bin" train --config "$cfg" --steps "$steps" --summary "$run/$v-$s.json" \
            2>"$run/$v-$s.log" | grep -E '^(step|done)' || {
            echo "time-to-accuracy: $v seed $s failed, see $run/$v-$s.log" >&2
            exit 1
        }
    done
done

python3 - "$run" "$targets" $variants <<'EOF'
import json, statistics, sys
run, targets, variants = sys.argv[1], [float(t) for t in sys.argv[2].split()], sys.argv[3:]
table = {}
print(f"\n{'variant':<10} {'updates':>7} {'accuracy mean':>13} {'spread':>7} {'wall s':>7}  seeds")
for v in variants:
    runs = []
    import glob
    for path in sorted(glob.glob(f"{run}/{v}-*.json")):
        with open(path) as f:
            runs.append(json.load(f))
    by_updates = {}
    for r in runs:
        for p in r["curve"]:
            by_updates.setdefault(p["updates"], []).append(p)
    rows = []
    for u in sorted(by_updates):
        ps = by_updates[u]
        acc = [p["accuracy"] for p in ps]
        wall = statistics.mean(p["wall_seconds"] for p in ps)
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        rows.append({"updates": u, "mean": statistics.mean(acc), "sd": sd,
                     "min": min(acc), "max": max(acc), "wall_seconds": wall, "n": len(acc)})
        print(f"{v:<10} {u:>7} {100 * statistics.mean(acc):>12.1f}% {100 * sd:>6.1f}  {wall:>7.0f}  "
              + " ".join(f"{100 * a:.1f}" for a in acc))
    reach = {}
    for t in targets:
        times = []
        for r in runs:
            hit = next((p["wall_seconds"] for p in r["curve"] if p["accuracy"] >= t), None)
            times.append(hit)
        reach[str(t)] = times
    table[v] = {"curve": rows, "seconds_to_reach": reach,
                "digests": [r["digest"] for r in runs], "run_ids": [r["run_id"] for r in runs]}
print(f"\n{'variant':<10} " + " ".join(f"{'to ' + format(100 * t, '.0f') + '%':>14}" for t in targets))
for v in variants:
    cells = []
    for t in targets:
        times = table[v]["seconds_to_reach"][str(t)]
        hit = [x for x in times if x is not None]
        cells.append(f"{len(hit)}/{len(times)} {statistics.mean(hit):>5.0f}s" if hit else f"0/{len(times)}")
    print(f"{v:<10} " + " ".join(f"{c:>14}" for c in cells))
with open(f"{run}/table.json", "w") as f:
    json.dump(table, f, indent=1)
print(f"\ntime-to-accuracy: {run}/table.json")
EOF
