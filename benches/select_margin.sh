#!/usr/bin/env bash
# Reproduces the `select-margin` numbers of BENCHMARKS.md: 10,000,000 synthetic pairs with
# scores and log-probs (8 shards), prefsmith `select-margin --top-k 1000000` vs DuckDB doing
# the same arithmetic in SQL (M2 given). Extra arguments go to select_margin_vs_duckdb.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prefsmith/target}"
cargo build --locked
bin="$CARGO_TARGET_DIR/debug/prefsmith"   # the one build profile (dev, fully optimised)
data="${BENCH_DATA:-bench-data/margin-10m}"
venv="bench-data/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r tests/python/requirements.txt
fi
if [ ! -f "$data/shard-00007.parquet" ]; then
  "$venv/bin/python" benches/make_margin_pairs.py --pairs 10000000 --shards 8 --output "$data"
fi
"$venv/bin/python" benches/select_margin_vs_duckdb.py --prefsmith "$bin" --data "$data" \
  --top-k 1000000 --runs 5 --threads 2 "$@"
