//! Robust PCA by principal component pursuit, solved with the inexact augmented Lagrangian
//! method (Lin, Chen & Ma 2010), for the small per-prompt comparison matrices of CURATRON /
//! RORATRON label cleaning (`docs/ALGORITHMS.md` §5). Pure Rust, no I/O.
//!
//! `X = L + S` with `L` low rank and `S` sparse: minimise `‖L‖_* + λ‖S‖₁` subject to
//! `P_Ω(L + S) = P_Ω(X)`, Ω the observed entries (all of them in the fully observed version).
//!
//! * λ = 1/√n; Y₀ = X / max(‖X‖₂, ‖X‖∞/λ); μ₀ = 1.25/‖X‖₂; μ ← min(1.5·μ, 1e7·μ₀) each step;
//! * each step: `S ← shrink(X − L + Y/μ, λ/μ)` on Ω and `S ← X − L + Y/μ` off Ω (free there),
//!   `L ← SVT(X − S + Y/μ, 1/μ)`, `Y ← Y + μ·P_Ω(X − L − S)`;
//! * stop when `‖P_Ω(X − L − S)‖_F ≤ 1e-7·‖P_Ω(X)‖_F`, or after 1000 steps (not converged).
//!
//! Singular value thresholding needs only the singular triplets above τ, and L is low rank,
//! so each step first tries subspace iteration on a small basis warm-started from the previous
//! step (`SubspaceSvt`: O(n²·r) per round, and it proves its result exact before using it).
//! When it cannot — too many singular values near τ, slow convergence — the step runs a
//! one-sided Jacobi (Hestenes) SVD written for these matrices (`JacobiSvd`): n is tens, where
//! general-purpose libraries spend more time setting up than computing (measured: a 16 × 16
//! `thin_svd` of faer 0.24 took 73 µs here), and the previous decomposition's right singular
//! vectors make the next one converge in a sweep or two. Both are accurate kinds: small singular
//! values keep their relative accuracy.
//!
//! | module | what it holds |
//! |---|---|
//! | `solver` | the options, the result and [`pcp`] itself (inexact ALM) |
//! | `jacobi` | [`JacobiSvd`], the full decomposition with warm starts |
//! | `subspace` | `SubspaceSvt`, thresholding by subspace iteration with proof of exactness |
//! | `linalg` | the dense vector kernels both SVDs share (dot products, rotations, Gram–Schmidt) |
//! | `stable` | [`stable_pcp`]: the noise-aware variant with a weighted least-squares term (FISTA) |
//! | `matrix` | the logit matrices built from scores and from pairwise judgments |
//!
//! What a decomposition means for a prompt's ranking lives in `crate::cleaning`.

mod jacobi;
mod linalg;
mod matrix;
mod solver;
mod stable;
mod subspace;
#[cfg(test)]
mod test_matrices;

pub use jacobi::JacobiSvd;
pub use linalg::frobenius;
pub use matrix::{comparison_matrix, comparison_weights, score_matrix};
pub use solver::{Rpca, RpcaOptions, pcp, spectral_norm};
pub use stable::{StableOptions, stable_pcp};
