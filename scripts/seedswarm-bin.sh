# Sourced by the benchmark scripts: sets `bin` to the seedswarm binary to
# measure. SEEDSWARM_BIN wins; else PROFILE=release (default) builds an
# optimized binary (a first release build of the dependencies takes ~17
# minutes on 2 cores) and PROFILE=dev the dev build (dependencies
# optimized, seedswarm at opt-level 1). Needs CARGO_TARGET_DIR set.
profile="${PROFILE:-release}"
if [[ -n "${SEEDSWARM_BIN:-}" ]]; then
    bin="$SEEDSWARM_BIN"
elif [[ "$profile" == release ]]; then
    cargo build --quiet --release --bin seedswarm
    bin="$CARGO_TARGET_DIR/release/seedswarm"
else
    cargo build --quiet --bin seedswarm
    bin="$CARGO_TARGET_DIR/debug/seedswarm"
fi
