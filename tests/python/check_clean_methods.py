#!/usr/bin/env python3
"""Compares `prefsmith clean --method M` with the independent numpy reference
(`reference_clean_methods.py`, written from `docs/ALGORITHMS.md` §5 alone) for every method.

Cases: random prompts (n from 2 to 20, 1-10 judgments per pair, 0-50 % of pairs unjudged, judge
noise and systematically flipped pairs, soft and 0/1 outcomes, rows in random orientation,
non-contiguous response indices) plus the hand cases: n = 2, every judgment a tie, a response
judged only once, a prompt where one response is never judged against the rest's winners.

Per prompt and method: the scores agree to 1e-6 (absolute, relative to max(1, max |score|));
stable-pcp to 1e-5, an iterative solver stopped at a relative step of 1e-7), the ranks agree
wherever the reference's scores are not within 1e-6 of a tie, and the flagged counts agree.

    check_clean_methods.py --prefsmith BIN [--prompts 60] [--seed 7]

Prints "clean methods match the reference on K prompts" and exits 0 when all agree.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(__file__))
import reference_clean_methods as reference  # noqa: E402

METHODS = ["bt-trim", "bt-mle", "borda", "pcp", "stable-pcp"]


def random_prompt(rng):
    n = int(rng.integers(2, 21))
    truth = rng.normal(0.0, 1.5, n)
    per_pair = int(rng.choice([1, 3, 10]))
    missing = float(rng.choice([0.0, 0.2, 0.5]))
    flip_pair = float(rng.choice([0.0, 0.1, 0.2]))
    soft = rng.random() < 0.2
    rows = []
    for i in range(n):
        for j in range(i + 1, n):
            if rng.random() < missing:
                continue
            flipped = rng.random() < flip_pair
            p = 1.0 / (1.0 + np.exp(truth[j] - truth[i]))
            for _ in range(per_pair):
                outcome = round(p, 3) if soft else float(rng.random() < p)
                if flipped:
                    outcome = 1.0 - outcome
                rows.append((i, j, outcome) if rng.random() < 0.5 else (j, i, 1.0 - outcome))
    return rows


def hand_prompts():
    ties = [(i, j, 0.5) for i in range(4) for j in range(i + 1, 4)]
    return {
        "hand-two": [(0, 1, 1.0)],
        "hand-ties": ties,
        "hand-once": [(0, 1, 1.0), (0, 2, 1.0), (1, 2, 0.0), (2, 3, 1.0)],
        "hand-star": [(0, k, 1.0) for k in range(1, 6)] * 3,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefsmith", required=True)
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    prompts = hand_prompts()
    for k in range(args.prompts):
        prompts[f"random-{k:03d}"] = random_prompt(rng)
    # Non-contiguous response indices: every index times 3 plus 5.
    ids, first, second, outcomes = [], [], [], []
    for pid, rows in prompts.items():
        for i, j, o in rows:
            ids.append(pid)
            first.append(3 * i + 5)
            second.append(3 * j + 5)
            outcomes.append(o)
    table = pa.table({"prompt_id": ids, "i": pa.array(first, pa.int64()),
                      "j": pa.array(second, pa.int64()), "outcome": outcomes})
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "judgments.parquet")
        pq.write_table(table, path)
        for method in METHODS:
            out = os.path.join(tmp, method)
            run = subprocess.run([args.prefsmith, "clean", "--input", path, "--output", out,
                                  "--input-format", "comparisons", "--method", method],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"prefsmith clean --method {method} failed:\n{run.stderr}")
            got = pq.read_table(out).to_pylist()
            by_prompt = {}
            for row in got:
                by_prompt.setdefault(row["prompt_id"], []).append(row)
            for pid, rows in prompts.items():
                indices = sorted({v for i, j, _ in rows for v in (i, j)})
                position = {v: k for k, v in enumerate(indices)}
                expected = reference.clean(method, len(indices),
                                           [(position[i], position[j], o) for i, j, o in rows])
                mine = sorted(by_prompt.get(pid, []), key=lambda r: r["response_index"])
                if [r["response_index"] for r in mine] != [3 * v + 5 for v in indices]:
                    failures.append(f"{method} {pid}: response indices differ")
                    continue
                scores = np.array([r["clean_score"] for r in mine])
                want = np.array(expected["scores"])
                scale = max(1.0, float(np.max(np.abs(want))) if len(want) else 1.0)
                tol = (1e-5 if method == "stable-pcp" else 1e-6) * scale
                if np.max(np.abs(scores - want)) > tol:
                    failures.append(f"{method} {pid}: scores {scores.tolist()} vs {want.tolist()}")
                    continue
                # Ranks must agree except among scores within the tolerance of each other.
                for a in range(len(want)):
                    for b in range(len(want)):
                        if want[a] > want[b] + 2 * tol and not mine[a]["clean_rank"] < mine[b]["clean_rank"]:
                            failures.append(f"{method} {pid}: ranks {a} {b}")
                flags = [r["flagged_comparisons"] for r in mine]
                if flags != list(expected["flagged_per_response"]):
                    failures.append(f"{method} {pid}: flags {flags} vs {expected['flagged_per_response']}")
    for f in failures[:20]:
        print(f)
    if failures:
        sys.exit(f"{len(failures)} disagreements")
    print(f"clean methods match the reference on {len(prompts)} prompts")


if __name__ == "__main__":
    main()
