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
//! Singular value thresholding needs only the singular triplets above τ, and L is low rank,
//! so each step first tries subspace iteration on a small basis warm-started from the previous
//! step (`SubspaceSvt`: O(n²·r) per round, and it proves its result exact before using it).
//! When it cannot — too many singular values near τ, slow convergence — the step runs a
//! one-sided Jacobi (Hestenes) SVD written for these matrices (`JacobiSvd`): n is tens, where
//! general-purpose libraries spend more time setting up than computing (measured: a 16 × 16
//! `thin_svd` of faer 0.24 took 73 µs here), and the previous decomposition's right singular
//! vectors make the next one converge in a sweep or two. Both are accurate kinds: small singular
//! values keep their relative accuracy.

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
            let norm = svd.sigma.iter().copied().fold(0.0, f64::max);
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
        if !subspace.threshold_into(&work, inv_mu, &mut low_rank) {
            svd.decompose_above(&work, inv_mu);
            svd.threshold_into(inv_mu, &mut low_rank);
            subspace.seed(&svd, inv_mu);
        }
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

/// (a·b, a·c) in one pass over a, each with four partial sums.
fn dot2(a: &[f64], b: &[f64], c: &[f64]) -> (f64, f64) {
    let mut ab = [0.0f64; 4];
    let mut ac = [0.0f64; 4];
    let (a4, b4, c4) = (a.chunks_exact(4), b.chunks_exact(4), c.chunks_exact(4));
    let (ra, rb, rc) = (a4.remainder(), b4.remainder(), c4.remainder());
    for ((x, y), z) in a4.zip(b4).zip(c4) {
        for k in 0..4 {
            ab[k] += x[k] * y[k];
            ac[k] += x[k] * z[k];
        }
    }
    let mut first = (ab[0] + ab[1]) + (ab[2] + ab[3]);
    let mut second = (ac[0] + ac[1]) + (ac[2] + ac[3]);
    for ((x, y), z) in ra.iter().zip(rb).zip(rc) {
        first += x * y;
        second += x * z;
    }
    (first, second)
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
                    let (c, s, t) = jacobi_rotation(alpha, beta, gamma);
                    rotate(cp, cq, c, s);
                    norms[p] = alpha - t * gamma;
                    norms[q] = beta + t * gamma;
                    let (head, tail) = self.v.split_at_mut(q * n);
                    rotate(&mut head[p * n..(p + 1) * n], &mut tail[..n], c, s);
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

/// Singular value thresholding by subspace iteration on the few singular triplets above τ,
/// with proof of exactness, for the ALM steps after the first.
///
/// L is low rank (2 on score matrices, a handful on comparison matrices) and each step's
/// matrix differs little from the last, so a basis of the previous step's leading right
/// singular vectors, two "guard" vectors wider than the count above τ, converges in one or two
/// rounds of `Z = M·V`, `Q = orth(Z)`, `W = Mᵀ·Q` and a Jacobi SVD of the r columns of W —
/// O(n²·r) per round instead of the O(n³) sweeps of the full Jacobi.
///
/// Every round yields Ritz triplets with `Mᵀ·u_j = σ_j·v_j` exactly; a triplet counts as
/// converged when also `‖M·v_j − σ_j·u_j‖ ≤ 1e-9·σ₁`. The thresholded result is accepted only
/// when every Ritz value above τ has converged and the energy the converged triplets leave,
/// `‖M‖²_F − Σ σ_j²`, is below τ² (with room for rounding): the rest of M then has spectral
/// norm below τ and thresholding removes it exactly — the same test the full Jacobi's small
/// set passes. Otherwise (too small a basis, slow convergence) it says so and the caller runs
/// the full Jacobi, which reseeds the basis.
#[derive(Debug, Clone)]
struct SubspaceSvt {
    n: usize,
    /// Basis size r; 0 until seeded.
    rank: usize,
    /// Right vectors (column-major n × r), orthonormal.
    v: Vec<f64>,
    /// Left Ritz vectors matching `v` when `has_ritz`.
    u: Vec<f64>,
    sigma: Vec<f64>,
    has_ritz: bool,
    /// Which Ritz triplets passed the residual test (after `converged_energy`).
    converged: Vec<bool>,
    /// Scratch: M·V, its orthonormal basis Q, Mᵀ·Q, and the r × r rotation of the small SVD.
    z: Vec<f64>,
    q: Vec<f64>,
    w: Vec<f64>,
    rotation: Vec<f64>,
    column_norms: Vec<f64>,
}

/// Guard vectors beyond the count above τ (pairs: skew-symmetric matrices have paired
/// singular values).
const SUBSPACE_GUARD: usize = 2;
/// Rounds of subspace iteration before falling back to the full Jacobi.
const SUBSPACE_ROUNDS: usize = 12;

impl SubspaceSvt {
    fn new(n: usize) -> Self {
        Self {
            n,
            rank: 0,
            v: Vec::new(),
            u: Vec::new(),
            sigma: Vec::new(),
            has_ritz: false,
            converged: Vec::new(),
            z: Vec::new(),
            q: Vec::new(),
            w: Vec::new(),
            rotation: Vec::new(),
            column_norms: Vec::new(),
        }
    }

    /// Takes the leading right singular vectors of a full Jacobi decomposition as the basis:
    /// those above τ plus the guard vectors, if that stays well below n (otherwise the full
    /// Jacobi is the cheaper method and the basis stays empty).
    fn seed(&mut self, svd: &JacobiSvd, tau: f64) {
        let n = self.n;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| svd.sigma[b].total_cmp(&svd.sigma[a]));
        let above = svd.sigma.iter().filter(|&&s| s > tau).count();
        // τ shrinks by 1.5 each step: leave out of the basis no more energy than a quarter of
        // the next step's τ², so that the basis still proves exactness then.
        let budget = 0.25 * (tau / 1.5).powi(2);
        let mut tail = 0.0;
        let left_out = order
            .iter()
            .rev()
            .take_while(|&&j| {
                tail += svd.sigma[j] * svd.sigma[j];
                tail <= budget
            })
            .count();
        let rank = (n - left_out).max(above + SUBSPACE_GUARD).max(2);
        self.has_ritz = false;
        if 2 * rank > n {
            self.rank = 0;
            return;
        }
        self.v.clear();
        for &j in &order[..rank] {
            self.v.extend_from_slice(&svd.v[j * n..(j + 1) * n]);
        }
        self.resize(rank);
    }

    /// Sizes the buffers for a basis of `rank` vectors.
    fn resize(&mut self, rank: usize) {
        let n = self.n;
        for buffer in [&mut self.u, &mut self.z, &mut self.q, &mut self.w] {
            buffer.resize(n * rank, 0.0);
        }
        self.sigma.resize(rank, 0.0);
        self.rotation.resize(rank * rank, 0.0);
        self.rank = rank;
    }

    /// ‖m‖₂ by subspace iteration from the four largest rows of `m`, leaving the basis as the
    /// seed of the first ALM step; `None` when it cannot prove the value is the largest (the
    /// energy outside its converged triplets reaches it) or converges too slowly.
    fn largest_singular_value(&mut self, m: &[f64]) -> Option<f64> {
        let n = self.n;
        let rank = 4.min(n / 2);
        if rank < 2 {
            return None;
        }
        let mut rows: Vec<(f64, usize)> = (0..n)
            .map(|i| {
                let row = &m[i * n..(i + 1) * n];
                (dot(row, row), i)
            })
            .collect();
        rows.sort_by(|a, b| b.0.total_cmp(&a.0));
        self.v.clear();
        for &(_, i) in &rows[..rank] {
            self.v.extend_from_slice(&m[i * n..(i + 1) * n]);
        }
        self.resize(rank);
        orthonormalize(&mut self.v, n, rank);
        self.has_ritz = false;
        let total = dot(m, m);
        let slack = 1e-13 * total * (rank as f64 + 1.0);
        for _ in 0..SUBSPACE_ROUNDS {
            self.multiply_v(m);
            if self.has_ritz {
                let (converged, captured) = self.converged_energy(f64::INFINITY);
                let largest = self.sigma.iter().copied().fold(0.0, f64::max);
                if converged && total - captured + slack < largest * largest {
                    return Some(largest);
                }
            }
            self.ritz_from_z(m);
        }
        self.rank = 0;
        self.has_ritz = false;
        None
    }

    /// Z = M·V, two columns of V at a time so that each row of M is read once per pair.
    fn multiply_v(&mut self, m: &[f64]) {
        let (n, r) = (self.n, self.rank);
        let mut j = 0;
        while j + 2 <= r {
            let (v0, v1) = (
                &self.v[j * n..(j + 1) * n],
                &self.v[(j + 1) * n..(j + 2) * n],
            );
            for i in 0..n {
                let (a, b) = dot2(&m[i * n..(i + 1) * n], v0, v1);
                self.z[j * n + i] = a;
                self.z[(j + 1) * n + i] = b;
            }
            j += 2;
        }
        if j < r {
            let vj = &self.v[j * n..(j + 1) * n];
            for i in 0..n {
                self.z[j * n + i] = dot(&m[i * n..(i + 1) * n], vj);
            }
        }
    }

    /// Given Z = M·V for the current Ritz triplets: whether every triplet with σ above
    /// `needed` has converged (`‖M·v_j − σ_j·u_j‖ ≤ 1e-9·σ₁`; the largest Ritz value always
    /// must), and Σ σ_j² over the converged ones.
    fn converged_energy(&mut self, needed: f64) -> (bool, f64) {
        let n = self.n;
        let mut converged = std::mem::take(&mut self.converged);
        converged.clear();
        converged.resize(self.rank, false);
        let largest = self.sigma.iter().copied().fold(0.0, f64::max);
        let tolerance = (1e-9 * largest).powi(2);
        let mut captured = 0.0;
        let mut all = true;
        for (j, done) in converged.iter_mut().enumerate() {
            let sigma = self.sigma[j];
            let zj = &self.z[j * n..(j + 1) * n];
            let uj = &self.u[j * n..(j + 1) * n];
            let residual: f64 = zj
                .iter()
                .zip(uj)
                .map(|(z, u)| (z - sigma * u).powi(2))
                .sum();
            if residual <= tolerance {
                *done = true;
                captured += sigma * sigma;
            } else if sigma > needed || sigma == largest {
                all = false;
            }
        }
        self.converged = converged;
        (all, captured)
    }

    /// Writes SVT(m, τ) (row-major) into `out` and returns true, or returns false (leaving
    /// `out` untouched) when the basis cannot prove the result exact.
    fn threshold_into(&mut self, m: &[f64], tau: f64, out: &mut [f64]) -> bool {
        if self.rank == 0 {
            return false;
        }
        // The Ritz triplets on hand belong to the previous step's matrix: V is only the
        // starting basis. (Testing them against M would check M·v = σ·u but not Mᵀ·u = σ·v.)
        self.has_ritz = false;
        let total = dot(m, m);
        // Rounds of refinement; widening the basis (at most n/2 vectors) does not count.
        let mut rounds = 0;
        let mut refined = false;
        loop {
            self.multiply_v(m);
            if self.has_ritz {
                let (converged, captured) = self.converged_energy(tau);
                if converged {
                    // Rounding in ‖M‖² − Σσ² is a few ulps of ‖M‖² per term.
                    let slack = 1e-13 * total * (self.rank as f64 + 1.0);
                    if total - captured + slack < tau * tau
                        || self.deflated_norm_bound(m) + slack < tau * tau
                    {
                        self.write_threshold(tau, out);
                        return true;
                    }
                    // More than τ² of M lies outside what the basis has resolved. When every
                    // triplet in it has converged, or one more round did not get them there
                    // (a cluster of equal values cut by the basis never converges), the basis
                    // is too small: widen it, or give up. Otherwise refine once more first.
                    let everything = self.converged.iter().all(|&c| c);
                    if everything || refined {
                        if self.widen(m) {
                            refined = false;
                            continue;
                        }
                        if everything {
                            self.has_ritz = false;
                            self.rank = 0;
                            return false;
                        }
                    }
                    refined = true;
                }
            }
            if rounds == SUBSPACE_ROUNDS {
                self.has_ritz = false;
                return false;
            }
            rounds += 1;
            self.ritz_from_z(m);
        }
    }

    /// An upper bound on ‖D‖₂² for the part of M the converged triplets leave,
    /// `D = M − Σ σ_j·u_j·v_jᵀ`: ‖DᵀD‖_F = (Σ σ_k(D)⁴)^½. Tighter than ‖D‖²_F = Σ σ_k(D)² when
    /// the energy is spread over many small singular values (the usual reason the energy test
    /// fails late in the solve, when τ is small); O(n³), so only tried after that test.
    fn deflated_norm_bound(&self, m: &[f64]) -> f64 {
        let n = self.n;
        let mut deflated = m.to_vec();
        for j in (0..self.rank).filter(|&j| self.converged[j]) {
            let (uj, vj) = (&self.u[j * n..(j + 1) * n], &self.v[j * n..(j + 1) * n]);
            for i in 0..n {
                let scale = self.sigma[j] * uj[i];
                for (d, v) in deflated[i * n..(i + 1) * n].iter_mut().zip(vj) {
                    *d -= scale * v;
                }
            }
        }
        // ‖D·Dᵀ‖²_F from the upper triangle of the Gram matrix of D's rows.
        let mut sum = 0.0;
        for a in 0..n {
            let row_a = &deflated[a * n..(a + 1) * n];
            sum += dot(row_a, row_a).powi(2);
            for b in a + 1..n {
                sum += 2.0 * dot(row_a, &deflated[b * n..(b + 1) * n]).powi(2);
            }
        }
        sum.sqrt()
    }

    /// Adds to the basis the largest rows of `M·(I − V·Vᵀ)` (the row space the basis misses),
    /// as long as the basis stays within n/2; returns whether it did. `z` holds M·V.
    fn widen(&mut self, m: &[f64]) -> bool {
        let (n, r) = (self.n, self.rank);
        // Grow by half (an even count: singular values of skew matrices come in pairs), so
        // that a wide cluster below τ takes a few widenings, not one per pair.
        let extra = (r / 2).next_multiple_of(2).max(SUBSPACE_GUARD);
        let wider = (r + extra).min(n / 2);
        if wider <= r {
            return false;
        }
        let mut rows: Vec<(f64, usize)> = Vec::with_capacity(n);
        let mut missing = vec![0.0; n * n];
        for i in 0..n {
            let row = &mut missing[i * n..(i + 1) * n];
            row.copy_from_slice(&m[i * n..(i + 1) * n]);
            for j in 0..r {
                let zij = self.z[j * n + i];
                for (x, v) in row.iter_mut().zip(&self.v[j * n..(j + 1) * n]) {
                    *x -= zij * v;
                }
            }
            rows.push((dot(row, row), i));
        }
        rows.sort_by(|a, b| b.0.total_cmp(&a.0));
        self.resize(wider);
        self.v.truncate(n * r);
        for &(_, i) in &rows[..wider - r] {
            self.v.extend_from_slice(&missing[i * n..(i + 1) * n]);
        }
        orthonormalize(&mut self.v, n, wider);
        self.has_ritz = false;
        true
    }

    /// One round: Q = orth(Z), W = Mᵀ·Q, W·R = [σ_j·v_j] by Jacobi, u_j = Q·R·e_j.
    fn ritz_from_z(&mut self, m: &[f64]) {
        let (n, r) = (self.n, self.rank);
        self.q.copy_from_slice(&self.z);
        orthonormalize(&mut self.q, n, r);
        self.w.iter_mut().for_each(|x| *x = 0.0);
        for i in 0..n {
            let row = &m[i * n..(i + 1) * n];
            for j in 0..r {
                let qij = self.q[j * n + i];
                if qij == 0.0 {
                    continue;
                }
                for (w, x) in self.w[j * n..(j + 1) * n].iter_mut().zip(row) {
                    *w += qij * x;
                }
            }
        }
        // One-sided Jacobi on the r columns of W, accumulating the rotations in R (r × r,
        // column-major) and applying them to Q once at the end.
        self.rotation.iter_mut().for_each(|x| *x = 0.0);
        for j in 0..r {
            self.rotation[j * r + j] = 1.0;
        }
        let mut norms = std::mem::take(&mut self.column_norms);
        norms.resize(r, 0.0);
        for _ in 0..30 {
            let mut rotated = false;
            for (j, norm) in norms.iter_mut().enumerate() {
                let wj = &self.w[j * n..(j + 1) * n];
                *norm = dot(wj, wj);
            }
            for p in 0..r {
                for q in p + 1..r {
                    let (head, tail) = self.w.split_at_mut(q * n);
                    let (wp, wq) = (&mut head[p * n..(p + 1) * n], &mut tail[..n]);
                    let (alpha, beta, gamma) = (norms[p], norms[q], dot(wp, wq));
                    // Orthogonal to 1e-11 leaves the Ritz vectors far more accurate than the
                    // 1e-9 residual they are held to.
                    if gamma == 0.0 || gamma.abs() <= 1e-11 * (alpha * beta).sqrt() {
                        continue;
                    }
                    rotated = true;
                    let (c, s, t) = jacobi_rotation(alpha, beta, gamma);
                    norms[p] = alpha - t * gamma;
                    norms[q] = beta + t * gamma;
                    rotate(wp, wq, c, s);
                    let (head, tail) = self.rotation.split_at_mut(q * r);
                    rotate(&mut head[p * r..(p + 1) * r], &mut tail[..r], c, s);
                }
            }
            if !rotated {
                break;
            }
        }
        self.column_norms = norms;
        let mut vanished = false;
        for j in 0..r {
            let uj = &mut self.u[j * n..(j + 1) * n];
            uj.iter_mut().for_each(|x| *x = 0.0);
            for (k, &weight) in self.rotation[j * r..(j + 1) * r].iter().enumerate() {
                if weight != 0.0 {
                    for (u, q) in uj.iter_mut().zip(&self.q[k * n..(k + 1) * n]) {
                        *u += weight * q;
                    }
                }
            }
            let wj = &self.w[j * n..(j + 1) * n];
            let sigma = dot(wj, wj).sqrt();
            self.sigma[j] = sigma;
            let vj = &mut self.v[j * n..(j + 1) * n];
            if sigma > 0.0 {
                for (v, w) in vj.iter_mut().zip(wj) {
                    *v = w / sigma;
                }
            } else {
                vj.iter_mut().for_each(|v| *v = 0.0);
                vanished = true;
            }
        }
        // Columns of W that vanished (M of rank below r) leave zero vectors: complete V to an
        // orthonormal basis again so that the next round still spans r directions. (The
        // others are orthonormal already: Jacobi left them orthogonal, and they are scaled.)
        if vanished {
            orthonormalize(&mut self.v, n, r);
        }
        self.has_ritz = true;
    }

    /// `Σ_{σ_j > τ} (σ_j − τ)·u_j·v_jᵀ` (row-major).
    fn write_threshold(&self, tau: f64, out: &mut [f64]) {
        let n = self.n;
        out.iter_mut().for_each(|x| *x = 0.0);
        for j in 0..self.rank {
            let sigma = self.sigma[j];
            if sigma <= tau {
                continue;
            }
            let uj = &self.u[j * n..(j + 1) * n];
            let vj = &self.v[j * n..(j + 1) * n];
            for i in 0..n {
                let scale = (sigma - tau) * uj[i];
                for (o, v) in out[i * n..(i + 1) * n].iter_mut().zip(vj) {
                    *o += scale * v;
                }
            }
        }
    }
}

/// The Jacobi rotation (c, s, t = s/c) that makes two columns with squared norms α, β and
/// inner product γ orthogonal (Hestenes; the smaller of the two angles).
fn jacobi_rotation(alpha: f64, beta: f64, gamma: f64) -> (f64, f64, f64) {
    let zeta = (beta - alpha) / (2.0 * gamma);
    let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
    let c = 1.0 / (1.0 + t * t).sqrt();
    (c, c * t, t)
}

/// Applies the plane rotation (c, s) to the column pair (x, y).
fn rotate(x: &mut [f64], y: &mut [f64], c: f64, s: f64) {
    for (a, b) in x.iter_mut().zip(y.iter_mut()) {
        let (p, q) = (*a, *b);
        *a = c * p - s * q;
        *b = s * p + c * q;
    }
}

/// Orthonormalises the r columns (column-major, length n) of `a` in place by Gram–Schmidt,
/// twice (one pass loses orthogonality when columns are nearly dependent). A column that
/// vanishes is replaced by the first unit vector independent of the others.
fn orthonormalize(a: &mut [f64], n: usize, r: usize) {
    let mut fallback = 0;
    for j in 0..r {
        let (done, rest) = a.split_at_mut(j * n);
        let col = &mut rest[..n];
        let original = dot(col, col).sqrt();
        let mut norm = project_out(col, done, original);
        if norm <= 1e-10 * original || norm == 0.0 {
            // Some unit vector keeps at least √((n − j)/n) of its length: ≥ √½ for j ≤ n/2.
            loop {
                if fallback >= n {
                    return;
                }
                col.iter_mut().for_each(|c| *c = 0.0);
                col[fallback] = 1.0;
                fallback += 1;
                norm = project_out(col, done, 1.0);
                if norm > 0.5 {
                    break;
                }
            }
        }
        col.iter_mut().for_each(|c| *c /= norm);
    }
}

/// Removes from `col` (of length `norm`) its components along the orthonormal columns in
/// `basis` and returns what is left of its length. "Twice is enough" (Kahan–Parlett): a
/// second pass only when the first cancelled most of the column.
fn project_out(col: &mut [f64], basis: &[f64], mut norm: f64) -> f64 {
    for _ in 0..2 {
        let before = norm;
        for b in basis.chunks_exact(col.len()) {
            let projection = dot(b, col);
            for (c, x) in col.iter_mut().zip(b) {
                *c -= projection * x;
            }
        }
        norm = dot(col, col).sqrt();
        if norm > 0.5 * before {
            break;
        }
    }
    norm
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
    fn signal_plus_noise(n: usize, size: f64, seed: u64) -> Vec<f64> {
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

    fn jacobi_threshold(m: &[f64], n: usize, tau: f64) -> Vec<f64> {
        let mut svd = JacobiSvd::new(n);
        svd.decompose(m);
        let mut out = vec![0.0; n * n];
        svd.threshold_into(tau, &mut out);
        out
    }

    fn max_difference(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn subspace_thresholding_equals_the_full_jacobi_or_declines() {
        for (n, size, tau) in [
            (8, 1e-3, 0.5),
            (16, 1e-2, 0.2),
            (16, 1e-4, 1e-3),
            (64, 1e-3, 0.1),
        ] {
            let m = signal_plus_noise(n, size, n as u64);
            let exact = jacobi_threshold(&m, n, tau);
            let scale = frobenius(&exact);
            // Seeded the way pcp does: the norm's basis, then the matrix of the next step.
            let mut subspace = SubspaceSvt::new(n);
            let norm = subspace
                .largest_singular_value(&m)
                .expect("a rank-2 signal over small noise resolves");
            let mut svd = JacobiSvd::new(n);
            svd.decompose(&m);
            let largest = svd.singular_values().iter().copied().fold(0.0, f64::max);
            assert!(
                (norm - largest).abs() <= 1e-12 * largest,
                "{norm} vs {largest}"
            );
            let mut out = vec![f64::NAN; n * n];
            assert!(
                subspace.threshold_into(&m, tau, &mut out),
                "n = {n}, τ = {tau}"
            );
            assert!(
                max_difference(&out, &exact) <= 1e-9 * scale,
                "n = {n}: {}",
                max_difference(&out, &exact)
            );
            // Warm start on a perturbed matrix (the next ALM step).
            let next: Vec<f64> = m
                .iter()
                .zip(signal_plus_noise(n, size, 99))
                .map(|(a, b)| a + 1e-3 * b)
                .collect();
            let exact = jacobi_threshold(&next, n, tau / 1.5);
            assert!(subspace.threshold_into(&next, tau / 1.5, &mut out));
            assert!(max_difference(&out, &exact) <= 1e-9 * frobenius(&exact));
        }
        // Exactly rank 2 (basis columns that vanish) and the zero matrix.
        let m = score_matrix(&[3.0, 1.0, 0.0, -2.0, 0.5, 0.25, -1.0, 2.0], 1.0);
        let mut subspace = SubspaceSvt::new(8);
        subspace.largest_singular_value(&m).expect("rank 2");
        let mut out = vec![0.0; 64];
        assert!(subspace.threshold_into(&m, 0.1, &mut out));
        assert!(max_difference(&out, &jacobi_threshold(&m, 8, 0.1)) <= 1e-12 * frobenius(&m));
        assert!(subspace.threshold_into(&[0.0; 64], 0.1, &mut out));
        assert!(out.iter().all(|&v| v == 0.0));
    }

    /// `U·diag(σ)·Vᵀ` (row-major n × n) for random orthogonal U and V.
    fn with_singular_values(sigma: &[f64], seed: u64) -> Vec<f64> {
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

    #[test]
    fn subspace_thresholding_widens_its_basis_or_declines() {
        // σ = 10, 10, then twelve at 0.9 (just below τ = 1), the rest tiny: a basis of four
        // leaves 10·0.81 > τ² outside it, and even ‖DᵀD‖_F = √(10·0.9⁴) > τ², so it must
        // widen to prove the result (the 0.9 values could be one value above τ for all the
        // energy tests know), and it can: n = 32 allows 16.
        let n = 32;
        let mut sigma = vec![1e-3; n];
        sigma[..2].copy_from_slice(&[10.0, 10.0]);
        sigma[2..14].iter_mut().for_each(|s| *s = 0.9);
        let m = with_singular_values(&sigma, 3);
        let exact = jacobi_threshold(&m, n, 1.0);
        let mut subspace = SubspaceSvt::new(n);
        subspace.largest_singular_value(&m).expect("clear top pair");
        assert_eq!(subspace.rank, 4);
        let mut out = vec![0.0; n * n];
        assert!(subspace.threshold_into(&m, 1.0, &mut out));
        assert!(subspace.rank > 4, "widened to {}", subspace.rank);
        assert!(max_difference(&out, &exact) <= 1e-9 * frobenius(&exact));
        // The same tail at n = 16 cannot fit in n/2 = 8 vectors: it declines and drops the
        // basis (the caller then runs the full Jacobi).
        let m = with_singular_values(&sigma[..16], 4);
        let mut subspace = SubspaceSvt::new(16);
        subspace.largest_singular_value(&m).expect("clear top pair");
        assert!(!subspace.threshold_into(&m, 1.0, &mut out));
        assert_eq!(subspace.rank, 0);
        assert!(!subspace.threshold_into(&m, 1.0, &mut out));
        // Seeding with many singular values above τ leaves no basis at all.
        let mut full = JacobiSvd::new(16);
        full.decompose(&m);
        subspace.seed(&full, 0.5);
        assert_eq!(subspace.rank, 0);
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
