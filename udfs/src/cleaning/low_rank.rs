//! The low-rank methods `pcp` and `stable-pcp` (`docs/ALGORITHMS.md` §5.3–§5.5, §5.11): robust
//! PCA of a prompt's logit matrix, then Borda scores, ranks and flagged comparisons from the
//! decomposition, or the input passed through when the solver's result cannot be used.

use super::{Cleaned, ranks_by_score};
use crate::rpca::{Rpca, RpcaOptions, StableOptions, frobenius, pcp, stable_pcp};

/// Cleans one prompt's skew-symmetric logit matrix `x` (row-major n × n, Ω given by
/// `observed`, `None` = all) by PCP: RPCA, skew-symmetrise L, Borda scores, ranks, flags
/// (|S_ij| > 1e-6·‖P_Ω X‖_F on Ω). n ≤ 2, an all-zero matrix, or no convergence: passed
/// through (Borda scores of X itself, nothing flagged).
pub fn clean_matrix(
    x: &[f64],
    n: usize,
    observed: Option<&[bool]>,
    options: RpcaOptions,
) -> Cleaned {
    decompose_and_rank(x, n, observed, |masked| pcp(masked, n, observed, options))
}

/// As [`clean_matrix`], by stable PCP with the per-entry weights `weights` (§5.11).
pub fn clean_matrix_stable(
    x: &[f64],
    weights: &[f64],
    n: usize,
    observed: Option<&[bool]>,
    options: StableOptions,
) -> Cleaned {
    decompose_and_rank(x, n, observed, |masked| {
        stable_pcp(masked, weights, n, observed, options)
    })
}

/// The steps both low-rank methods share: mask, pass-through checks, `solve`, and scores,
/// ranks and flags from its decomposition.
fn decompose_and_rank(
    x: &[f64],
    n: usize,
    observed: Option<&[bool]>,
    solve: impl FnOnce(&[f64]) -> Rpca,
) -> Cleaned {
    let is_observed = |k: usize| observed.is_none_or(|o| o[k]);
    let masked: Vec<f64> = (0..n * n)
        .map(|k| if is_observed(k) { x[k] } else { 0.0 })
        .collect();
    let x_norm = frobenius(&masked);
    let pass_through = |iterations, residual, converged, degenerate| Cleaned {
        degenerate,
        ..Cleaned::unflagged(
            borda_scores(&masked, n),
            iterations,
            residual,
            converged,
            false,
        )
    };
    if n <= 2 || x_norm == 0.0 {
        return pass_through(0, 0.0, true, false);
    }
    let result = solve(&masked);
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
    let scores = borda_scores(&low_rank, n);
    let threshold = 1e-6 * x_norm;
    let mut flagged = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            let hit = |a: usize, b: usize| {
                let k = a * n + b;
                is_observed(k) && result.sparse[k].abs() > threshold
            };
            if hit(i, j) || hit(j, i) {
                flagged.push((i, j));
            }
        }
    }
    Cleaned {
        ranks: ranks_by_score(&scores),
        scores,
        flagged_per_response: super::flags_per_response(n, &flagged),
        flagged,
        iterations: result.iterations,
        residual: result.residual,
        converged: true,
        solved: true,
        degenerate: false,
    }
}

/// Borda scores: the row means of the n × n matrix `m`.
pub(super) fn borda_scores(m: &[f64], n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| m[i * n..(i + 1) * n].iter().sum::<f64>() / n as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpca::score_matrix;

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
}
