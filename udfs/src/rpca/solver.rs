//! Principal component pursuit by the inexact augmented Lagrangian method: the iteration
//! itself, with singular value thresholding by `SubspaceSvt` when it can prove its result and
//! by the full [`JacobiSvd`] when it cannot.

use super::jacobi::JacobiSvd;
use super::linalg::frobenius;
use super::subspace::SubspaceSvt;

/// Settings of the solver (defaults as in `docs/ALGORITHMS.md` §5.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RpcaOptions {
    /// The weight of ‖S‖₁; `None` = 1/√n.
    pub lambda: Option<f64>,
    /// Relative residual at which the solver stops.
    pub tolerance: f64,
    /// Steps before giving up.
    pub max_iterations: u32,
}

impl Default for RpcaOptions {
    fn default() -> Self {
        Self {
            lambda: None,
            tolerance: 1e-7,
            max_iterations: 1000,
        }
    }
}

/// The decomposition of one matrix (row-major, n × n).
#[derive(Debug, Clone, PartialEq)]
pub struct Rpca {
    /// The low-rank part.
    pub low_rank: Vec<f64>,
    /// The sparse part (free, hence meaningless, off Ω).
    pub sparse: Vec<f64>,
    /// Steps taken.
    pub iterations: u32,
    /// Final `‖P_Ω(X − L − S)‖_F / ‖P_Ω(X)‖_F`.
    pub residual: f64,
    /// Whether the residual reached the tolerance.
    pub converged: bool,
}

/// Singular value thresholding of `m` at `tau` into `out`: by subspace iteration when it can
/// prove its result exact, else by the full Jacobi SVD (which then seeds the next subspace).
pub(super) fn threshold(
    subspace: &mut SubspaceSvt,
    svd: &mut JacobiSvd,
    m: &[f64],
    tau: f64,
    out: &mut [f64],
) {
    if !subspace.threshold_into(m, tau, out) {
        svd.decompose_above(m, tau);
        svd.threshold_into(tau, out);
        subspace.seed(svd, tau);
    }
}

/// The largest singular value of the row-major n × n matrix `a`.
pub fn spectral_norm(a: &[f64], n: usize) -> f64 {
    let mut svd = JacobiSvd::new(n);
    // σ_max ≥ ‖a‖_F/√n, far above this threshold: the largest value is exact.
    svd.decompose_above(a, 1e-8 * frobenius(a) / (n.max(1) as f64).sqrt());
    svd.singular_values().iter().copied().fold(0.0, f64::max)
}

/// Principal component pursuit of `x` (row-major n × n); `observed[i * n + j]` says whether
/// entry (i, j) is in Ω (`None`: every entry is).
pub fn pcp(x: &[f64], n: usize, observed: Option<&[bool]>, options: RpcaOptions) -> Rpca {
    assert_eq!(x.len(), n * n, "x must be n × n");
    let mask: Vec<bool> = (0..n * n).map(|k| observed.is_none_or(|o| o[k])).collect();
    // Unobserved entries carry no information: zero them so that norms see Ω only.
    let x: Vec<f64> = x
        .iter()
        .zip(&mask)
        .map(|(&v, &seen)| if seen { v } else { 0.0 })
        .collect();
    let x_norm = frobenius(&x);
    let mut low_rank = vec![0.0; n * n];
    let mut sparse = vec![0.0; n * n];
    if n == 0 || x_norm == 0.0 {
        return Rpca {
            low_rank,
            sparse,
            iterations: 0,
            residual: 0.0,
            converged: true,
        };
    }
    let lambda = options.lambda.unwrap_or(1.0 / (n as f64).sqrt());
    let mut svd = JacobiSvd::new(n);
    let mut subspace = SubspaceSvt::new(n);
    let norm_two = match subspace.largest_singular_value(&x) {
        Some(norm) => norm,
        None => {
            // Only the largest singular value is needed here; it is far above this threshold.
            svd.decompose_above(&x, 1e-8 * x_norm / (n as f64).sqrt());
            let norm = svd.singular_values().iter().copied().fold(0.0, f64::max);
            subspace.seed(&svd, norm / 1.25);
            norm
        }
    };
    let norm_inf = x.iter().fold(0.0f64, |m, v| m.max(v.abs())) / lambda;
    let dual = norm_two.max(norm_inf);
    let mut y: Vec<f64> = x.iter().map(|v| v / dual).collect();
    let mu0 = 1.25 / norm_two;
    let mu_max = mu0 * 1e7;
    let mut mu = mu0;
    let mut work = vec![0.0; n * n];
    let mut iterations = 0;
    let mut residual = f64::INFINITY;
    while iterations < options.max_iterations {
        iterations += 1;
        let inv_mu = 1.0 / mu;
        let shrink = lambda * inv_mu;
        // One pass, no branches (the mask is a select), so that it vectorises.
        for k in 0..n * n {
            let t = x[k] - low_rank[k] + y[k] * inv_mu;
            let shrunk = t.signum() * (t.abs() - shrink).max(0.0);
            let s = if mask[k] { shrunk } else { t };
            sparse[k] = s;
            work[k] = x[k] - s + y[k] * inv_mu;
        }
        threshold(&mut subspace, &mut svd, &work, inv_mu, &mut low_rank);
        // Four partial sums over chunks of four, so that this pass vectorises too.
        let mut z_norm = [0.0f64; 4];
        let chunks = y
            .chunks_mut(4)
            .zip(x.chunks(4))
            .zip(low_rank.chunks(4).zip(sparse.chunks(4)))
            .zip(mask.chunks(4));
        for (((y, x), (l, s)), observed) in chunks {
            for k in 0..y.len() {
                let z = if observed[k] { x[k] - l[k] - s[k] } else { 0.0 };
                y[k] += mu * z;
                z_norm[k] += z * z;
            }
        }
        let z_norm = (z_norm[0] + z_norm[1]) + (z_norm[2] + z_norm[3]);
        residual = z_norm.sqrt() / x_norm;
        mu = (mu * 1.5).min(mu_max);
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
