#!/usr/bin/env python3
"""Benchmark ``prefsmith clean`` against numpy running the same robust PCA per prompt.

prefsmith cleans every prompt of ``--data`` (long layout from ``prefsmith synth``: prompt_id,
response_index, reward) with the full stage (read, solve, write). numpy runs the reference
implementation of ``tests/python/reference_rpca.py`` (inexact ALM, LAPACK SVD through
``np.linalg.svd``) on the first ``--numpy-prompts`` prompts, building the same score matrices
X_ij = s_i - s_j over the finite rewards; it also computes Borda ranks and checks that they
equal prefsmith's for those prompts. Rates are prompts per second; runs are interleaved, the
median is reported.

    clean_vs_numpy.py --prefsmith BIN --data DIR --runs 3 --numpy-prompts 1000
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from reference_rpca import pcp  # noqa: E402


def prompts_of(data, limit):
    table = pa.concat_tables(
        [pq.read_table(os.path.join(data, f), columns=["prompt_id", "response_index", "reward"])
         for f in sorted(os.listdir(data)) if f.endswith(".parquet")])
    ids = table.column("prompt_id").to_pylist()
    idx = table.column("response_index").to_numpy()
    rew = table.column("reward").to_numpy(zero_copy_only=False)
    groups = {}
    order = []
    for p, i, r in zip(ids, idx, rew):
        if p not in groups:
            if len(order) == limit:
                break
            groups[p] = []
            order.append(p)
        if r is not None and np.isfinite(r):
            groups[p].append((i, r))
    return order, groups


def numpy_clean(groups, order):
    ranks = {}
    for p in order:
        rows = sorted(groups[p])
        s = np.array([r for _, r in rows])
        n = len(s)
        if n <= 2 or np.all(s == s[0]):
            continue
        x = s[:, None] - s[None, :]
        low, _, _ = pcp(x, None)
        if np.linalg.norm(low) <= 1e-9 * np.linalg.norm(x):
            continue
        low = (low - low.T) / 2
        borda = low.mean(axis=1)
        # Ties (to 1e-9 of the largest magnitude) go to the lower index, as in prefsmith.
        scale = np.abs(borda).max()
        key = np.round(borda / scale * 1e9) if scale > 0 else np.zeros(n)
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(-key, kind="stable")] = np.arange(1, n + 1)
        ranks[p] = {i: int(k) for (i, _), k in zip(rows, rank)}
    return ranks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefsmith", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--numpy-prompts", type=int, default=1000)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-clean-")
    try:
        out = os.path.join(tmp, "cleaned")
        order, groups = prompts_of(args.data, args.numpy_prompts)
        total_prompts = None
        ps_times, np_times = [], []
        for run in range(args.runs):
            start = time.perf_counter()
            subprocess.run([args.prefsmith, "clean", "--input", args.data, "--output", out],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ps_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            ranks = numpy_clean(groups, order)
            np_times.append(time.perf_counter() - start)
            if run == 0:
                t = pq.read_table(out, columns=["prompt_id", "response_index", "clean_rank"]).to_pylist()
                total_prompts = len({r["prompt_id"] for r in t})
                mine = {}
                for r in t:
                    if r["prompt_id"] in ranks and r["clean_rank"] is not None:
                        mine.setdefault(r["prompt_id"], {})[r["response_index"]] = r["clean_rank"]
                same = sum(mine.get(p) == ranks[p] for p in ranks)
                print(f"ranks equal on {same} of {len(ranks)} numpy-cleaned prompts")
        ps_rate = total_prompts / statistics.median(ps_times)
        np_rate = len(order) / statistics.median(np_times)
        print(f"prefsmith: {total_prompts} prompts, median {statistics.median(ps_times):.2f} s "
              f"-> {ps_rate:.0f} prompts/s (runs {', '.join(f'{t:.2f}' for t in ps_times)})")
        print(f"numpy: {len(order)} prompts, median {statistics.median(np_times):.2f} s "
              f"-> {np_rate:.0f} prompts/s")
        print(f"prefsmith / numpy rate = {ps_rate / np_rate:.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
