#!/usr/bin/env python3
"""llama.cpp peer for prefsmith's scoring / generation benchmark.

What it is for
--------------
Puts llama.cpp (through ``llama-cpp-python``'s low-level ctypes API, CPU
only) on the same workloads as prefsmith's own LLM scorer/generator, so the
two can be compared on the same machine and thread count.  It prints ONE
JSON line on stdout.

Usage
-----
::

    $VENV/bin/python benches/llamacpp_peer.py \\
        [--model PATH.gguf] [--threads 2] [--reps 5] [--gen-tokens 64]

Default ``--model``:
``~/.cache/prefsmith/models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-smollm2)``.
Install the peer with ``pip install llama-cpp-python`` (0.3.36 was used when
this script was written; it builds llama.cpp from source).

What is timed
-------------
All numbers are the median over ``--reps`` (default 5) timed runs after one
untimed warm-up; ``n_threads`` = ``n_threads_batch`` = ``--threads``.

``score_tok_s``
    One ``llama_decode`` of a 512-token sequence (real text tokens: a fixed
    English paragraph tokenized with the model's tokenizer, repeated and cut
    to 512 ids) with logits requested for ALL 512 positions (n_ctx = n_batch
    = n_ubatch = 512), KV cache cleared before each run.  Throughput =
    512 / seconds.  The logits are left in llama.cpp's buffer (no copy, no
    log-softmax).

Run it on an otherwise idle machine: this llama.cpp build uses OpenMP, and
with ``--threads`` equal to the core count while other processes (e.g. a
cargo build) hold the cores, its spin-waiting threads collapse (measured on
2 cores: 2 threads fell to ~1/3-1/10 of their idle throughput, below
1 thread).

``gen_b1_tok_s``
    Greedy generation of exactly ``--gen-tokens`` (default 64) new tokens
    from a short SmolLM2 ChatML prompt (EOS is ignored so the count is
    fixed).  Time includes the prompt prefill (one ``llama_decode``) and the
    per-step argmax (numpy over the float32 logit row).  Throughput = new
    tokens / seconds.  ``gen_b1_decode_tok_s`` is the same run counting only
    the 64 single-token decode steps (prefill excluded).

``gen_b8_tok_s``
    8 different short ChatML prompts decoded in parallel: the 8 prompts are
    prefilled in one ``llama_batch`` with seq ids 0..7, then each step puts
    the 8 next tokens (one per sequence, distinct seq ids) into ONE
    ``llama_batch`` and calls ``llama_decode`` once.  Greedy, exactly
    ``--gen-tokens`` new tokens per sequence.  Throughput = 8 * new tokens /
    seconds (prefill included); ``gen_b8_decode_tok_s`` excludes the
    prefill.  ``batch8_mode`` is ``"parallel_llama_batch"``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import llama_cpp as L

# Where scripts/fetch-smollm2 installs the model.
DEFAULT_MODEL = os.path.join(
    os.environ.get("PREFSMITH_MODELS")
    or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "prefsmith", "models"
    ),
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

SCORE_TEXT = (
    "The history of the printing press begins in the fifteenth century, when "
    "Johannes Gutenberg combined movable metal type, oil-based ink and a "
    "wooden screw press into a practical system for producing books. Before "
    "that, texts were copied by hand, which made them rare and expensive. "
    "Within a few decades, print shops had spread to more than two hundred "
    "cities across Europe, and millions of volumes were in circulation. "
    "Cheaper books helped literacy grow, allowed scientists to share precise "
    "diagrams and tables, and let new ideas travel faster than any authority "
    "could control them. Historians still debate how much of the scientific "
    "revolution, the reformation and the rise of modern newspapers can be "
    "credited to this single invention. "
)

GEN_PROMPTS = [
    "Write a short poem about the sea.",
    "Explain photosynthesis in simple terms.",
    "What are three tips for learning a new language?",
    "Describe a cat to someone who has never seen one.",
    "Why do we have seasons on Earth?",
    "Give me a recipe idea for a quick dinner.",
    "What is the difference between weather and climate?",
    "Tell me a fun fact about octopuses.",
]


# Must stay referenced for the life of the process (llama.cpp keeps the pointer).
_QUIET_LOG = L.llama_log_callback(lambda level, text, user_data: None)


def chatml(user: str) -> str:
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )


def tokenize(vocab, text: str) -> list[int]:
    b = text.encode("utf-8")
    cap = len(b) + 16
    buf = (L.llama_token * cap)()
    n = L.llama_tokenize(vocab, b, len(b), buf, cap, False, True)
    if n < 0:
        raise RuntimeError("tokenize buffer too small")
    return list(buf[:n])


class Batch:
    def __init__(self, capacity: int, n_seq_max: int):
        self.b = L.llama_batch_init(capacity, 0, n_seq_max)
        self.capacity = capacity

    def fill(self, items):
        """items: iterable of (token, pos, seq_id, want_logits)."""
        b = self.b
        n = 0
        for tok, pos, seq, want in items:
            b.token[n] = tok
            b.pos[n] = pos
            b.n_seq_id[n] = 1
            b.seq_id[n][0] = seq
            b.logits[n] = 1 if want else 0
            n += 1
        assert n <= self.capacity
        b.n_tokens = n

    def free(self):
        L.llama_batch_free(self.b)


def make_ctx(model, threads: int, n_ctx: int, n_batch: int, n_seq_max: int):
    p = L.llama_context_default_params()
    p.n_ctx = n_ctx
    p.n_batch = n_batch
    p.n_ubatch = n_batch
    p.n_seq_max = n_seq_max
    p.n_threads = threads
    p.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, p)
    if not ctx:
        raise RuntimeError("llama_init_from_model failed")
    return ctx


def decode(ctx, batch: Batch):
    rc = L.llama_decode(ctx, batch.b)
    if rc != 0:
        raise RuntimeError(f"llama_decode returned {rc}")


def argmax_row(ctx, i: int, n_vocab: int) -> int:
    ptr = L.llama_get_logits_ith(ctx, i)
    row = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
    return int(row.argmax())


def median_time(fn, reps: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gen-tokens", type=int, default=64)
    args = ap.parse_args()

    L.llama_backend_init()
    L.llama_log_set(_QUIET_LOG, ctypes.c_void_p(0))
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = L.llama_model_load_from_file(args.model.encode(), mp)
    if not model:
        raise RuntimeError(f"cannot load {args.model}")
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    G = args.gen_tokens

    # ---------------------------------------------------------------- scoring
    S = 512
    ids = []
    while len(ids) < S:
        ids += tokenize(vocab, SCORE_TEXT)
    ids = ids[:S]
    ctx = make_ctx(model, args.threads, n_ctx=S, n_batch=S, n_seq_max=1)
    mem = L.llama_get_memory(ctx)
    batch = Batch(S, 1)
    batch.fill((t, i, 0, True) for i, t in enumerate(ids))

    def score():
        L.llama_memory_clear(mem, True)
        decode(ctx, batch)
        L.llama_synchronize(ctx)
        # touch the last row so the result is surely materialized
        _ = L.llama_get_logits_ith(ctx, S - 1)[0]

    t_score = median_time(score, args.reps)
    batch.free()
    L.llama_free(ctx)

    # ------------------------------------------------------ generation, batch 1
    p1 = tokenize(vocab, chatml(GEN_PROMPTS[0]))
    ctx = make_ctx(model, args.threads, n_ctx=len(p1) + G + 8, n_batch=512, n_seq_max=1)
    mem = L.llama_get_memory(ctx)
    batch = Batch(512, 1)
    out1: list[int] = []
    dec_times1: list[float] = []

    def gen1():
        L.llama_memory_clear(mem, True)
        batch.fill((t, i, 0, i == len(p1) - 1) for i, t in enumerate(p1))
        decode(ctx, batch)
        tok = argmax_row(ctx, -1, n_vocab)
        toks = [tok]
        t0 = time.perf_counter()
        pos = len(p1)
        for _ in range(G - 1):
            batch.fill([(tok, pos, 0, True)])
            decode(ctx, batch)
            tok = argmax_row(ctx, -1, n_vocab)
            toks.append(tok)
            pos += 1
        dec_times1.append(time.perf_counter() - t0)
        out1[:] = toks

    t_gen1 = median_time(gen1, args.reps)
    t_dec1 = statistics.median(dec_times1[1:])
    batch.free()
    L.llama_free(ctx)

    # ------------------------------------------------------ generation, batch 8
    B = 8
    prompts = [tokenize(vocab, chatml(p)) for p in GEN_PROMPTS[:B]]
    per_seq = max(len(p) for p in prompts) + G + 8
    n_ctx8 = ((per_seq * B + 255) // 256) * 256
    prefill_n = sum(len(p) for p in prompts)
    ctx = make_ctx(model, args.threads, n_ctx=n_ctx8, n_batch=max(512, prefill_n), n_seq_max=B)
    mem = L.llama_get_memory(ctx)
    batch = Batch(max(512, prefill_n), B)
    out8: list[list[int]] = []
    dec_times8: list[float] = []

    def gen8():
        L.llama_memory_clear(mem, True)
        items = []
        last_idx = []
        for s, p in enumerate(prompts):
            for i, t in enumerate(p):
                items.append((t, i, s, i == len(p) - 1))
            last_idx.append(len(items) - 1)
        batch.fill(items)
        decode(ctx, batch)
        cur = [argmax_row(ctx, last_idx[s], n_vocab) for s in range(B)]
        seqs = [[c] for c in cur]
        pos = [len(p) for p in prompts]
        t0 = time.perf_counter()
        for _ in range(G - 1):
            batch.fill((cur[s], pos[s], s, True) for s in range(B))
            decode(ctx, batch)
            cur = [argmax_row(ctx, s, n_vocab) for s in range(B)]
            for s in range(B):
                seqs[s].append(cur[s])
                pos[s] += 1
        dec_times8.append(time.perf_counter() - t0)
        out8[:] = seqs

    t_gen8 = median_time(gen8, args.reps)
    t_dec8 = statistics.median(dec_times8[1:])
    batch.free()
    L.llama_free(ctx)

    # sanity: sequence 0 of the parallel run should (almost always) match the
    # batch-1 greedy output for the same prompt; report it rather than assert.
    match_prefix = 0
    for a, b in zip(out1, out8[0]):
        if a != b:
            break
        match_prefix += 1

    L.llama_model_free(model)

    res = {
        "peer": "llama.cpp",
        "llama_cpp_python": L.__version__,
        "model": os.path.basename(args.model),
        "threads": args.threads,
        "reps": args.reps,
        "score_seq_len": S,
        "score_s": round(t_score, 6),
        "score_tok_s": round(S / t_score, 2),
        "gen_new_tokens": G,
        "gen_b1_prompt_tokens": len(p1),
        "gen_b1_s": round(t_gen1, 6),
        "gen_b1_tok_s": round(G / t_gen1, 2),
        "gen_b1_decode_tok_s": round((G - 1) / t_dec1, 2),
        "batch8_mode": "parallel_llama_batch",
        "gen_b8_prompt_tokens": [len(p) for p in prompts],
        "gen_b8_s": round(t_gen8, 6),
        "gen_b8_tok_s": round(B * G / t_gen8, 2),
        "gen_b8_decode_tok_s": round(B * (G - 1) / t_dec8, 2),
        "b8_seq0_matches_b1_prefix": match_prefix,
        "cpu": platform.processor() or platform.machine(),
        "system_info": L.llama_print_system_info().decode(errors="replace").strip(),
    }
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
