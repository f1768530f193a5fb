//! The fast path of each ALM step's thresholding: `SubspaceSvt`, subspace iteration on a
//! small basis kept from step to step, which falls back to the full Jacobi when it cannot
//! prove its result.

use super::jacobi::JacobiSvd;
use super::linalg::{dot, dot_with_both, jacobi_rotation, orthonormalize, rotate};

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
pub(super) struct SubspaceSvt {
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
    /// A thresholder for n × n matrices with no basis yet.
    pub(super) fn new(n: usize) -> Self {
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
    pub(super) fn seed(&mut self, svd: &JacobiSvd, tau: f64) {
        let n = self.n;
        let mut order: Vec<usize> = (0..n).collect();
        let sigma = svd.singular_values();
        order.sort_by(|&a, &b| sigma[b].total_cmp(&sigma[a]));
        let above = sigma.iter().filter(|&&s| s > tau).count();
        // τ shrinks by 1.5 each step: leave out of the basis no more energy than a quarter of
        // the next step's τ², so that the basis still proves exactness then.
        let budget = 0.25 * (tau / 1.5).powi(2);
        let mut tail = 0.0;
        let left_out = order
            .iter()
            .rev()
            .take_while(|&&j| {
                tail += sigma[j] * sigma[j];
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
            self.v.extend_from_slice(svd.right_vector(j));
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
    pub(super) fn largest_singular_value(&mut self, m: &[f64]) -> Option<f64> {
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
                let (a, b) = dot_with_both(&m[i * n..(i + 1) * n], v0, v1);
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
    pub(super) fn threshold_into(&mut self, m: &[f64], tau: f64, out: &mut [f64]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpca::linalg::frobenius;
    use crate::rpca::matrix::score_matrix;
    use crate::rpca::test_matrices::{
        jacobi_threshold, max_difference, signal_plus_noise, with_singular_values,
    };

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
}
