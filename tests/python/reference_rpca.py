#!/usr/bin/env python3
"""Independent numpy implementation of prefsmith's robust PCA (`docs/ALGORITHMS.md` §5), compared with the
Rust solver's L and S.

Input: a JSON list of cases {n, x, observed (null = all), low_rank, sparse, iterations,
converged}, row-major. For each case the script solves principal component pursuit by the
inexact augmented Lagrangian method (Lin, Chen & Ma 2010) with numpy's LAPACK SVD:

    lambda = 1/sqrt(n); Y0 = X / max(||X||_2, max|X| / lambda); mu0 = 1.25/||X||_2;
    S = shrink(X - L + Y/mu, lambda/mu) on Omega, X - L + Y/mu off Omega;
    L = SVT(X - S + Y/mu, 1/mu); Y += mu * P_Omega(X - L - S); mu = min(1.5 mu, 1e7 mu0);
    stop when ||P_Omega(X - L - S)||_F <= 1e-7 ||P_Omega(X)||_F or after 1000 steps

and checks ||L_rust - L|| <= 1e-6 ||L|| and ||S_rust - S|| <= 1e-6 max(||S||, ||X||) (Frobenius).
Prints "rpca matches on K matrices" and exits 0 when every case matches.
"""

import json
import sys

import numpy as np


def pcp(x, observed):
    n = x.shape[0]
    omega = np.ones_like(x, dtype=bool) if observed is None else observed
    x = np.where(omega, x, 0.0)
    lam = 1.0 / np.sqrt(n)
    norm_two = np.linalg.norm(x, 2)
    y = x / max(norm_two, np.abs(x).max() / lam)
    mu = 1.25 / norm_two
    mu_max = mu * 1e7
    low = np.zeros_like(x)
    sparse = np.zeros_like(x)
    x_norm = np.linalg.norm(x)
    steps = 0
    while steps < 1000:
        steps += 1
        t = x - low + y / mu
        sparse = np.where(omega, np.sign(t) * np.maximum(np.abs(t) - lam / mu, 0.0), t)
        u, s, vt = np.linalg.svd(x - sparse + y / mu)
        low = (u * np.maximum(s - 1.0 / mu, 0.0)) @ vt
        z = np.where(omega, x - low - sparse, 0.0)
        y = y + mu * z
        mu = min(mu * 1.5, mu_max)
        if np.linalg.norm(z) <= 1e-7 * x_norm:
            break
    return low, sparse, steps


def main():
    cases = json.load(open(sys.argv[1]))
    bad = 0
    for k, case in enumerate(cases):
        n = case["n"]
        x = np.array(case["x"], dtype=np.float64).reshape(n, n)
        observed = None if case["observed"] is None else np.array(case["observed"]).reshape(n, n)
        low, sparse, steps = pcp(x, observed)
        rust_low = np.array(case["low_rank"]).reshape(n, n)
        rust_sparse = np.array(case["sparse"]).reshape(n, n)
        e_low = np.linalg.norm(rust_low - low) / max(np.linalg.norm(low), 1e-300)
        e_sparse = np.linalg.norm(rust_sparse - sparse) / max(np.linalg.norm(sparse), np.linalg.norm(x))
        ok = e_low <= 1e-6 and e_sparse <= 1e-6
        print(f"case {k}: n {n}, steps numpy {steps} / rust {case['iterations']}, "
              f"rel. error L {e_low:.2e}, S {e_sparse:.2e} {'ok' if ok else 'MISMATCH'}")
        bad += not ok
    if bad:
        print(f"{bad} of {len(cases)} matrices differ")
        return 1
    print(f"rpca matches on {len(cases)} matrices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
