#!/usr/bin/env python3
"""Independent float64 numpy reference for a llama-family causal LM, for the Rust test suite.

The Rust inference code is checked against this script.  It is written from the math (RMSNorm,
rotary embeddings, grouped-query causal attention, SwiGLU MLP) and shares no code with the Rust
side or with llama.cpp / transformers.  Every activation is float64; weights are upcast to
float64 once per process after loading.

Two checkpoint formats are read (PATH is chosen by --model):

* a GGUF file (arch "llama"), read with gguf.GGUFReader; quantized tensors are expanded with
  gguf.quants.dequantize.  All hyper-parameters come from the GGUF metadata
  (llama.block_count, embedding_length, feed_forward_length, attention.head_count,
  attention.head_count_kv, attention.key_length, attention.layer_norm_rms_epsilon,
  rope.freq_base, rope.dimension_count).  With no output.weight the embeddings are tied.
  llama.cpp's converter permutes the attn_q / attn_k rows so that RoPE rotates the adjacent
  pairs (2i, 2i+1) of every head; this script applies RoPE in exactly that "interleaved" way
  to the weights as stored, which is what llama.cpp computes.
* a Hugging Face directory (config.json + model.safetensors, or a sharded
  model.safetensors.index.json), safetensors parsed by hand (F32 / F16 / BF16 / F64).  HF llama
  rotates the pairs (i, i + d/2) of every head ("rotate_half").  Biases on q/k/v (and o / MLP)
  are used when config.attention_bias (mlp_bias) is true or the tensors exist.  A
  LlamaForSequenceClassification checkpoint has score.weight [num_labels, hidden] (no bias).

Math, for token ids x_0..x_{T-1} at positions p = 0..T-1:

    h = E[x]
    per block:  a = RMSNorm(h; w_attn)          RMSNorm(v; w) = v / sqrt(mean(v^2) + eps) * w
                q = a Wq^T (+bq), k = a Wk^T (+bk), v = a Wv^T (+bv), split into heads of dim d
                q, k <- RoPE(q, k), angle_{p,i} = p * base^(-2i / n_rot), i < n_rot / 2
                head j uses kv head j // (n_head / n_kv)
                o = softmax(q k^T / sqrt(d) + causal mask) v, concatenated, times Wo^T
                h = h + o
                m = RMSNorm(h; w_ffn);  h = h + Wdown (silu(Wgate m) * (Wup m))
    y = RMSNorm(h; w_out);  logits = y Wlm^T   (Wlm = E when tied)

CLI:  python reference_llama.py MODE --model PATH --input IN.json --output OUT.json

    logits      {"sequences": [[ids]...]} -> {"logits": [[vocab floats] at the last position]}
    greedy      {"sequences": [[ids]...], "max_new_tokens": N, optional "stop_ids": [...]}
                -> {"continuations": [[ids]...]}  argmax (ties -> lowest id); a stop id is
                emitted and then generation stops.  Uses a KV cache.
    seq_logp    {"pairs": [{"prompt_ids": [...], "response_ids": [...]}...]}
                -> {"logps": [sum_k log p(r_k | prompt + r_<k)], "token_counts": [len(r)]}
    judge       {"sequences": [[ids]...], optional "digit_ids": [9 ids for "1".."9"]}
                -> {"ratings": [sum_d d p(d) / sum_d p(d)], "digit_ids": [...]}; p = softmax
                of the last-position logits; digit ids come from the input if given, else
                from the vocabulary (GGUF tokenizer.ggml.tokens, HF tokenizer.json model.vocab)
    classifier  {"sequences": [[ids]...], "pad_id": int} (HF dir with score.weight)
                -> {"rewards": [[num_labels floats]...]}: final-norm hidden state of the last
                token times score.weight^T (sequences are unpadded; pad_id is not used)
    make-tiny   --output DIR [--seed N] [--classifier] [--tied] [--bias]: writes a tiny random
                llama in HF layout (vocab 96, hidden 32, ffn 64, 2 layers, 4 heads, 2 kv heads)
    selfcheck   [--model PATH.gguf]: tiny HF model vs the same weights permuted to the GGUF
                (interleaved) convention, KV-cache vs full pass; with a GGUF model also the
                GGUF weights un-permuted into HF convention.  Prints a line, exits 0 on success.

JSON floats are written with repr (full float64 precision).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

# ---------------------------------------------------------------------------------------------
# model container
# ---------------------------------------------------------------------------------------------


class Model:
    """Hyper-parameters and float64 weights in [out_features, in_features] layout."""

    def __init__(self, cfg, embed, layers, norm, lm_head, score, rope_style, vocab):
        self.cfg = cfg  # dict: n_layer, hidden, n_head, n_kv, head_dim, n_rot, ffn, eps, base
        self.embed = embed  # [vocab, hidden]
        self.layers = layers  # list of dicts, see _layer_keys
        self.norm = norm  # [hidden]
        self.lm_head = lm_head  # [vocab, hidden] or None (classifier)
        self.score = score  # [num_labels, hidden] or None
        self.rope_style = rope_style  # "interleaved" (GGUF / llama.cpp) or "half" (HF)
        self.vocab = vocab  # list or dict token string -> id, or None


_LAYER_KEYS = ("attn_norm", "wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo",
               "ffn_norm", "w_gate", "w_up", "w_down", "b_gate", "b_up", "b_down")

_CACHE = {}


def load_model(path):
    path = os.path.abspath(path)
    if path not in _CACHE:
        if os.path.isdir(path):
            _CACHE[path] = load_hf(path)
        else:
            _CACHE[path] = load_gguf(path)
    return _CACHE[path]


# ---------------------------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------------------------


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def load_gguf(path):
    import gguf  # only needed for GGUF checkpoints

    reader = gguf.GGUFReader(path)
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"unsupported GGUF architecture {arch!r} (only llama)")
    p = arch + "."
    scaling = _field(reader, p + "rope.scaling.type")
    if scaling not in (None, "none"):
        raise SystemExit(f"rope scaling {scaling!r} is not implemented")

    tensors = {}
    for t in reader.tensors:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        # GGUF lists dims innermost first; numpy's shape is the reverse: [rows, cols].
        want = tuple(int(n) for n in reversed(t.shape))
        arr = np.asarray(arr).reshape(want)
        tensors[t.name] = arr.astype(np.float64)
    if "rope_freqs.weight" in tensors:
        raise SystemExit("rope_freqs.weight (llama3 rope scaling) is not implemented")

    hidden = int(_field(reader, p + "embedding_length"))
    n_head = int(_field(reader, p + "attention.head_count"))
    n_kv = int(_field(reader, p + "attention.head_count_kv", n_head))
    head_dim = int(_field(reader, p + "attention.key_length", hidden // n_head))
    cfg = {
        "n_layer": int(_field(reader, p + "block_count")),
        "hidden": hidden,
        "n_head": n_head,
        "n_kv": n_kv,
        "head_dim": head_dim,
        "n_rot": int(_field(reader, p + "rope.dimension_count", head_dim)),
        "ffn": int(_field(reader, p + "feed_forward_length")),
        "eps": float(_field(reader, p + "attention.layer_norm_rms_epsilon")),
        "base": float(_field(reader, p + "rope.freq_base", 10000.0)),
    }

    names = {"attn_norm": "attn_norm.weight", "wq": "attn_q.weight", "wk": "attn_k.weight",
             "wv": "attn_v.weight", "wo": "attn_output.weight", "bq": "attn_q.bias",
             "bk": "attn_k.bias", "bv": "attn_v.bias", "bo": "attn_output.bias",
             "ffn_norm": "ffn_norm.weight", "w_gate": "ffn_gate.weight", "w_up": "ffn_up.weight",
             "w_down": "ffn_down.weight", "b_gate": "ffn_gate.bias", "b_up": "ffn_up.bias",
             "b_down": "ffn_down.bias"}
    layers = []
    for i in range(cfg["n_layer"]):
        layers.append({k: tensors.get(f"blk.{i}.{n}") for k, n in names.items()})
    embed = tensors["token_embd.weight"]
    lm_head = tensors.get("output.weight", embed)
    tokens = _field(reader, "tokenizer.ggml.tokens")
    model = Model(cfg, embed, layers, tensors["output_norm.weight"], lm_head, None,
                  "interleaved", list(tokens) if tokens is not None else None)
    check_shapes(model)
    return model


# ---------------------------------------------------------------------------------------------
# Hugging Face directory + safetensors
# ---------------------------------------------------------------------------------------------


def read_safetensors(path):
    """name -> float64 array.  Format: u64 LE header length, JSON header, raw LE data."""
    with open(path, "rb") as fh:
        blob = fh.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[start:end]
        dtype = info["dtype"]
        if dtype == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dtype == "F16":
            arr = np.frombuffer(raw, dtype="<f2")
        elif dtype == "F64":
            arr = np.frombuffer(raw, dtype="<f8")
        elif dtype == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name} has unsupported dtype {dtype}")
        out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out


def write_safetensors(path, tensors):
    """tensors: name -> float32-castable array; names are written sorted."""
    header = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype="<f4")
        nbytes = arr.nbytes
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + nbytes]}
        chunks.append(arr.tobytes())
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(len(hbytes).to_bytes(8, "little"))
        fh.write(hbytes)
        for c in chunks:
            fh.write(c)


def load_hf(path):
    with open(os.path.join(path, "config.json")) as fh:
        conf = json.load(fh)
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        tensors = read_safetensors(single)
    else:
        with open(os.path.join(path, "model.safetensors.index.json")) as fh:
            index = json.load(fh)
        tensors = {}
        for shard in sorted(set(index["weight_map"].values())):
            tensors.update(read_safetensors(os.path.join(path, shard)))

    act = conf.get("hidden_act", "silu")
    if act != "silu":
        raise SystemExit(f"hidden_act {act!r} is not supported (only silu)")
    scaling = conf.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise SystemExit(f"rope_scaling {scaling!r} is not implemented")
    hidden = int(conf["hidden_size"])
    n_head = int(conf["num_attention_heads"])
    head_dim = int(conf.get("head_dim") or hidden // n_head)
    cfg = {
        "n_layer": int(conf["num_hidden_layers"]),
        "hidden": hidden,
        "n_head": n_head,
        "n_kv": int(conf.get("num_key_value_heads") or n_head),
        "head_dim": head_dim,
        "n_rot": head_dim,
        "ffn": int(conf["intermediate_size"]),
        "eps": float(conf.get("rms_norm_eps", 1e-6)),
        "base": float(conf.get("rope_theta", 10000.0)),
    }
    attn_bias = bool(conf.get("attention_bias", False))
    mlp_bias = bool(conf.get("mlp_bias", False))

    def get(name, required):
        if name in tensors:
            return tensors[name]
        if required:
            raise SystemExit(f"{path}: missing tensor {name}")
        return None

    layers = []
    for i in range(cfg["n_layer"]):
        pre = f"model.layers.{i}."
        at = pre + "self_attn."
        mlp = pre + "mlp."
        layers.append({
            "attn_norm": get(pre + "input_layernorm.weight", True),
            "wq": get(at + "q_proj.weight", True),
            "wk": get(at + "k_proj.weight", True),
            "wv": get(at + "v_proj.weight", True),
            "wo": get(at + "o_proj.weight", True),
            "bq": get(at + "q_proj.bias", attn_bias),
            "bk": get(at + "k_proj.bias", attn_bias),
            "bv": get(at + "v_proj.bias", attn_bias),
            "bo": get(at + "o_proj.bias", False),
            "ffn_norm": get(pre + "post_attention_layernorm.weight", True),
            "w_gate": get(mlp + "gate_proj.weight", True),
            "w_up": get(mlp + "up_proj.weight", True),
            "w_down": get(mlp + "down_proj.weight", True),
            "b_gate": get(mlp + "gate_proj.bias", mlp_bias),
            "b_up": get(mlp + "up_proj.bias", mlp_bias),
            "b_down": get(mlp + "down_proj.bias", mlp_bias),
        })
    embed = get("model.embed_tokens.weight", True)
    score = tensors.get("score.weight")
    archs = conf.get("architectures") or []
    is_cls = score is not None or any("SequenceClassification" in a for a in archs)
    if is_cls and score is None:
        raise SystemExit(f"{path}: classifier config without score.weight")
    if "lm_head.weight" in tensors:
        lm_head = tensors["lm_head.weight"]
    elif conf.get("tie_word_embeddings", False):
        lm_head = embed
    elif is_cls:
        lm_head = None
    else:
        raise SystemExit(f"{path}: no lm_head.weight and tie_word_embeddings is false")

    vocab = None
    tok_path = os.path.join(path, "tokenizer.json")
    if os.path.exists(tok_path):
        with open(tok_path, encoding="utf-8") as fh:
            tok = json.load(fh)
        v = (tok.get("model") or {}).get("vocab")
        if isinstance(v, dict):
            vocab = dict(v)
        for added in tok.get("added_tokens") or []:
            if vocab is not None:
                vocab.setdefault(added["content"], added["id"])

    model = Model(cfg, embed, layers, get("model.norm.weight", True), lm_head, score, "half",
                  vocab)
    check_shapes(model)
    return model


def check_shapes(model):
    c = model.cfg
    h, d, f = c["hidden"], c["head_dim"], c["ffn"]
    want = {"attn_norm": (h,), "ffn_norm": (h,), "wq": (c["n_head"] * d, h),
            "wk": (c["n_kv"] * d, h), "wv": (c["n_kv"] * d, h), "wo": (h, c["n_head"] * d),
            "bq": (c["n_head"] * d,), "bk": (c["n_kv"] * d,), "bv": (c["n_kv"] * d,),
            "bo": (h,), "w_gate": (f, h), "w_up": (f, h), "w_down": (h, f), "b_gate": (f,),
            "b_up": (f,), "b_down": (h,)}
    if c["n_head"] % c["n_kv"] != 0:
        raise SystemExit("n_head must be a multiple of n_kv")
    if c["n_rot"] % 2 or c["n_rot"] > d:
        raise SystemExit(f"bad rope dimension {c['n_rot']} for head_dim {d}")
    for i, layer in enumerate(model.layers):
        for k, shape in want.items():
            if layer[k] is not None and layer[k].shape != shape:
                raise SystemExit(f"layer {i} {k}: shape {layer[k].shape}, expected {shape}")
    if model.embed.shape[1] != h or model.norm.shape != (h,):
        raise SystemExit("embedding / output norm shape mismatch")
    if model.lm_head is not None and model.lm_head.shape[1] != h:
        raise SystemExit("lm_head shape mismatch")
    if model.score is not None and model.score.shape[1] != h:
        raise SystemExit("score shape mismatch")


# ---------------------------------------------------------------------------------------------
# forward pass
# ---------------------------------------------------------------------------------------------


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, positions, n_rot, base, style):
    """x: [T, heads, d]; rotates the first n_rot dims of each head."""
    half = n_rot // 2
    inv_freq = base ** (-(2.0 * np.arange(half, dtype=np.float64)) / n_rot)
    ang = positions.astype(np.float64)[:, None] * inv_freq[None, :]  # [T, half]
    cos = np.cos(ang)[:, None, :]
    sin = np.sin(ang)[:, None, :]
    out = x.copy()
    if style == "interleaved":  # pairs (2i, 2i+1)
        a = x[:, :, 0:n_rot:2]
        b = x[:, :, 1:n_rot:2]
        out[:, :, 0:n_rot:2] = a * cos - b * sin
        out[:, :, 1:n_rot:2] = a * sin + b * cos
    elif style == "half":  # pairs (i, i + n_rot/2)
        a = x[:, :, :half]
        b = x[:, :, half:n_rot]
        out[:, :, :half] = a * cos - b * sin
        out[:, :, half:n_rot] = b * cos + a * sin
    else:
        raise ValueError(style)
    return out


def _linear(x, w, b):
    y = x @ w.T
    return y if b is None else y + b


def forward(model, ids, cache=None):
    """Final-norm hidden states [T_new, hidden] for the new tokens `ids`.

    cache: None (fresh sequence) or a dict {"pos": int, "k": [per layer], "v": [per layer]}
    holding rotated keys / values of earlier positions; it is extended in place.
    """
    c = model.cfg
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise SystemExit("token sequences must be non-empty lists of ids")
    if ids.min() < 0 or ids.max() >= model.embed.shape[0]:
        raise SystemExit(f"token id out of range [0, {model.embed.shape[0]})")
    t_new = ids.size
    start = 0 if cache is None else cache["pos"]
    positions = np.arange(start, start + t_new)
    n_head, n_kv, d = c["n_head"], c["n_kv"], c["head_dim"]
    group = n_head // n_kv
    scale = 1.0 / np.sqrt(d)
    # query at absolute position start+i sees keys 0..start+i
    t_all = start + t_new
    mask = np.arange(t_all)[None, :] > positions[:, None]  # [T_new, T_all]

    h = model.embed[ids]
    for li, L in enumerate(model.layers):
        a = rms_norm(h, L["attn_norm"], c["eps"])
        q = _linear(a, L["wq"], L["bq"]).reshape(t_new, n_head, d)
        k = _linear(a, L["wk"], L["bk"]).reshape(t_new, n_kv, d)
        v = _linear(a, L["wv"], L["bv"]).reshape(t_new, n_kv, d)
        q = rope(q, positions, c["n_rot"], c["base"], model.rope_style)
        k = rope(k, positions, c["n_rot"], c["base"], model.rope_style)
        if cache is not None:
            if li < len(cache["k"]):
                k = np.concatenate([cache["k"][li], k], axis=0)
                v = np.concatenate([cache["v"][li], v], axis=0)
                cache["k"][li], cache["v"][li] = k, v
            else:
                cache["k"].append(k)
                cache["v"].append(v)
        # [n_kv, group, T_new, d] x [n_kv, d, T_all]
        qg = q.reshape(t_new, n_kv, group, d).transpose(1, 2, 0, 3)
        kt = k.transpose(1, 2, 0)
        s = np.matmul(qg, kt[:, None, :, :]) * scale  # [n_kv, group, T_new, T_all]
        s = np.where(mask, -np.inf, s)
        s = s - s.max(axis=-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=-1, keepdims=True)
        o = np.matmul(p, v.transpose(1, 0, 2)[:, None, :, :])  # [n_kv, group, T_new, d]
        o = o.transpose(2, 0, 1, 3).reshape(t_new, n_head * d)
        h = h + _linear(o, L["wo"], L["bo"])
        m = rms_norm(h, L["ffn_norm"], c["eps"])
        g = _linear(m, L["w_gate"], L["b_gate"])
        u = _linear(m, L["w_up"], L["b_up"])
        h = h + _linear(g / (1.0 + np.exp(-g)) * u, L["w_down"], L["b_down"])
    if cache is not None:
        cache["pos"] = t_all
    return rms_norm(h, model.norm, c["eps"])


def lm_logits(model, hidden):
    if model.lm_head is None:
        raise SystemExit("this checkpoint has no language-model head")
    return hidden @ model.lm_head.T


def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------------------------
# modes
# ---------------------------------------------------------------------------------------------


def mode_logits(model, inp):
    out = []
    for seq in inp["sequences"]:
        hid = forward(model, seq)
        out.append(lm_logits(model, hid[-1:])[0].tolist())
    return {"logits": out}


def mode_greedy(model, inp):
    max_new = int(inp.get("max_new_tokens", 20))
    stop = set(int(s) for s in inp.get("stop_ids") or [])
    conts = []
    for seq in inp["sequences"]:
        cache = {"pos": 0, "k": [], "v": []}
        hid = forward(model, seq, cache)
        gen = []
        while len(gen) < max_new:
            tok = int(np.argmax(lm_logits(model, hid[-1:])[0]))
            gen.append(tok)
            if tok in stop or len(gen) == max_new:
                break
            hid = forward(model, [tok], cache)
        conts.append(gen)
    return {"continuations": conts}


def mode_seq_logp(model, inp):
    logps, counts = [], []
    for pair in inp["pairs"]:
        prompt = list(pair["prompt_ids"])
        resp = list(pair["response_ids"])
        if not prompt:
            raise SystemExit("seq_logp needs a non-empty prompt")
        if not resp:
            logps.append(0.0)
            counts.append(0)
            continue
        hid = forward(model, prompt + resp)
        rows = hid[len(prompt) - 1:len(prompt) - 1 + len(resp)]
        lp = log_softmax(lm_logits(model, rows))
        logps.append(float(lp[np.arange(len(resp)), np.asarray(resp)].sum()))
        counts.append(len(resp))
    return {"logps": logps, "token_counts": counts}


def digit_ids_for(model, inp):
    if inp.get("digit_ids") is not None:
        ids = [int(i) for i in inp["digit_ids"]]
        if len(ids) != 9:
            raise SystemExit("digit_ids must list 9 ids, for '1'..'9'")
        return ids
    if model.vocab is None:
        raise SystemExit("no vocabulary in the checkpoint: give \"digit_ids\" in the input")
    if isinstance(model.vocab, dict):
        lookup = model.vocab
    else:
        lookup = {}
        for i, s in enumerate(model.vocab):
            lookup.setdefault(s, i)
    try:
        return [int(lookup[str(dg)]) for dg in range(1, 10)]
    except KeyError as e:
        raise SystemExit(f"digit token {e} not in the vocabulary; give \"digit_ids\"")


def mode_judge(model, inp):
    digits = digit_ids_for(model, inp)
    ratings = []
    for seq in inp["sequences"]:
        hid = forward(model, seq)
        lg = lm_logits(model, hid[-1:])[0]
        full = np.exp(log_softmax(lg))  # p over the whole vocabulary
        pd = full[digits]
        w = np.arange(1, 10, dtype=np.float64)
        ratings.append(float((w * pd).sum() / pd.sum()))
    return {"ratings": ratings, "digit_ids": digits}


def mode_classifier(model, inp):
    if model.score is None:
        raise SystemExit("classifier mode needs an HF checkpoint with score.weight")
    rewards = []
    for seq in inp["sequences"]:
        hid = forward(model, seq)
        rewards.append((hid[-1] @ model.score.T).tolist())
    return {"rewards": rewards}


# ---------------------------------------------------------------------------------------------
# tiny model + self check
# ---------------------------------------------------------------------------------------------


def make_tiny(out_dir, seed=0, classifier=False, tied=False, bias=False):
    cfg = {
        "architectures": ["LlamaForSequenceClassification" if classifier
                          else "LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 96,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 128,
        "tie_word_embeddings": bool(tied),
        "attention_bias": bool(bias),
        "mlp_bias": False,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    if classifier:
        cfg["num_labels"] = 1
    V, H, F = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    d = H // cfg["num_attention_heads"]
    KV = cfg["num_key_value_heads"] * d
    shapes = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (H,),
            p + "post_attention_layernorm.weight": (H,),
            p + "self_attn.q_proj.weight": (H, H),
            p + "self_attn.k_proj.weight": (KV, H),
            p + "self_attn.v_proj.weight": (KV, H),
            p + "self_attn.o_proj.weight": (H, H),
            p + "mlp.gate_proj.weight": (F, H),
            p + "mlp.up_proj.weight": (F, H),
            p + "mlp.down_proj.weight": (H, F),
        })
        if bias:
            shapes.update({p + "self_attn.q_proj.bias": (H,),
                           p + "self_attn.k_proj.bias": (KV,),
                           p + "self_attn.v_proj.bias": (KV,)})
    if classifier:
        shapes["score.weight"] = (1, H)
    elif not tied:
        shapes["lm_head.weight"] = (V, H)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name in sorted(shapes):  # draw in sorted-name order
        if name.endswith("norm.weight"):
            tensors[name] = 1.0 + rng.normal(0.0, 0.1, shapes[name])
        else:
            tensors[name] = rng.normal(0.0, 0.2, shapes[name])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
        fh.write("\n")
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)


def _permute_rows(w, n_heads, to_interleaved):
    """Reorder the rows (or a bias) of q/k per head between the two RoPE conventions.

    half -> interleaved: head rows [x_0..x_{d/2-1}, y_0..y_{d/2-1}] become [x_0, y_0, x_1, ...]
    (what llama.cpp's converter does); interleaved -> half is the inverse.
    """
    if w is None:
        return None
    rest = w.shape[1:]
    d = w.shape[0] // n_heads
    if to_interleaved:
        r = w.reshape(n_heads, 2, d // 2, *rest).swapaxes(1, 2)
    else:
        r = w.reshape(n_heads, d // 2, 2, *rest).swapaxes(1, 2)
    return np.ascontiguousarray(r.reshape(w.shape))


def converted(model, to_style):
    """Same network with q/k rows permuted so it runs under the other RoPE convention."""
    if model.cfg["n_rot"] != model.cfg["head_dim"]:
        raise SystemExit("conversion needs full-head rotary embeddings")
    inter = to_style == "interleaved"
    layers = []
    for L in model.layers:
        M = dict(L)
        for key, heads in (("wq", "n_head"), ("bq", "n_head"), ("wk", "n_kv"),
                           ("bk", "n_kv")):
            M[key] = _permute_rows(L[key], model.cfg[heads], inter)
        layers.append(M)
    return Model(dict(model.cfg), model.embed, layers, model.norm, model.lm_head, model.score,
                 to_style, model.vocab)


def _max_rel(a, b):
    a = np.asarray(a)
    b = np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def _check_pair(name, m1, m2, seq, tol):
    h1 = forward(m1, seq)
    h2 = forward(m2, seq)
    head = (lambda m, h: lm_logits(m, h)) if m1.lm_head is not None else \
        (lambda m, h: h @ m.score.T)
    err = _max_rel(head(m1, h1), head(m2, h2))
    # a wrong convention must be detectable: the same weights run with the other style
    wrong = Model(m2.cfg, m2.embed, m2.layers, m2.norm, m2.lm_head, m2.score,
                  "half" if m2.rope_style == "interleaved" else "interleaved", m2.vocab)
    sep = _max_rel(head(m1, h1), head(wrong, forward(wrong, seq)))
    ok = err <= tol and sep > 1e3 * tol
    print(f"  {name}: max rel diff {err:.3e} (wrong convention: {sep:.3e}) "
          f"{'ok' if ok else 'FAIL'}")
    return ok


def _check_cache(name, model, seq):
    full = lm_logits(model, forward(model, seq))
    cache = {"pos": 0, "k": [], "v": []}
    split = len(seq) // 2
    parts = [forward(model, seq[:split], cache)]
    for t in seq[split:]:
        parts.append(forward(model, [t], cache))
    err = _max_rel(lm_logits(model, np.concatenate(parts)), full)
    ok = err <= 1e-12
    print(f"  {name}: kv cache vs full pass max rel diff {err:.3e} {'ok' if ok else 'FAIL'}")
    return ok


def selfcheck(model_path=None):
    ok = True
    rng = np.random.default_rng(123)
    with tempfile.TemporaryDirectory() as tmp:
        for flags in ({}, {"bias": True, "tied": True}, {"classifier": True}):
            d = os.path.join(tmp, "_".join(sorted(flags)) or "plain")
            make_tiny(d, seed=7, **flags)
            hf = load_hf(d)
            seq = [int(x) for x in rng.integers(0, 96, size=40)]
            ok &= _check_pair(f"tiny {d.rsplit(os.sep, 1)[-1]} HF vs interleaved", hf,
                              converted(hf, "interleaved"), seq, 1e-12)
            if hf.lm_head is not None:
                ok &= _check_cache(f"tiny {d.rsplit(os.sep, 1)[-1]}", hf, seq)
    if model_path:
        t0 = time.time()
        m = load_model(model_path)
        seq = [int(x) for x in rng.integers(0, m.embed.shape[0], size=24)]
        if m.rope_style == "interleaved":
            ok &= _check_pair("model GGUF vs un-permuted HF", m, converted(m, "half"), seq,
                              1e-9)
        else:
            ok &= _check_pair("model HF vs interleaved", m, converted(m, "interleaved"), seq,
                              1e-9)
        if m.lm_head is not None:
            ok &= _check_cache("model", m, seq[:12])
        print(f"  model checks took {time.time() - t0:.1f}s")
    print("reference_llama selfcheck " + ("passed" if ok else "FAILED"))
    return ok


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

MODES = {"logits": mode_logits, "greedy": mode_greedy, "seq_logp": mode_seq_logp,
         "judge": mode_judge, "classifier": mode_classifier}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=sorted(MODES) + ["make-tiny", "selfcheck"])
    ap.add_argument("--model", help="a .gguf file or a Hugging Face checkpoint directory")
    ap.add_argument("--input", help="input JSON file")
    ap.add_argument("--output", help="output JSON file (make-tiny: output directory)")
    ap.add_argument("--seed", type=int, default=0, help="make-tiny: RNG seed")
    ap.add_argument("--classifier", action="store_true", help="make-tiny: sequence classifier")
    ap.add_argument("--tied", action="store_true", help="make-tiny: tie lm_head to embeddings")
    ap.add_argument("--bias", action="store_true", help="make-tiny: q/k/v biases")
    args = ap.parse_args(argv)

    if args.mode == "make-tiny":
        if not args.output:
            ap.error("make-tiny needs --output DIR")
        make_tiny(args.output, args.seed, args.classifier, args.tied, args.bias)
        return 0
    if args.mode == "selfcheck":
        return 0 if selfcheck(args.model) else 1
    if not (args.model and args.input and args.output):
        ap.error(f"{args.mode} needs --model, --input and --output")
    with open(args.input) as fh:
        inp = json.load(fh)
    model = load_model(args.model)
    result = MODES[args.mode](model, inp)
    with open(args.output, "w") as fh:
        json.dump(result, fh)
        fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
