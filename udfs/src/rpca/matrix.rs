//! The per-prompt logit matrices that label cleaning decomposes: skew-symmetric, from one
//! score per response or from pairwise judgments (with Ω, the judged pairs).

/// The logit matrix of scores: X_ij = (s_i − s_j)/T (`docs/ALGORITHMS.md` §5.2; rank 2 by construction).
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

/// The weights of stable PCP (`docs/ALGORITHMS.md` §5.11): per judged ordered pair,
/// W_ij = m_ij·p̃_ij·(1 − p̃_ij), the inverse of the delta-method variance of the logit of an
/// m-judgment mean (p̃ the clipped mean, recovered from the logit `x`); 0 where unjudged.
pub fn comparison_weights(n: usize, judgments: &[(usize, usize, f64)], x: &[f64]) -> Vec<f64> {
    let mut counts = vec![0u32; n * n];
    for &(i, j, _) in judgments {
        if i != j {
            counts[i * n + j] += 1;
            counts[j * n + i] += 1;
        }
    }
    counts
        .iter()
        .zip(x)
        .map(|(&m, &logit)| {
            let p = 1.0 / (1.0 + (-logit).exp());
            f64::from(m) * p * (1.0 - p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
