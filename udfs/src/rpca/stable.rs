//! Stable principal component pursuit (Zhou, Li, Wright, Candès & Ma 2010) with a weighted
//! least-squares term, solved by accelerated proximal gradient (FISTA), as defined in
//! `docs/ALGORITHMS.md` §5.11:
//!
//! `min ‖L‖_* + λ‖S‖₁ + (1/(2μ)) Σ_Ω W_ij (X_ij − L_ij − S_ij)²`, S = 0 off Ω.
//!
//! PCP (`solver`) demands `L + S = X` exactly on Ω, so every bit of dense noise must go into
//! S; here dense noise stays in the residual, weighted by how precise each entry is.

use super::jacobi::JacobiSvd;
use super::linalg::frobenius;
use super::solver::{Rpca, threshold};
use super::subspace::SubspaceSvt;

/// Settings of stable PCP (defaults as in `docs/ALGORITHMS.md` §5.11).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StableOptions {
    /// The weight of ‖S‖₁; `None` = 1/√n.
    pub lambda: Option<f64>,
    /// μ of the least-squares term's 1/(2μ); `None` = √(2n) (Zhou et al.'s √(2n)·σ with σ = 1
    /// after whitening by the weights).
    pub mu: Option<f64>,
    /// Relative step ‖(ΔL, ΔS)‖_F / ‖P_Ω X‖_F at which the solver stops.
    pub tolerance: f64,
    /// Steps before giving up.
    pub max_iterations: u32,
}

impl Default for StableOptions {
    fn default() -> Self {
        Self {
            lambda: None,
            mu: None,
            tolerance: 1e-7,
            max_iterations: 5000,
        }
    }
}

/// Stable PCP of `x` (row-major n × n) with per-entry weights `weights` (0 off Ω); Ω is where
/// `observed` is true (`None`: everywhere). `residual` in the result is the last relative step.
pub fn stable_pcp(
    x: &[f64],
    weights: &[f64],
    n: usize,
    observed: Option<&[bool]>,
    options: StableOptions,
) -> Rpca {
    assert_eq!(x.len(), n * n, "x must be n × n");
    assert_eq!(weights.len(), n * n, "weights must be n × n");
    let mask: Vec<bool> = (0..n * n).map(|k| observed.is_none_or(|o| o[k])).collect();
    let x: Vec<f64> = x
        .iter()
        .zip(&mask)
        .map(|(&v, &seen)| if seen { v } else { 0.0 })
        .collect();
    let x_norm = frobenius(&x);
    let max_weight = weights
        .iter()
        .zip(&mask)
        .filter(|(_, seen)| **seen)
        .fold(0.0f64, |m, (&w, _)| m.max(w));
    let mut low_rank = vec![0.0; n * n];
    let mut sparse = vec![0.0; n * n];
    if n == 0 || x_norm == 0.0 || max_weight <= 0.0 {
        return Rpca {
            low_rank,
            sparse,
            iterations: 0,
            residual: 0.0,
            converged: true,
        };
    }
    let lambda = options.lambda.unwrap_or(1.0 / (n as f64).sqrt());
    let mu = options.mu.unwrap_or((2.0 * n as f64).sqrt());
    // The smooth term's gradient in (L, S) is 2·max W/μ Lipschitz: the step is its inverse.
    let step = mu / (2.0 * max_weight);
    let mut svd = JacobiSvd::new(n);
    let mut subspace = SubspaceSvt::new(n);
    let (mut low_hat, mut sparse_hat) = (low_rank.clone(), sparse.clone());
    let (mut low_next, mut sparse_next) = (low_rank.clone(), sparse.clone());
    let mut work = vec![0.0; n * n];
    let mut theta = 1.0f64;
    let mut iterations = 0;
    let mut residual = f64::INFINITY;
    while iterations < options.max_iterations {
        iterations += 1;
        for k in 0..n * n {
            let gradient = if mask[k] {
                weights[k] * (x[k] - low_hat[k] - sparse_hat[k]) / mu
            } else {
                0.0
            };
            work[k] = low_hat[k] + step * gradient;
            let t = sparse_hat[k] + step * gradient;
            sparse_next[k] = if mask[k] {
                t.signum() * (t.abs() - lambda * step).max(0.0)
            } else {
                0.0
            };
        }
        threshold(&mut subspace, &mut svd, &work, step, &mut low_next);
        let theta_next = (1.0 + (1.0 + 4.0 * theta * theta).sqrt()) / 2.0;
        let momentum = (theta - 1.0) / theta_next;
        let mut change = 0.0;
        for k in 0..n * n {
            let dl = low_next[k] - low_rank[k];
            let ds = sparse_next[k] - sparse[k];
            change += dl * dl + ds * ds;
            low_hat[k] = low_next[k] + momentum * dl;
            sparse_hat[k] = sparse_next[k] + momentum * ds;
        }
        std::mem::swap(&mut low_rank, &mut low_next);
        std::mem::swap(&mut sparse, &mut sparse_next);
        theta = theta_next;
        residual = change.sqrt() / x_norm;
        if residual <= options.tolerance {
            break;
        }
    }
    Rpca {
        low_rank,
        sparse,
        iterations,
        residual,
        converged: residual <= options.tolerance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpca::matrix::score_matrix;

    /// The objective F(L, S) of `docs/ALGORITHMS.md` §5.11 (nuclear norm by the Jacobi SVD).
    fn objective(x: &[f64], w: &[f64], n: usize, l: &[f64], s: &[f64]) -> f64 {
        let mut svd = JacobiSvd::new(n);
        svd.decompose(l);
        let nuclear: f64 = svd.singular_values().iter().sum();
        let lambda = 1.0 / (n as f64).sqrt();
        let mu = (2.0 * n as f64).sqrt();
        let l1: f64 = s.iter().map(|v| v.abs()).sum();
        let fit: f64 = (0..n * n)
            .map(|k| w[k] * (x[k] - l[k] - s[k]).powi(2))
            .sum();
        nuclear + lambda * l1 + fit / (2.0 * mu)
    }

    #[test]
    fn converges_to_a_point_no_small_perturbation_improves() {
        let n = 6;
        let mut x = score_matrix(&[2.0, 1.5, 1.0, 0.0, -1.0, -2.5], 1.0);
        x[1] = -4.0;
        x[n] = 4.0;
        let w: Vec<f64> = (0..n * n)
            .map(|k| if k / n == k % n { 0.0 } else { 8.0 })
            .collect();
        let r = stable_pcp(&x, &w, n, None, StableOptions::default());
        assert!(r.converged, "{r:?}");
        let best = objective(&x, &w, n, &r.low_rank, &r.sparse);
        // The minimiser: moving L or S along any coordinate direction cannot lower F.
        for k in 0..n * n {
            for delta in [1e-4, -1e-4] {
                let mut l = r.low_rank.clone();
                l[k] += delta;
                assert!(objective(&x, &w, n, &l, &r.sparse) >= best - 1e-9);
                let mut s = r.sparse.clone();
                s[k] += delta;
                assert!(objective(&x, &w, n, &r.low_rank, &s) >= best - 1e-9);
            }
        }
        // The heavily weighted flipped entry is explained by S, not absorbed into L.
        assert!(r.sparse[1] < -1.0, "{}", r.sparse[1]);
    }

    #[test]
    fn small_weights_shrink_everything_to_zero() {
        let n = 5;
        let x = score_matrix(&[0.3, 0.1, 0.0, -0.1, -0.3], 1.0);
        let w = vec![0.01; n * n];
        let r = stable_pcp(&x, &w, n, None, StableOptions::default());
        assert!(r.converged);
        assert!(frobenius(&r.low_rank) < 1e-12 && frobenius(&r.sparse) < 1e-12);
    }
}
