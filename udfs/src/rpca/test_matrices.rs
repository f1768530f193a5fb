//! Test matrices with known structure for the SVD tests, and the full Jacobi thresholding
//! the subspace results are held to.

use super::jacobi::JacobiSvd;
use super::linalg::orthonormalize;
use super::matrix::score_matrix;

/// A deterministic pseudo-random stream in [−1, 1) (splitmix64).
fn noise(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// A skew-symmetric score matrix plus skew noise of the given size: a rank-2 signal with
/// a spread tail, like an ALM step's matrix.
pub(super) fn signal_plus_noise(n: usize, size: f64, seed: u64) -> Vec<f64> {
    let mut next = noise(seed);
    let scores: Vec<f64> = (0..n).map(|_| 2.0 * next()).collect();
    let mut m = score_matrix(&scores, 1.0);
    for i in 0..n {
        for j in i + 1..n {
            let e = size * next();
            m[i * n + j] += e;
            m[j * n + i] -= e;
        }
    }
    m
}

pub(super) fn jacobi_threshold(m: &[f64], n: usize, tau: f64) -> Vec<f64> {
    let mut svd = JacobiSvd::new(n);
    svd.decompose(m);
    let mut out = vec![0.0; n * n];
    svd.threshold_into(tau, &mut out);
    out
}

pub(super) fn max_difference(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// `U·diag(σ)·Vᵀ` (row-major n × n) for random orthogonal U and V.
pub(super) fn with_singular_values(sigma: &[f64], seed: u64) -> Vec<f64> {
    let n = sigma.len();
    let mut next = noise(seed);
    let mut u: Vec<f64> = (0..n * n).map(|_| next()).collect();
    let mut v: Vec<f64> = (0..n * n).map(|_| next()).collect();
    orthonormalize(&mut u, n, n);
    orthonormalize(&mut v, n, n);
    let mut m = vec![0.0; n * n];
    for (k, s) in sigma.iter().enumerate() {
        for i in 0..n {
            for j in 0..n {
                m[i * n + j] += s * u[k * n + i] * v[k * n + j];
            }
        }
    }
    m
}
