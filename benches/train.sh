#!/usr/bin/env bash
# Reproduces the training numbers of BENCHMARKS.md: DPO throughput of `prefsmith train` on this
# machine's CPU (burn's flex backend) for the tiny config (configs/train-tiny.toml on the
# arena pairs) and for SmolLM2-135M-Instruct (configs/train-smollm2.toml on 64 quickstart
# pairs with reference log-probs from `prefsmith score`). Prints, per model, the median step
# time over the steps after the first (warm-up), pairs/s and tokens/s at that median, and the
# peak resident memory of the training process, all read from the run's summary.json.
# MAX_STEPS (default 8 tiny / 7 SmolLM2) sets the steps.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prefsmith/target}"
cargo build --locked --workspace
bin="$CARGO_TARGET_DIR/debug/prefsmith"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$bin" run configs/arena-pairs.toml >/dev/null
report() {
  python3 - "$1" "$2" <<'PY'
import json, statistics, sys
s = json.load(open(sys.argv[2]))
t = s["timing"]
steps = t["step_seconds"][1:]
if len(steps) < 5:
    sys.exit(f"{sys.argv[1]}: only {len(steps)} measured steps; need at least 5")
median = statistics.median(steps)
metrics = [json.loads(l) for l in open(sys.argv[2].replace("summary.json", "metrics.jsonl"))]
pairs = statistics.median(m["pairs"] for m in metrics if "pairs" in m)
tokens = statistics.median(m["tokens"] for m in metrics if "tokens" in m)
print(f"{sys.argv[1]:10s} {len(steps)} measured steps: median {median:7.2f} s/step | "
      f"{pairs / median:7.2f} pairs/s | {tokens / median:8.0f} tokens/s | "
      f"peak RSS {t['peak_rss_bytes'] / 2**20:7.0f} MiB")
PY
}

sed -e "s#\"out/train-tiny\"#\"$work/tiny\"#" -e "s#^epochs = 1#epochs = 1\nmax-steps = ${MAX_STEPS:-8}#" \
  configs/train-tiny.toml > "$work/tiny.toml"
"$bin" train --config "$work/tiny.toml" >/dev/null
report tiny "$work/tiny/summary.json"

bash scripts/fetch-smollm2 >/dev/null
"$bin" sql --table pairs=out/arena/pairs --output "$work/pairs-64.parquet" \
  "SELECT * FROM pairs ORDER BY prompt_id LIMIT 64" >/dev/null
"$bin" score --input "$work/pairs-64.parquet" --output "$work/pairs-64-ref" --role reference \
  --max-length 256 --max-prompt-length 96 >/dev/null
sed -e "s#\"out/arena/pairs-64-ref\"#\"$work/pairs-64-ref\"#" \
  -e "s#\"out/train-smollm2\"#\"$work/smollm2\"#" \
  -e "s#^max-steps = .*#max-steps = ${MAX_STEPS:-7}#" configs/train-smollm2.toml > "$work/smollm2.toml"
"$bin" train --config "$work/smollm2.toml" >/dev/null
report SmolLM2 "$work/smollm2/summary.json"
