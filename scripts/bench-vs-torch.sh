#!/usr/bin/env bash
# Same-run speed of seedswarm's SmolLM2-135M forward against PyTorch
# (transformers), on the same N SST-2 dev prompts, both with THREADS
# threads, f32:
#   1. the base model (configs/smollm2-sst2.toml) is materialized from a
#      one-update seed log into a Hugging Face directory (the weights
#      seedswarm computes with, so both score the same model);
#   2. `seedswarm eval` scores the prompts (its label-word head, batches of
#      node.eval_batch); its load time is read from its log;
#   3. transformers scores them in the same batches (left padding, the full
#      49,152-word head at every position: what a PyTorch user runs), timed
#      after the load, best of REPEAT passes.
# Loss and accuracy must agree (a check that both ran the same model). torch
# and transformers come from PyPI into a throwaway venv (VENV, default
# $TMPDIR/seedswarm-hf-venv, shared with check-hf-export.sh). Needs the
# assets (scripts/fetch-assets.sh). Writes RUN_DIR/bench.json.
# Usage: [N=300] [THREADS=2] [REPEAT=1] [PROFILE=release|dev] [RUN_DIR=DIR]
#        scripts/bench-vs-torch.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${N:-300}"
threads="${THREADS:-2}"
repeat="${REPEAT:-1}"
run="${RUN_DIR:-$root/runs/bench-vs-torch-$(date +%Y%m%d-%H%M%S)}"
config="configs/smollm2-sst2.toml"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/seedswarm-target}"

source scripts/hf-venv.sh bench-vs-torch
source scripts/seedswarm-bin.sh
mkdir -p "$run"
export RAYON_NUM_THREADS="$threads"

"$bin" train --config "$config" --steps 1 --data-dir "$run/data" 2>"$run/train.log" >/dev/null
"$bin" export --config "$config" --data-dir "$run/data" --seedlog "$run/run.seedlog" 2>>"$run/train.log"
"$bin" materialize "$run/run.seedlog" --out "$run/hf" 2>>"$run/train.log" >/dev/null

head -n "$((n + 1))" data/sst2/dev.tsv >"$run/dev.tsv"
echo "bench-vs-torch: seedswarm eval on $n SST-2 dev prompts, $threads threads"
t0=$(date +%s.%N)
"$bin" eval --config "$config" --data-dir "$run/data" --data "$run/dev.tsv" \
    --summary "$run/eval.json" 2>"$run/eval.log" >/dev/null
t1=$(date +%s.%N)
load=$(sed 's/\x1b\[[0-9;]*m//g' "$run/eval.log" | grep -m1 -o 'model loaded seconds=[0-9.]*' | cut -d= -f2)
replay=$(sed 's/\x1b\[[0-9;]*m//g' "$run/eval.log" | grep -m1 -o 'replayed the update log.*seconds=[0-9.]*' | grep -o 'seconds=[0-9.]*' | cut -d= -f2 || true)

echo "bench-vs-torch: transformers on the same prompts"
"$venv/bin/python" - "$run" "$config" "$threads" "$repeat" "$t0" "$t1" "${load:-0}" "${replay:-0}" <<'PY'
import csv, json, sys, time, tomllib
run, config, threads, repeat, t0, t1, load, replay = sys.argv[1:]
threads, repeat = int(threads), int(repeat)
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
cfg = tomllib.load(open(config, "rb"))
task, batch = cfg["run"]["task"], cfg["node"].get("eval_batch", 64)
torch.set_num_threads(threads)
start = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(f"{run}/hf", torch_dtype=torch.float32).eval()
tok = PreTrainedTokenizerFast(tokenizer_file=f"{run}/hf/tokenizer.json")
torch_load = time.perf_counter() - start
labels = [tok(w, add_special_tokens=False)["input_ids"][0] for w in task["labels"]]
rows = list(csv.DictReader(open(f"{run}/dev.tsv"), delimiter="\t", quoting=csv.QUOTE_NONE))
seqs = [tok(task["template"].replace("{sentence}", r["sentence"].strip()),
            add_special_tokens=False)["input_ids"] for r in rows]
ys = [int(r["label"]) for r in rows]
pad = tok.pad_token_id if tok.pad_token_id is not None else 0

def score():
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(seqs), batch):
            part = seqs[i:i + batch]
            width = max(len(s) for s in part)
            ids = torch.tensor([[pad] * (width - len(s)) + s for s in part])
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in part])
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
            last = logits[:, -1, labels].double()
            for row, y in zip(last, ys[i:i + batch]):
                loss += float(torch.logsumexp(row, 0) - row[y])
                correct += int(int(torch.argmax(row)) == y)
    return loss / len(seqs), correct / len(seqs)

best = float("inf")
for _ in range(repeat):
    s = time.perf_counter()
    tl, ta = score()
    best = min(best, time.perf_counter() - s)
ours = json.load(open(f"{run}/eval.json"))
wall = float(t1) - float(t0)
ours_eval = wall - float(load) - float(replay)
out = {
    "prompts": len(seqs), "threads": threads, "batch": batch,
    "torch": {"version": torch.__version__, "load_seconds": torch_load, "eval_seconds": best,
              "loss": tl, "accuracy": ta},
    "seedswarm": {"wall_seconds": wall, "load_seconds": float(load), "replay_seconds": float(replay),
                  "eval_seconds": ours_eval, "loss": ours["loss"], "accuracy": ours["accuracy"]},
    "speedup_eval": best / ours_eval,
    "same_model": abs(tl - ours["loss"]) < 1e-3 and ta == ours["accuracy"],
}
json.dump(out, open(f"{run}/bench.json", "w"), indent=2)
print(json.dumps(out))
print(f"{len(seqs)} SST-2 dev prompts, {threads} threads, batches of {batch}: "
      f"PyTorch {best:.2f} s (after a {torch_load:.1f} s load), seedswarm {ours_eval:.2f} s "
      f"(after a {float(load):.1f} s load; {wall:.1f} s in all): seedswarm is {best / ours_eval:.2f}x "
      f"PyTorch's speed; loss {ours['loss']:.5f} vs {tl:.5f}, accuracy {ours['accuracy']:.3f} vs {ta:.3f}")
sys.exit(0 if out["same_model"] else 1)
PY
