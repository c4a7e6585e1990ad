#!/usr/bin/env bash
# The README's test command: runs the test suite with cargo-nextest,
# installing it first when this machine lacks it (a fresh machine has only
# cargo). Arguments go to `cargo nextest run`, e.g.
#
#   scripts/test.sh
#   scripts/test.sh --test cli
#   scripts/test.sh --locked --no-fail-fast     # what .ci/run passes
set -euo pipefail
cd "$(dirname "$0")/.."
# The same build folder as scripts/swarm.sh, so the dependencies build once.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/seedswarm-target}

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing; installing it with 'cargo install cargo-nextest --locked' (a few minutes, once)" >&2
  cargo install cargo-nextest --locked
fi
exec cargo nextest run "$@"
