#!/usr/bin/env python3
"""Write a deterministic synthetic LONG-layout data set full of edge cases.

What it is for
--------------
Test input for prefsmith's ``select`` (and for ``reference_select.py``, the
independent Python reference).  The data set is small (about 200 prompts,
1-20 responses each) but is built to hit the awkward corners of the pair
selection spec:

* heavy ties (integer rewards 1..10, or only two or three distinct values),
* null rewards, NaN, +inf and -inf (all invalid),
* prompts with exactly one response, prompts with exactly one valid reward,
  prompts with no valid reward at all,
* prompts whose valid rewards are all equal (including 0.0 mixed with -0.0),
* prompts whose maximum is tied between several responses, some built so
  that sweet-spot or scalable selection ends in ``no-margin``,
* summation-order sensitive rewards (1e16 and 1.0 mixed) and near-equal
  rewards one ulp apart,
* symmetric reward sets (equal distances to μ ± kσ for ``positions``),
* unicode prompts and prompt ids (accents, CJK, emoji, RTL text, newlines) so
  that the UTF-8 byte-order sort of prompt ids is exercised (e.g. an emoji id
  sorts after U+FFxx in UTF-8 order but before it in UTF-16 order),
* empty-string responses.

Layout
------
Two Parquet shards ``DIR/shard-0.parquet`` and ``DIR/shard-1.parquet`` with
columns ``prompt_id`` (string), ``prompt`` (string), ``response`` (string),
``reward`` (double, nullable), written with small row groups.

Default mode: NO ``response_index`` column.  The response index is then the
ordinal of a row among the rows of its prompt in input order (shard-0 before
shard-1, rows in file order).  A prompt's responses 0..s-1 go to shard-0 and
s..n-1 to shard-1 (s random, often strictly inside, so many prompts are
split across both shards), and inside each shard the rows of different
prompts are interleaved at random while each prompt keeps its own order.

``--with-index`` mode: the same logical data set, plus a correct
``response_index`` column, with all rows shuffled at random and dealt into
the two shards, so the indices can only come from the column.

Both modes describe the same prompts, responses, rewards and indices, so the
pair table computed from either must be identical -- a useful cross-check.
The prompt text is identical on all rows of a prompt.

Usage
-----
::

    make_edge_long.py --output DIR [--seed N] [--with-index]

The output is a pure function of ``--seed`` (default 0) and the mode.
Existing ``shard-*.parquet`` files in DIR are overwritten; the script
refuses to write into a directory holding other ``*.parquet`` files or a
``_manifest.json`` (a reader would pick them up too).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

NAN = math.nan
INF = math.inf
N = None  # a null reward

TARGET_PROMPTS = 200
MAX_RESPONSES = 20
ROW_GROUP_SIZE = 97  # small, so that row-group boundaries fall inside prompts
SHARDS = ("shard-0.parquet", "shard-1.parquet")

# A logical prompt: (prompt_id, prompt text, [(response text, reward), ...]);
# the response index is the position in the list.
Logical = tuple[str, str, list[tuple[str, Optional[float]]]]

# Hand-written edge cases: (prompt_id, prompt text, rewards).
CURATED: list[tuple[str, str, list[Optional[float]]]] = [
    ("edge-one-response", "Only one response.", [3.0]),
    ("edge-one-response-null", "Only one response, reward null.", [N]),
    ("edge-one-response-nan", "Only one response, reward NaN.", [NAN]),
    ("edge-one-valid", "One valid reward among invalid ones.", [N, NAN, 2.5, INF, -INF]),
    ("edge-one-valid-first", "One valid reward, first.", [7.0, N, N]),
    ("edge-all-null", "All rewards null.", [N, N, N, N]),
    ("edge-all-invalid", "All rewards invalid.", [NAN, INF, -INF, N, NAN]),
    ("edge-two-valid", "Exactly two valid rewards.", [N, 1.0, NAN, 2.0]),
    ("edge-two-tied", "Two valid rewards, equal.", [3.0, 3.0]),
    ("edge-all-equal", "All rewards equal.", [7.0] * 6),
    ("edge-all-equal-with-invalid", "All valid rewards equal.", [4.0, N, 4.0, NAN, 4.0, INF]),
    ("edge-signed-zeros", "0.0 and -0.0 are equal.", [0.0, -0.0, 0.0, -0.0]),
    ("edge-max-tied", "Max tied between several.", [10.0, 3.0, 10.0, 1.0, 10.0, 5.0]),
    ("edge-max-tied-last", "Max tied, first max late.", [1.0, 2.0, 1.0, 9.0, 9.0]),
    ("edge-min-tied", "Min tied between several.", [1.0, 5.0, 1.0, 8.0, 1.0]),
    # sweet-spot: μ-2σ is nearer the (tied) max than the single low reward.
    ("edge-nomargin-sweet", "Nineteen fives and a zero.", [5.0] * 19 + [0.0]),
    # Not no-margin for sweet-spot (μ-2σ lands nearer the 1), but usually
    # for scalable (a 5-subset rarely contains the 1).
    ("edge-many-max-one-low", "Twelve nines and a one.", [9.0] * 6 + [1.0] + [9.0] * 6),
    # scalable: a 5-subset of these is usually all at the max.
    ("edge-nomargin-scalable", "Many maxima, few others.", [9.0] * 15 + [1.0, 2.0]),
    ("edge-nomargin-scalable-2", "Max everywhere but one.", [4.0] * 19 + [3.0]),
    ("edge-symmetric", "Symmetric rewards.", [1.0, 3.0, 2.0]),
    ("edge-symmetric-2", "Symmetric rewards, other order.", [3.0, 1.0, 0.0, 4.0]),
    ("edge-two-point", "Two values, equal counts (μ±σ exact).", [0.0, 2.0, 2.0, 0.0]),
    ("edge-negative", "Negative rewards.", [-5.0, -1.0, -3.0, -2.0, -1.0]),
    ("edge-inf-mixed", "Infinities among valid rewards.", [INF, 1.0, 2.0, -INF, 3.0, NAN]),
    ("edge-cancellation", "Summation order matters.", [1e16, 1.0, -1e16, 1.0]),
    ("edge-cancellation-2", "Summation order matters, more.", [1.0, 1e16, 1.0, -1e16, 1.0, 2.0]),
    ("edge-one-ulp", "Rewards one ulp apart.", [1.0, 1.0 + 2.0**-52, 1.0]),
    ("edge-tiny", "Tiny rewards.", [1e-300, 2e-300, 3e-300]),
    ("edge-twenty", "Twenty distinct rewards.", [float(i) * 0.37 - 2.0 for i in range(20)]),
    ("edge-fractions", "0.1 0.2 0.3 ...", [0.1, 0.2, 0.3, 0.1, 0.7, N]),
]

UNICODE_PROMPTS = [
    "Ünïcödé prömpt: naïve café façade",
    "日本語のプロンプトです。答えてください。",
    "emoji prompt 😀🚀 — with an em dash",
    "مرحبا بالعالم (right-to-left)",
    "multi\nline\tprompt with \"quotes\" and 'apostrophes'",
    "Ελληνικά και русский текст",
    "combining: e\u0301 vs \u00e9",
    "",  # an empty prompt
]

# Prompt ids that order differently in UTF-8 byte order than in UTF-16 order
# (U+FF5E vs. an emoji outside the BMP), plus case and digit ordering.
UNICODE_IDS = [
    "\uff5e-fullwidth-tilde",
    "\U0001F600-emoji",
    "é-accent",
    "日本-cjk",
    "Zed-upper",
    "zed-lower",
    "0-digit",
    "~tilde",
]


def response_text(rng: random.Random, pid: str, i: int) -> str:
    r = rng.random()
    if r < 0.05:
        return ""
    if r < 0.15:
        return f"réponse {i} — {pid} ✓"
    return f"response {i} for {pid}"


def random_rewards(rng: random.Random, kind: str, n: int) -> list[Optional[float]]:
    if kind == "int":  # heavy ties
        vals: list[Optional[float]] = [float(rng.randint(1, 10)) for _ in range(n)]
    elif kind == "few":  # very heavy ties
        choices = rng.sample([0.0, 1.0, 2.5, 5.0, -1.0], rng.randint(1, 3))
        vals = [rng.choice(choices) for _ in range(n)]
    elif kind == "gauss":
        vals = [round(rng.gauss(0.0, 2.0), 3) for _ in range(n)]
    else:  # "float": full-precision floats
        vals = [rng.uniform(-10.0, 10.0) for _ in range(n)]
    # Sprinkle invalid rewards.
    if rng.random() < 0.4:
        for i in range(n):
            if rng.random() < 0.15:
                vals[i] = rng.choice([N, N, NAN, INF, -INF])
    # Sometimes force a tied maximum.
    if n >= 3 and rng.random() < 0.25:
        valid = [v for v in vals if v is not None and math.isfinite(v)]
        if valid:
            top = max(valid)
            for i in rng.sample(range(n), 2):
                vals[i] = top
    return vals


def build_logical(seed: int) -> list[Logical]:
    """The logical data set: the same for both modes."""
    rng = random.Random(f"prefsmith-edge-long:{seed}")
    prompts: list[Logical] = []
    for pid, text, rewards in CURATED:
        prompts.append((pid, text, [(response_text(rng, pid, i), r) for i, r in enumerate(rewards)]))
    for j, pid_base in enumerate(UNICODE_IDS):
        text = UNICODE_PROMPTS[j % len(UNICODE_PROMPTS)]
        n = rng.randint(1, MAX_RESPONSES)
        rewards = random_rewards(rng, rng.choice(["int", "gauss", "float"]), n)
        prompts.append((pid_base, text, [(response_text(rng, pid_base, i), r) for i, r in enumerate(rewards)]))
    k = 0
    while len(prompts) < TARGET_PROMPTS:
        pid = f"p{k:04d}"
        k += 1
        n = rng.choice([1, 2, 2, 3]) if rng.random() < 0.15 else rng.randint(1, MAX_RESPONSES)
        kind = rng.choice(["int", "int", "few", "gauss", "float"])
        if rng.random() < 0.1:
            text = rng.choice(UNICODE_PROMPTS) + f" #{k}"
        else:
            text = f"Synthetic prompt number {k}: explain topic {rng.randint(0, 999)}."
        rewards = random_rewards(rng, kind, n)
        prompts.append((pid, text, [(response_text(rng, pid, i), r) for i, r in enumerate(rewards)]))
    # Present the prompts in a random (not sorted) order.
    rng.shuffle(prompts)
    return prompts


Row = tuple[str, str, str, Optional[float], int]  # pid, prompt, response, reward, index


def interleave(rng: random.Random, queues: list[list[Row]]) -> list[Row]:
    """Merge queues at random, keeping the order inside each queue."""
    queues = [list(q) for q in queues if q]
    pos = [0] * len(queues)
    out: list[Row] = []
    remaining = sum(len(q) for q in queues)
    while remaining:
        # Pick a queue with probability proportional to what it has left.
        x = rng.randrange(remaining)
        for qi, q in enumerate(queues):
            left = len(q) - pos[qi]
            if x < left:
                out.append(q[pos[qi]])
                pos[qi] += 1
                break
            x -= left
        remaining -= 1
    return out


def layout_without_index(prompts: list[Logical], seed: int) -> tuple[list[Row], list[Row]]:
    rng = random.Random(f"prefsmith-edge-long-split:{seed}")
    q0: list[list[Row]] = []
    q1: list[list[Row]] = []
    for pid, text, resps in prompts:
        rows = [(pid, text, t, r, i) for i, (t, r) in enumerate(resps)]
        n = len(rows)
        u = rng.random()
        if u < 0.15:
            s = 0  # all in shard-1
        elif u < 0.30:
            s = n  # all in shard-0
        else:
            s = rng.randint(1, max(1, n - 1)) if n > 1 else rng.randint(0, 1)
        q0.append(rows[:s])
        q1.append(rows[s:])
    return interleave(rng, q0), interleave(rng, q1)


def layout_with_index(prompts: list[Logical], seed: int) -> tuple[list[Row], list[Row]]:
    rng = random.Random(f"prefsmith-edge-long-shuffle:{seed}")
    rows = [(pid, text, t, r, i) for pid, text, resps in prompts for i, (t, r) in enumerate(resps)]
    rng.shuffle(rows)
    cut = len(rows) // 2 + rng.randint(-len(rows) // 10, len(rows) // 10)
    return rows[:cut], rows[cut:]


def to_table(rows: list[Row], with_index: bool) -> pa.Table:
    cols = {
        "prompt_id": pa.array([r[0] for r in rows], pa.string()),
        "prompt": pa.array([r[1] for r in rows], pa.string()),
        "response": pa.array([r[2] for r in rows], pa.string()),
        # from_pandas=False keeps NaN as a value (not null); None is null.
        "reward": pa.array([r[3] for r in rows], pa.float64()),
    }
    if with_index:
        cols["response_index"] = pa.array([r[4] for r in rows], pa.int64())
    return pa.table(cols)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Write a synthetic long-layout edge-case data set.")
    ap.add_argument("--output", required=True, help="output directory (created if missing)")
    ap.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    ap.add_argument("--with-index", action="store_true",
                    help="add a response_index column and shuffle the rows")
    args = ap.parse_args(argv)

    os.makedirs(args.output, exist_ok=True)
    strays = [
        n for n in os.listdir(args.output)
        if (n.endswith(".parquet") and n not in SHARDS) or n == "_manifest.json"
    ]
    if strays:
        print(f"make_edge_long: {args.output} already holds {strays}; "
              "use an empty directory", file=sys.stderr)
        return 2

    prompts = build_logical(args.seed)
    if args.with_index:
        shards = layout_with_index(prompts, args.seed)
    else:
        shards = layout_without_index(prompts, args.seed)
    for name, rows in zip(SHARDS, shards):
        pq.write_table(to_table(rows, args.with_index), os.path.join(args.output, name),
                       row_group_size=ROW_GROUP_SIZE)

    n_rows = sum(len(s) for s in shards)
    ids0 = {r[0] for r in shards[0]}
    ids1 = {r[0] for r in shards[1]}
    print(
        f"make_edge_long: wrote {len(prompts)} prompts, {n_rows} rows "
        f"({len(shards[0])} + {len(shards[1])}) to {args.output}; "
        f"{len(ids0 & ids1)} prompts split across both shards; "
        f"response_index column: {'yes' if args.with_index else 'no'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
