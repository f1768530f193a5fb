#!/usr/bin/env python3
"""Speed of `prefsmith clean --method M` on pairwise judgments against the numpy reference of
the same method (`tests/python/reference_clean_methods.py`), at n = 16 responses per prompt.

Data: `--prompts` prompts of the recovery grid's generator (`benches/clean_grid.py`), n = 16,
20 % of pairs unjudged, 3 judgments per judged pair, 10 % of judgments flipped: about 290 rows
per prompt, written to one comparisons Parquet file. prefsmith runs the whole stage (read, group,
solve, write) on every prompt; numpy runs the reference on the first `--numpy-prompts` prompts
in process (no I/O counted). Rates are prompts per second, the median of `--runs` interleaved
runs; the ratio is prefsmith's rate over numpy's.

    clean_methods_vs_numpy.py --prefsmith BIN [--prompts 20000] [--numpy-prompts 300] [--runs 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
import clean_grid  # noqa: E402
import reference_clean_methods as reference  # noqa: E402

METHODS = ["bt-trim", "bt-mle", "borda", "pcp", "stable-pcp"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefsmith", required=True)
    ap.add_argument("--prompts", type=int, default=20000)
    ap.add_argument("--numpy-prompts", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    rng = np.random.default_rng(16)
    prompts = []
    for p in range(args.prompts):
        _, i, j, o = clean_grid.draw_prompt(rng, 16, 0.2, 3, "judgment", 0.1)
        prompts.append((f"p{p:06d}", 0, None, i, j, o))
    tmp = tempfile.mkdtemp(prefix="clean-speed-")
    path = os.path.join(tmp, "comparisons.parquet")
    rows = clean_grid.write_comparisons(prompts, path)
    print(f"{args.prompts} prompts, {rows} judgment rows, n = 16 (prefsmith: all prompts, whole "
          f"stage; numpy: first {args.numpy_prompts} prompts, solve only)")
    # The reference's input, built once outside the timing.
    problems = []
    for _, _, _, i, j, o in prompts[:args.numpy_prompts]:
        indices = np.unique(np.concatenate([i, j]))
        position = {v: k for k, v in enumerate(indices.tolist())}
        problems.append((len(indices), [(position[a], position[b], c)
                                        for a, b, c in zip(i.tolist(), j.tolist(), o.tolist())]))
    print("| method | prefsmith prompts/s | numpy prompts/s | ratio |")
    print("|---|---:|---:|---:|")
    for method in [m for m in args.methods.split(",") if m]:
        ours, theirs = [], []
        for run in range(args.runs):
            out = os.path.join(tmp, f"{method}-{run}")
            start = time.perf_counter()
            subprocess.run([args.prefsmith, "clean", "--input", path, "--output", out,
                            "--input-format", "comparisons", "--method", method],
                           check=True, stdout=subprocess.DEVNULL)
            ours.append(args.prompts / (time.perf_counter() - start))
            start = time.perf_counter()
            for n, judgments in problems:
                reference.clean(method, n, judgments)
            theirs.append(args.numpy_prompts / (time.perf_counter() - start))
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"| {method} | {a:,.0f} | {b:,.0f} | {a / b:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
