"""Independent float64 reference for the trainer's losses (docs/ALGORITHMS.md §7 and §9).

Reads JSON from the file named by the first argument: per-pair arrays pc, pr (policy log-probs of chosen / rejected), rc, rr
(reference), lc, lr (response lengths in tokens), gap (normalised rating gap or null), and the
hyper-parameters beta, cdpo_epsilon, robust_epsilon, rdpo_beta1, ml_rdpo_lambda.  Writes JSON on
stdout: for every loss, the per-pair values and the analytic derivatives with respect to pc and
pr, derived by hand here (not by autodiff), so both the values and the gradients of the Rust
implementation are checked against an independent derivation.
"""

import json
import sys

import numpy as np


def log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def main():
    with open(sys.argv[1]) as fh:
        x = json.load(fh)
    pc, pr, rc, rr = (np.asarray(x[k], dtype=np.float64) for k in ("pc", "pr", "rc", "rr"))
    lc = np.maximum(np.asarray(x["lc"], dtype=np.float64), 1.0)
    lr = np.maximum(np.asarray(x["lr"], dtype=np.float64), 1.0)
    rated = np.array([g is not None for g in x["gap"]], dtype=np.float64)
    gap = np.array([0.0 if g is None else g for g in x["gap"]], dtype=np.float64)
    beta = x["beta"]
    h = (pc - rc) - (pr - rr)
    z = beta * h
    out = {}

    def put(name, value, dz=None, dpc=None, dpr=None):
        # Losses of z = beta*h have d/dpc = beta*dz and d/dpr = -beta*dz.
        if dz is not None:
            dpc, dpr = beta * dz, -beta * dz
        out[name] = {"value": value.tolist(), "dpc": dpc.tolist(), "dpr": dpr.tolist()}

    put("sigmoid", -log_sigmoid(z), dz=sigmoid(z) - 1.0)
    e = x["cdpo_epsilon"]
    put("cdpo", -(1 - e) * log_sigmoid(z) - e * log_sigmoid(-z),
        dz=-(1 - e) * (1 - sigmoid(z)) + e * sigmoid(z))
    e = x["robust_epsilon"]
    put("robust", (-(1 - e) * log_sigmoid(z) + e * log_sigmoid(-z)) / (1 - 2 * e),
        dz=(-(1 - e) * (1 - sigmoid(z)) - e * sigmoid(z)) / (1 - 2 * e))
    hbar = (pc - rc) / lc - (pr - rr) / lr
    d = hbar - 1.0 / (2.0 * beta)
    put("ipo", d ** 2, dpc=2 * d / lc, dpr=-2 * d / lr)
    put("hinge", np.maximum(0.0, 1.0 - z), dz=np.where(z < 1.0, -1.0, 0.0))
    put("sft", -pc, dpc=-np.ones_like(pc), dpr=np.zeros_like(pr))
    shifted = z - beta * gap / x["rdpo_beta1"]
    put("rdpo", -log_sigmoid(shifted), dz=sigmoid(shifted) - 1.0)
    lam = x["ml_rdpo_lambda"]
    put("ml-rdpo", -log_sigmoid(z) + lam * rated * (z - gap) ** 2,
        dz=sigmoid(z) - 1.0 + 2 * lam * rated * (z - gap))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
