#!/usr/bin/env bash
# Reproduces the shard-size numbers of BENCHMARKS.md: `select` (sweet-spot, streaming over input
# sorted by prompt_id) on one synthetic shard of SIZE_MB (default 1000: 250,000 prompts × 4
# responses of 1,000 bytes), on local disk. Prints the shard's bytes, the stage's wall time and the process's peak RSS (from the output
# manifest's timing), so that memory can be compared with the shard size.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prefsmith/target}"
cargo build --locked --workspace
bin="$CARGO_TARGET_DIR/debug/prefsmith"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
size_mb="${SIZE_MB:-1000}"
prompts=$((size_mb * 250))

"$bin" synth --output "$work/shard" --prompts "$prompts" --responses 4 --response-bytes 1000 \
  --shards 1 >/dev/null 2>&1
report() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
label, shard, out = sys.argv[1:]
import os
m = json.load(open(os.path.join(out, "_manifest.json")))
size = os.path.getsize(os.path.join(shard, "part-00000.parquet"))
peak = m["timing"]["peak_rss_bytes"]
print(f"{label}: shard {size/1e6:.0f} MB, {m['stats']['input_rows']} rows -> {m['rows']} pairs "
      f"in {m['timing']['seconds'] or 0:.2f} s; peak RSS {peak/2**20:.0f} MiB "
      f"({peak/size:.2f} x the shard)")
PY
}
"$bin" select --input "$work/shard" --output "$work/pairs" >/dev/null 2>&1
report "local disk" "$work/shard" "$work/pairs"
