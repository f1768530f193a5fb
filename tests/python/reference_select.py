#!/usr/bin/env python3
"""Independent Python reference for prefsmith's sweet-spot pair selection.

What it is for
--------------
prefsmith (the Rust workspace this file lives in) turns scored generations
into preference pairs ("select").  This script re-implements the selection
algorithm *from the written spec only*, in plain Python, so that the Rust
output can be checked against an implementation that shares no code with it.

It does two things:

* recompute the pair table for an input data set (wide or long Parquet
  layout, a file or a directory of shards) with a given strategy, and
* compare it with the output directory written by ``prefsmith select``
  (``DIR/_manifest.json`` plus the Parquet parts it lists), row by row and
  column by column, including the manifest's skip counts.

Usage
-----
::

    reference_select.py --input PATH --actual DIR --strategy sweet-spot
    reference_select.py --input PATH --actual DIR --strategy positions \\
        --chosen-k 1 --rejected-k -1.5
    reference_select.py --input PATH --strategy scalable --seed 7 \\
        --write-reference /tmp/ref.parquet          # no comparison

Exit status: 0 when everything matches (or when only writing the reference),
1 when differences were found (the first few are printed), 2 on bad usage or
unreadable input.

Negative k values may be written as ``--rejected-k -2`` or
``--rejected-k=-inf``; ``-inf`` after a separate flag is also accepted (the
argument list is normalised before argparse sees it).  For the
``positions`` strategy the label is ``positions(KC,KR)`` with KC and KR
exactly as typed.

The algorithm (summary of the spec)
-----------------------------------
Input layouts, detected from the columns present:

* wide: one row per prompt with ``prompt``, ``all_generated_responses``
  (list<string>), ``all_rm_scores`` (list<double>) and optionally
  ``prompt_id``.  The response index is the position in the lists.
* long: one row per response with ``prompt_id``, ``prompt``, ``response``,
  ``reward`` and optionally ``response_index``.  Without ``response_index``
  a response's index is its 0-based ordinal among the rows of its prompt, in
  input order (files sorted by path, rows in file order).

Without a ``prompt_id`` column the id is the lowercase SHA-256 hex digest of
the UTF-8 prompt.  A directory input is read through its ``_manifest.json``
(``parts[].path``) when present, otherwise all ``*.parquet`` sorted by name.

Per prompt, with valid = not null and finite:

* μ: sequential left-to-right float64 sum of the valid rewards in ascending
  response-index order, divided by n_valid; σ = sqrt(sequential sum of
  (r-μ)² / (n_valid - ddof)).
* skip ``too-few-valid`` if n_valid < 2, ``zero-std`` if max == min, then
  select, then ``no-margin`` if reward(rejected) >= reward(chosen).
* positional strategies: target μ + kσ (k = ±inf: max / min); nearest
  reward wins, ties to the lowest index; rejected is picked among the valid
  responses other than the chosen one.  sweet-spot = (+inf, -2), max-min =
  (+inf, -inf), positions = user-given.
* scalable: chosen = max; rejected = min-reward entry (other than chosen) of
  a 5-element subset drawn by a partial Fisher-Yates shuffle driven by
  SplitMix64 seeded with the first 8 bytes (little endian) of
  SHA-256("{run_seed}:{prompt_id}").

Output rows are sorted by prompt_id (UTF-8 byte order).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

# --------------------------------------------------------------------------
# Output schema and constants
# --------------------------------------------------------------------------

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("chosen", pa.string()),
        pa.field("rejected", pa.string()),
        pa.field("score_chosen", pa.float64()),
        pa.field("score_rejected", pa.float64()),
        pa.field("rating_gap", pa.float64()),
        pa.field("chosen_index", pa.int64()),
        pa.field("rejected_index", pa.int64()),
        pa.field("reward_mean", pa.float64()),
        pa.field("reward_std", pa.float64()),
        pa.field("n_valid", pa.int64()),
        pa.field("strategy", pa.string()),
    ]
)
COLUMNS = [f.name for f in OUTPUT_SCHEMA]

#: Columns that must match exactly (floats compared with ==).
EXACT_COLUMNS = [
    "prompt_id",
    "prompt",
    "chosen",
    "rejected",
    "chosen_index",
    "rejected_index",
    "n_valid",
    "strategy",
    "score_chosen",
    "score_rejected",
    "rating_gap",
]
#: Columns compared with a relative tolerance (absolute near zero).
TOLERANT_COLUMNS = ["reward_mean", "reward_std"]
REL_TOL = 1e-12
ABS_TOL = 1e-12

SKIP_REASONS = ("too-few-valid", "zero-std", "no-margin")

SCALABLE_SUBSET = 5
MASK64 = (1 << 64) - 1

STRATEGIES = ("sweet-spot", "max-min", "scalable", "positions")


class InputError(Exception):
    """Raised for unreadable or inconsistent input (exit status 2)."""


# --------------------------------------------------------------------------
# Reading the input
# --------------------------------------------------------------------------


def input_files(path: str) -> list[str]:
    """Return the Parquet files making up ``path`` in reading order."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise InputError(f"input {path!r} is neither a file nor a directory")
    manifest = os.path.join(path, "_manifest.json")
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as fh:
            meta = json.load(fh)
        parts = meta.get("parts")
        if not isinstance(parts, list):
            raise InputError(f"{manifest}: no 'parts' list")
        files = []
        for part in parts:
            rel = part.get("path") if isinstance(part, dict) else None
            if not isinstance(rel, str):
                raise InputError(f"{manifest}: part without a 'path': {part!r}")
            files.append(os.path.join(path, rel))
        return files
    # Sorted by name: plain code-point order of the file names, which for
    # UTF-8 names is also byte order.
    names = sorted(
        n for n in os.listdir(path)
        if n.endswith(".parquet") and os.path.isfile(os.path.join(path, n))
    )
    if not names:
        raise InputError(f"directory {path!r} holds no *.parquet files")
    return [os.path.join(path, n) for n in names]


def detect_layout(columns: Iterable[str], where: str) -> str:
    cols = set(columns)
    wide = {"all_generated_responses", "all_rm_scores"} <= cols
    long_ = {"prompt_id", "response", "reward"} <= cols
    if wide and long_:
        raise InputError(f"{where}: columns fit both the wide and the long layout")
    if wide:
        if "prompt" not in cols:
            raise InputError(f"{where}: wide layout without a 'prompt' column")
        return "wide"
    if long_:
        if "prompt" not in cols:
            raise InputError(f"{where}: long layout without a 'prompt' column")
        return "long"
    raise InputError(
        f"{where}: cannot detect the layout from columns {sorted(cols)} "
        "(wide needs all_generated_responses + all_rm_scores, "
        "long needs prompt_id + response + reward)"
    )


def _as_float64(arr: pa.ChunkedArray) -> list[Optional[float]]:
    if not pa.types.is_floating(arr.type) or arr.type != pa.float64():
        arr = arr.cast(pa.float64())
    return arr.to_pylist()


def _as_float64_lists(arr: pa.ChunkedArray) -> list[Optional[list]]:
    t = arr.type
    if pa.types.is_large_list(t):
        target = pa.large_list(pa.float64())
    elif pa.types.is_fixed_size_list(t) or pa.types.is_list(t):
        target = pa.list_(pa.float64())
    else:
        raise InputError(f"all_rm_scores has type {t}, expected a list of doubles")
    if t != target:
        arr = arr.cast(target)
    return arr.to_pylist()


@dataclass
class Prompt:
    """All responses of one prompt.

    ``responses`` maps response index -> (text, reward or None).
    """

    prompt_id: str
    prompt: Optional[str]
    responses: dict[int, tuple[Optional[str], Optional[float]]] = field(
        default_factory=dict
    )


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_prompts(path: str) -> tuple[str, dict[str, Prompt]]:
    """Read the input into ``{prompt_id: Prompt}``; returns (layout, prompts)."""
    files = input_files(path)
    layout: Optional[str] = None
    prompts: dict[str, Prompt] = {}
    # Long layout without response_index: running ordinal per prompt_id.
    ordinals: dict[str, int] = {}
    with_index: Optional[bool] = None

    for fpath in files:
        if not os.path.isfile(fpath):
            raise InputError(f"input part {fpath!r} does not exist")
        schema = pq.read_schema(fpath)
        names = schema.names
        this_layout = detect_layout(names, fpath)
        if layout is None:
            layout = this_layout
        elif layout != this_layout:
            raise InputError(f"{fpath}: layout {this_layout} differs from {layout}")

        if layout == "wide":
            cols = ["prompt", "all_generated_responses", "all_rm_scores"]
            has_id = "prompt_id" in names
            if has_id:
                cols.append("prompt_id")
            table = pq.read_table(fpath, columns=cols)
            texts = table.column("prompt").to_pylist()
            resps = table.column("all_generated_responses").to_pylist()
            scores = _as_float64_lists(table.column("all_rm_scores"))
            ids = table.column("prompt_id").to_pylist() if has_id else [None] * len(texts)
            for prompt, rlist, slist, pid in zip(texts, resps, scores, ids):
                if pid is None:
                    # Column missing (or, leniently, a null id): derive it.
                    if prompt is None:
                        raise InputError(f"{fpath}: row without prompt and prompt_id")
                    pid = sha256_hex(prompt)
                if pid in prompts:
                    raise InputError(f"{fpath}: duplicate prompt_id {pid!r} in wide layout")
                rlist = rlist or []
                slist = slist or []
                p = Prompt(pid, prompt)
                for i in range(max(len(rlist), len(slist))):
                    text = rlist[i] if i < len(rlist) else None
                    reward = slist[i] if i < len(slist) else None
                    p.responses[i] = (text, reward)
                prompts[pid] = p
        else:
            has_index = "response_index" in names
            if with_index is None:
                with_index = has_index
            elif with_index != has_index:
                raise InputError(
                    f"{fpath}: some parts have a response_index column and some do not"
                )
            cols = ["prompt_id", "prompt", "response", "reward"]
            if has_index:
                cols.append("response_index")
            table = pq.read_table(fpath, columns=cols)
            ids = table.column("prompt_id").to_pylist()
            texts = table.column("prompt").to_pylist()
            resps = table.column("response").to_pylist()
            rewards = _as_float64(table.column("reward"))
            if has_index:
                idx_col = table.column("response_index").cast(pa.int64()).to_pylist()
            else:
                idx_col = None
            for row, (pid, prompt, resp, reward) in enumerate(zip(ids, texts, resps, rewards)):
                if pid is None:
                    raise InputError(f"{fpath}: row {row} has a null prompt_id")
                p = prompts.get(pid)
                if p is None:
                    # The prompt text is the one of the first row of this id.
                    p = prompts[pid] = Prompt(pid, prompt)
                if idx_col is not None:
                    idx = idx_col[row]
                    if idx is None:
                        raise InputError(f"{fpath}: row {row} has a null response_index")
                else:
                    idx = ordinals.get(pid, 0)
                    ordinals[pid] = idx + 1
                if idx in p.responses:
                    raise InputError(
                        f"{fpath}: duplicate response_index {idx} for prompt_id {pid!r}"
                    )
                p.responses[idx] = (resp, reward)
    assert layout is not None
    return layout, prompts


# --------------------------------------------------------------------------
# The selection algorithm
# --------------------------------------------------------------------------


def ieee_div(a: float, b: float) -> float:
    """a / b with IEEE-754 semantics (no ZeroDivisionError)."""
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def ieee_sqrt(x: float) -> float:
    if math.isnan(x) or x < 0.0:
        return math.nan
    return math.sqrt(x)


def is_valid(r: Optional[float]) -> bool:
    return r is not None and math.isfinite(r)


def mean_std(rewards: list[float], ddof: float) -> tuple[float, float]:
    """μ and σ exactly as the spec prescribes (sequential float64 sums)."""
    n = len(rewards)
    s = 0.0
    for r in rewards:
        s += r
    mu = s / n
    ss = 0.0
    for r in rewards:
        d = r - mu
        ss += d * d
    sigma = ieee_sqrt(ieee_div(ss, float(n) - float(ddof)))
    return mu, sigma


def pick_nearest(
    cands: list[tuple[int, float]], k: float, mu: float, sigma: float
) -> tuple[int, float]:
    """The candidate nearest μ + kσ (k = ±inf: max / min); ties -> lowest index.

    ``cands`` is (index, reward) in ascending index order, so a strict
    comparison keeps the lowest index on ties.
    """
    best_i, best_r = cands[0]
    if k == math.inf:
        for i, r in cands[1:]:
            if r > best_r:
                best_i, best_r = i, r
        return best_i, best_r
    if k == -math.inf:
        for i, r in cands[1:]:
            if r < best_r:
                best_i, best_r = i, r
        return best_i, best_r
    t = mu + k * sigma
    best_d = abs(best_r - t)
    for i, r in cands[1:]:
        d = abs(r - t)
        if d < best_d:
            best_i, best_r, best_d = i, r, d
    return best_i, best_r


def splitmix64(state: int) -> tuple[int, int]:
    """One SplitMix64 step: returns (new_state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def scalable_seed(run_seed: int, prompt_id: str) -> int:
    digest = hashlib.sha256(f"{run_seed}:{prompt_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def scalable_subset(valid_indices: list[int], run_seed: int, prompt_id: str) -> list[int]:
    """The first min(5, n) entries after a partial Fisher-Yates shuffle."""
    lst = list(valid_indices)  # ascending
    n = len(lst)
    m = min(SCALABLE_SUBSET, n)
    state = scalable_seed(run_seed, prompt_id)
    for i in range(m):
        state, x = splitmix64(state)
        j = i + (x % (n - i))
        lst[i], lst[j] = lst[j], lst[i]
    return lst[:m]


@dataclass
class Strategy:
    name: str  # sweet-spot | max-min | scalable | positions
    label: str  # the value written to the strategy column
    k_chosen: float = math.inf
    k_rejected: float = -2.0
    seed: int = 0
    ddof: float = 0.0


def select_one(p: Prompt, strat: Strategy) -> tuple[Optional[dict], Optional[str]]:
    """Select a pair for one prompt: (row, None) or (None, skip_reason)."""
    valid = [(i, p.responses[i][1]) for i in sorted(p.responses) if is_valid(p.responses[i][1])]
    n = len(valid)
    if n < 2:
        return None, "too-few-valid"
    rewards = [r for _, r in valid]
    if max(rewards) == min(rewards):
        return None, "zero-std"
    mu, sigma = mean_std(rewards, strat.ddof)
    if sigma == 0.0:
        # Distinct rewards whose squared deviations underflow (e.g. 1e-300 apart): the computed
        # σ is 0, and the spec skips every prompt with σ = 0.
        return None, "zero-std"

    if strat.name == "scalable":
        ci, cr = pick_nearest(valid, math.inf, mu, sigma)
        subset = scalable_subset([i for i, _ in valid], strat.seed, p.prompt_id)
        reward_of = dict(valid)
        others = sorted(i for i in subset if i != ci)
        ri, rr = others[0], reward_of[others[0]]
        for i in others[1:]:
            if reward_of[i] < rr:
                ri, rr = i, reward_of[i]
    else:
        ci, cr = pick_nearest(valid, strat.k_chosen, mu, sigma)
        rest = [(i, r) for i, r in valid if i != ci]
        ri, rr = pick_nearest(rest, strat.k_rejected, mu, sigma)

    if rr >= cr:
        return None, "no-margin"
    return (
        {
            "prompt_id": p.prompt_id,
            "prompt": p.prompt,
            "chosen": p.responses[ci][0],
            "rejected": p.responses[ri][0],
            "score_chosen": cr,
            "score_rejected": rr,
            "rating_gap": cr - rr,
            "chosen_index": ci,
            "rejected_index": ri,
            "reward_mean": mu,
            "reward_std": sigma,
            "n_valid": n,
            "strategy": strat.label,
        },
        None,
    )


def select_all(prompts: dict[str, Prompt], strat: Strategy) -> tuple[list[dict], dict[str, int]]:
    rows: list[dict] = []
    skipped = {r: 0 for r in SKIP_REASONS}
    for pid in sorted(prompts, key=lambda s: s.encode("utf-8")):
        row, reason = select_one(prompts[pid], strat)
        if row is None:
            skipped[reason] += 1
        else:
            rows.append(row)
    return rows, skipped


def rows_to_table(rows: list[dict]) -> pa.Table:
    return pa.table({c: [r[c] for r in rows] for c in COLUMNS}, schema=OUTPUT_SCHEMA)


# --------------------------------------------------------------------------
# Reading prefsmith's output and comparing
# --------------------------------------------------------------------------


def _type_ok(expected: pa.DataType, actual: pa.DataType) -> bool:
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual) or (
            hasattr(pa.types, "is_string_view") and pa.types.is_string_view(actual)
        )
    return expected == actual


def read_actual(out_dir: str) -> tuple[dict, dict[str, list], list[str]]:
    """Read prefsmith's output: (manifest, columns, problems)."""
    problems: list[str] = []
    mpath = os.path.join(out_dir, "_manifest.json")
    if not os.path.isfile(mpath):
        raise InputError(f"{mpath} does not exist")
    with open(mpath, encoding="utf-8") as fh:
        manifest = json.load(fh)
    parts = manifest.get("parts")
    if not isinstance(parts, list):
        raise InputError(f"{mpath}: no 'parts' list")
    data: dict[str, list] = {c: [] for c in COLUMNS}
    for part in parts:
        rel = part.get("path") if isinstance(part, dict) else None
        if not isinstance(rel, str):
            raise InputError(f"{mpath}: part without a 'path': {part!r}")
        ppath = os.path.join(out_dir, rel)
        if not os.path.isfile(ppath):
            raise InputError(f"{mpath}: part {rel!r} does not exist")
        table = pq.read_table(ppath)
        for f in OUTPUT_SCHEMA:
            if f.name not in table.column_names:
                problems.append(f"{rel}: column {f.name!r} missing")
                data[f.name].extend([None] * table.num_rows)
                continue
            atype = table.schema.field(f.name).type
            if not _type_ok(f.type, atype):
                problems.append(f"{rel}: column {f.name!r} has type {atype}, expected {f.type}")
            data[f.name].extend(table.column(f.name).to_pylist())
        extra = [c for c in table.column_names if c not in COLUMNS]
        if extra:
            problems.append(f"{rel}: unexpected columns {extra}")
        if "rows" in part and part["rows"] != table.num_rows:
            problems.append(
                f"{rel}: manifest says rows={part['rows']}, the file holds {table.num_rows}"
            )
    return manifest, data, problems


def close_enough(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a == b:
        return True
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        diff = abs(a - b)
        return diff <= ABS_TOL or diff <= REL_TOL * max(abs(a), abs(b))
    return False


def exact_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare(
    ref_rows: list[dict],
    ref_skipped: dict[str, int],
    manifest: dict,
    actual: dict[str, list],
    problems: list[str],
) -> list[str]:
    """Return a list of human-readable differences (empty when all match)."""
    diffs = list(problems)

    # prefsmith keeps stage results under the manifest's "stats".
    stats = manifest.get("stats", manifest)
    pw = stats.get("pairs_written")
    if pw != len(ref_rows):
        diffs.append(f"manifest pairs_written: expected {len(ref_rows)}, actual {pw!r}")
    mskip = stats.get("skipped")
    if not isinstance(mskip, dict):
        diffs.append(f"manifest 'skipped': expected {ref_skipped}, actual {mskip!r}")
    else:
        for reason in SKIP_REASONS:
            if mskip.get(reason) != ref_skipped[reason]:
                diffs.append(
                    f"manifest skipped[{reason!r}]: expected {ref_skipped[reason]}, "
                    f"actual {mskip.get(reason)!r}"
                )
        for reason, count in mskip.items():
            if reason not in SKIP_REASONS and count:
                diffs.append(f"manifest skipped[{reason!r}]: expected 0/absent, actual {count!r}")

    n_act = len(actual["prompt_id"])
    ref_ids = [r["prompt_id"] for r in ref_rows]
    act_ids = actual["prompt_id"]
    if n_act != len(ref_rows):
        diffs.append(f"row count: expected {len(ref_rows)}, actual {n_act}")
    if act_ids != ref_ids:
        # Diagnose the row set and order, then compare the rows that exist on
        # both sides by prompt_id (so one missing row does not cascade).
        ref_set, act_set = set(ref_ids), set(act_ids)
        key = lambda s: s.encode("utf-8")  # noqa: E731
        missing = sorted(ref_set - act_set, key=key)
        extra = sorted((x for x in act_set - ref_set if x is not None), key=key)
        if missing:
            diffs.append(f"prompt_ids missing from actual ({len(missing)}): {missing[:5]}")
        if extra:
            diffs.append(f"prompt_ids only in actual ({len(extra)}): {extra[:5]}")
        if None in act_set:
            diffs.append("actual has null prompt_ids")
        if len(act_set) != n_act:
            seen: set = set()
            dups = [x for x in act_ids if x in seen or seen.add(x)]
            diffs.append(f"actual has duplicate prompt_ids: {dups[:5]}")
        common = [x for x in act_ids if x in ref_set]
        expected_order = [x for x in ref_ids if x in act_set]
        for pos, (a, e) in enumerate(zip(common, expected_order)):
            if a != e:
                diffs.append(
                    f"row order differs (rows not sorted by prompt_id): at common row {pos} "
                    f"expected {e!r}, actual {a!r}"
                )
                break
        act_pos = {}
        for i, x in enumerate(act_ids):
            act_pos.setdefault(x, i)
        pairs = [(ref, act_pos[ref["prompt_id"]]) for ref in ref_rows if ref["prompt_id"] in act_pos]
    else:
        pairs = list(zip(ref_rows, range(n_act)))

    for ref, i in pairs:
        pid = ref["prompt_id"]
        for col in EXACT_COLUMNS:
            if not exact_equal(ref[col], actual[col][i]):
                diffs.append(
                    f"prompt_id={pid!r} column={col}: expected {ref[col]!r}, actual {actual[col][i]!r}"
                )
        for col in TOLERANT_COLUMNS:
            if not close_enough(ref[col], actual[col][i]):
                diffs.append(
                    f"prompt_id={pid!r} column={col}: expected {ref[col]!r}, actual {actual[col][i]!r}"
                )
    return diffs


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def normalise_argv(argv: list[str]) -> list[str]:
    """Join ``--chosen-k -inf`` into ``--chosen-k=-inf`` so argparse accepts it."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--chosen-k", "--rejected-k") and i + 1 < len(argv):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def parse_k(text: str, flag: str) -> float:
    try:
        k = float(text)
    except ValueError:
        raise InputError(f"{flag}: {text!r} is not a number (use e.g. 1.5, -2, inf, -inf)")
    if math.isnan(k):
        raise InputError(f"{flag}: NaN is not a valid position")
    return k


def build_strategy(args: argparse.Namespace) -> Strategy:
    ddof = float(args.ddof)
    if args.strategy != "positions" and (args.chosen_k is not None or args.rejected_k is not None):
        raise InputError("--chosen-k/--rejected-k only apply to --strategy positions")
    if args.strategy == "sweet-spot":
        return Strategy("sweet-spot", "sweet-spot", math.inf, -2.0, args.seed, ddof)
    if args.strategy == "max-min":
        return Strategy("max-min", "max-min", math.inf, -math.inf, args.seed, ddof)
    if args.strategy == "scalable":
        return Strategy("scalable", "scalable", math.inf, -math.inf, args.seed, ddof)
    if args.chosen_k is None or args.rejected_k is None:
        raise InputError("--strategy positions needs --chosen-k and --rejected-k")
    kc = parse_k(args.chosen_k, "--chosen-k")
    kr = parse_k(args.rejected_k, "--rejected-k")
    label = f"positions({args.chosen_k},{args.rejected_k})"
    return Strategy("positions", label, kc, kr, args.seed, ddof)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="Recompute prefsmith's pair selection and compare it with prefsmith's output.",
    )
    ap.add_argument("--input", required=True, help="input Parquet file or directory")
    ap.add_argument("--actual", help="prefsmith select output directory (with _manifest.json)")
    ap.add_argument("--strategy", required=True, choices=STRATEGIES)
    ap.add_argument("--chosen-k", help="positions strategy: k of the chosen response")
    ap.add_argument("--rejected-k", help="positions strategy: k of the rejected response")
    ap.add_argument("--seed", type=int, default=0, help="run seed of the scalable strategy (default 0)")
    ap.add_argument("--ddof", default="0", help="delta degrees of freedom of σ (default 0)")
    ap.add_argument("--write-reference", metavar="FILE.parquet",
                    help="write the reference pair table here")
    ap.add_argument("--max-diffs", type=int, default=10, help="differences to print (default 10)")
    args = ap.parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))

    if args.actual is None and args.write_reference is None:
        ap.error("give --actual DIR (compare) and/or --write-reference FILE")
    if not 0 <= args.seed <= MASK64:
        ap.error("--seed must be in 0..2^64-1")

    try:
        strat = build_strategy(args)
        float(args.ddof)
        _, prompts = read_prompts(args.input)
        rows, skipped = select_all(prompts, strat)
        if args.write_reference:
            pq.write_table(rows_to_table(rows), args.write_reference)
            print(
                f"reference_select: {strat.label}: wrote {len(rows)} pairs from "
                f"{len(prompts)} prompts to {args.write_reference}, "
                f"skipped {json.dumps(skipped)}"
            )
        if args.actual is None:
            return 0
        manifest, actual, problems = read_actual(args.actual)
    except (InputError, ValueError, OSError, pa.ArrowException) as e:
        print(f"reference_select: error: {e}", file=sys.stderr)
        return 2

    diffs = compare(rows, skipped, manifest, actual, problems)
    if diffs:
        print(f"reference_select: {strat.label}: {len(diffs)} difference(s); first {min(len(diffs), args.max_diffs)}:")
        for d in diffs[: args.max_diffs]:
            print(f"  {d}")
        return 1
    print(f"reference_select: {strat.label}: {len(rows)} pairs match, skipped {json.dumps(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
