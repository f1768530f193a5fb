#!/usr/bin/env python3
"""The recovery grid of docs/ALGORITHMS.md §5.14: how well each `prefsmith clean --method`
recovers a known ranking from noisy, missing and corrupted pairwise judgments.

What it measures
----------------
Per regime -- n in {8, 16, 32} responses, each unordered pair left unjudged with probability
q in {0, 0.2, 0.5}, m in {1, 3, 10} judgments per judged pair, corruption in {none, judgment 10 %,
judgment 20 %, pair 10 %, pair 20 %} (3 x 3 x 3 x 5 = 135 regimes) -- it draws `--seeds` x
`--prompts` prompts with true scores s ~ N(0, 1.5^2). A judged pair {i < j} gets m Bernoulli
judgments, outcome 1.0 when i beats j, P = sigmoid(s_i - s_j). "judgment f" flips each judgment
with probability f (dense judge noise); "pair f" flips, with probability f per pair, every
judgment of that pair (a systematically wrong verdict). Each row is then written as (i, j, o) or,
with probability 0.5, as (j, i, 1 - o). Everything is drawn from
numpy.random.default_rng(zlib.crc32(b"<regime key>_s<seed>")), prompt after prompt, so a regime's
data depend only on its key, the seed number and --prompts.

All prompts of all regimes go into one comparisons Parquet file (prompt_id string such as
"n16_q0.2_m3_pair0.1_s2_p7", i, j int64, outcome float64), and each method of `--methods` cleans it
in one run:

    BIN clean --input FILE --output OUTDIR --input-format comparisons --method METHOD

(`--engine reference` instead calls clean(method, n, judgments) of
tests/python/reference_clean_methods.py in process, on the same judgments.)

Evaluation choices
------------------
* Kendall tau-a between the method's clean_score and the true scores over all n responses:
  (concordant - discordant) / (n(n-1)/2). Two clean scores count as tied (0) when they differ by
  at most 1e-9 x the prompt's largest |clean_score| -- the tie rule of the ranks (§5.4), so
  rounding noise between scores that are equal in exact arithmetic does not count as an order.
  The true scores are continuous and never tie.
* A response that was never judged (possible when q > 0) has no rows in the output. It is given
  the prompt's lowest output score minus 1 (tied with any other unjudged response), i.e. it is
  ranked last. What score the method itself would give it is unknown to this benchmark (bt-mle
  would give 0, borda 0.5), and ranking it last is the conservative reading. A prompt with no
  output rows at all scores tau 0 and top-2 false.
* top-2: whether the response with clean_rank 1 is truly among the 2 best (false when the prompt
  has no rank-1 row).
* Per regime and method: mean tau, its standard error (sample sd / sqrt(count)) over the
  regime's prompts, mean top-2 rate, count of prompts.
* Checks on the method named by --default (§5.8): the no-harm check, its tau minus
  max(tau of bt-mle, tau of borda) (those of the two that were run), FAIL when < -0.01; and in the
  regimes with m >= 10 and pair corruption (10 % or 20 %), the gain over bt-mle, FAIL when < +0.03.
* The summary gives the plain mean over regimes of each method's mean tau and top-2, the numbers of
  failed checks, and each method's wall time (the prefsmith process, or the reference loop).

Usage
-----
benches/clean_grid.sh builds prefsmith, makes the venv (numpy, pyarrow from
tests/python/requirements.txt) and runs the full grid. By hand, with BIN the build of
`cargo build --locked` (${CARGO_TARGET_DIR:-~/.cache/prefsmith/target}/debug/prefsmith):

    python3 benches/clean_grid.py --prefsmith ~/.cache/prefsmith/target/debug/prefsmith
    python3 benches/clean_grid.py --prefsmith BIN --reduced --check
    python3 benches/clean_grid.py --engine reference --reduced
    python3 benches/clean_grid.py --prefsmith BIN --json grid.json \\
        --markdown grid.md --methods borda,bt-mle,bt-trim --default bt-trim

--reduced runs a subset of the regimes for the test suite (n in {8, 16}, q in {0, 0.5}, m in
{1, 10}, corruption in {none, judgment 20 %, pair 20 %}: 24 regimes) with the full grid's sampling
(5 seeds x 20 prompts): a regime's prompts depend only on its key, the seed and --prompts, so the
reduced grid's numbers are exactly the full grid's for those regimes, and the test asserts what
the committed table shows. With fewer prompts per regime each tau is noisier (at 2 x 10 the
no-harm check fails once by chance, n 8, q 0.5, m 10, judgment 20 %: borda beats bt-mle itself
by 0.016 on 20 prompts). --jobs J spreads the reference engine over J processes (prefsmith runs as it runs).
--keep keeps the temporary directory (input file and outputs) and prints its path.

Exit status: 0, or 1 with --check when any check FAILs; 2 when a run of prefsmith fails.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FULL = {
    "n": (8, 16, 32),
    "q": (0.0, 0.2, 0.5),
    "m": (1, 3, 10),
    "corruption": (("none", 0.0), ("judgment", 0.1), ("judgment", 0.2), ("pair", 0.1),
                   ("pair", 0.2)),
    "seeds": 5,
    "prompts": 20,
}
REDUCED = {
    "n": (8, 16),
    "q": (0.0, 0.5),
    "m": (1, 10),
    "corruption": (("none", 0.0), ("judgment", 0.2), ("pair", 0.2)),
    "seeds": 5,
    "prompts": 20,
}
TRUE_SD = 1.5
NO_HARM_TOL = -0.01
GAIN_MIN = 0.03
TIE_REL = 1e-9


# ----------------------------------------------------------------------------------------------
# Regimes and data
# ----------------------------------------------------------------------------------------------

def corruption_key(kind, f):
    return "none" if kind == "none" else f"{kind}{f:g}"


def corruption_label(kind, f):
    return "none" if kind == "none" else f"{kind} {round(f * 100)}%"


def regimes_of(grid):
    out = []
    for n in grid["n"]:
        for q in grid["q"]:
            for m in grid["m"]:
                for kind, f in grid["corruption"]:
                    key = f"n{n}_q{q:g}_m{m}_{corruption_key(kind, f)}"
                    out.append({"key": key, "n": n, "q": q, "m": m, "kind": kind, "f": f})
    return out


def draw_prompt(rng, n, q, m, kind, f):
    """One prompt: true scores and its judgment rows (i, j, outcome)."""
    s = rng.normal(0.0, TRUE_SD, n)
    a, b = np.triu_indices(n, k=1)
    judged = rng.random(a.size) >= q
    a, b = a[judged], b[judged]
    p = 1.0 / (1.0 + np.exp(-(s[a] - s[b])))
    wins = rng.random((a.size, m)) < p[:, None]
    if kind == "judgment":
        wins ^= rng.random((a.size, m)) < f
    elif kind == "pair":
        wins ^= (rng.random(a.size) < f)[:, None]
    i = np.repeat(a, m).astype(np.int64)
    j = np.repeat(b, m).astype(np.int64)
    o = wins.reshape(-1).astype(np.float64)
    swap = rng.random(o.size) < 0.5
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    o = np.where(swap, 1.0 - o, o)
    return s, i, j, o


def generate(regimes, seeds, prompts):
    """Returns the prompt list [(prompt_id, regime index, true scores, i, j, outcome)]."""
    out = []
    for r, reg in enumerate(regimes):
        for seed in range(seeds):
            rng = np.random.default_rng(zlib.crc32(f"{reg['key']}_s{seed}".encode()))
            for p in range(prompts):
                s, i, j, o = draw_prompt(rng, reg["n"], reg["q"], reg["m"], reg["kind"], reg["f"])
                out.append((f"{reg['key']}_s{seed}_p{p}", r, s, i, j, o))
    return out


def write_comparisons(prompts, path):
    ids = pa.array([pid for pid, *_ in prompts], type=pa.string())
    lengths = np.array([len(o) for *_, o in prompts], dtype=np.int64)
    codes = np.repeat(np.arange(len(prompts), dtype=np.int32), lengths)
    pid_col = pa.DictionaryArray.from_arrays(pa.array(codes), ids).cast(pa.string())
    table = pa.table({
        "prompt_id": pid_col,
        "i": pa.array(np.concatenate([x[3] for x in prompts]), type=pa.int64()),
        "j": pa.array(np.concatenate([x[4] for x in prompts]), type=pa.int64()),
        "outcome": pa.array(np.concatenate([x[5] for x in prompts]), type=pa.float64()),
    })
    pq.write_table(table, path)
    return table.num_rows


# ----------------------------------------------------------------------------------------------
# Engines: each returns {prompt_id: {response_index: (score, rank)}} and stats
# ----------------------------------------------------------------------------------------------

def part_files(outdir):
    files = []
    for dirpath, dirnames, filenames in os.walk(outdir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(("_", ".")))
        files += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.endswith(".parquet") and not f.startswith(("_", "."))]
    return files


def run_prefsmith(binary, method, infile, outdir):
    cmd = [binary, "clean", "--input", infile, "--output", outdir,
           "--input-format", "comparisons", "--method", method]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(f"clean_grid: {' '.join(cmd)} exited {proc.returncode}\n"
                         f"{proc.stdout}{proc.stderr}")
        sys.exit(2)
    files = part_files(outdir)
    if not files:
        sys.stderr.write(f"clean_grid: no Parquet part files in {outdir}\n")
        sys.exit(2)
    cols = ["prompt_id", "response_index", "clean_score", "clean_rank", "clean_converged"]
    table = pa.concat_tables([pq.read_table(f, columns=cols) for f in files])
    out, unconverged = {}, set()
    for pid, idx, score, rank, conv in zip(*(table.column(c).to_pylist() for c in cols)):
        if score is None or idx is None:
            continue
        out.setdefault(pid, {})[int(idx)] = (float(score), None if rank is None else int(rank))
        if conv is False:
            unconverged.add(pid)
    return out, wall, len(unconverged)


def _reference_module():
    sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
    import reference_clean_methods  # noqa: E402  (lazy: only the reference engine needs it)
    return reference_clean_methods


def _reference_chunk(args):
    method, chunk = args
    ref = _reference_module()
    out = []
    for pid, i, j, o in chunk:
        items = np.unique(np.concatenate([i, j]))
        if items.size == 0:
            continue
        pos = {int(v): k for k, v in enumerate(items)}
        judgments = [(pos[int(a)], pos[int(b)], float(c)) for a, b, c in zip(i, j, o)]
        res = ref.clean(method, int(items.size), judgments)
        got = {int(v): (float(res["scores"][k]), int(res["ranks"][k]))
               for k, v in enumerate(items)}
        out.append((pid, got, bool(res.get("converged", True))))
    return out


def run_reference(method, prompts, jobs):
    work = [(pid, i, j, o) for pid, _, _, i, j, o in prompts]
    start = time.perf_counter()
    if jobs <= 1:
        results = _reference_chunk((method, work))
    else:
        size = max(1, math.ceil(len(work) / (jobs * 8)))
        chunks = [(method, work[k:k + size]) for k in range(0, len(work), size)]
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = [r for part in pool.map(_reference_chunk, chunks) for r in part]
    wall = time.perf_counter() - start
    out = {pid: got for pid, got, _ in results}
    return out, wall, sum(1 for *_, conv in results if not conv)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

def evaluate(true_s, got):
    """(tau-a, top2) of one prompt; got = {response_index: (score, rank)} (see the docstring)."""
    n = true_s.size
    if not got:
        return 0.0, False
    present = [k for k in got if 0 <= k < n]
    low = min(got[k][0] for k in present) - 1.0
    score = np.full(n, low)
    for k in present:
        score[k] = got[k][0]
    a, b = np.triu_indices(n, k=1)
    d = score[a] - score[b]
    tol = TIE_REL * np.max(np.abs(score[present]))
    sd = np.where(np.abs(d) <= tol, 0.0, np.sign(d))
    tau = float(np.sum(sd * np.sign(true_s[a] - true_s[b]))) / (n * (n - 1) / 2)
    firsts = sorted(k for k in present if got[k][1] == 1)
    top2 = False
    if firsts:
        best2 = set(np.argsort(-true_s)[:2].tolist())
        top2 = firsts[0] in best2
    return tau, top2


def aggregate(regimes, prompts, results):
    per = [{meth: {"tau": [], "top2": []} for meth in results} for _ in regimes]
    for pid, r, s, *_ in prompts:
        for meth, got in results.items():
            tau, top2 = evaluate(s, got.get(pid, {}))
            per[r][meth]["tau"].append(tau)
            per[r][meth]["top2"].append(top2)
    out = []
    for reg, cells in zip(regimes, per):
        row = dict(reg)
        row["methods"] = {}
        for meth, c in cells.items():
            t = np.array(c["tau"])
            se = float(t.std(ddof=1) / math.sqrt(t.size)) if t.size > 1 else float("nan")
            row["methods"][meth] = {"tau": float(t.mean()), "se": se,
                                    "top2": float(np.mean(c["top2"])), "count": int(t.size)}
        out.append(row)
    return out


def checks(rows, default):
    """Adds no_harm / gain (value, fail) to each row; returns (no-harm fails, gain fails, counts)."""
    nh_fail = gain_fail = nh_n = gain_n = 0
    for row in rows:
        ms = row["methods"]
        row["no_harm"] = row["gain"] = None
        if default not in ms:
            continue
        base = [ms[b]["tau"] for b in ("bt-mle", "borda") if b in ms]
        if base:
            v = ms[default]["tau"] - max(base)
            fail = v < NO_HARM_TOL
            row["no_harm"] = {"value": v, "fail": fail}
            nh_n += 1
            nh_fail += fail
        if row["m"] >= 10 and row["kind"] == "pair" and 0.1 <= row["f"] <= 0.2 and "bt-mle" in ms:
            v = ms[default]["tau"] - ms["bt-mle"]["tau"]
            fail = v < GAIN_MIN
            row["gain"] = {"value": v, "fail": fail}
            gain_n += 1
            gain_fail += fail
    return nh_fail, gain_fail, nh_n, gain_n


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------

def check_cell(c):
    if c is None:
        return ""
    return f"{c['value']:+.3f}" + (" FAIL" if c["fail"] else "")


def markdown(rows, methods, default, summary, engine):
    head = (["n", "q", "m", "corruption"] + [f"τ {m}" for m in methods]
            + [f"top-2 {m}" for m in methods]
            + [f"no-harm {default}", f"gain {default} vs bt-mle"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["n"]), f"{r['q']:g}", str(r["m"]), corruption_label(r["kind"], r["f"])]
        cells += [f"{r['methods'][m]['tau']:.3f}" for m in methods]
        cells += [f"{r['methods'][m]['top2']:.2f}" for m in methods]
        cells += [check_cell(r["no_harm"]), check_cell(r["gain"])]
        lines.append("| " + " | ".join(cells) + " |")
    s = summary
    lines += ["", f"Summary ({s['regimes']} regimes, {s['prompts_per_regime']} prompts each, "
              f"engine {engine}):", "",
              "| method | mean τ | mean top-2 | not converged | wall time (s) |",
              "|---|---|---|---|---|"]
    for m in methods:
        ms = s["methods"][m]
        lines.append(f"| {m} | {ms['mean_tau']:.3f} | {ms['mean_top2']:.3f} | "
                     f"{ms['unconverged']} | {ms['wall_s']:.2f} |")
    lines += ["",
              f"No-harm failures ({default}): {s['no_harm_failures']} of {s['no_harm_checked']}; "
              f"gain failures: {s['gain_failures']} of {s['gain_checked']}."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefsmith", help="the prefsmith binary (engine prefsmith)")
    ap.add_argument("--engine", choices=("prefsmith", "reference"), default="prefsmith")
    ap.add_argument("--methods", default="borda,bt-mle,bt-trim,pcp,stable-pcp")
    ap.add_argument("--default", default="bt-trim", help="the method the checks are about")
    ap.add_argument("--seeds", type=int, help="seeds per regime (default 5)")
    ap.add_argument("--prompts", type=int,
                    help="prompts per seed and regime (default 20)")
    ap.add_argument("--reduced", action="store_true", help="the small test subset of the grid")
    ap.add_argument("--json", help="write per-regime, per-method results here")
    ap.add_argument("--markdown", help="also write the Markdown table here")
    ap.add_argument("--check", action="store_true", help="exit 1 when any check FAILs")
    ap.add_argument("--jobs", type=int, default=1, help="processes for the reference engine")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.engine == "prefsmith" and not args.prefsmith:
        ap.error("--prefsmith BIN is required with --engine prefsmith")
    grid = REDUCED if args.reduced else FULL
    seeds = args.seeds if args.seeds is not None else grid["seeds"]
    nprompts = args.prompts if args.prompts is not None else grid["prompts"]
    if seeds < 1 or nprompts < 1:
        ap.error("--seeds and --prompts must be positive")

    regimes = regimes_of(grid)
    start = time.perf_counter()
    prompts = generate(regimes, seeds, nprompts)
    tmp = tempfile.mkdtemp(prefix="clean-grid-")
    try:
        infile = os.path.join(tmp, "comparisons.parquet")
        nrows = write_comparisons(prompts, infile)
        gen_s = time.perf_counter() - start
        print(f"clean_grid: {len(regimes)} regimes x {seeds} seeds x {nprompts} prompts = "
              f"{len(prompts)} prompts, {nrows} judgment rows ({gen_s:.1f} s to generate)",
              file=sys.stderr)
        if args.keep:
            print(f"clean_grid: keeping {tmp}", file=sys.stderr)
        results, walls, unconv = {}, {}, {}
        for meth in methods:
            if args.engine == "prefsmith":
                got, wall, bad = run_prefsmith(args.prefsmith, meth, infile,
                                               os.path.join(tmp, f"out-{meth}"))
            else:
                got, wall, bad = run_reference(meth, prompts, args.jobs)
            results[meth], walls[meth], unconv[meth] = got, wall, bad
            print(f"clean_grid: {meth}: {wall:.2f} s", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = aggregate(regimes, prompts, results)
    nh_fail, gain_fail, nh_n, gain_n = checks(rows, args.default)
    summary = {
        "regimes": len(regimes), "prompts_per_regime": seeds * nprompts,
        "no_harm_failures": nh_fail, "no_harm_checked": nh_n,
        "gain_failures": gain_fail, "gain_checked": gain_n,
        "methods": {m: {"mean_tau": float(np.mean([r["methods"][m]["tau"] for r in rows])),
                        "mean_top2": float(np.mean([r["methods"][m]["top2"] for r in rows])),
                        "unconverged": unconv[m], "wall_s": walls[m]} for m in methods},
    }
    text = markdown(rows, methods, args.default, summary, args.engine)
    sys.stdout.write(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text)
    if args.json:
        doc = {"engine": args.engine, "prefsmith": args.prefsmith, "methods": methods,
               "default": args.default, "reduced": args.reduced, "seeds": seeds,
               "prompts": nprompts, "true_sd": TRUE_SD,
               "regimes": [{k: r[k] for k in ("key", "n", "q", "m", "kind", "f", "methods",
                                              "no_harm", "gain")} for r in rows],
               "summary": summary}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
    if args.check and (nh_fail or gain_fail):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
