#!/usr/bin/env bash
# DPO training throughput, prefsmith vs Hugging Face TRL, on the same machine, model, data and
# settings: `prefsmith train` (burn's flex CPU backend) on configs/train-smollm2.toml, once per
# precision in PRECISIONS, and TRL's DPOTrainer (PyTorch, f32, CPU, 2 threads) through
# benches/trl_peer.py. Both train SmolLM2-135M-Instruct (the Q4_1 GGUF of scripts/fetch-smollm2,
# dequantised) on the same 64 arena pairs (prepared exactly as benches/train.sh does: `run
# configs/arena-pairs.toml`, the `sql ... LIMIT 64`, `score --role reference`), max length 256,
# max prompt length 96, prompt truncation keeping its end, micro-batch 2 x gradient
# accumulation 2, loss sigmoid, beta 0.1, learning rate 1e-6, cosine with warmup ratio 0.1,
# max_grad_norm 1.0, seed 42, reference log-probs precomputed (prefsmith: by `score`; TRL:
# precompute_ref_log_probs=True, in the trainer's constructor): neither side times them.
#
# TRL sees exactly prefsmith's token sequences (same chat template, same truncation, checked
# row by row against the lengths `score` recorded) and the same four pairs in every step
# (prefsmith's seeded split and shuffle, reproduced); trl_peer.py's docstring says how and what
# TRL settings differ from its defaults (bf16 autocast and gradient checkpointing off).
#
# For each side it prints the median step time over the steps after the first (warm-up), the
# tokens/s at that median (tokens = the non-padding tokens of the chosen and rejected sequences,
# prompt + response, that a step's forward passes process: prefsmith's metrics.jsonl `tokens`,
# TRL's summed attention masks), the peak resident memory of the training process, and both
# sides' tokens per step (they should agree; a difference over 3% is flagged). Last, one line
# per precision: `prefsmith <p> vs TRL f32: <ratio>x tokens/s`.
#
# Run from anywhere: `bash benches/train_vs_trl.sh`. On an otherwise idle machine: both sides
# use 2 threads, and anything else running (a cargo build, a profiler) makes the numbers noise,
# PyTorch's most of all (its OpenMP threads wait for each other at every operation: on a 2-core
# machine with one core taken by another process, the same TRL step measured 17 s, 30 s and
# 86 s in three runs). The TRL side alone takes several minutes on 2 cores (model load,
# reference precompute, the steps), and `score` a few more (it is cached between runs).
#
# Environment:
#   MAX_STEPS      optimizer steps of each run, the first one excluded as warm-up (default 7)
#   PRECISIONS     prefsmith runs, space-separated (default "f32 bf16"): each inserts
#                  `precision = "<p>"` after `[model]` in the copied config; the value `default`
#                  inserts nothing (the binary's default precision; for binaries that predate
#                  the key)
#   PREFSMITH_BIN  a prefsmith binary to use instead of building one (then no cargo build)
#   THREADS        threads of both sides (default 2: RAYON_NUM_THREADS for prefsmith,
#                  torch.set_num_threads and OMP_NUM_THREADS for TRL)
#   CARGO_TARGET_DIR  as in benches/train.sh
#
# The TRL side lives in its own virtual environment, bench-data/trl-venv (git-ignored), made on
# the first run and remade whenever the pinned versions below change (.pins inside it records
# them): torch 2.15.0, transformers 5.25.0, trl 1.16.0, accelerate 1.16.0, datasets 5.2.0,
# gguf 0.19.0 (transformers reads GGUF files with it), pyarrow 26.0.1, tokenizers 0.23.3, every
# other dependency pinned by the constraints below. These are the versions the TRL numbers were
# taken with (TRL 1.16 with PyTorch 2.15, the newest on PyPI when written). PyTorch comes from
# PyPI: its Linux wheel is the CUDA build, and it does not import without its nvidia-* and
# cuda-* wheels (it preloads libcublasLt), so those are installed too although nothing here
# uses a GPU (PyTorch's CPU-only index, download.pytorch.org, is not used: it needs a network
# that reaches more than PyPI). In all about 3.1 GB of wheels, 5.9 GB installed (3.0 GB of it
# nvidia-*, 1.2 GB torch, 1.0 GB triton); about 2 minutes to install with a fast connection.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prefsmith/target}"
steps="${MAX_STEPS:-7}"
precisions="${PRECISIONS:-f32 bf16}"
threads="${THREADS:-2}"
if ! [[ "$steps" =~ ^[0-9]+$ ]] || ((steps < 2)); then
  echo "train_vs_trl: MAX_STEPS=$steps: need at least 2 (the first step is warm-up)" >&2
  exit 1
fi
for p in $precisions; do
  if ! [[ "$p" =~ ^[A-Za-z0-9_-]+$ ]]; then
    echo "train_vs_trl: PRECISIONS: '$p' is not a precision name" >&2
    exit 1
  fi
done
if [ -n "${PREFSMITH_BIN:-}" ]; then
  bin="$PREFSMITH_BIN"
else
  cargo build --locked --workspace
  bin="$CARGO_TARGET_DIR/debug/prefsmith"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------------------- the TRL venv
venv="bench-data/trl-venv"
pins="torch==2.15.0 transformers==5.25.0 trl==1.16.0 accelerate==1.16.0 datasets==5.2.0 gguf==0.19.0 pyarrow==26.0.1 tokenizers==0.23.3"
cat >"$work/constraints.txt" <<'EOF'
annotated-doc==0.0.7
annotated-types==0.8.0
anyio==4.16.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
cuda-bindings==13.5.0
cuda-pathfinder==1.9.1
cuda-toolkit==13.2.2
dill==0.4.1
filelock==4.3.2
fsspec==2026.9.0
h11==0.16.0
hf-xet==1.8.0
httpcore2==2.17.0
httpx2==2.17.0
huggingface_hub==2.5.0
idna==3.21
Jinja2==3.1.6
kernels==0.19.1
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
mpmath==1.3.0
multiprocess==0.70.19
networkx==3.6.1
numpy==2.4.6
nvidia-cublas==13.4.1.3
nvidia-cuda-cccl==13.3.5.0.6
nvidia-cuda-cupti==13.2.86
nvidia-cuda-nvrtc==13.2.86
nvidia-cuda-runtime==13.2.86
nvidia-cudnn-cu13==9.26.0.51
nvidia-cufft==12.2.0.57
nvidia-cufile==1.17.1.22
nvidia-cusolver==12.2.0.11
nvidia-cusparse==12.7.10.12
nvidia-cusparselt-cu13==0.8.1
nvidia-nccl-cu13==2.30.7
nvidia-nvjitlink==13.5.37
nvidia-nvshmem-cu13==3.7.2
nvidia-nvtx==13.2.86
packaging==26.4
pandas==3.1.1
psutil==7.2.2
pydantic==2.14.4
pydantic_core==2.50.5
Pygments==2.21.0
python-dateutil==4.0.0
PyYAML==6.0.4
regex==2026.12.2
requests==2.34.2
rich==15.0.0
safetensors==0.8.0
shellingham==1.5.4
sympy==1.14.0
tomlkit==0.15.3
tqdm==4.70.1
triton==3.9.0
truststore==0.10.5
typer==0.29.3
typing-inspection==0.4.5
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
xxhash==4.1.0
EOF
{ echo "$pins"; cat "$work/constraints.txt"; } >"$work/pins"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$work/pins" "$venv/.pins"; then
  echo "train_vs_trl: installing the TRL peer into $venv (several GB, a few minutes)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # the pins are words
  "$venv/bin/pip" install --quiet --disable-pip-version-check -c "$work/constraints.txt" $pins
  cp "$work/pins" "$venv/.pins" # only once the install is complete
fi

# ------------------------------------------------------------------------------ the pairs
"$bin" run configs/arena-pairs.toml >/dev/null
model="$(bash scripts/fetch-smollm2)"
"$bin" sql --table pairs=out/arena/pairs --output "$work/pairs-64.parquet" \
  "SELECT * FROM pairs ORDER BY prompt_id LIMIT 64" >/dev/null
"$bin" score --input "$work/pairs-64.parquet" --output "$work/pairs-64-ref" --role reference \
  --max-length 256 --max-prompt-length 96 >/dev/null
sed -e "s#\"out/arena/pairs-64-ref\"#\"$work/pairs-64-ref\"#" \
  -e "s#^max-steps = .*#max-steps = $steps#" configs/train-smollm2.toml >"$work/smollm2.toml"

# ------------------------------------------------------------------------------ prefsmith
runs=()
for p in $precisions; do
  cfg="$work/smollm2-$p.toml"
  out="$work/smollm2-$p"
  if [ "$p" = default ]; then
    sed -e "s#\"out/train-smollm2\"#\"$out\"#" "$work/smollm2.toml" >"$cfg"
  else
    sed -e "s#\"out/train-smollm2\"#\"$out\"#" \
      -e "s#^\[model\]\$#[model]\nprecision = \"$p\"#" "$work/smollm2.toml" >"$cfg"
    grep -qx "precision = \"$p\"" "$cfg" || {
      echo "train_vs_trl: could not set precision in $cfg (no [model] line?)" >&2
      exit 1
    }
  fi
  if ! RAYON_NUM_THREADS="$threads" "$bin" train --config "$cfg" >/dev/null; then
    echo "train_vs_trl: prefsmith train failed with precision '$p' (a binary without the" \
      "model.precision key rejects it; PRECISIONS=default runs without the key)" >&2
    exit 1
  fi
  runs+=("$p=$out")
done

# ------------------------------------------------------------------------------------ TRL
OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" TQDM_DISABLE=1 HF_HUB_OFFLINE=1 \
  "$venv/bin/python" benches/trl_peer.py --model "$model" --pairs "$work/pairs-64.parquet" \
  --ref-table "$work/pairs-64-ref" --max-steps "$steps" --threads "$threads" \
  --output "$work/trl.json" >/dev/null

# --------------------------------------------------------------------------------- report
python3 - "$work/trl.json" "${runs[@]}" <<'PY'
import json, statistics, sys

def side(label, step_seconds, tokens, peak):
    steps, toks = step_seconds[1:], tokens[1:]
    median = statistics.median(steps)
    rate = statistics.median(toks) / median
    print(f"{label:18s} {len(steps)} measured steps: median {median:7.2f} s/step | "
          f"{statistics.median(toks):6.0f} tokens/step | {rate:7.1f} tokens/s | "
          f"peak RSS {peak / 2**20:6.0f} MiB")
    return rate

trl = json.load(open(sys.argv[1]))
v = trl["versions"]
print(f"TRL {v['trl']}, transformers {v['transformers']}, PyTorch {v['torch']}, "
      f"{trl['threads']} threads, {trl['dtype']}, optimizer {trl['optim']}; {trl['length_check']}")
rates = {}
for arg in sys.argv[2:]:
    p, out = arg.split("=", 1)
    s = json.load(open(f"{out}/summary.json"))
    metrics = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
    tokens = [m["tokens"] for m in metrics if "tokens" in m]
    t = s["timing"]
    rates[p] = side(f"prefsmith {p}", t["step_seconds"], tokens, t["peak_rss_bytes"])
    if "phase_totals" in t:
        ph = t["phase_totals"]
        spent = sum(t["step_seconds"][1:]) or 1.0
        print(f"{'':18s} where the measured steps' time went: " + ", ".join(
            f"{k} {100 * ph[k] / spent:.0f}%" for k in ("forward", "backward", "optimizer")))
    worst = max(abs(a - b) / b for a, b in zip(tokens, trl["tokens_per_step"]))
    flag = "" if worst <= 0.03 and len(tokens) == len(trl["tokens_per_step"]) else "  <-- MISMATCH"
    print(f"{'':18s} tokens per step: prefsmith {tokens}")
    print(f"{'':18s}                  TRL       {trl['tokens_per_step']}  "
          f"(largest difference {100 * worst:.1f}%){flag}")
trl_rate = side("TRL f32", trl["step_seconds"], trl["tokens_per_step"], trl["peak_rss_bytes"])
print(f"{'':18s} (TRL outside the steps: model load {trl['load_seconds']:.0f} s, reference "
      f"precompute {trl['precompute_seconds']:.0f} s; peak RSS before training "
      f"{trl['peak_rss_before_train_bytes'] / 2**20:.0f} MiB)")
for p, rate in rates.items():
    print(f"prefsmith {p} vs TRL f32: {rate / trl_rate:.2f}x tokens/s")
PY
