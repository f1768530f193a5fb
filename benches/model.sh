#!/usr/bin/env bash
# Reproduces the model numbers of BENCHMARKS.md: SmolLM2-135M-Instruct (Q4_1 GGUF) scoring a
# 512-token sequence (log-probs at every position) and generating 64 tokens with 1 and with 8
# samples decoding together, prefsmith (burn, flex CPU backend) vs llama.cpp
# (llama-cpp-python 0.3.36, same GGUF, same thread count), in one run, ratio printed.
# Extra arguments go to prefsmith's side (`--precisions int8`); PREFSMITH_CPU_KERNEL=avx2 or
# =portable measures the int8 engine's other kernels on the same CPU (the kernel is printed).
# Run it on an otherwise idle machine (llama.cpp's OpenMP threads collapse under contention).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prefsmith/target}"
threads="${THREADS:-2}"
cargo build --locked -p prefsmith-model --example bench_model
model="$(bash scripts/fetch-smollm2)"
venv="bench-data/llamacpp-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  CMAKE_BUILD_PARALLEL_LEVEL="$threads" "$venv/bin/pip" install --quiet llama-cpp-python==0.3.36 numpy
fi
ours="$(RAYON_NUM_THREADS="$threads" "$CARGO_TARGET_DIR/debug/examples/bench_model" "$model" --runs 5 "$@")"
peer="$("$venv/bin/python" benches/llamacpp_peer.py --model "$model" --threads "$threads")"
echo "kernel: ${PREFSMITH_CPU_KERNEL:-fastest this CPU runs}"
echo "$ours"
echo "$peer"
python3 - "$ours" "$peer" <<'PY'
import json, sys
ours, peer = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def find(d, *keys):
    for k in keys:
        if k in d:
            return d[k]
    raise KeyError(keys)
for label, a, b in [
    ("scoring 512, f32", ours.get("scoring_tok_s"), find(peer, "score_tok_s", "scoring_tok_s")),
    ("scoring 512, int8", ours.get("scoring_int8_tok_s"), find(peer, "score_tok_s", "scoring_tok_s")),
    ("generation batch 1, f32", ours.get("gen_batch1_tok_s"), find(peer, "gen_b1_tok_s", "gen_batch1_tok_s")),
    ("generation batch 1, int8", ours.get("gen_batch1_int8_tok_s"), find(peer, "gen_b1_tok_s", "gen_batch1_tok_s")),
    ("generation batch 8, f32", ours.get("gen_batch8_tok_s"), find(peer, "gen_b8_tok_s", "gen_batch8_tok_s")),
    ("generation batch 8, int8", ours.get("gen_batch8_int8_tok_s"), find(peer, "gen_b8_tok_s", "gen_batch8_tok_s")),
]:
    if a is None:
        continue  # a precision this run left out (--precisions)
    print(f"{label:26s} prefsmith {a:8.1f} tok/s   llama.cpp {b:8.1f} tok/s   ratio {a / b:5.2f}x")
PY
