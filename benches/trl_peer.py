#!/usr/bin/env python3
"""TRL peer for prefsmith's DPO training benchmark (benches/train_vs_trl.sh).

What it is for
--------------
Runs Hugging Face TRL's ``DPOTrainer`` (PyTorch, f32, CPU, ``--threads``
intra-op threads) on the same model, pairs and settings as
``prefsmith train --config configs/train-smollm2.toml`` and writes ONE JSON
file with the time of every optimizer step, the tokens of every step and the
peak resident memory of this process, so that the shell script can compare
the two trainers step for step.

Usage
-----
::

    $VENV/bin/python benches/trl_peer.py --model PATH.gguf \\
        --pairs PAIRS-64.parquet --max-steps 7 --output trl.json \\
        [--ref-table PAIRS-64-REF] [--threads 2]

``--pairs`` is the 64-pair table of the ``prefsmith sql ... LIMIT 64`` step
(columns prompt_id, prompt, chosen, rejected: plain strings, one user turn).
``--ref-table`` is what ``prefsmith score --role reference`` made of it; when
given, the token lengths prefsmith recorded there (ref_prompt_tokens,
ref_tokens_chosen, ref_tokens_rejected) are checked row by row against the
sequences built here, and the run fails on any difference.

The setup mirrored (configs/train-smollm2.toml)
-----------------------------------------------
SmolLM2-135M-Instruct: the Q4_1 GGUF of scripts/fetch-smollm2, dequantised
to a dense f32 model by transformers (``AutoModelForCausalLM.from_pretrained(
dir, gguf_file=name, dtype=torch.float32, quantization_config=
GgufConfig(dequantize=True))``, which needs the ``gguf`` package; without
``dequantize=True`` transformers 5 may keep the weights packed in GGUF
blocks; the "quantizer" that loaded the file is then detached, as the
Trainer refuses a model marked quantized); max length 256, max prompt length 96,
prompt truncation keeping its end, responses cut keeping their start;
micro-batch 2 x gradient accumulation 2; loss sigmoid, beta 0.1; AdamW
(PyTorch defaults: betas 0.9/0.999, eps 1e-8, weight decay 0), learning rate
1e-6, cosine schedule with linear warmup over ceil(0.1 * steps) steps,
max_grad_norm 1.0; seed 42; no evaluation, no checkpoints, no external
logging (``report_to="none"``), dataloader workers 0.

Explicitly set because TRL's defaults differ: ``bf16=False`` (TRL turns bf16
autocast on by default; this is an f32 run, as prefsmith's ``f32`` is) and
``gradient_checkpointing=False`` (TRL turns it on by default; prefsmith keeps
the activations; ``--gradient-checkpointing`` measures TRL's default).

Tokens and chat formatting: identical sequences on both sides
-------------------------------------------------------------
prefsmith (trainer/src/train/data.rs, trainer/model/src/tokenizer.rs) renders
the prompt with the model's ChatML template, including the template's default
system message (``<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n
{prompt}<|im_end|>\\n<|im_start|>assistant\\n``), and each response as
``{response}<|im_end|>`` (no trailing newline), tokenizes the two separately
with nothing added (no BOS), cuts the prompt to its last 96 tokens, then each
response to the 256 - prompt tokens left.

TRL 1.16 cannot express that: it has no ``max_prompt_length`` any more, its
``keep_end`` (deprecated) cuts the start of prompt+response as a whole, and
its conversational path appends the template's ``\\n`` after ``<|im_end|>``.
So this peer does the tokenization and truncation itself, exactly as above,
and hands TRL the token ids (``prompt_ids`` / ``chosen_ids`` /
``rejected_ids``, the columns TRL's own preprocessing produces) through the
one hook TRL has for it: a subclass whose ``_prepare_dataset`` returns the
dataset as given. Everything after that (collator, padding, forward, loss,
backward, clipping, optimizer, schedule) is TRL's and transformers' own code.
The prompt text is rendered with the tokenizer's own ``apply_chat_template``
(the GGUF's template: the same text as prefsmith's rendering, system message
included; ``--ref-table`` would catch a difference).

One tokenizer fix: transformers' GGUF tokenizer conversion drops the
single-digit pre-tokenizer that SmolLM2's tokenizer (and llama.cpp's
``smollm`` pre-tokenizer, which prefsmith follows) has; without it
``"\\n\\n1"`` becomes three tokens (``\\n``, ``\\n``, ``1``) instead of
two (``\\n\\n``, ``1``), 3 of the 64 rows differ by 1-4 tokens. This peer
restores it
(``Digits(individual_digits=True)`` before ``ByteLevel``), as in SmolLM2's
original ``tokenizer.json``; with it, all 64 rows give exactly prefsmith's
lengths (checked with ``--ref-table``).

Pair order: identical pairs in every step
-----------------------------------------
prefsmith sorts the table by prompt_id, holds out round(0.1 * 64) = 6 pairs
(the smallest sha256 of ``"42:{prompt_id}:{row}"``) and shuffles the other 58
with its xoshiro256** generator seeded 42 (Fisher-Yates, ``below(i + 1)``).
This peer reproduces that order in Python (same algorithm, same bits) and
gives TRL the first ``max_steps * 4`` pairs of it with
``train_sampling_strategy="sequential"``, so step k of both trainers sees the
same four pairs (the shell script checks the per-step token counts agree).
Only those pairs are kept, so TRL's reference precompute covers just them.

What is timed and counted
-------------------------
* ``step_seconds``: ``time.perf_counter()`` from ``on_step_begin`` to
  ``on_step_end`` of a ``TrainerCallback``: the 2 micro-batches' forward and
  backward, gradient clipping, the AdamW step, the scheduler step and
  ``zero_grad``. transformers collates a step's micro-batches just before
  ``on_step_begin``; that (microseconds here) is outside. Logging runs after
  ``on_step_end``, also outside.
* The reference log-probs (``precompute_ref_log_probs=True``) are computed in
  ``DPOTrainer.__init__``, before training starts, so no step includes them;
  their time is reported separately (``precompute_seconds``).
* ``tokens_per_step``: per optimizer step, the sum over its micro-batches of
  ``attention_mask.sum()`` of the batch ``training_step`` receives: the
  non-padding tokens of the chosen and rejected sequences (prompt + response,
  after truncation) that the forward pass processes -- the same quantity as
  the ``tokens`` of prefsmith's metrics.jsonl (trainer/src/train/step.rs:
  ``ScoreItem::len`` = prompt + response, summed over chosen and rejected).
* ``peak_rss_bytes``: ``getrusage(RUSAGE_SELF).ru_maxrss * 1024`` at the end
  (whole process: model load and dequantisation, reference precompute,
  training); ``peak_rss_before_train_bytes`` is the same at ``on_train_begin``.
  prefsmith reports VmHWM of its process, the same high-water mark.

What still differs between the two runs
---------------------------------------
* The reference log-probs: prefsmith reads those ``prefsmith score``
  computed (its own f32 forward); TRL computes its own (PyTorch forward of the
  same weights). Same values up to float rounding; no step time includes them.
* TRL's forward (its patched, fused LM head) also computes per-token entropy,
  mean logits and top-1 accuracy for its metrics; that is TRL's normal cost
  and is inside its steps. prefsmith's steps include writing their
  metrics.jsonl line.
* prefsmith evaluates the 6 held-out pairs after the last step and writes
  checkpoints (save-steps = 4) and the final model; all after the timed
  steps. TRL does none of that here.
* Optimizer implementation: TRL uses transformers' default, ``adamw_torch_fused``
  (same maths as prefsmith's AdamW).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time

T_START = time.perf_counter()

MASK64 = (1 << 64) - 1


class Xoshiro256ss:
    """prefsmith's Rng (trainer/model/src/rng.rs): xoshiro256**, seeded through splitmix64."""

    def __init__(self, seed: int):
        x = seed & MASK64
        state = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
            state.append(z ^ (z >> 31))
        self.s = state

    @staticmethod
    def _rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & MASK64

    def next_u64(self) -> int:
        s = self.s
        result = (self._rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def below(self, n: int) -> int:
        zone = MASK64 - (MASK64 % n)
        while True:
            x = self.next_u64()
            if x < zone:
                return x % n


def prefsmith_order(prompt_ids: list[str], seed: int, eval_fraction: float) -> list[int]:
    """Row indices (into the prompt_id-sorted table) of the training pairs in the order
    prefsmith's first epoch visits them (trainer/src/train/data.rs `split`,
    trainer/src/train/phases.rs `start_epoch_if_needed`)."""
    n = len(prompt_ids)
    n_eval = min(int(eval_fraction * n + 0.5), n - 1)  # Rust's f64::round (half away from 0)
    held_out = set()
    if n_eval > 0:
        keyed = sorted(
            (hashlib.sha256(f"{seed}:{pid}:{row}".encode()).digest(), row)
            for row, pid in enumerate(prompt_ids)
        )
        held_out = {row for _, row in keyed[:n_eval]}
    train = [row for row in range(n) if row not in held_out]
    rng = Xoshiro256ss(seed)
    order = list(range(len(train)))
    for i in range(len(order) - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return [train[i] for i in order]


def read_parquet(path: str):
    """A parquet file, or a prefsmith output directory of part-*.parquet files, as one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if os.path.isdir(path):
        parts = sorted(glob.glob(os.path.join(path, "*.parquet")))
        if not parts:
            sys.exit(f"{path}: no parquet files")
        return pa.concat_tables([pq.read_table(p) for p in parts])
    return pq.read_table(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the GGUF file (scripts/fetch-smollm2)")
    ap.add_argument("--pairs", required=True, help="the 64-pair parquet of the `sql` step")
    ap.add_argument("--max-steps", type=int, default=7)
    ap.add_argument("--output", required=True, help="where the JSON result goes")
    ap.add_argument("--ref-table", help="`prefsmith score --role reference` output, for a length check")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-prompt-length", type=int, default=96)
    ap.add_argument("--micro-batch-size", type=int, default=2)
    ap.add_argument("--gradient-accumulation-steps", type=int, default=2)
    ap.add_argument("--learning-rate", type=float, default=1e-6)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--eval-fraction", type=float, default=0.1)
    ap.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="TRL's default; off here because prefsmith keeps activations",
    )
    args = ap.parse_args()

    # Nothing is fetched from a hub: the model is the local GGUF, and TRL/transformers have
    # nothing else to download for this run.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars (GGUF unpacking, precompute)

    import torch

    torch.set_num_threads(args.threads)

    import datasets
    import transformers
    import trl
    from tokenizers import pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()

    # ------------------------------------------------------------------ model
    model_dir, gguf_name = os.path.split(os.path.abspath(args.model))
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_name)
    # Restore SmolLM2's single-digit split, which the GGUF conversion loses (see above).
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    # transformers 5 keeps GGUF weights packed (GgufLinear) when it has a matmul kernel; ask
    # for the plain dense f32 model instead, then detach the GGUF "quantizer" that loaded it,
    # with transformers' own helper: the weights are ordinary f32 tensors by then, and the
    # Trainer refuses to fine-tune a model still marked quantized.
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        gguf_file=gguf_name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    packed = [n for n, m in model.named_modules() if "gguf" in type(m).__name__.lower()]
    not_f32 = [n for n, p in model.named_parameters() if p.dtype != torch.float32]
    if packed or not_f32 or getattr(model, "is_quantized", False):
        sys.exit(f"trl_peer: the model is not plain f32: packed {packed[:3]}, other dtypes {not_f32[:3]}")
    load_seconds = time.perf_counter() - t0
    rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    end_of_turn = "<|im_end|>"
    if end_of_turn not in tok.get_vocab():
        sys.exit(f"{args.model}: not a ChatML model ({end_of_turn} is not a token)")

    # ------------------------------------------------------------------- data
    table = read_parquet(args.pairs)
    for col in ("prompt_id", "prompt", "chosen", "rejected"):
        if col not in table.column_names:
            sys.exit(f"{args.pairs}: no '{col}' column")
    rows = table.select(["prompt_id", "prompt", "chosen", "rejected"]).to_pylist()
    for r in rows:
        if not all(isinstance(r[k], str) for k in ("prompt", "chosen", "rejected")):
            sys.exit(f"{args.pairs}: prompt/chosen/rejected must be plain strings")
    rows.sort(key=lambda r: r["prompt_id"])  # stable, like prefsmith's (prompt_id, position) sort

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    seqs = []
    for r in rows:
        prompt_text = tok.apply_chat_template(
            [{"role": "user", "content": r["prompt"]}], tokenize=False, add_generation_prompt=True
        )
        prompt = encode(prompt_text)
        chosen = encode(r["chosen"] + end_of_turn)
        rejected = encode(r["rejected"] + end_of_turn)
        prompt = prompt[-args.max_prompt_length :]  # keep-end
        if len(prompt) >= args.max_length:
            sys.exit(f"prompt_id {r['prompt_id']}: the prompt alone fills max-length")
        room = args.max_length - len(prompt)
        seqs.append(
            {
                "prompt_id": r["prompt_id"],
                "prompt_ids": prompt,
                "chosen_ids": chosen[:room],
                "rejected_ids": rejected[:room],
            }
        )

    length_check = None
    if args.ref_table:
        ref = {r["prompt_id"]: r for r in read_parquet(args.ref_table).to_pylist()}
        bad = []
        for s in seqs:
            want = ref.get(s["prompt_id"])
            got = (len(s["prompt_ids"]), len(s["chosen_ids"]), len(s["rejected_ids"]))
            if want is None:
                bad.append((s["prompt_id"], got, None))
                continue
            exp = (want["ref_prompt_tokens"], want["ref_tokens_chosen"], want["ref_tokens_rejected"])
            if got != exp:
                bad.append((s["prompt_id"], got, exp))
        if bad:
            for pid, got, exp in bad[:10]:
                print(f"trl_peer: {pid}: (prompt, chosen, rejected) tokens {got} here, {exp} in prefsmith's table", file=sys.stderr)
            sys.exit(f"trl_peer: {len(bad)} of {len(seqs)} rows tokenize differently from prefsmith")
        length_check = f"all {len(seqs)} rows match prefsmith's token lengths"

    order = prefsmith_order([s["prompt_id"] for s in seqs], args.seed, args.eval_fraction)
    step_pairs = args.micro_batch_size * args.gradient_accumulation_steps
    if args.max_steps * step_pairs > len(order):
        sys.exit(f"--max-steps {args.max_steps}: more than one epoch of {len(order)} pairs")
    visited = [seqs[i] for i in order[: args.max_steps * step_pairs]]
    expected_tokens = [
        sum(
            2 * len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"])
            for p in visited[k * step_pairs : (k + 1) * step_pairs]
        )
        for k in range(args.max_steps)
    ]
    train_dataset = datasets.Dataset.from_list(
        [{k: p[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for p in visited]
    )

    # ---------------------------------------------------------------- trainer
    class PeerTrainer(DPOTrainer):
        """DPOTrainer fed with prefsmith's token sequences, counting the tokens it trains on."""

        micro_tokens = 0

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # tokenized and truncated above, as prefsmith does

        def training_step(self, model, inputs, *rest, **kwargs):
            PeerTrainer.micro_tokens += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *rest, **kwargs)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.step_seconds: list[float] = []
            self.tokens: list[int] = []
            self.peak_before_train = None
            self._t = None

        def on_train_begin(self, args, state, control, **kw):
            self.peak_before_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        def on_step_begin(self, args, state, control, **kw):
            PeerTrainer.micro_tokens = 0
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.step_seconds.append(time.perf_counter() - self._t)
            self.tokens.append(PeerTrainer.micro_tokens)
            print(
                f"trl_peer: step {state.global_step}: {self.step_seconds[-1]:.2f} s, "
                f"{self.tokens[-1]} tokens",
                file=sys.stderr,
                flush=True,
            )

    out_dir = tempfile.mkdtemp(prefix="trl-peer-")
    config = DPOConfig(
        output_dir=out_dir,
        use_cpu=True,
        bf16=False,
        fp16=False,
        activation_checkpointing=args.gradient_checkpointing,  # = gradient_checkpointing
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_steps=args.max_steps,
        num_train_epochs=1,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,  # a ratio (transformers 5): ceil(0.1 * max_steps) steps, as prefsmith
        max_grad_norm=1.0,
        weight_decay=0.0,
        loss_type=["sigmoid"],
        beta=args.beta,
        max_length=args.max_length,
        truncation_mode="keep_start",  # a no-op: every sequence already fits max_length
        precompute_ref_log_probs=True,
        train_sampling_strategy="sequential",
        seed=args.seed,
        data_seed=args.seed,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_strategy="steps",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        remove_unused_columns=True,
    )
    timer = StepTimer()
    try:
        t0 = time.perf_counter()
        trainer = PeerTrainer(
            model=model,
            args=config,
            train_dataset=train_dataset,
            processing_class=tok,
            callbacks=[timer],
        )
        precompute_seconds = time.perf_counter() - t0  # mostly the reference log-probs
        if trainer.ref_model is not None:
            sys.exit("trl_peer: TRL kept a reference model; precompute_ref_log_probs did not take")
        t0 = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)  # nothing is saved there (save_strategy="no")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    logs = [h for h in trainer.state.log_history if "loss" in h]
    measured = timer.step_seconds[1:]
    median = statistics.median(measured) if measured else None
    res = {
        "peer": "trl",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "datasets": datasets.__version__,
            "accelerate": __import__("accelerate").__version__,
            "gguf": __import__("importlib.metadata").metadata.version("gguf"),
        },
        "model": gguf_name,
        "threads": torch.get_num_threads(),
        "dtype": str(next(model.parameters()).dtype),
        "optim": str(config.optim),
        "gradient_checkpointing": bool(config.activation_checkpointing),
        "attn_implementation": model.config._attn_implementation,
        "train_pairs_visited": len(visited),
        "order_rows": order[: len(visited)],
        "length_check": length_check,
        "max_steps": args.max_steps,
        "step_seconds": timer.step_seconds,
        "tokens_per_step": timer.tokens,
        "expected_tokens_per_step": expected_tokens,
        "median_step_seconds": median,
        "tokens_per_second": (statistics.median(timer.tokens[1:]) / median) if median else None,
        "load_seconds": load_seconds,
        "precompute_seconds": precompute_seconds,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - T_START,
        "rss_after_load_bytes": rss_after_load,
        "peak_rss_before_train_bytes": timer.peak_before_train,
        "peak_rss_bytes": peak,
        "metrics": [
            {k: h[k] for k in ("step", "loss", "grad_norm", "learning_rate", "rewards/accuracies") if k in h}
            for h in logs
        ],
    }
    if timer.tokens != expected_tokens:
        print(
            f"trl_peer: warning: TRL trained on {timer.tokens} tokens per step, "
            f"the sequences built here have {expected_tokens}",
            file=sys.stderr,
        )
    with open(args.output, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
