#!/usr/bin/env python3
"""Independent numpy reference ("oracle") for prefsmith's label cleaning.

Written from the specification only, `docs/ALGORITHMS.md` §5 "Label cleaning":

* §5.1  the matrix X and the observed set Omega from pairwise judgments;
* §5.2  the matrix from scores (`clean_scores`, methods `pcp` and `borda` only);
* §5.3  principal component pursuit (`pcp`), inexact augmented Lagrangian;
* §5.4  scores (row means of the skew-symmetrised L), ranks, flags;
* §5.5  pass-through (n <= 2, X = 0, not converged, degenerate L);
* §5.8  the methods and the shared pair counts m_ij, w_ij;
* §5.9  Bradley-Terry MAP (`bt-mle`), rho = 0.5, damped Newton;
* §5.10 trimmed Bradley-Terry (`bt-trim`), deviance > 10.828 dropped, <= 10 fits;
* §5.11 stable PCP (`stable-pcp`), weighted least squares + FISTA;
* §5.12 win rate (`borda`);
* §5.13 input checks on judgments (command-line mode).

It shares no code with the Rust implementation; only numpy (LAPACK SVD, Cholesky) and pyarrow.

Python interface
----------------
    clean(method, n, judgments) -> dict      # judgments: [(i, j, outcome)] over positions 0..n-1
    clean_scores(method, scores, temperature=1.0) -> dict

Both return {"scores", "ranks", "flagged", "flagged_per_response", "solved", "converged",
"iterations", "degenerate"}.

Command line
------------
    reference_clean_methods.py --method M --input IN.parquet --output OUT.parquet
    reference_clean_methods.py --self-test

IN has columns prompt_id (string), i, j (int64), outcome (float64); OUT has one row per
(prompt_id, response_index), sorted, with clean_score, clean_rank, flagged_comparisons,
solved, converged.  Bad input rows exit with status 2 and a message naming the 0-based row.
"""

import argparse
import math
import sys

import numpy as np

METHODS = ("borda", "bt-mle", "bt-trim", "pcp", "stable-pcp")

RHO = 0.5                 # §5.9 prior precision
BT_MAX_STEPS = 100        # §5.9
BT_MAX_HALVINGS = 30      # §5.9
BT_STEP_TOL = 1e-10       # §5.9
TRIM_THRESHOLD = 10.828   # §5.10, 0.999 quantile of chi^2_1
TRIM_MAX_FITS = 10        # §5.10
PCP_MAX_STEPS = 1000      # §5.3
PCP_TOL = 1e-7            # §5.3
SPCP_MAX_STEPS = 5000     # §5.11
SPCP_TOL = 1e-7           # §5.11
FLAG_TOL = 1e-6           # §5.4
DEGENERATE_TOL = 1e-9     # §5.5


# ----------------------------------------------------------------------------------------------
# Shared pieces: pair counts (§5.8), the matrix (§5.1), ranks (§5.4)
# ----------------------------------------------------------------------------------------------

def pair_counts(n, judgments):
    """m[i, j] = m[j, i] = judgments of {i, j}; w[i, j] = sum of outcomes for (i, j) (§5.8).

    A judgment (j, i, o) counts as 1 - o for (i, j).  w[j, i] = m[i, j] - w[i, j]."""
    m = np.zeros((n, n))
    w = np.zeros((n, n))
    for i, j, o in judgments:
        i, j, o = int(i), int(j), float(o)
        if i == j:
            raise ValueError(f"judgment ({i}, {j}) compares a response with itself")
        if not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"judgment ({i}, {j}) outside positions 0..{n - 1}")
        if not (0.0 <= o <= 1.0):
            raise ValueError(f"outcome {o} outside [0, 1]")
        a, b, oa = (i, j, o) if i < j else (j, i, 1.0 - o)
        m[a, b] += 1.0
        w[a, b] += oa
    iu = np.triu_indices(n, 1)
    m[iu[1], iu[0]] = m[iu]
    w[iu[1], iu[0]] = m[iu] - w[iu]
    return m, w


def logit(p):
    return np.log(p) - np.log1p(-p)


def judgment_matrix(m, w):
    """X, Omega and the clipped mean outcome p~ of §5.1 (X = 0 and p~ = 0.5 off Omega)."""
    omega = m > 0
    p_hat = np.where(omega, w / np.where(omega, m, 1.0), 0.5)
    delta = 1.0 / (2.0 * (m + 1.0))
    p_clip = np.where(omega, np.clip(p_hat, delta, 1.0 - delta), 0.5)
    x = np.where(omega, logit(p_clip), 0.0)
    # exact skew symmetry: take the upper triangle and mirror it
    x = np.triu(x, 1)
    x = x - x.T
    return x, omega, p_clip


def ranks_of(scores):
    """§5.4: 1 = best, score descending; keys round(s / max|s| * 1e9) (half away from zero);
    equal keys tie and keep position order, so ranks are always 1..n."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return []
    top = np.max(np.abs(s))
    if top == 0.0:
        key = np.zeros_like(s)
    else:
        v = s / top * 1e9
        key = np.sign(v) * np.floor(np.abs(v) + 0.5)
    order = np.argsort(-key, kind="stable")
    ranks = np.empty(s.size, dtype=np.int64)
    ranks[order] = np.arange(1, s.size + 1)
    return [int(r) for r in ranks]


def result(scores, flagged=(), n=None, solved=True, converged=True, iterations=0,
           degenerate=False):
    scores = [float(v) for v in scores]
    n = len(scores) if n is None else n
    flagged = sorted((int(a), int(b)) for a, b in flagged)
    per = [0] * n
    for a, b in flagged:
        per[a] += 1
        per[b] += 1
    return {"scores": scores, "ranks": ranks_of(scores), "flagged": flagged,
            "flagged_per_response": per, "solved": bool(solved), "converged": bool(converged),
            "iterations": int(iterations), "degenerate": bool(degenerate)}


def row_means(x):
    """Borda score of a matrix: (1/n) sum_j X_ij (pass-through of §5.5)."""
    return x.sum(axis=1) / x.shape[0]


def win_rates(m, w):
    """§5.12: sum_j w_ij / sum_j m_ij; 0.5 for a response never judged."""
    tot = m.sum(axis=1)
    won = w.sum(axis=1)
    return np.where(tot > 0, won / np.where(tot > 0, tot, 1.0), 0.5)


def svt(a, tau):
    """Singular value thresholding with numpy's LAPACK SVD."""
    u, s, vt = np.linalg.svd(a)
    return (u * np.maximum(s - tau, 0.0)) @ vt


def soft(a, tau):
    return np.sign(a) * np.maximum(np.abs(a) - tau, 0.0)


# ----------------------------------------------------------------------------------------------
# §5.3-§5.5 principal component pursuit
# ----------------------------------------------------------------------------------------------

def pcp_solve(x, omega):
    """Inexact ALM of §5.3.  x is zero off omega.  Returns (L, S, steps, converged)."""
    n = x.shape[0]
    lam = 1.0 / math.sqrt(n)
    norm2 = np.linalg.norm(x, 2)
    x_fro = np.linalg.norm(x)
    y = x / max(norm2, np.abs(x).max() / lam)
    mu = 1.25 / norm2
    mu_max = 1e7 * mu
    low = np.zeros_like(x)
    sparse = np.zeros_like(x)
    for step in range(1, PCP_MAX_STEPS + 1):
        t = x - low + y / mu
        sparse = np.where(omega, soft(t, lam / mu), t)
        low = svt(x - sparse + y / mu, 1.0 / mu)
        z = np.where(omega, x - low - sparse, 0.0)
        y = y + mu * z
        mu = min(1.5 * mu, mu_max)
        if np.linalg.norm(z) <= PCP_TOL * x_fro:
            return low, sparse, step, True
    return low, sparse, PCP_MAX_STEPS, False


def decomposition_result(x, omega, solver, diagonal_counts=False):
    """§5.4-§5.5 around a robust-PCA solver(x, omega) -> (L, S, steps, converged)."""
    n = x.shape[0]
    x_fro = np.linalg.norm(np.where(omega, x, 0.0))
    if n <= 2 or x_fro == 0.0:
        return result(row_means(x), solved=False, converged=True, iterations=0)
    low, sparse, steps, converged = solver(x, omega)
    if not converged:
        return result(row_means(x), solved=False, converged=False, iterations=steps)
    low = (low - low.T) / 2.0
    np.fill_diagonal(low, 0.0)
    if np.linalg.norm(low) <= DEGENERATE_TOL * x_fro:
        return result(row_means(x), solved=False, converged=True, iterations=steps,
                      degenerate=True)
    bad = omega & (np.abs(sparse) > FLAG_TOL * x_fro)
    np.fill_diagonal(bad, False)  # only comparisons i != j are flagged
    bad = bad | bad.T
    flagged = [(a, b) for a, b in zip(*np.nonzero(np.triu(bad, 1)))]
    return result(row_means(low), flagged, solved=True, converged=True, iterations=steps)


def clean_pcp(n, judgments):
    m, w = pair_counts(n, judgments)
    x, omega, _ = judgment_matrix(m, w)
    return decomposition_result(x, omega, pcp_solve)


# ----------------------------------------------------------------------------------------------
# §5.11 stable principal component pursuit
# ----------------------------------------------------------------------------------------------

def spcp_solver(weights):
    def solve(x, omega):
        n = x.shape[0]
        lam = 1.0 / math.sqrt(n)
        mu = math.sqrt(2.0 * n)
        t = mu / (2.0 * weights.max())
        tol = SPCP_TOL * np.linalg.norm(np.where(omega, x, 0.0))
        low = np.zeros_like(x)
        sparse = np.zeros_like(x)
        low_hat, sparse_hat, theta = low, sparse, 1.0
        for step in range(1, SPCP_MAX_STEPS + 1):
            g = np.where(omega, weights * (x - low_hat - sparse_hat) / mu, 0.0)
            low_new = svt(low_hat + t * g, t)
            sparse_new = np.where(omega, soft(sparse_hat + t * g, lam * t), 0.0)
            theta_new = (1.0 + math.sqrt(1.0 + 4.0 * theta * theta)) / 2.0
            beta = (theta - 1.0) / theta_new
            d_low, d_sparse = low_new - low, sparse_new - sparse
            low_hat = low_new + beta * d_low
            sparse_hat = sparse_new + beta * d_sparse
            low, sparse, theta = low_new, sparse_new, theta_new
            if math.sqrt(np.sum(d_low ** 2) + np.sum(d_sparse ** 2)) <= tol:
                return low, sparse, step, True
        return low, sparse, SPCP_MAX_STEPS, False
    return solve


def clean_stable_pcp(n, judgments):
    m, w = pair_counts(n, judgments)
    x, omega, p_clip = judgment_matrix(m, w)
    weights = np.where(omega, m * p_clip * (1.0 - p_clip), 0.0)
    return decomposition_result(x, omega, spcp_solver(weights))


# ----------------------------------------------------------------------------------------------
# §5.9 Bradley-Terry MAP and §5.10 trimmed Bradley-Terry
# ----------------------------------------------------------------------------------------------

def log_sigmoid(v):
    return -np.logaddexp(0.0, -v)


def sigmoid(v):
    return np.exp(log_sigmoid(v))


def bt_objective(s, a, b, m, w):
    d = s[a] - s[b]
    return float(np.sum(w * log_sigmoid(d) + (m - w) * log_sigmoid(-d))
                 - 0.5 * RHO * np.dot(s, s))


def bt_fit(n, a, b, m, w):
    """Newton's method of §5.9 over the pairs (a[k] < b[k], m[k] > 0, w[k] = w_ab).

    Returns (s, steps, converged)."""
    s = np.zeros(n)
    for step in range(1, BT_MAX_STEPS + 1):
        p = sigmoid(s[a] - s[b])
        r = w - m * p
        g = -RHO * s
        np.add.at(g, a, r)
        np.add.at(g, b, -r)
        h = m * p * (1.0 - p)
        hess = RHO * np.eye(n)
        np.add.at(hess, (a, a), h)
        np.add.at(hess, (b, b), h)
        np.add.at(hess, (a, b), -h)
        np.add.at(hess, (b, a), -h)
        chol = np.linalg.cholesky(hess)
        delta = np.linalg.solve(chol.T, np.linalg.solve(chol, g))
        f0 = bt_objective(s, a, b, m, w)
        t = 1.0
        halvings = 0
        while (halvings < BT_MAX_HALVINGS
               and bt_objective(s + t * delta, a, b, m, w) < f0 - 1e-12 * abs(f0)):
            t /= 2.0
            halvings += 1
        s = s + t * delta
        if np.max(np.abs(t * delta), initial=0.0) <= BT_STEP_TOL:
            return s, step, True
    return s, BT_MAX_STEPS, False


def judged_pairs(m, w):
    a, b = np.nonzero(np.triu(m, 1) > 0)
    return a, b, m[a, b], w[a, b]


def clean_bt_mle(n, judgments):
    m, w = pair_counts(n, judgments)
    a, b, mm, ww = judged_pairs(m, w)
    s, steps, converged = bt_fit(n, a, b, mm, ww)
    if not converged:
        return result(win_rates(m, w), solved=False, converged=False, iterations=steps)
    return result(s, solved=True, converged=True, iterations=steps)


def xlogy_ratio(x, log_den):
    """x * (ln x - log_den) with 0 ln 0 = 0."""
    pos = x > 0
    return np.where(pos, x * (np.log(np.where(pos, x, 1.0)) - log_den), 0.0)


def deviance(s, a, b, m, w):
    """§5.10: D = 2 [w ln(w / (m p)) + (m - w) ln((m - w) / (m (1 - p)))], p = sigma(s_a - s_b)."""
    d = s[a] - s[b]
    lose = np.maximum(m - w, 0.0)
    return 2.0 * (xlogy_ratio(w, np.log(m) + log_sigmoid(d))
                  + xlogy_ratio(lose, np.log(m) + log_sigmoid(-d)))


def clean_bt_trim(n, judgments):
    m, w = pair_counts(n, judgments)
    a, b, mm, ww = judged_pairs(m, w)
    kept = np.ones(a.size, dtype=bool)
    fits = 0
    while True:
        s, _, converged = bt_fit(n, a[kept], b[kept], mm[kept], ww[kept])
        fits += 1
        if not converged:
            return result(win_rates(m, w), solved=False, converged=False, iterations=fits)
        if fits >= TRIM_MAX_FITS:
            break
        dev = deviance(s, a, b, mm, ww)
        drop = kept & (dev > TRIM_THRESHOLD)
        if not drop.any():
            break
        kept &= ~drop
    flagged = list(zip(a[~kept], b[~kept]))
    return result(s, flagged, solved=True, converged=True, iterations=fits)


# ----------------------------------------------------------------------------------------------
# §5.12 win rate
# ----------------------------------------------------------------------------------------------

def clean_borda(n, judgments):
    m, w = pair_counts(n, judgments)
    return result(win_rates(m, w), solved=True, converged=True, iterations=0)


# ----------------------------------------------------------------------------------------------
# Public interface
# ----------------------------------------------------------------------------------------------

_JUDGMENT_METHODS = {
    "borda": clean_borda,
    "bt-mle": clean_bt_mle,
    "bt-trim": clean_bt_trim,
    "pcp": clean_pcp,
    "stable-pcp": clean_stable_pcp,
}


def clean(method, n, judgments):
    """Clean one prompt's judgments [(i, j, outcome)] over positions 0..n-1 (§5.1, §5.8)."""
    if method not in _JUDGMENT_METHODS:
        raise ValueError(f"unknown cleaning method {method!r}")
    return _JUDGMENT_METHODS[method](int(n), list(judgments))


def clean_scores(method, scores, temperature=1.0):
    """Clean one prompt's scores (§5.2): X_ij = (s_i - s_j) / T over the finite scores, all
    observed.  Only `pcp` and `borda` (row means of X).  Non-finite scores get None."""
    if method not in ("pcp", "borda"):
        raise ValueError(f"method {method!r} is not defined on scores (only pcp and borda)")
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"temperature must be finite and positive, got {temperature}")
    raw = [None if v is None else float(v) for v in scores]
    keep = [k for k, v in enumerate(raw) if v is not None and math.isfinite(v)]
    s = np.array([raw[k] for k in keep], dtype=np.float64)
    x = (s[:, None] - s[None, :]) / temperature
    if method == "borda":
        inner = result(row_means(x) if s.size else [], solved=True, converged=True)
    else:
        inner = decomposition_result(x, np.ones_like(x, dtype=bool), pcp_solve)
    out = dict(inner)
    full = len(raw)
    out["scores"] = [None] * full
    out["ranks"] = [None] * full
    out["flagged_per_response"] = [None] * full
    for pos, k in enumerate(keep):
        out["scores"][k] = inner["scores"][pos]
        out["ranks"][k] = inner["ranks"][pos]
        out["flagged_per_response"][k] = inner["flagged_per_response"][pos]
    out["flagged"] = sorted((keep[a], keep[b]) for a, b in inner["flagged"])
    return out


# ----------------------------------------------------------------------------------------------
# Command line: comparisons table in, one row per (prompt_id, response_index) out
# ----------------------------------------------------------------------------------------------

class InputError(Exception):
    pass


def read_judgments(path):
    """Read and check a comparisons table (§5.13).  Returns {prompt_id: [(i, j, outcome)]} in file
    order, null outcomes skipped.  Raises InputError naming the 0-based row."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [c for c in ("prompt_id", "i", "j", "outcome") if c not in table.column_names]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    pids = table.column("prompt_id").to_pylist()
    iss = table.column("i").to_pylist()
    jss = table.column("j").to_pylist()
    outs = table.column("outcome").to_pylist()
    prompts = {}
    for row, (pid, i, j, o) in enumerate(zip(pids, iss, jss, outs)):
        where = f"{path}: row {row}"
        if pid is None:
            raise InputError(f"{where}: prompt_id is null")
        if i is None or j is None:
            raise InputError(f"{where}: {'i' if i is None else 'j'} is null")
        if i < 0 or j < 0:
            raise InputError(f"{where}: negative response index (i = {i}, j = {j})")
        if i == j:
            raise InputError(f"{where}: i = j = {i} (a response judged against itself)")
        if o is None:
            continue  # skipped and counted (skipped_null_outcomes)
        o = float(o)
        if math.isnan(o):
            raise InputError(f"{where}: outcome is NaN")
        if not (0.0 <= o <= 1.0):
            raise InputError(f"{where}: outcome {o} outside [0, 1]")
        prompts.setdefault(str(pid), []).append((int(i), int(j), o))
    return prompts


def clean_table(method, prompts):
    """Rows (prompt_id, response_index, score, rank, flagged, solved, converged), sorted."""
    rows = []
    for pid in sorted(prompts):
        judgments = prompts[pid]
        items = sorted({i for i, _, _ in judgments} | {j for _, j, _ in judgments})
        pos = {r: k for k, r in enumerate(items)}
        res = clean(method, len(items), [(pos[i], pos[j], o) for i, j, o in judgments])
        for k, r in enumerate(items):
            rows.append((pid, r, res["scores"][k], res["ranks"][k],
                         res["flagged_per_response"][k], res["solved"], res["converged"]))
    return rows


def write_rows(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("prompt_id", pa.string()), ("response_index", pa.int64()),
                        ("clean_score", pa.float64()), ("clean_rank", pa.int64()),
                        ("flagged_comparisons", pa.int64()), ("solved", pa.bool_()),
                        ("converged", pa.bool_())])
    cols = list(zip(*rows)) if rows else [[] for _ in schema]
    table = pa.table([pa.array(list(c), type=f.type) for c, f in zip(cols, schema)],
                     schema=schema)
    pq.write_table(table, path)


def run_cli(method, input_path, output_path):
    try:
        prompts = read_judgments(input_path)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_rows(output_path, clean_table(method, prompts))
    return 0


# ----------------------------------------------------------------------------------------------
# Self-test
# ----------------------------------------------------------------------------------------------

def _close(a, b, tol=1e-9):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and np.allclose(a, b, rtol=tol, atol=tol)


def _bisect(f, lo, hi):
    flo = f(lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        fm = f(mid)
        if (fm > 0) == (flo > 0):
            lo, flo = mid, fm
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _two_item_bt(w, m, rho=RHO):
    """Two items, w wins of m: s0 = -s1 = d/2, where d solves w - m sigma(d) - rho d / 2 = 0
    (derivative of w ln sigma(d) + (m - w) ln sigma(-d) - (rho/2)(d^2/2) in d)."""
    return _bisect(lambda d: w - m / (1.0 + math.exp(-d)) - rho * d / 2.0, -50.0, 50.0)


def _consistent_set(rng, n, per_pair, truth, missing=0.0, probabilities=False):
    judgments = []
    for i in range(n):
        for j in range(i + 1, n):
            if rng.random() < missing:
                continue
            p = 1.0 / (1.0 + math.exp(-(truth[i] - truth[j])))
            for _ in range(per_pair):
                o = p if probabilities else float(rng.random() < p)
                if rng.random() < 0.5:
                    judgments.append((i, j, o))
                else:
                    judgments.append((j, i, 1.0 - o))
    return judgments


def self_test():
    import os
    import tempfile

    checks = 0

    def check(cond, what):
        nonlocal checks
        if not cond:
            raise AssertionError(what)
        checks += 1

    # ranks (§5.4)
    check(ranks_of([0.5, 0.5 + 1e-12, 0.2]) == [1, 2, 3], "near-equal scores tie")
    check(ranks_of([0.0, 0.0, 0.0]) == [1, 2, 3], "all-zero scores rank 1..n")
    check(ranks_of([-1.0, 2.0, 0.5]) == [3, 1, 2], "plain ranks")

    # n = 2, one judgment: 0 beats 1
    one = [(0, 1, 1.0)]
    d = _two_item_bt(1.0, 1.0)
    r = clean("bt-mle", 2, one)
    check(_close(r["scores"], [d / 2, -d / 2], 1e-10), "bt-mle two items, closed form")
    check(r["ranks"] == [1, 2] and r["solved"] and r["converged"], "bt-mle two items, flags")
    r = clean("bt-trim", 2, one)
    check(_close(r["scores"], [d / 2, -d / 2], 1e-10) and r["flagged"] == []
          and r["iterations"] == 1, "bt-trim two items = bt-mle")
    r = clean("borda", 2, one)
    check(_close(r["scores"], [1.0, 0.0]) and r["iterations"] == 0 and r["solved"], "borda n=2")
    for meth in ("pcp", "stable-pcp"):
        r = clean(meth, 2, one)
        # X_01 = logit(clip(1, 1/4, 3/4)) = ln 3; row means ln3/2, -ln3/2
        check(_close(r["scores"], [math.log(3) / 2, -math.log(3) / 2]) and not r["solved"]
              and r["converged"] and r["flagged"] == [], f"{meth} n=2 passes through")

    # two items, more judgments, reversed orientation, fractional outcomes: w01 = 0.9+0.7+0.8
    jj = [(0, 1, 0.9), (1, 0, 0.3), (0, 1, 0.8), (1, 0, 1.0)]
    w01, m01 = 0.9 + 0.7 + 0.8 + 0.0, 4.0
    d = _two_item_bt(w01, m01)
    r = clean("bt-mle", 2, jj)
    check(_close(r["scores"], [d / 2, -d / 2], 1e-10), "bt-mle two items, 4 judgments")
    check(_close(clean("borda", 2, jj)["scores"], [w01 / 4, 1 - w01 / 4]), "borda 2 items")

    # borda by hand (§5.12)
    jb = [(0, 1, 1.0), (1, 0, 0.25), (0, 2, 0.0), (2, 1, 1.0)]
    r = clean("borda", 4, jb)
    check(_close(r["scores"], [1.75 / 3, 0.25 / 3, 1.0, 0.5]) and r["ranks"] == [2, 4, 1, 3],
          "borda by hand, never-judged item 0.5")

    # all ties
    ties = [(i, j, 0.5) for i in range(5) for j in range(5) if i < j] * 2
    for meth in METHODS:
        r = clean(meth, 5, ties)
        want = 0.5 if meth == "borda" else 0.0
        check(_close(r["scores"], [want] * 5) and r["ranks"] == [1, 2, 3, 4, 5]
              and r["flagged"] == [], f"{meth} all ties")
    check(not clean("pcp", 5, ties)["solved"], "pcp all ties passes through (X = 0)")

    # a prompt with no judgments at all
    for meth in METHODS:
        r = clean(meth, 4, [])
        want = 0.5 if meth == "borda" else 0.0
        check(_close(r["scores"], [want] * 4) and r["ranks"] == [1, 2, 3, 4]
              and r["flagged_per_response"] == [0] * 4, f"{meth} no judgments")
    check(clean("bt-mle", 4, [])["converged"] and clean("bt-mle", 4, [])["solved"],
          "bt-mle no judgments converges")

    # one response (position 5) never compared
    rng = np.random.default_rng(1)
    truth = np.array([1.6, 0.9, 0.2, -0.4, -1.2, 0.0])
    judged = _consistent_set(rng, 5, 6, truth)
    for meth in METHODS:
        r = clean(meth, 6, judged)
        want = 0.5 if meth == "borda" else 0.0
        check(abs(r["scores"][5] - want) <= 1e-12 and r["flagged_per_response"][5] == 0,
              f"{meth} never-compared response scores {want}")

    # bt-mle optimality: gradient zero, sum of scores zero (§5.9)
    rng = np.random.default_rng(2)
    truth = rng.normal(0, 1.5, 10)
    jm = _consistent_set(rng, 10, 3, truth, missing=0.3)
    r = clean("bt-mle", 10, jm)
    s = np.array(r["scores"])
    m, w = pair_counts(10, jm)
    p = 1.0 / (1.0 + np.exp(-(s[:, None] - s[None, :])))
    g = np.where(m > 0, w - m * p, 0.0).sum(axis=1) - RHO * s
    check(np.max(np.abs(g)) < 1e-8 and abs(s.sum()) < 1e-9 and r["converged"],
          "bt-mle stationary point")

    # bt-trim drops a pair wrong in all 10 of its judgments on a consistent 6-item set
    truth = np.array([1.5, 0.9, 0.3, -0.3, -0.9, -1.5])
    jt = []
    for i in range(6):
        for j in range(i + 1, 6):
            p = 1.0 / (1.0 + math.exp(-(truth[i] - truth[j])))
            wins = int(round(10 * p))
            if (i, j) == (0, 5):
                wins = 0  # the truth says 0 beats 5 (p = 0.95); the judge says the opposite, always
            jt += [(i, j, 1.0)] * wins + [(j, i, 1.0)] * (10 - wins)
    r = clean("bt-trim", 6, jt)
    check(r["flagged"] == [(0, 5)] and r["flagged_per_response"] == [1, 0, 0, 0, 0, 1]
          and r["iterations"] == 2 and r["ranks"] == [1, 2, 3, 4, 5, 6], "bt-trim drops (0,5)")
    kept = [(i, j, o) for i, j, o in jt if {i, j} != {0, 5}]
    check(_close(r["scores"], clean("bt-mle", 6, kept)["scores"], 1e-12),
          "bt-trim scores = bt-mle without the dropped pair")
    check(clean("bt-mle", 6, jt)["flagged"] == [], "bt-mle flags nothing")

    # one judgment per pair: bt-trim drops nothing and equals bt-mle
    rng = np.random.default_rng(3)
    j1 = _consistent_set(rng, 8, 1, rng.normal(0, 1.5, 8))
    a, b = clean("bt-trim", 8, j1), clean("bt-mle", 8, j1)
    check(a["flagged"] == [] and a["scores"] == b["scores"], "bt-trim = bt-mle at m = 1")

    # pcp agrees with the existing numpy reference (tests/python/reference_rpca.py)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reference_rpca

    rng = np.random.default_rng(4)
    truth = rng.normal(0, 1.5, 12)
    jp = _consistent_set(rng, 12, 3, truth, missing=0.2)
    m, w = pair_counts(12, jp)
    x, omega, _ = judgment_matrix(m, w)
    low, sparse, steps, conv = pcp_solve(x, omega)
    low_ref, sparse_ref, steps_ref = reference_rpca.pcp(x, omega)
    check(_close(low, low_ref, 1e-12) and _close(sparse, sparse_ref, 1e-12) and steps == steps_ref,
          "pcp = reference_rpca.pcp")
    r = clean("pcp", 12, jp)
    lo = (low - low.T) / 2
    check(not r["converged"] or _close(r["scores"], lo.sum(axis=1) / 12), "pcp scores row means")

    # pcp on a clean, fully observed logit matrix with two corrupted entries flags them
    truth = np.linspace(2.0, -2.0, 10)
    jc = []
    for i in range(10):
        for j in range(i + 1, 10):
            p = 1.0 / (1.0 + math.exp(-(truth[i] - truth[j])))
            jc.append((i, j, 1.0 - p if (i, j) in ((0, 3), (4, 8)) else p))
    r = clean("pcp", 10, jc)
    check(r["solved"] and {(0, 3), (4, 8)} <= set(r["flagged"]), "pcp flags corrupted entries")

    # stable-pcp: FISTA fixed point satisfies the optimality conditions of F (§5.11)
    rng = np.random.default_rng(5)
    truth = rng.normal(0, 1.5, 10)
    js = _consistent_set(rng, 10, 30, truth)
    m, w = pair_counts(10, js)
    x, omega, p_clip = judgment_matrix(m, w)
    wt = np.where(omega, m * p_clip * (1 - p_clip), 0.0)
    low, sparse, steps, conv = spcp_solver(wt)(x, omega)
    mu, lam = math.sqrt(20.0), 1.0 / math.sqrt(10.0)
    g = np.where(omega, wt * (x - low - sparse) / mu, 0.0)  # minus the gradient of the smooth term
    u, sv, vt = np.linalg.svd(low)
    k = int(np.sum(sv > 1e-6 * sv[0]))
    resid = g - u[:, :k] @ vt[:k]
    proj = resid - u[:, :k] @ (u[:, :k].T @ resid) - (resid @ vt[:k].T) @ vt[:k] \
        + u[:, :k] @ (u[:, :k].T @ resid @ vt[:k].T) @ vt[:k]
    on = omega & (sparse != 0)
    check(conv and k >= 1, "stable-pcp converges to a nonzero L")
    check(np.linalg.norm(resid - proj) < 1e-4 and np.linalg.norm(proj, 2) <= 1 + 1e-4,
          "stable-pcp: G in the subdifferential of the nuclear norm at L")
    check(np.all(np.abs(g[omega & ~on]) <= lam * (1 + 1e-4))
          and np.allclose(g[on], lam * np.sign(sparse[on]), atol=1e-4),
          "stable-pcp: G in lambda * subdifferential of |S|_1")
    r = clean("stable-pcp", 10, js)
    check(r["solved"] and r["ranks"] == ranks_of(truth), "stable-pcp recovers the ranking")

    # stable-pcp with few judgments: L shrinks to 0 -> degenerate pass-through
    rng = np.random.default_rng(6)
    jd = _consistent_set(rng, 4, 1, np.array([0.3, 0.1, -0.1, -0.3]))
    r = clean("stable-pcp", 4, jd)
    m, w = pair_counts(4, jd)
    x, _, _ = judgment_matrix(m, w)
    check((not r["solved"]) and r["degenerate"] and _close(r["scores"], x.sum(axis=1) / 4),
          "stable-pcp few judgments: degenerate pass-through")

    # scores input (§5.2)
    sc = [0.3, None, 1.2, float("nan"), -0.5, 0.9]
    r = clean_scores("borda", sc, temperature=2.0)
    f = np.array([0.3, 1.2, -0.5, 0.9])
    want = (f - f.mean()) / 2.0
    check(_close([r["scores"][k] for k in (0, 2, 4, 5)], want) and r["scores"][1] is None
          and r["ranks"] == [3, None, 1, None, 4, 2], "borda on scores")
    r = clean_scores("pcp", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    check(r["ranks"] == [6, 5, 4, 3, 2, 1], "pcp on scores keeps the order")
    r = clean_scores("pcp", [1.0, 1.0, 1.0])
    check(r["scores"] == [0.0] * 3 and not r["solved"], "pcp on equal scores passes through")
    for meth in ("bt-mle", "bt-trim", "stable-pcp"):
        try:
            clean_scores(meth, [1.0, 2.0])
            check(False, f"{meth} on scores must fail")
        except ValueError as e:
            check(meth in str(e), f"{meth} on scores names the method")

    # command line: items are the indices that occur; null outcomes skipped; bad rows named
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        good = os.path.join(tmp, "in.parquet")
        out = os.path.join(tmp, "out.parquet")
        pq.write_table(pa.table({
            "prompt_id": ["b", "b", "a", "a", "a", "c"],
            "i": [7, 3, 10, 2, 2, 1],
            "j": [3, 9, 2, 5, 10, 0],
            "outcome": [1.0, None, 0.25, 1.0, 0.5, None],
        }), good)
        check(run_cli("borda", good, out) == 0, "cli runs")
        t = pq.read_table(out).to_pylist()
        got = [(row["prompt_id"], row["response_index"]) for row in t]
        check(got == [("a", 2), ("a", 5), ("a", 10), ("b", 3), ("b", 7)],
              "cli rows: sorted, skipped-only indices and prompts left out")
        a_rows = {row["response_index"]: row["clean_score"] for row in t if row["prompt_id"] == "a"}
        # a: (10,2,.25) -> w(2,10) = .75 ; (2,5,1) ; (2,10,.5) -> w(2,10) += .5
        check(_close([a_rows[2], a_rows[5], a_rows[10]], [2.25 / 3, 0.0, 0.75 / 2]), "cli borda")
        schema = pq.read_schema(out)
        check([str(schema.field(c).type) for c in schema.names]
              == ["string", "int64", "double", "int64", "int64", "bool", "bool"], "cli schema")
        for meth in METHODS:
            check(run_cli(meth, good, out) == 0, f"cli {meth}")
        bad_cases = [
            ({"prompt_id": ["a", "a"], "i": [0, 1], "j": [1, 1], "outcome": [1.0, 1.0]}, 1),
            ({"prompt_id": ["a", "a", "a"], "i": [0, 0, -1], "j": [1, 2, 0],
              "outcome": [1.0, 1.0, 0.5]}, 2),
            ({"prompt_id": ["a", "a"], "i": [0, 0], "j": [1, 2], "outcome": [float("nan"), 1.0]},
             0),
            ({"prompt_id": ["a", "a"], "i": [0, 0], "j": [1, 2], "outcome": [1.0, 1.5]}, 1),
            ({"prompt_id": ["a", None], "i": [0, 0], "j": [1, 2], "outcome": [1.0, 1.0]}, 1),
            ({"prompt_id": ["a", "a"], "i": pa.array([0, None], pa.int64()), "j": [1, 2],
              "outcome": [1.0, 1.0]}, 1),
        ]
        for k, (cols, row) in enumerate(bad_cases):
            path = os.path.join(tmp, f"bad{k}.parquet")
            pq.write_table(pa.table(cols), path)
            try:
                read_judgments(path)
                check(False, f"bad input {k} accepted")
            except InputError as e:
                check(f"row {row}:" in str(e), f"bad input {k} names row {row}: {e}")

    print(f"ok ({checks} checks)")
    return 0


def timing(repeats=20, n=16, per_pair=3, missing=0.2, seed=0):
    """Per-prompt milliseconds of each method on random problems."""
    import time

    rng = np.random.default_rng(seed)
    problems = [_consistent_set(rng, n, per_pair, rng.normal(0, 1.5, n), missing=missing)
                for _ in range(repeats)]
    for meth in METHODS:
        t0 = time.perf_counter()
        its = [clean(meth, n, p)["iterations"] for p in problems]
        ms = (time.perf_counter() - t0) * 1e3 / repeats
        print(f"{meth:>10}: {ms:8.2f} ms per prompt (n={n}, {per_pair}/pair, {missing:.0%} missing;"
              f" mean iterations {np.mean(its):.1f})")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=METHODS)
    ap.add_argument("--input")
    ap.add_argument("--output")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--timing", action="store_true", help="per-prompt timings, n=16")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    if args.timing:
        return timing()
    if not (args.method and args.input and args.output):
        ap.error("--method, --input and --output are required (or --self-test)")
    return run_cli(args.method, args.input, args.output)


if __name__ == "__main__":
    sys.exit(main())
