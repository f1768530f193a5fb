#!/usr/bin/env bash
# Reproduces the recovery-grid table of BENCHMARKS.md (`docs/ALGORITHMS.md` §5.14): every
# `prefsmith clean --method` on 135 regimes of synthetic judge data with known true scores.
# Usage: benches/clean_grid.sh [extra clean_grid.py arguments, e.g. --reduced or --seeds 10]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prefsmith/target}"
cargo build --locked
bin="$CARGO_TARGET_DIR/debug/prefsmith"   # the one build profile (dev, fully optimised)
venv="bench-data/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r tests/python/requirements.txt
fi
mkdir -p bench-data
"$venv/bin/python" benches/clean_grid.py --prefsmith "$bin" \
  --json bench-data/clean-grid.json --markdown bench-data/clean-grid.md "$@"
# Speed of every method against its numpy reference at n = 16 (the same venv, the same run).
"$venv/bin/python" benches/clean_methods_vs_numpy.py --prefsmith "$bin"
