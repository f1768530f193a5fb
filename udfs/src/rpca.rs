//! Robust PCA by principal component pursuit, solved with the inexact augmented Lagrangian
//! method (Lin, Chen & Ma 2010), for the small per-prompt comparison matrices of CURATRON /
//! RORATRON label cleaning (Decision 5). Pure Rust, no I/O.
//!
//! `X = L + S` with `L` low rank and `S` sparse: minimise `‖L‖_* + λ‖S‖₁` subject to
//! `P_Ω(L + S) = P_Ω(X)`, Ω the observed entries (all of them in the fully observed version).
//!
//! * λ = 1/√n; Y₀ = X / max(‖X‖₂, ‖X‖∞/λ); μ₀ = 1.25/‖X‖₂; μ ← min(1.5·μ, 1e7·μ₀) each step;
//! * each step: `S ← shrink(X − L + Y/μ, λ/μ)` on Ω and `S ← X − L + Y/μ` off Ω (free there),
//!   `L ← SVT(X − S + Y/μ, 1/μ)`, `Y ← Y + μ·P_Ω(X − L − S)`;
//! * stop when `‖P_Ω(X − L − S)‖_F ≤ 1e-7·‖P_Ω(X)‖_F`, or after 1000 steps (not converged).
//!
//! The SVD is a one-sided Jacobi (Hestenes) SVD written for these matrices: n is tens, where
//! general-purpose libraries spend more time setting up than computing (measured: a 16 × 16
//! `thin_svd` of faer 0.24 took 73 µs here), and each step's matrix differs little from the
//! last, so the previous step's right singular vectors make the next SVD converge in a sweep or
//! two. Jacobi SVD is also the accurate kind: small singular values keep their relative accuracy.

/// Settings of the solver (defaults as in Decision 5).
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

/// The largest singular value of the row-major n × n matrix `a`.
pub fn spectral_norm(a: &[f64], n: usize) -> f64 {
    let mut svd = JacobiSvd::new(n);
    // σ_max ≥ ‖a‖_F/√n, far above this threshold: the largest value is exact.
    svd.decompose_above(a, 1e-8 * frobenius(a) / (n.max(1) as f64).sqrt());
    svd.sigma.iter().copied().fold(0.0, f64::max)
}

/// Principal component pursuit of `x` (row-major n × n); `observed[i * n + j]` says whether
/// entry (i, j) is in Ω (`None`: every entry is).
pub fn pcp(x: &[f64], n: usize, observed: Option<&[bool]>, options: RpcaOptions) -> Rpca {
    assert_eq!(x.len(), n * n, "x must be n × n");
    let is_observed = |k: usize| observed.is_none_or(|o| o[k]);
    // Unobserved entries carry no information: zero them so that norms see Ω only.
    let x: Vec<f64> = (0..n * n)
        .map(|k| if is_observed(k) { x[k] } else { 0.0 })
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
    // Only the largest singular value is needed here; it is far above this threshold.
    svd.decompose_above(&x, 1e-8 * x_norm / (n as f64).sqrt());
    let norm_two = svd.sigma.iter().copied().fold(0.0, f64::max);
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
        for k in 0..n * n {
            let t = x[k] - low_rank[k] + y[k] * inv_mu;
            sparse[k] = if is_observed(k) {
                t.signum() * (t.abs() - shrink).max(0.0)
            } else {
                t
            };
        }
        for k in 0..n * n {
            work[k] = x[k] - sparse[k] + y[k] * inv_mu;
        }
        svd.decompose_above(&work, inv_mu);
        svd.threshold_into(inv_mu, &mut low_rank);
        let mut z_norm = 0.0;
        for k in 0..n * n {
            if is_observed(k) {
                let z = x[k] - low_rank[k] - sparse[k];
                y[k] += mu * z;
                z_norm += z * z;
            }
        }
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

fn frobenius(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Σ a_i·b_i with four independent partial sums: a plain sum is one chain of dependent
/// additions (the compiler may not reorder floating-point sums), which leaves the core idle
/// on these short vectors.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (a4.remainder(), b4.remainder());
    for (x, y) in a4.zip(b4) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// A one-sided Jacobi SVD for n × n matrices that keeps its right singular vectors between
/// calls as the starting point of the next decomposition.
#[derive(Debug, Clone)]
pub struct JacobiSvd {
    n: usize,
    /// Columns of A·V (column-major): after convergence, column j = σ_j·u_j.
    columns: Vec<f64>,
    /// V (column-major), orthogonal.
    v: Vec<f64>,
    /// V of the previous call (column-major).
    previous_v: Vec<f64>,
    /// σ_j = ‖column j‖.
    sigma: Vec<f64>,
}

impl JacobiSvd {
    /// A decomposer for n × n matrices, starting from V = I.
    pub fn new(n: usize) -> Self {
        let mut v = vec![0.0; n * n];
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        Self {
            n,
            columns: vec![0.0; n * n],
            previous_v: v.clone(),
            v,
            sigma: vec![0.0; n],
        }
    }

    /// The singular values of the last decomposition (unordered).
    pub fn singular_values(&self) -> &[f64] {
        &self.sigma
    }

    /// Decomposes the row-major matrix `a` completely (every singular value to full accuracy).
    pub fn decompose(&mut self, a: &[f64]) {
        self.decompose_above(a, 0.0);
    }

    /// Decomposes the row-major matrix `a` as far as singular value thresholding at `tau`
    /// needs: the columns of A·V are split into a "small" set whose squared norms sum to less
    /// than τ² and the rest; pairs inside the small set are not rotated. At convergence the
    /// other columns are orthogonal to each other and to the small ones, so they are exact
    /// singular triplets, and every singular value of the small block is below τ (its
    /// Frobenius norm is), so thresholding drops it exactly. For the low-rank matrices of RPCA
    /// this skips most of the work, which would otherwise go into resolving the near-null space.
    pub fn decompose_above(&mut self, a: &[f64], tau: f64) {
        let n = self.n;
        std::mem::swap(&mut self.v, &mut self.previous_v);
        self.v.copy_from_slice(&self.previous_v);
        // columns = A · V_previous.
        for j in 0..n {
            let vj = &self.v[j * n..(j + 1) * n];
            let col = &mut self.columns[j * n..(j + 1) * n];
            for (i, c) in col.iter_mut().enumerate() {
                *c = dot(&a[i * n..(i + 1) * n], vj);
            }
        }
        // A pair counts as orthogonal below this cosine. The singular values are then exact
        // to ~1e-16 (second order) and the vectors to ~1e-8, which leaves L within ~1e-8 of
        // the exact one: well inside the 1e-6 it is held to against LAPACK, and it spares the
        // last sweeps of tiny rotations (30 % of the solver's time at 1e-12).
        const EPS: f64 = 1e-8;
        let budget = tau * tau;
        let mut norms = vec![0.0; n];
        let mut small = vec![false; n];
        let mut order: Vec<usize> = (0..n).collect();
        for sweep in 0..60 {
            for (j, norm) in norms.iter_mut().enumerate() {
                let col = &self.columns[j * n..(j + 1) * n];
                *norm = dot(col, col);
            }
            // The small set: smallest columns first while their squared norms stay under τ².
            // It can stall convergence: when a singular value pair (skew-symmetric matrices
            // have them) straddles the boundary, its small half is spread over columns that
            // are never rotated among themselves. After a few sweeps, resolve everything.
            small.iter_mut().for_each(|s| *s = false);
            if sweep < 8 {
                order.sort_by(|&x, &y| norms[x].total_cmp(&norms[y]));
                let mut used = 0.0;
                for &j in &order {
                    if used + norms[j] >= budget {
                        break;
                    }
                    used += norms[j];
                    small[j] = true;
                }
            }
            let mut rotated = false;
            for p in 0..n {
                for q in p + 1..n {
                    if small[p] && small[q] {
                        continue;
                    }
                    let (alpha, beta) = (norms[p], norms[q]);
                    let (head, tail) = self.columns.split_at_mut(q * n);
                    let cp = &mut head[p * n..(p + 1) * n];
                    let cq = &mut tail[..n];
                    let gamma = dot(cp, cq);
                    if gamma == 0.0 || gamma.abs() <= EPS * (alpha * beta).sqrt() {
                        continue;
                    }
                    rotated = true;
                    let zeta = (beta - alpha) / (2.0 * gamma);
                    let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                    let c = 1.0 / (1.0 + t * t).sqrt();
                    let s = c * t;
                    for (x, y) in cp.iter_mut().zip(cq.iter_mut()) {
                        let (a, b) = (*x, *y);
                        *x = c * a - s * b;
                        *y = s * a + c * b;
                    }
                    norms[p] = alpha - t * gamma;
                    norms[q] = beta + t * gamma;
                    let (head, tail) = self.v.split_at_mut(q * n);
                    let vp = &mut head[p * n..(p + 1) * n];
                    let vq = &mut tail[..n];
                    for (x, y) in vp.iter_mut().zip(vq.iter_mut()) {
                        let (a, b) = (*x, *y);
                        *x = c * a - s * b;
                        *y = s * a + c * b;
                    }
                }
            }
            if !rotated {
                break;
            }
        }
        for j in 0..n {
            self.sigma[j] = frobenius(&self.columns[j * n..(j + 1) * n]);
        }
    }

    /// Writes `Σ_j max(σ_j − τ, 0)·u_j·v_jᵀ` (row-major) into `out`: singular value
    /// thresholding of the last decomposed matrix.
    pub fn threshold_into(&self, tau: f64, out: &mut [f64]) {
        let n = self.n;
        out.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..n {
            let sigma = self.sigma[j];
            if sigma <= tau {
                continue;
            }
            // (σ − τ)·u = (σ − τ)/σ · column.
            let scale = (sigma - tau) / sigma;
            let col = &self.columns[j * n..(j + 1) * n];
            let vj = &self.v[j * n..(j + 1) * n];
            for i in 0..n {
                let ui = scale * col[i];
                if ui == 0.0 {
                    continue;
                }
                let row = &mut out[i * n..(i + 1) * n];
                for (o, v) in row.iter_mut().zip(vj) {
                    *o += ui * v;
                }
            }
        }
    }
}

/// Everything label cleaning reports for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Cleaned {
    /// Borda score per response (row means of the skew-symmetrised L), in input order.
    pub scores: Vec<f64>,
    /// 1-based rank per response: score descending, ties by position.
    pub ranks: Vec<i64>,
    /// Per response, how many of its comparisons were flagged as corrupted.
    pub flagged_per_response: Vec<i64>,
    /// Flagged comparisons as (i, j), i < j, positions in input order.
    pub flagged: Vec<(usize, usize)>,
    /// Solver steps.
    pub iterations: u32,
    /// Final relative residual.
    pub residual: f64,
    /// False when the solver did not converge; the scores are then the uncleaned Borda scores.
    pub converged: bool,
    /// Whether the solver's result is used (false when passed through: n ≤ 2, an all-zero
    /// matrix, no convergence, or a degenerate result).
    pub solved: bool,
    /// The solver explained the whole matrix as corruption (L = 0; happens for very small n,
    /// where λ‖X‖₁ < ‖X‖_*): passed through rather than reporting every score as equal.
    pub degenerate: bool,
}

/// Cleans one prompt's skew-symmetric logit matrix `x` (row-major n × n, Ω given by
/// `observed`, `None` = all): RPCA, skew-symmetrise L, Borda scores, ranks, flags
/// (|S_ij| > 1e-6·‖P_Ω X‖_F on Ω). n ≤ 2, an all-zero matrix, or no convergence: passed
/// through (Borda scores of X itself, nothing flagged).
pub fn clean_matrix(
    x: &[f64],
    n: usize,
    observed: Option<&[bool]>,
    options: RpcaOptions,
) -> Cleaned {
    let is_observed = |k: usize| observed.is_none_or(|o| o[k]);
    let masked: Vec<f64> = (0..n * n)
        .map(|k| if is_observed(k) { x[k] } else { 0.0 })
        .collect();
    let x_norm = frobenius(&masked);
    let pass_through = |iterations, residual, converged, degenerate| {
        let scores = borda(&masked, n);
        Cleaned {
            ranks: ranks(&scores),
            scores,
            flagged_per_response: vec![0; n],
            flagged: Vec::new(),
            iterations,
            residual,
            converged,
            solved: false,
            degenerate,
        }
    };
    if n <= 2 || x_norm == 0.0 {
        return pass_through(0, 0.0, true, false);
    }
    let result = pcp(&masked, n, observed, options);
    if !result.converged {
        return pass_through(result.iterations, result.residual, false, false);
    }
    if frobenius(&result.low_rank) <= 1e-9 * x_norm {
        return pass_through(result.iterations, result.residual, true, true);
    }
    let mut low_rank = result.low_rank.clone();
    for i in 0..n {
        for j in 0..n {
            low_rank[i * n + j] = (result.low_rank[i * n + j] - result.low_rank[j * n + i]) / 2.0;
        }
    }
    let scores = borda(&low_rank, n);
    let threshold = 1e-6 * x_norm;
    let mut flagged = Vec::new();
    let mut per_response = vec![0i64; n];
    for i in 0..n {
        for j in i + 1..n {
            let hit = |a: usize, b: usize| {
                let k = a * n + b;
                is_observed(k) && result.sparse[k].abs() > threshold
            };
            if hit(i, j) || hit(j, i) {
                flagged.push((i, j));
                per_response[i] += 1;
                per_response[j] += 1;
            }
        }
    }
    Cleaned {
        ranks: ranks(&scores),
        scores,
        flagged_per_response: per_response,
        flagged,
        iterations: result.iterations,
        residual: result.residual,
        converged: true,
        solved: true,
        degenerate: false,
    }
}

/// Cleans one prompt's scores, given with their response indices in any order: returns the
/// indices ascending and the cleaning, or `Err(index)` for an index that appears twice.
pub fn clean_indexed_scores(
    indices: &[i64],
    scores: &[f64],
    temperature: f64,
) -> Result<(Vec<i64>, Cleaned), i64> {
    let mut rows: Vec<(i64, f64)> = indices
        .iter()
        .copied()
        .zip(scores.iter().copied())
        .collect();
    rows.sort_by_key(|r| r.0);
    if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(w[0].0);
    }
    let (indices, scores): (Vec<i64>, Vec<f64>) = rows.into_iter().unzip();
    let x = score_matrix(&scores, temperature);
    let cleaned = clean_matrix(&x, scores.len(), None, RpcaOptions::default());
    Ok((indices, cleaned))
}

/// Cleans one prompt's judgments `(i, j, outcome)` over response indices: returns the indices
/// seen (ascending) and the cleaning.
pub fn clean_judgments(judgments: &[(i64, i64, f64)]) -> (Vec<i64>, Cleaned) {
    let mut indices: Vec<i64> = judgments.iter().flat_map(|&(i, j, _)| [i, j]).collect();
    indices.sort_unstable();
    indices.dedup();
    let at = |v: i64| indices.binary_search(&v).expect("collected above");
    let positions: Vec<(usize, usize, f64)> = judgments
        .iter()
        .map(|&(i, j, o)| (at(i), at(j), o))
        .collect();
    let (x, observed) = comparison_matrix(indices.len(), &positions);
    let cleaned = clean_matrix(&x, indices.len(), Some(&observed), RpcaOptions::default());
    (indices, cleaned)
}

/// Row means.
fn borda(m: &[f64], n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| m[i * n..(i + 1) * n].iter().sum::<f64>() / n as f64)
        .collect()
}

/// 1-based ranks, score descending, ties by position. Scores equal to 1e-9 of the largest
/// magnitude count as tied: the solver often shrinks several outliers to exactly the same
/// level, and rounding noise must not decide their order.
fn ranks(scores: &[f64]) -> Vec<i64> {
    let scale = scores.iter().fold(0.0f64, |m, s| m.max(s.abs()));
    let key = |s: f64| {
        if scale > 0.0 {
            (s / scale * 1e9).round()
        } else {
            0.0
        }
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| key(scores[b]).total_cmp(&key(scores[a])));
    let mut ranks = vec![0i64; scores.len()];
    for (r, &i) in order.iter().enumerate() {
        ranks[i] = r as i64 + 1;
    }
    ranks
}

/// The logit matrix of scores: X_ij = (s_i − s_j)/T (Decision 5; rank 2 by construction).
pub fn score_matrix(scores: &[f64], temperature: f64) -> Vec<f64> {
    let n = scores.len();
    let mut x = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            x[i * n + j] = (scores[i] - scores[j]) / temperature;
        }
    }
    x
}

/// The logit matrix of pairwise judgments `(i, j, outcome)` over n responses: the outcomes of
/// each pair averaged (a judgment of (j, i) counts as 1 − outcome for (i, j)), clipped to
/// [δ, 1 − δ] with δ = 1/(2(m + 1)) for m judgments, X_ij = logit, X_ji = −X_ij. Returns the
/// matrix and Ω (judged pairs; never the diagonal).
pub fn comparison_matrix(n: usize, judgments: &[(usize, usize, f64)]) -> (Vec<f64>, Vec<bool>) {
    let mut wins = vec![0.0; n * n];
    let mut counts = vec![0u32; n * n];
    for &(i, j, outcome) in judgments {
        if i == j {
            continue;
        }
        wins[i * n + j] += outcome;
        counts[i * n + j] += 1;
        wins[j * n + i] += 1.0 - outcome;
        counts[j * n + i] += 1;
    }
    let mut x = vec![0.0; n * n];
    let mut observed = vec![false; n * n];
    for i in 0..n {
        for j in 0..n {
            let m = counts[i * n + j];
            if m == 0 {
                continue;
            }
            let delta = 1.0 / (2.0 * (f64::from(m) + 1.0));
            let p = (wins[i * n + j] / f64::from(m)).clamp(delta, 1.0 - delta);
            x[i * n + j] = p.ln() - (1.0 - p).ln();
            observed[i * n + j] = true;
        }
    }
    (x, observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconstruct(svd: &JacobiSvd, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n * n];
        svd.threshold_into(0.0, &mut out);
        out
    }

    #[test]
    fn jacobi_svd_reconstructs_and_warm_starts() {
        let n = 7;
        let a: Vec<f64> = (0..n * n)
            .map(|k| ((k * 37 % 11) as f64 - 5.0) / 3.0)
            .collect();
        let mut svd = JacobiSvd::new(n);
        svd.decompose(&a);
        let back = reconstruct(&svd, n);
        for (x, y) in a.iter().zip(&back) {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
        // A second, slightly different matrix from the previous V.
        let b: Vec<f64> = a.iter().map(|v| v * 1.01 + 0.001).collect();
        svd.decompose(&b);
        for (x, y) in b.iter().zip(&reconstruct(&svd, n)) {
            assert!((x - y).abs() < 1e-12);
        }
        // Rank-2 skew-symmetric matrix: two equal non-zero singular values.
        let x = score_matrix(&[3.0, 1.0, 0.0, -2.0], 1.0);
        svd = JacobiSvd::new(4);
        svd.decompose(&x);
        let mut s: Vec<f64> = svd.singular_values().to_vec();
        s.sort_by(|a, b| b.total_cmp(a));
        assert!((s[0] - s[1]).abs() < 1e-12 && s[2] < 1e-12, "{s:?}");
    }

    #[test]
    fn a_flipped_comparison_is_flagged_and_the_ranking_recovered() {
        // True scores 0..8 (descending order = index order reversed); flip the (6, 7) judgment.
        let n = 8;
        let truth: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
        let mut x = score_matrix(&truth, 1.0);
        x[6 * n + 7] = -x[6 * n + 7] * 4.0;
        x[7 * n + 6] = -x[6 * n + 7];
        let cleaned = clean_matrix(&x, n, None, RpcaOptions::default());
        assert!(cleaned.converged && cleaned.solved);
        assert!(cleaned.flagged.contains(&(6, 7)), "{:?}", cleaned.flagged);
        let expected: Vec<i64> = (0..n as i64).map(|i| n as i64 - i).collect();
        assert_eq!(cleaned.ranks, expected);
    }

    #[test]
    fn small_and_flat_inputs_pass_through() {
        let two = clean_matrix(
            &score_matrix(&[1.0, 2.0], 1.0),
            2,
            None,
            RpcaOptions::default(),
        );
        assert!(!two.solved && two.converged);
        assert_eq!(two.scores, [-0.5, 0.5]);
        assert_eq!(two.ranks, [2, 1]);
        let flat = clean_matrix(
            &score_matrix(&[4.0; 5], 1.0),
            5,
            None,
            RpcaOptions::default(),
        );
        assert!(!flat.solved);
        assert_eq!(flat.scores, [0.0; 5]);
        assert_eq!(flat.ranks, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn non_convergence_is_reported_and_never_used() {
        let n = 8;
        let mut x = score_matrix(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 1.0);
        x[1] = 9.0;
        x[n] = -9.0;
        let options = RpcaOptions {
            max_iterations: 3,
            ..RpcaOptions::default()
        };
        let raw = pcp(&x, n, None, options);
        assert!(!raw.converged && raw.iterations == 3 && raw.residual > 1e-7);
        let cleaned = clean_matrix(&x, n, None, options);
        assert!(!cleaned.converged && !cleaned.solved && cleaned.flagged.is_empty());
        // Passed through: the uncleaned Borda scores.
        let borda0: f64 = x[..n].iter().sum::<f64>() / n as f64;
        assert_eq!(cleaned.scores[0], borda0);
        assert_eq!(cleaned.iterations, 3);
    }

    #[test]
    fn judgments_are_averaged_clipped_and_masked() {
        // (0, 1) judged twice (1 and 0.5 -> 0.75); (1, 2) once as 1 -> clipped to 1 - 1/4.
        let (x, observed) = comparison_matrix(3, &[(0, 1, 1.0), (1, 0, 0.5), (1, 2, 1.0)]);
        assert!((x[1] - 3f64.ln()).abs() < 1e-15);
        assert_eq!(x[3], -x[1]);
        assert!((x[5] - 3f64.ln()).abs() < 1e-15);
        assert_eq!(
            observed,
            [false, true, false, true, false, true, false, true, false]
        );
    }
}
