#!/usr/bin/env python3
"""Independent reference for prefsmith's ``select-margin`` stage (BeeS / DM-MUL).

Written from the spec (`docs/ALGORITHMS.md` §3) without looking at the Rust code's
structure. Two commands:

``make-input --source UF.parquet --output OUT.parquet``
    Copies the UltraFeedback pairs and adds four deterministic synthetic
    log-prob columns (``policy_logp_chosen``, ``ref_logp_chosen``,
    ``policy_logp_rejected``, ``ref_logp_rejected``), with a few NaN, inf and
    null values so that some pairs are not eligible.

``make-input … --score-scale S`` multiplies both scores by S first (a
narrower rating scale, for the unit rule of ``margin-scale = auto``).

``check --input IN.parquet --actual DIR [--top-k K | --fraction F] [--sources S]``
    Recomputes margins, M2 per source, the fused logit, the ranking and the
    top k, and compares them with the stage output in DIR (rows, their order
    by ``selected_rank``, the added columns, and the manifest's M2, counts
    and shortfall). Prints ``select-margin matches`` and exits 0 when equal.

The rules, as the spec states them
----------------------------------
* m_ex = score_chosen - score_rejected; m_im = (policy_c - ref_c) -
  (policy_r - ref_r); a non-finite or null margin is not finite.
* M2 per source over its finite margins: M2 = max(trunc(max/d), M1 + 1);
  while M2 + 1 <= max and tail(M2 + 1) >= 30 and tail(M2 + 1) >= max -
  (M2 + 1): M2 += 1; M2 = min(M2, max); if M2 <= M1: M2 = M1 + 1. d = 1.5
  external, 2 implicit; M1 = -2; tail(t) = #margins >= t.
* p = (clip(m, M1, M2) - M1) / (M2 - M1); logit P = sum over sources of
  log(q) - log(1 - q), q = clip(p, eps, 1 - eps), eps = 2**-52.
* margin-scale = auto (the default, §3.11): a source whose 90th percentile of
  |finite margins| (numpy's linear interpolation) is in (0, 4) is measured in
  units of that quantile / 4 — its margins are divided by the unit before
  everything above and below; otherwise (and under `paper`) the unit is 1.
* eligible = every used margin finite; rank by logit P descending, then by
  sum(m_k / s_k) descending (s_k = M2_k, or M2_k - M1 for every source when
  some M2 <= 0), then input row order; keep k = top-k or ceil(f * eligible).
"""

import argparse
import glob
import json
import math
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

M1 = -2.0
EPS = 2.0**-52
LOGP = ["policy_logp_chosen", "ref_logp_chosen", "policy_logp_rejected", "ref_logp_rejected"]


def make_input(source, output, score_scale=1.0):
    table = pq.read_table(source)
    n = table.num_rows
    if score_scale != 1.0:
        # The same ratings on a narrower scale (a judge in [0, 1]): margins below 1.
        for name in ("score_chosen", "score_rejected"):
            i = table.schema.get_field_index(name)
            scaled = pa.array([v * score_scale for v in table.column(name).to_pylist()])
            table = table.set_column(i, name, scaled)
    rng = np.random.default_rng(20261128)
    ref_c = rng.normal(-300.0, 80.0, n)
    ref_r = rng.normal(-300.0, 80.0, n)
    pol_c = ref_c + rng.normal(0.5, 3.0, n)
    pol_r = ref_r + rng.normal(-0.5, 3.0, n)
    pol_c[3] = np.nan
    pol_c[17] = np.nan
    ref_r[29] = np.inf
    columns = {"policy_logp_chosen": pol_c, "ref_logp_chosen": ref_c,
               "policy_logp_rejected": pol_r, "ref_logp_rejected": ref_r}
    for name, values in columns.items():
        mask = np.zeros(n, dtype=bool)
        if name == "ref_logp_chosen":
            mask[41] = True  # a null log-prob
        table = table.append_column(name, pa.array(values, mask=mask))
    pq.write_table(table, output)


def margins_of(table, source):
    def col(name):
        return np.array([np.nan if v is None else v for v in table.column(name).to_pylist()],
                        dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if source == "external":
            m = col("score_chosen") - col("score_rejected")
        else:
            m = (col("policy_logp_chosen") - col("ref_logp_chosen")) - (
                col("policy_logp_rejected") - col("ref_logp_rejected"))
    m[~np.isfinite(m)] = np.nan
    return m


def upper_bound(m, d):
    f = m[np.isfinite(m)]
    mx = float(f.max())
    m2 = float(max(math.trunc(mx / d), M1 + 1))
    while m2 + 1 <= mx and (f >= m2 + 1).sum() >= 30 and (f >= m2 + 1).sum() >= mx - (m2 + 1):
        m2 += 1
    m2 = min(m2, mx)
    if m2 <= M1:
        m2 = M1 + 1
    return m2


def logit(p):
    q = min(max(p, EPS), 1 - EPS)
    return math.log(q) - math.log(1 - q)


def unit_of(m, margin_scale):
    f = np.abs(m[np.isfinite(m)])
    if margin_scale != "auto" or f.size == 0:
        return 1.0
    q = float(np.percentile(f, 90))
    return q / 4.0 if 0 < q < 4 else 1.0


def reference(table, sources, top_k, fraction, margin_scale="auto"):
    n = table.num_rows
    raw = {s: margins_of(table, s) for s in sources}
    units = {s: unit_of(raw[s], margin_scale) for s in sources}
    margins = {s: raw[s] / units[s] for s in sources}
    divisor = {"external": 1.5, "implicit": 2.0}
    m2 = {s: upper_bound(margins[s], divisor[s]) for s in sources}
    scale = dict(m2)
    if any(v <= 0 for v in m2.values()):
        scale = {s: m2[s] - M1 for s in sources}
    rows = []
    for i in range(n):
        ms = [margins[s][i] for s in sources]
        if not all(math.isfinite(m) for m in ms):
            continue
        lg = 0.0
        tie = 0.0
        for s, m in zip(sources, ms):
            p = (min(max(m, M1), m2[s]) - M1) / (m2[s] - M1)
            lg += logit(p)
            tie += m / scale[s]
        rows.append((lg, tie, i))
    eligible = len(rows)
    wanted = top_k if top_k is not None else math.ceil(fraction * eligible)
    rows.sort(key=lambda r: (-r[0], -r[1], r[2]))
    return rows[:wanted], m2, eligible, wanted, raw, units


def read_actual(directory):
    manifest = json.load(open(os.path.join(directory, "_manifest.json")))
    parts = [os.path.join(directory, p["path"]) for p in manifest["parts"]]
    assert sorted(parts) == sorted(glob.glob(os.path.join(directory, "part-*.parquet")))
    return pa.concat_tables([pq.read_table(p) for p in parts]), manifest


def check(args):
    sources = args.sources.split(",")
    table = pq.read_table(args.input)
    selected, m2, eligible, wanted, margins, units = reference(
        table, sources, args.top_k, args.fraction, args.margin_scale)
    actual, manifest = read_actual(args.actual)
    problems = []
    stats = manifest["stats"]
    if stats["m2"] != m2:
        problems.append(f"M2 {stats['m2']} != {m2}")
    for s, u in units.items():
        if not math.isclose(stats["margin_units"][s], u, rel_tol=1e-12):
            problems.append(f"unit of {s}: {stats['margin_units'][s]} != {u}")
    expect = {"eligible": eligible, "dropped_non_finite": table.num_rows - eligible,
              "wanted": wanted, "selected": len(selected),
              "shortfall": max(0, wanted - eligible)}
    for key, value in expect.items():
        if stats[key] != value:
            problems.append(f"manifest {key} = {stats[key]}, expected {value}")
    ids = actual.column("source_index").to_pylist()
    ranks = actual.column("selected_rank").to_pylist()
    by_rank = [i for _, i in sorted(zip(ranks, ids))]
    source_index = table.column("source_index").to_pylist()
    expected = [source_index[i] for _, _, i in selected]
    if by_rank != expected:
        first = next((k for k, (a, b) in enumerate(zip(by_rank, expected)) if a != b), None)
        problems.append(f"order differs (lengths {len(by_rank)} vs {len(expected)}; first "
                        f"difference at rank {None if first is None else first + 1})")
    # Rows are written in prompt_id order (byte order), ties in input order.
    pids = actual.column("prompt_id").to_pylist()
    if pids != sorted(pids, key=lambda s: s.encode()):
        problems.append("rows are not sorted by prompt_id")
    logits = dict(zip(ids, actual.column("preference_logit").to_pylist()))
    probs = dict(zip(ids, actual.column("preference_probability").to_pylist()))
    index_of = {v: i for i, v in enumerate(source_index)}
    for lg, _, i in selected:
        sid = source_index[i]
        if sid in logits and not math.isclose(logits[sid], lg, rel_tol=1e-12, abs_tol=1e-12):
            problems.append(f"logit of {sid}: {logits[sid]} != {lg}")
        if sid in probs and not math.isclose(probs[sid], 1 / (1 + math.exp(-lg)), rel_tol=1e-12):
            problems.append(f"probability of {sid}: {probs[sid]}")
    for s in ("external", "implicit"):
        column = actual.column(f"margin_{s}").to_pylist()
        try:
            values = margins.get(s)
            if values is None:
                values = margins_of(table, s)
        except KeyError:
            values = None
        for sid, got in zip(ids, column):
            want = None if values is None else values[index_of[sid]]
            want = None if want is None or not math.isfinite(want) else want
            if (got is None) != (want is None) or (got is not None and got != want):
                problems.append(f"margin_{s} of {sid}: {got} != {want}")
                break
    if problems:
        print("\n".join(problems[:10]))
        return 1
    print(f"select-margin matches: {len(selected)} pairs of {eligible} eligible, M2 {m2}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-input")
    make.add_argument("--source", required=True)
    make.add_argument("--output", required=True)
    make.add_argument("--score-scale", type=float, default=1.0)
    chk = sub.add_parser("check")
    chk.add_argument("--input", required=True)
    chk.add_argument("--margin-scale", default="auto")
    chk.add_argument("--actual", required=True)
    chk.add_argument("--top-k", type=int)
    chk.add_argument("--fraction", type=float)
    chk.add_argument("--sources", default="external,implicit")
    args = parser.parse_args()
    if args.command == "make-input":
        make_input(args.source, args.output, args.score_scale)
        return 0
    if (args.top_k is None) == (args.fraction is None):
        parser.error("give --top-k or --fraction")
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
