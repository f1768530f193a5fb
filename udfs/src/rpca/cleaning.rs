//! Label cleaning of one prompt: robust PCA of its logit matrix, then Borda scores, ranks and
//! flagged comparisons from the decomposition, or the input passed through when the solver's
//! result cannot be used.

use super::linalg::frobenius;
use super::matrix::{comparison_matrix, score_matrix};
use super::solver::{RpcaOptions, pcp};

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
        let scores = borda_scores(&masked, n);
        Cleaned {
            ranks: ranks_by_score(&scores),
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
    let scores = borda_scores(&low_rank, n);
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
        ranks: ranks_by_score(&scores),
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

/// Borda scores: the row means of the n × n matrix `m`.
fn borda_scores(m: &[f64], n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| m[i * n..(i + 1) * n].iter().sum::<f64>() / n as f64)
        .collect()
}

/// 1-based ranks, score descending, ties by position. Scores equal to 1e-9 of the largest
/// magnitude count as tied: the solver often shrinks several outliers to exactly the same
/// level, and rounding noise must not decide their order.
fn ranks_by_score(scores: &[f64]) -> Vec<i64> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
