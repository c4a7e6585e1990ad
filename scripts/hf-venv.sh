# Sourced by the scripts that compare against Hugging Face transformers
# (check-hf-export.sh, bench-vs-torch.sh): the assets check and the
# throwaway venv with torch and transformers from PyPI. Sets `venv`
# (VENV, default $TMPDIR/seedswarm-hf-venv; reused when present).
# Usage: source scripts/hf-venv.sh NAME   (NAME prefixes the messages)
hf_name="$1"
venv="${VENV:-${TMPDIR:-/tmp}/seedswarm-hf-venv}"
[[ -s assets/SmolLM2-135M-Instruct.Q4_1.gguf ]] || {
    echo "$hf_name: assets missing; run scripts/fetch-assets.sh" >&2
    exit 1
}
if [[ ! -x "$venv/bin/python" ]]; then
    echo "$hf_name: installing torch and transformers into $venv (PyPI)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch transformers safetensors numpy
fi
