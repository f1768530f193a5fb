#!/usr/bin/env python3
"""Benchmark ``prefsmith select`` against DuckDB and a plain-scan floor.

What it is for
--------------
Puts a number on how prefsmith's sweet-spot pair selection compares with the
obvious alternative -- the same computation as one DuckDB SQL statement --
and with the cost of merely scanning the input (the floor no selector can go
below).  All three commands read the same long-layout Parquet shards.

Input
-----
``--data DIR`` holds ``*.parquet`` shards in the long layout with columns
``prompt_id`` (string), ``prompt`` (string), ``response`` (string),
``reward`` (double) and ``response_index`` (int64), e.g. 1,000,000 prompts x
16 responses in 8 shards.

What is timed (each command is a separate subprocess, so that its peak RSS
is known exactly from ``os.wait4``'s ``ru_maxrss``, KiB on Linux):

(a) prefsmith: ``BIN select --input DIR --output TMPOUT`` (the default
    strategy, sweet-spot), plus any ``--prefsmith-arg`` values.
(b) DuckDB (Python package, ``SET threads=N``, N from ``--threads``,
    default 2) in a child Python process: one SQL statement computing, per
    prompt, the window mean and ``stddev_pop`` of the valid (non-null, finite)
    rewards, chosen = the max reward (ties: lowest response_index), rejected
    = the other response nearest μ - 2σ (ties: lowest response_index),
    skipping prompts with < 2 valid rewards, max == min, or no margin; the
    same 13 output columns as prefsmith, written with
    ``COPY (... ORDER BY prompt_id) TO 'file.parquet'``.  ``--duckdb-query
    agg`` swaps the window formulation for a GROUP BY / arg_min one.
    The child's RSS includes the Python interpreter; the report also gives
    the RSS of ``python -c "import duckdb"`` alone for scale.
(c) the floor: ``BIN sql "SELECT count(*), sum(length(prompt_id)),
    sum(length(prompt)), sum(length(response)), sum(reward),
    sum(response_index) FROM t" --table t=DIR`` -- every column read, no
    grouping, nothing written.  It is
    tried once before timing; if it fails, a DuckDB scan of the same query
    is used instead and the report says so.

Every command runs ``--runs`` times (default 5), interleaved (a, b, c, a, b,
c, ...); the median wall time is reported with min and max, and the median
peak RSS.  The page cache is warmed once (every input byte read) before
timing.  After the first run the script checks that DuckDB wrote as many
pairs as prefsmith's ``_manifest.json`` ``pairs_written`` says; a mismatch is
reported and makes the exit status 1.

Usage
-----
::

    select_vs_duckdb.py --prefsmith target/release/prefsmith --data bench-data \\
        --runs 5 --threads 2 --markdown bench.md

Output: a markdown table (printed, and written to ``--markdown`` if given)
with machine information (nproc, CPU model, memory), data size, versions.
Outputs go to a temporary directory (``--tmpdir`` to choose where) that is
removed at the end.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

SCAN_SQL = (
    "SELECT count(*), sum(length(prompt_id)), sum(length(prompt)), sum(length(response)), sum(reward), sum(response_index) FROM t"
)

# The DuckDB child process.  argv: glob, output file, threads, query name.
# ``{src}`` and ``{out}`` are replaced by quoted SQL string literals.
DUCKDB_CHILD = r'''
import sys, duckdb

WINDOW_SQL = """
COPY (
  WITH v AS (
    SELECT prompt_id, prompt, response, reward, response_index,
           avg(reward)        OVER w AS mu,
           stddev_pop(reward) OVER w AS sigma,
           count(*)           OVER w AS n_valid,
           max(reward)        OVER w AS mx,
           min(reward)        OVER w AS mn,
           row_number() OVER (PARTITION BY prompt_id
                              ORDER BY reward DESC, response_index ASC) AS rk
    FROM read_parquet({src})
    WHERE reward IS NOT NULL AND isfinite(reward)
    WINDOW w AS (PARTITION BY prompt_id)
  ),
  e AS (SELECT * FROM v WHERE n_valid >= 2 AND mx > mn),
  c AS (SELECT * FROM e WHERE rk = 1),
  r AS (
    SELECT prompt_id, response, reward, response_index
    FROM e
    WHERE rk > 1
    QUALIFY row_number() OVER (PARTITION BY prompt_id
                               ORDER BY abs(reward - (mu - 2 * sigma)), response_index) = 1
  )
  SELECT c.prompt_id, c.prompt,
         c.response AS chosen, r.response AS rejected,
         c.reward AS score_chosen, r.reward AS score_rejected,
         c.reward - r.reward AS rating_gap,
         c.response_index AS chosen_index, r.response_index AS rejected_index,
         c.mu AS reward_mean, c.sigma AS reward_std, c.n_valid,
         'sweet-spot' AS strategy
  FROM c JOIN r ON c.prompt_id = r.prompt_id
  WHERE r.reward < c.reward
  ORDER BY c.prompt_id
) TO {out} (FORMAT parquet)
"""

AGG_SQL = """
COPY (
  WITH v AS (
    SELECT prompt_id, prompt, response, reward, response_index
    FROM read_parquet({src})
    WHERE reward IS NOT NULL AND isfinite(reward)
  ),
  s AS (
    SELECT prompt_id,
           avg(reward) AS mu, stddev_pop(reward) AS sigma, count(*) AS n_valid,
           arg_min({{'i': response_index, 'r': reward, 'text': response, 'prompt': prompt}},
                   (-reward, response_index)) AS c
    FROM v
    GROUP BY prompt_id
    HAVING count(*) >= 2 AND max(reward) > min(reward)
  ),
  r AS (
    SELECT v.prompt_id,
           arg_min({{'i': v.response_index, 'r': v.reward, 'text': v.response}},
                   (abs(v.reward - (s.mu - 2 * s.sigma)), v.response_index)) AS r
    FROM v JOIN s ON v.prompt_id = s.prompt_id
    WHERE v.response_index <> s.c.i
    GROUP BY v.prompt_id
  )
  SELECT s.prompt_id, s.c.prompt AS prompt,
         s.c.text AS chosen, r.r.text AS rejected,
         s.c.r AS score_chosen, r.r.r AS score_rejected,
         s.c.r - r.r.r AS rating_gap,
         s.c.i AS chosen_index, r.r.i AS rejected_index,
         s.mu AS reward_mean, s.sigma AS reward_std, s.n_valid,
         'sweet-spot' AS strategy
  FROM s JOIN r ON s.prompt_id = r.prompt_id
  WHERE r.r.r < s.c.r
  ORDER BY s.prompt_id
) TO {out} (FORMAT parquet)
"""

SCAN_SQL = """
SELECT count(*), sum(length(prompt_id)), sum(length(prompt)), sum(length(response)), sum(reward), sum(response_index)
FROM read_parquet({src})
"""

def lit(s):
    return "'" + s.replace("'", "''") + "'"

src, out, threads, query = sys.argv[1:5]
con = duckdb.connect()
con.execute(f"SET threads={int(threads)}")
sql = {"window": WINDOW_SQL, "agg": AGG_SQL, "scan": SCAN_SQL}[query]
res = con.execute(sql.format(src=lit(src), out=lit(out))).fetchall()
print(res)
'''


@dataclass
class Command:
    name: str
    argv: list[str]
    output: Optional[str] = None  # a path to remove after each run
    times: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)


def run_measured(argv: list[str], log_prefix: str) -> tuple[int, float, int, str]:
    """Run argv; return (exit code, wall seconds, peak RSS KiB, output tail)."""
    with open(log_prefix + ".out", "wb") as out, open(log_prefix + ".err", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, rusage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = ""
    for suffix in (".out", ".err"):
        with open(log_prefix + suffix, "rb") as fh:
            data = fh.read()
        if data:
            tail += data[-2000:].decode("utf-8", "replace")
    return proc.returncode, wall, rusage.ru_maxrss, tail


def remove(path: Optional[str]) -> None:
    if path is None:
        return
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def warm_page_cache(files: list[str]) -> int:
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            while True:
                b = fh.read(1 << 24)
                if not b:
                    break
                total += len(b)
    return total


def machine_info() -> dict[str, str]:
    info = {
        "nproc": str(os.cpu_count()),
        "usable CPUs (affinity)": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "?",
        "CPU model": "?",
        "memory": "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    info["CPU model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    info["memory"] = f"{kib / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    return info


def data_info(files: list[str]) -> dict[str, str]:
    import pyarrow.parquet as pq

    rows = 0
    for f in files:
        rows += pq.ParquetFile(f).metadata.num_rows
    size = sum(os.path.getsize(f) for f in files)
    return {"files": str(len(files)), "rows": f"{rows:,}", "size": f"{size / 2**20:.1f} MiB"}


def tool_version(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (p.stdout.strip() or p.stderr.strip()) if p.returncode == 0 else ""
    return text.splitlines()[0] if text else "?"


def count_parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark prefsmith select against DuckDB.")
    ap.add_argument("--prefsmith", required=True, help="path of the prefsmith binary")
    ap.add_argument("--data", required=True, help="directory of long-layout *.parquet shards")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads (default 2)")
    ap.add_argument("--markdown", metavar="OUT.md", help="also write the report here")
    ap.add_argument("--duckdb-query", choices=("window", "agg"), default="window",
                    help="DuckDB formulation: window functions (default) or GROUP BY/arg_min")
    ap.add_argument("--prefsmith-arg", action="append", default=[],
                    help="extra argument for 'prefsmith select' (repeatable, "
                         "e.g. --prefsmith-arg=--threads --prefsmith-arg=2)")
    ap.add_argument("--tmpdir", help="where to put outputs (default: the system temp dir)")
    args = ap.parse_args(argv)

    if args.runs < 1:
        ap.error("--runs must be >= 1")
    binary = os.path.abspath(args.prefsmith) if os.sep in args.prefsmith else (shutil.which(args.prefsmith) or args.prefsmith)
    if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        ap.error(f"prefsmith binary {args.prefsmith!r} not found or not executable")
    data = os.path.abspath(args.data)
    files = sorted(glob.glob(os.path.join(glob.escape(data), "*.parquet")))
    if not files:
        ap.error(f"no *.parquet files in {data}")
    src_glob = os.path.join(data, "*.parquet")

    tmp = tempfile.mkdtemp(prefix="prefsmith-bench-", dir=args.tmpdir)
    exit_code = 0
    try:
        child = os.path.join(tmp, "duckdb_child.py")
        with open(child, "w", encoding="utf-8") as fh:
            fh.write(DUCKDB_CHILD)
        logs = os.path.join(tmp, "logs")
        os.makedirs(logs)

        print(f"warming the page cache ({len(files)} files) ...", flush=True)
        warmed = warm_page_cache(files)

        # Pre-flight the floor command (cheap; also a second warm-up).
        scan_native = [binary, "sql", SCAN_SQL, "--table", f"t={data}"]
        rc, wall, _, tail = run_measured(scan_native, os.path.join(logs, "preflight-scan"))
        notes: list[str] = []
        if rc == 0:
            scan = Command("scan floor: prefsmith sql", scan_native)
        else:
            scan = Command(
                f"scan floor: DuckDB (threads={args.threads})",
                [sys.executable, child, src_glob, "-", str(args.threads), "scan"],
            )
            notes.append(
                f"`prefsmith sql` failed (exit {rc}), so the scan floor is a DuckDB scan "
                f"with threads={args.threads}. Its output: {tail.strip()[-300:]!r}"
            )
            print(f"note: prefsmith sql failed (exit {rc}); using a DuckDB scan as the floor", flush=True)

        pref_out = os.path.join(tmp, "prefsmith-out")
        duck_out = os.path.join(tmp, "duckdb-out.parquet")
        pref = Command(
            "prefsmith select (sweet-spot)",
            [binary, "select", "--input", data, "--output", pref_out, *args.prefsmith_arg],
            output=pref_out,
        )
        duck = Command(
            f"DuckDB {args.duckdb_query} SQL (threads={args.threads})",
            [sys.executable, child, src_glob, duck_out, str(args.threads), args.duckdb_query],
            output=duck_out,
        )
        commands = [pref, duck, scan]

        check_line = ""
        for run in range(args.runs):
            for cmd in commands:
                remove(cmd.output)
                rc, wall, rss, tail = run_measured(
                    cmd.argv, os.path.join(logs, f"run{run}-{commands.index(cmd)}")
                )
                if rc != 0:
                    print(f"error: {cmd.name} failed (exit {rc}):\n  $ {shlex.join(cmd.argv)}\n{tail}",
                          file=sys.stderr)
                    return 2
                cmd.times.append(wall)
                cmd.rss_kib.append(rss)
                print(f"run {run + 1}/{args.runs}: {cmd.name}: {wall:.3f} s, "
                      f"peak RSS {rss / 1024:.0f} MiB", flush=True)
            if run == 0:
                with open(os.path.join(pref_out, "_manifest.json"), encoding="utf-8") as fh:
                    manifest_json = json.load(fh)
                    pairs_pref = manifest_json.get("stats", manifest_json).get("pairs_written")
                pairs_duck = count_parquet_rows(duck_out)
                if pairs_pref == pairs_duck:
                    check_line = f"pair count check: prefsmith {pairs_pref:,} == DuckDB {pairs_duck:,} (OK)"
                else:
                    check_line = (f"pair count check: MISMATCH: prefsmith pairs_written={pairs_pref!r}, "
                                  f"DuckDB rows={pairs_duck:,}")
                    exit_code = 1
                print(check_line, flush=True)
            for cmd in commands:
                remove(cmd.output)

        # RSS of the DuckDB child's interpreter alone, for scale.
        _, _, py_rss, _ = run_measured([sys.executable, "-c", "import duckdb"],
                                       os.path.join(logs, "python-baseline"))

        import duckdb  # only for its version

        med = {c.name: statistics.median(c.times) for c in commands}
        lines = [
            "# prefsmith select vs DuckDB",
            "",
            f"Data: {data} ({', '.join(f'{k} {v}' for k, v in data_info(files).items())})",
            "",
            "| command | median s | min s | max s | peak RSS MiB (median) | time / DuckDB | time / scan |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in commands:
            lines.append(
                f"| {c.name} | {med[c.name]:.3f} | {min(c.times):.3f} | {max(c.times):.3f} | "
                f"{statistics.median(c.rss_kib) / 1024:.0f} | "
                f"{fmt_ratio(med[c.name], med[duck.name])} | {fmt_ratio(med[c.name], med[scan.name])} |"
            )
        lines += [
            "",
            f"prefsmith/DuckDB = **{fmt_ratio(med[pref.name], med[duck.name])}**, "
            f"prefsmith/scan = **{fmt_ratio(med[pref.name], med[scan.name])}** (median wall time, "
            f"{args.runs} runs each, interleaved; page cache warmed with {warmed / 2**20:.0f} MiB read).",
            "",
            f"- {check_line}",
            f"- DuckDB's RSS includes its Python interpreter: `python -c 'import duckdb'` alone "
            f"peaks at {py_rss / 1024:.0f} MiB.",
        ]
        lines += [f"- {n}" for n in notes]
        lines += ["", "Machine:", ""]
        info = machine_info()
        info["prefsmith"] = tool_version([binary, "--version"])
        info["duckdb"] = duckdb.__version__
        lines += [f"- {k}: {v}" for k, v in info.items()]
        lines += ["", "Commands:", ""]
        lines += [f"- {c.name}: `{shlex.join(c.argv)}`" for c in commands]
        report = "\n".join(lines) + "\n"
        print()
        print(report)
        if args.markdown:
            with open(args.markdown, "w", encoding="utf-8") as fh:
                fh.write(report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
