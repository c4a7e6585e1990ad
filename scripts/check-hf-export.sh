#!/usr/bin/env bash
# Checks that a materialized SmolLM2 replica is a Hugging Face model that
# transformers loads and that computes what seedswarm computes:
#   1. a few SPSA updates on SST-2 (seedswarm train), exported as a seed log;
#   2. seedswarm materialize → a Hugging Face directory;
#   3. transformers (AutoModelForCausalLM + the directory's tokenizer.json)
#      scores the first N SST-2 dev prompts with the label words, and the
#      loss and accuracy must match `seedswarm eval` on the same prompts.
# torch and transformers are installed from PyPI into a throwaway venv
# (VENV, default $TMPDIR/seedswarm-hf-venv; reused when present). Needs the
# assets (scripts/fetch-assets.sh). Writes RUN_DIR/check.json.
# Usage: [STEPS=4] [N=32] [RUN_DIR=DIR] scripts/check-hf-export.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
steps="${STEPS:-4}"
n="${N:-32}"
run="${RUN_DIR:-$root/runs/hf-check-$(date +%Y%m%d-%H%M%S)}"
config="configs/smollm2-sst2.toml"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/seedswarm-target}"

source scripts/hf-venv.sh check-hf-export
cargo build --quiet --bin seedswarm
bin="$CARGO_TARGET_DIR/debug/seedswarm"
mkdir -p "$run"

echo "check-hf-export: $steps updates on SST-2, then export and materialize"
"$bin" train --config "$config" --steps "$steps" --data-dir "$run/data" \
    --summary "$run/train.json" 2>"$run/train.log" | tail -n 1
"$bin" export --config "$config" --data-dir "$run/data" --seedlog "$run/run.seedlog" \
    --summary "$run/export.json" 2>>"$run/train.log"
"$bin" materialize "$run/run.seedlog" --out "$run/hf" --summary "$run/materialize.json" \
    2>>"$run/train.log"

# The first N dev rows (header kept), scored by both.
head -n "$((n + 1))" data/sst2/dev.tsv >"$run/dev.tsv"
"$bin" eval --config "$config" --data-dir "$run/data" --data "$run/dev.tsv" \
    --summary "$run/eval.json" 2>>"$run/train.log" | tail -n 1

"$venv/bin/python" - "$run" "$config" <<'PY'
import csv, json, math, sys, tomllib
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

run, config = sys.argv[1:]
task = tomllib.load(open(config, "rb"))["run"]["task"]
torch.set_num_threads(2)
model = AutoModelForCausalLM.from_pretrained(f"{run}/hf", torch_dtype=torch.float32)
model.eval()
tok = PreTrainedTokenizerFast(tokenizer_file=f"{run}/hf/tokenizer.json")
labels = [tok(w, add_special_tokens=False)["input_ids"][0] for w in task["labels"]]
rows = list(csv.DictReader(open(f"{run}/dev.tsv"), delimiter="\t", quoting=csv.QUOTE_NONE))
loss, correct = 0.0, 0
with torch.no_grad():
    for r in rows:
        text = task["template"].replace("{sentence}", r["sentence"].strip())
        ids = tok(text, add_special_tokens=False)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0, -1, labels].double()
        y = int(r["label"])
        loss += float(torch.logsumexp(logits, 0) - logits[y])
        correct += int(int(torch.argmax(logits)) == y)
ours = json.load(open(f"{run}/eval.json"))
theirs = {"loss": loss / len(rows), "accuracy": correct / len(rows), "n": len(rows)}
ok = ours["n"] == theirs["n"] and abs(ours["loss"] - theirs["loss"]) < 1e-3 \
    and ours["accuracy"] == theirs["accuracy"]
out = {"transformers": theirs, "seedswarm": {k: ours[k] for k in ("loss", "accuracy", "n")},
       "loss_difference": abs(ours["loss"] - theirs["loss"]), "match": ok,
       "updates": json.load(open(f"{run}/export.json"))["updates"],
       "seed_log_bytes": json.load(open(f"{run}/export.json"))["bytes"]}
json.dump(out, open(f"{run}/check.json", "w"), indent=2)
print(json.dumps(out))
print(("PASS" if ok else "FAIL") + f": transformers loads the materialized directory; loss "
      f"{theirs['loss']:.5f} vs seedswarm {ours['loss']:.5f}, accuracy "
      f"{theirs['accuracy']:.3f} vs {ours['accuracy']:.3f} on {len(rows)} SST-2 dev prompts")
sys.exit(0 if ok else 1)
PY
