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
    "response_text", "prompt_ids", "response_ids", "logp", "token_logps",
    "logp_f32", "token_logps_f32"}]}`` for 4 prompt/response pairs.
    ``prompt_text`` is the SmolLM2 ChatML prefix (system + user turn +
    ``<|im_start|>assistant\\n``) and ``response_text`` is the answer
    followed by ``<|im_end|>``.
    ``prompt_ids`` and ``response_ids`` are tokenized SEPARATELY (add_bos
    False, special True) and concatenated; the concatenation is evaluated
    once with ``logits_all=True`` and
    ``token_logps[k] = log p(response_ids[k] | prompt_ids + response_ids[:k])``
    from a float64 log-softmax (numpy) of llama.cpp's float32 logit row at
    position ``len(prompt_ids) + k - 1``; ``logp = sum(token_logps)`` (summed
    in float64, in order).  No full logit rows are stored.  Each case carries
    two scorings of the same ids:

    ``logp`` / ``token_logps`` -- the Q4_1 file as shipped.  llama.cpp's CPU
        kernels do not multiply Q4_1 weights by f32 activations: they first
        quantize the activation rows to Q8_1 (Q8_0 for the Q8_0 token
        embedding / tied output matrix) and run an integer dot product; the
        KV cache is f16.  So these numbers differ from an implementation
        that computes in f32 (or f64) with the dequantized weights by
        ~0.2-0.6 nats per sequence here (|logp - logp_f32| = 0.185, 0.060,
        0.197, 0.598 for the 8/10/11/31-token responses; single tokens
        differ by up to 0.29).

    ``logp_f32`` / ``token_logps_f32`` -- llama.cpp's own graph on exactly the
        dequantized weights, with activations in f32: the script writes a
        temporary GGUF in which every tensor is ``gguf.quants.dequantize``-d
        to F32 (same names, order and shapes; all KV pairs -- hyper-
        parameters, tokenizer arrays, chat template -- copied unchanged
        except ``general.file_type`` := ALL_F32, which llama.cpp only
        displays; ~540 MB, deleted afterwards), re-reads it to check the
        metadata and that every tensor equals the dequantized original,
        checks that llama.cpp tokenizes all texts above identically with it,
        and scores with an f32 KV cache (``type_k``/``type_v`` = F32).  This
        is the number an f32 implementation of the dequantized model should
        reproduce: it agrees with the float64 numpy reference
        (``reference_llama.py seq_logp`` on the Q4_1 file) to ~1e-5 nats per
        sequence.

Tolerances: token ids must match exactly.  ``logp`` is NOT an exact
reference: llama.cpp quantizes activations (see above) and its quantized
kernels differ across builds/ISAs.  Measured with 0.3.36: the values are
bit-identical for n_threads 1 or 2 and for n_batch/n_ubatch 8 or 512 (the
multi-token matmul path), but evaluating one token per ``llama_decode``
(n_ubatch=1, the matrix-vector path) shifts individual token log-probs by up
to 0.22 nats and the per-case sums by up to 0.5.  So a consumer comparing
with ``logp`` should use a tolerance of that order (e.g. ~0.3 nats per token,
~0.1 nats * n_tokens on ``logp``).  ``logp_f32`` is much tighter: with
0.3.36 it is bit-identical for n_threads 1/2 and n_ubatch 8/512, moves by
<2e-5 nats per case with n_ubatch=1, and by up to ~0.012 nats per case
(0.01 per token) if llama.cpp's default f16 KV cache is used instead of f32.
An f32 implementation should match it to ~1e-3 nats per token and ~1e-2 on
the sum.

How to rerun
------------
::

    python3 -m venv $VENV
    CMAKE_BUILD_PARALLEL_LEVEL=2 \\
        $VENV/bin/pip install llama-cpp-python==0.3.36
    $VENV/bin/pip install gguf==0.17.1
    $VENV/bin/python \\
        tests/python/make_llamacpp_fixtures.py \\
        [--model PATH/SmolLM2-135M-Instruct.Q4_1.gguf] [--out tests/fixtures/llamacpp]

The default ``--model`` is
``~/.cache/prefsmith/models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-smollm2)``.

Provenance
----------
The committed files were produced by llama-cpp-python 0.3.36 (built from the
sdist with its vendored llama.cpp, ggml 0.25.3 / libllama 0.5.0, CPU only,
GGML_NATIVE on an AVX-512 x86-64 Linux host, n_threads=2) and gguf 0.17.1
(the F32 copy; it needs ~540 MB of temp disk, under $TMPDIR); the
llama-cpp-python version actually used is also recorded inside each JSON
file.  Rerunning with the same versions gave byte-identical files.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile

import numpy as np
import gguf
import llama_cpp
from llama_cpp import Llama

# Where scripts/fetch-smollm2 installs the model.
DEFAULT_MODEL = os.path.join(
    os.environ.get("PREFSMITH_MODELS")
    or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "prefsmith", "models"
    ),
    "SmolLM2-135M-Instruct.Q4_1.gguf",
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


def load(path: str, f32_kv: bool = False) -> Llama:
    kw = {}
    if f32_kv:  # keep K/V in f32 too (llama.cpp's default KV cache is f16)
        kw = dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    return Llama(
        model_path=path,
        logits_all=True,
        n_ctx=512,
        n_threads=2,
        n_batch=512,
        seed=0,
        verbose=False,
        **kw,
    )


def write_f32_gguf(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` with every tensor dequantized to F32.

    All KV pairs are copied in order with their value types (tokenizer
    arrays, chat template, hyper-parameters); the only change is
    ``general.file_type`` := ALL_F32 (0), which llama.cpp uses for display
    only.  Tensors keep their names, order and shapes.
    """
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, arch=reader.get_field(gguf.Keys.General.ARCHITECTURE).contents(),
                             endianess=reader.endianess)
    align = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if align is not None:
        writer.data_alignment = align.contents()
    for field in reader.fields.values():
        # GGUF.* are virtual header fields; the writer adds the architecture itself.
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        val = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            val = int(gguf.LlamaFileType.ALL_F32)
        writer.add_key_value(field.name, val, vtype, sub_type=sub)
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        # numpy shape is ggml's ne reversed; the writer reverses it back.
        assert tuple(reversed(w.shape)) == tuple(int(x) for x in t.shape), (t.name, w.shape, t.shape)
        writer.add_tensor(t.name, np.ascontiguousarray(w), raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def check_f32_gguf(src: str, dst: str) -> None:
    """Re-read both files: same KV pairs (bar file_type), same tensors, F32 data == dequant(src)."""
    a, b = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    ka = [k for k in a.fields if not k.startswith("GGUF.")]
    kb = [k for k in b.fields if not k.startswith("GGUF.")]
    assert ka == kb, (ka, kb)
    for k in ka:
        fa, fb = a.fields[k], b.fields[k]
        assert fa.types == fb.types, k
        if k != gguf.Keys.General.FILE_TYPE:
            assert fa.contents() == fb.contents(), k
    assert b.fields[gguf.Keys.General.FILE_TYPE].contents() == int(gguf.LlamaFileType.ALL_F32)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors):
        assert tb.tensor_type == gguf.GGMLQuantizationType.F32, tb.name
        assert list(ta.shape) == list(tb.shape), ta.name
        assert np.array_equal(gguf.quants.dequantize(ta.data, ta.tensor_type), tb.data), ta.name


def score(llm: Llama, p_ids: list[int], r_ids: list[int]) -> list[float]:
    """token_logps[k] = log p(r_ids[k] | p_ids + r_ids[:k]), one batched eval."""
    ids = p_ids + r_ids
    assert len(ids) <= 512
    llm.reset()
    llm.eval(ids)
    logits = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    rows = logits[len(p_ids) - 1 : len(ids) - 1]
    lsm = log_softmax64(rows)
    return [float(lsm[k, r_ids[k]]) for k in range(len(r_ids))]


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

    llm = load(args.model)
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

    # ---- logprobs.json: Q4_1 model ------------------------------------------
    lp_cases = []
    for user, answer in PAIRS:
        prompt_text = chatml_prompt(user)
        response_text = answer + "<|im_end|>"
        p_ids = tokenize(llm, prompt_text)
        r_ids = tokenize(llm, response_text)
        tok_lp = score(llm, p_ids, r_ids)
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
    n_vocab = llm.n_vocab()
    del llm
    gc.collect()

    # ---- logprobs.json: the same model dequantized to F32 ------------------
    with tempfile.TemporaryDirectory(prefix="smollm2-f32-") as tmp:
        f32_path = os.path.join(tmp, "SmolLM2-135M-Instruct.F32.gguf")
        write_f32_gguf(args.model, f32_path)
        check_f32_gguf(args.model, f32_path)
        print(f"wrote {f32_path} ({os.path.getsize(f32_path)} bytes)", file=sys.stderr)
        llm32 = load(f32_path, f32_kv=True)
        # The F32 copy must tokenize exactly like the Q4_1 file.
        assert llm32.n_vocab() == n_vocab
        for c in cases:
            assert tokenize(llm32, c["text"]) == c["ids"], c["text"]
        for c in lp_cases:
            assert tokenize(llm32, c["prompt_text"]) == c["prompt_ids"]
            assert tokenize(llm32, c["response_text"]) == c["response_ids"]
        for c in lp_cases:
            tok_lp = score(llm32, c["prompt_ids"], c["response_ids"])
            c["logp_f32"] = float(sum(tok_lp))
            c["token_logps_f32"] = tok_lp
        del llm32
        gc.collect()

    lp_doc = {"llama_cpp_python": version, "model": MODEL_NAME, "cases": lp_cases}
    write_json(os.path.join(args.out, "logprobs.json"), lp_doc)

    for c in lp_cases:
        print(
            f"{len(c['prompt_ids'])}+{len(c['response_ids'])} tokens  logp={c['logp']:.6f}  "
            f"logp_f32={c['logp_f32']:.6f}  {c['response_text']!r}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
