//! Dense vector kernels shared by both SVDs: dot products with independent partial sums,
//! plane rotations and Gram–Schmidt orthonormalisation of column-major blocks.

/// The Frobenius (or Euclidean) norm of `a`.
pub fn frobenius(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Σ a_i·b_i with four independent partial sums: a plain sum is one chain of dependent
/// additions (the compiler may not reorder floating-point sums), which leaves the core idle
/// on these short vectors.
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
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
pub(super) fn dot_with_both(a: &[f64], b: &[f64], c: &[f64]) -> (f64, f64) {
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

/// The Jacobi rotation (c, s, t = s/c) that makes two columns with squared norms α, β and
/// inner product γ orthogonal (Hestenes; the smaller of the two angles).
pub(super) fn jacobi_rotation(alpha: f64, beta: f64, gamma: f64) -> (f64, f64, f64) {
    let zeta = (beta - alpha) / (2.0 * gamma);
    let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
    let c = 1.0 / (1.0 + t * t).sqrt();
    (c, c * t, t)
}

/// Applies the plane rotation (c, s) to the column pair (x, y).
pub(super) fn rotate(x: &mut [f64], y: &mut [f64], c: f64, s: f64) {
    for (a, b) in x.iter_mut().zip(y.iter_mut()) {
        let (p, q) = (*a, *b);
        *a = c * p - s * q;
        *b = s * p + c * q;
    }
}

/// Orthonormalises the r columns (column-major, length n) of `a` in place by Gram–Schmidt,
/// twice (one pass loses orthogonality when columns are nearly dependent). A column that
/// vanishes is replaced by the first unit vector independent of the others.
pub(super) fn orthonormalize(a: &mut [f64], n: usize, r: usize) {
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
