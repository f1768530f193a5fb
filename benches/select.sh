#!/usr/bin/env bash
# Reproduces the `select` numbers of BENCHMARKS.md: 1,000,000 prompts × 16 responses (long
# layout, 64-byte responses, 8 shards), prefsmith `select` vs DuckDB writing the same pair
# table, and a plain scan of the same columns as the floor. Extra arguments go to
# select_vs_duckdb.py (e.g. `--duckdb-query agg`, `--runs 7`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prefsmith/target}"
cargo build --locked
bin="$CARGO_TARGET_DIR/debug/prefsmith"   # the one build profile (dev, fully optimised)
data="${BENCH_DATA:-bench-data/long-1m}"
venv="bench-data/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r tests/python/requirements.txt
fi
if [ ! -f "$data/_manifest.json" ]; then
  "$bin" synth --prompts 1000000 --responses 16 --shards 8 --response-bytes 64 --output "$data"
fi
"$venv/bin/python" benches/select_vs_duckdb.py --prefsmith "$bin" --data "$data" --runs 5 --threads 2 "$@"
