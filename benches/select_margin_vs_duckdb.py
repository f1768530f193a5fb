#!/usr/bin/env python3
"""Benchmark ``prefsmith select-margin`` against DuckDB doing the same arithmetic in SQL.

Both read the same pair shards (``make_margin_pairs.py``) and write the top K pairs by the
fused BeeS logit (`docs/ALGORITHMS.md` §3) with the five added columns, sorted by prompt_id, to Parquet.
DuckDB is given M2 (prefsmith's tail-sparsity search is not expressed in SQL): the values come
from a first prefsmith run's manifest. DuckDB's query: margins, clipped probabilities, the sum
of clipped logits, eligibility (``isfinite``), a top-K ``ORDER BY logit DESC, tie DESC,
filename, file_row_number LIMIT K`` (its top-N operator), ``row_number()`` over that order for
``selected_rank``, then ``ORDER BY prompt_id``.

Each command is a child process (peak RSS from ``os.wait4``), runs are interleaved, medians of
``--runs`` (default 5). After the first run the script checks that both selected the same
pairs with the same ranks.

    select_margin_vs_duckdb.py --prefsmith BIN --data DIR --top-k 1000000 --runs 5 --threads 2
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

EPS = "2.220446049250313e-16"

DUCKDB_CHILD = r"""
import sys, duckdb
query, threads = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute(query)
"""


def duckdb_query(data, out, k, m2e, m2i):
    clip = lambda x: f"greatest(least({x}, 1 - {EPS}), {EPS})"
    logit = lambda p: f"(ln({clip(p)}) - ln(1 - {clip(p)}))"
    pe = f"((least(greatest(margin_external, -2.0), {m2e}) + 2.0) / ({m2e} + 2.0))"
    pi = f"((least(greatest(margin_implicit, -2.0), {m2i}) + 2.0) / ({m2i} + 2.0))"
    return f"""
COPY (
  WITH m AS (
    SELECT *, score_chosen - score_rejected AS margin_external,
      (policy_logp_chosen - ref_logp_chosen) - (policy_logp_rejected - ref_logp_rejected) AS margin_implicit
    FROM read_parquet('{data}/*.parquet', filename = true, file_row_number = true)
  ), top AS (
    SELECT *, 0.0 + {logit(pe)} + {logit(pi)} AS preference_logit,
      margin_external / {m2e} + margin_implicit / {m2i} AS tie
    FROM m WHERE isfinite(margin_external) AND isfinite(margin_implicit)
    ORDER BY preference_logit DESC, tie DESC, filename, file_row_number
    LIMIT {k}
  )
  SELECT * EXCLUDE (tie, filename, file_row_number, preference_logit),
    preference_logit, 1.0 / (1.0 + exp(-preference_logit)) AS preference_probability,
    row_number() OVER (ORDER BY preference_logit DESC, tie DESC, filename, file_row_number) AS selected_rank
  FROM top ORDER BY prompt_id
) TO '{out}' (FORMAT parquet)
"""


def timed(cmd):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode()
    if status != 0:
        sys.exit(f"command failed: {' '.join(cmd[:3])}...\n{err}")
    return elapsed, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefsmith", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--top-k", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-margin-")
    try:
        ps_out = os.path.join(tmp, "prefsmith")
        dd_out = os.path.join(tmp, "duckdb.parquet")
        ps_cmd = [args.prefsmith, "--threads", str(args.threads), "select-margin", "--input",
                  args.data, "--output", ps_out, "--top-k", str(args.top_k)]
        for f in os.listdir(args.data):  # warm the page cache
            with open(os.path.join(args.data, f), "rb") as h:
                while h.read(1 << 24):
                    pass
        timed(ps_cmd)
        stats = json.load(open(os.path.join(ps_out, "_manifest.json")))["stats"]
        m2e, m2i = stats["m2"]["external"], stats["m2"]["implicit"]
        query = duckdb_query(args.data, dd_out, args.top_k, m2e, m2i)
        dd_cmd = [sys.executable, "-c", DUCKDB_CHILD, query, str(args.threads)]
        times = {"prefsmith": [], "duckdb": []}
        rss = {"prefsmith": [], "duckdb": []}
        for run in range(args.runs):
            for name, cmd in (("prefsmith", ps_cmd), ("duckdb", dd_cmd)):
                t, r = timed(cmd)
                times[name].append(t)
                rss[name].append(r)
            if run == 0:
                a = pq.read_table(ps_out).select(["prompt_id", "selected_rank"]).to_pylist()
                b = pq.read_table(dd_out).select(["prompt_id", "selected_rank"]).to_pylist()
                same = a == b
                print(f"same pairs and ranks: {same} ({len(a)} vs {len(b)} rows)")
                if not same:
                    sys.exit(1)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"M2 external {m2e}, implicit {m2i}; top-k {args.top_k}; runs {args.runs}; "
              f"threads {args.threads}; nproc {os.cpu_count()}")
        print("| command | median s | min s | max s | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|")
        for k in times:
            print(f"| {k} | {med[k]:.2f} | {min(times[k]):.2f} | {max(times[k]):.2f} | "
                  f"{statistics.median(rss[k]):.0f} |")
        print(f"prefsmith / duckdb = {med['prefsmith'] / med['duckdb']:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
