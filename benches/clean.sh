#!/usr/bin/env bash
# Reproduces the `clean` numbers of BENCHMARKS.md: prefsmith cleans 100,000 synthetic prompts
# with 16 and with 64 responses each (long layout from `prefsmith synth`, 2 % outliers); numpy
# runs the same robust PCA on the first 1,000 prompts; per-prompt rates are compared.
# Usage: benches/clean.sh [RUNS_16 [RUNS_64]]   (default 3 and 1)
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
for n in 16 64; do
  data="bench-data/clean-$n"
  if [ ! -f "$data/_manifest.json" ]; then
    "$bin" synth --prompts 100000 --responses "$n" --shards 4 --output "$data"
  fi
  runs="${1:-3}"; [ "$n" = 64 ] && runs="${2:-1}"
  echo "== n = $n"
  "$venv/bin/python" benches/clean_vs_numpy.py --prefsmith "$bin" --data "$data" --runs "$runs" --numpy-prompts 1000
done
