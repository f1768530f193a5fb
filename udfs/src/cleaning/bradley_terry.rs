//! The Bradley–Terry methods `bt-mle` and `bt-trim` (`docs/ALGORITHMS.md` §5.9–§5.10): the
//! maximum a posteriori scores of the Bradley–Terry model with a Gaussian prior, fitted by
//! Newton's method, and the trimmed fit that drops the pairs whose own judgments contradict the
//! fitted scores far beyond chance.

use super::win_rate::win_rates;
use super::{Cleaned, PairCounts, flags_per_response, ranks_by_score};

/// Precision ρ of the Gaussian prior s_i ~ N(0, 1/ρ) (§5.9).
pub const PRIOR_PRECISION: f64 = 0.5;
/// The 0.999 quantile of χ² with one degree of freedom: the deviance above which a pair is
/// dropped (§5.10).
pub const DEVIANCE_THRESHOLD: f64 = 10.828;
/// Fits `bt-trim` runs at most (§5.10).
pub const MAX_FITS: u32 = 10;
/// Newton steps a fit takes at most (§5.9).
const MAX_NEWTON_STEPS: u32 = 100;
/// A fit has converged when no score moves by more than this in a step.
const STEP_TOLERANCE: f64 = 1e-10;

/// ln σ(d) = −ln(1 + e^(−d)), without overflow for large |d|.
fn ln_sigmoid(d: f64) -> f64 {
    if d >= 0.0 {
        -(-d).exp().ln_1p()
    } else {
        d - d.exp().ln_1p()
    }
}

/// σ(d), without overflow for large |d|.
fn sigmoid(d: f64) -> f64 {
    if d >= 0.0 {
        1.0 / (1.0 + (-d).exp())
    } else {
        let e = d.exp();
        e / (1.0 + e)
    }
}

/// One Bradley–Terry fit.
struct Fit {
    scores: Vec<f64>,
    steps: u32,
    /// The largest score change of the last step.
    last_step: f64,
    converged: bool,
}

/// The log posterior ℓ(s) over the kept pairs.
fn log_posterior(counts: &PairCounts, kept: &[bool], s: &[f64], prior: f64) -> f64 {
    let likelihood: f64 = counts
        .pairs
        .iter()
        .zip(kept)
        .filter(|(_, keep)| **keep)
        .map(|(p, _)| {
            let d = s[p.i] - s[p.j];
            p.wins * ln_sigmoid(d) + (p.judgments - p.wins) * ln_sigmoid(-d)
        })
        .sum();
    likelihood - prior / 2.0 * s.iter().map(|v| v * v).sum::<f64>()
}

/// Solves A·x = b for the symmetric positive definite row-major n × n `a` by Cholesky
/// (A = R·Rᵀ, R lower triangular, built in place).
fn cholesky_solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        // A ⪰ ρ·I with ρ > 0, so d > 0 up to rounding.
        let d = d.max(f64::MIN_POSITIVE).sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut v = a[i * n + j];
            for k in 0..j {
                v -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = v / d;
        }
    }
    for i in 0..n {
        let mut v = b[i];
        for k in 0..i {
            v -= a[i * n + k] * b[k];
        }
        b[i] = v / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut v = b[i];
        for k in i + 1..n {
            v -= a[k * n + i] * b[k];
        }
        b[i] = v / a[i * n + i];
    }
    b
}

/// Maximises ℓ over the kept pairs by Newton's method from s = 0, halving a step that lowers ℓ
/// (§5.9).
fn fit(counts: &PairCounts, kept: &[bool], prior: f64) -> Fit {
    let n = counts.n;
    let mut s = vec![0.0; n];
    let mut current = log_posterior(counts, kept, &s, prior);
    for step in 1..=MAX_NEWTON_STEPS {
        let mut gradient: Vec<f64> = s.iter().map(|v| -prior * v).collect();
        let mut hessian = vec![0.0; n * n];
        for i in 0..n {
            hessian[i * n + i] = prior;
        }
        for (p, _) in counts.pairs.iter().zip(kept).filter(|(_, keep)| **keep) {
            let probability = sigmoid(s[p.i] - s[p.j]);
            let residual = p.wins - p.judgments * probability;
            gradient[p.i] += residual;
            gradient[p.j] -= residual;
            let h = p.judgments * probability * (1.0 - probability);
            hessian[p.i * n + p.i] += h;
            hessian[p.j * n + p.j] += h;
            hessian[p.i * n + p.j] -= h;
            hessian[p.j * n + p.i] -= h;
        }
        let direction = cholesky_solve(hessian, gradient, n);
        let mut t = 1.0;
        let mut candidate: Vec<f64> = s.iter().zip(&direction).map(|(a, d)| a + d).collect();
        let mut value = log_posterior(counts, kept, &candidate, prior);
        for _ in 0..30 {
            if value >= current - 1e-12 * current.abs() {
                break;
            }
            t /= 2.0;
            candidate = s.iter().zip(&direction).map(|(a, d)| a + t * d).collect();
            value = log_posterior(counts, kept, &candidate, prior);
        }
        let moved = direction.iter().fold(0.0f64, |m, d| m.max((t * d).abs()));
        s = candidate;
        current = value;
        if moved <= STEP_TOLERANCE {
            return Fit {
                scores: s,
                steps: step,
                last_step: moved,
                converged: true,
            };
        }
    }
    Fit {
        scores: s,
        steps: MAX_NEWTON_STEPS,
        last_step: f64::INFINITY,
        converged: false,
    }
}

/// The binomial deviance of a pair's own judgments against the fitted probability σ(d) that i
/// beats j (0·ln 0 = 0).
fn pair_deviance(wins: f64, judgments: f64, d: f64) -> f64 {
    let term = |observed: f64, ln_probability: f64| {
        if observed > 0.0 {
            observed * (observed.ln() - judgments.ln() - ln_probability)
        } else {
            0.0
        }
    };
    2.0 * (term(wins, ln_sigmoid(d)) + term(judgments - wins, ln_sigmoid(-d)))
}

/// A fit that did not converge: the prompt is passed through with its win rates.
fn not_converged(counts: &PairCounts, iterations: u32) -> Cleaned {
    Cleaned::unflagged(win_rates(counts), iterations, f64::INFINITY, false, false)
}

/// `bt-mle`: the maximum a posteriori Bradley–Terry scores with prior precision `prior`.
pub fn bt_mle(counts: &PairCounts, prior: f64) -> Cleaned {
    let kept = vec![true; counts.pairs.len()];
    let fit = fit(counts, &kept, prior);
    if !fit.converged {
        return not_converged(counts, fit.steps);
    }
    Cleaned::unflagged(fit.scores, fit.steps, fit.last_step, true, true)
}

/// `bt-trim`: fit, drop every kept pair whose deviance exceeds the threshold, refit, until none
/// does or [`MAX_FITS`] fits ran; the dropped pairs are the flagged comparisons.
pub fn bt_trim(counts: &PairCounts, prior: f64) -> Cleaned {
    let mut kept = vec![true; counts.pairs.len()];
    let mut fits = 0;
    let fit = loop {
        fits += 1;
        let fit = fit(counts, &kept, prior);
        if !fit.converged {
            return not_converged(counts, fits);
        }
        if fits == MAX_FITS {
            break fit;
        }
        let mut dropped_any = false;
        for (p, keep) in counts.pairs.iter().zip(kept.iter_mut()) {
            let d = fit.scores[p.i] - fit.scores[p.j];
            if *keep && pair_deviance(p.wins, p.judgments, d) > DEVIANCE_THRESHOLD {
                *keep = false;
                dropped_any = true;
            }
        }
        if !dropped_any {
            break fit;
        }
    };
    let flagged: Vec<(usize, usize)> = counts
        .pairs
        .iter()
        .zip(&kept)
        .filter(|(_, keep)| !**keep)
        .map(|(p, _)| (p.i, p.j))
        .collect();
    Cleaned {
        ranks: ranks_by_score(&fit.scores),
        scores: fit.scores,
        flagged_per_response: flags_per_response(counts.n, &flagged),
        flagged,
        iterations: fits,
        residual: fit.last_step,
        converged: true,
        solved: true,
        degenerate: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_responses_match_the_closed_form() {
        // w wins of m for response 0: s_0 = −s_1 = d/2 with w − m·σ(d) − ρ·d/2 = 0.
        let counts = PairCounts::from_positions(2, &[(0, 1, 1.0), (0, 1, 1.0), (1, 0, 1.0)]);
        let c = bt_mle(&counts, PRIOR_PRECISION);
        let d = c.scores[0] - c.scores[1];
        assert!((c.scores[0] + c.scores[1]).abs() < 1e-14);
        assert!((2.0 - 3.0 * sigmoid(d) - PRIOR_PRECISION * d / 2.0).abs() < 1e-12);
        assert_eq!(c.ranks, [1, 2]);
    }

    #[test]
    fn a_response_that_wins_everything_stays_finite_and_an_unjudged_one_scores_zero() {
        let judgments = [(0, 1, 1.0), (0, 2, 1.0), (1, 2, 1.0)];
        let c = bt_mle(&PairCounts::from_positions(4, &judgments), PRIOR_PRECISION);
        assert!(c.converged && c.scores.iter().all(|s| s.is_finite()));
        assert_eq!(c.scores[3], 0.0);
        assert_eq!(c.ranks, [1, 2, 4, 3]);
    }

    #[test]
    fn a_pair_wrong_in_all_ten_judgments_is_dropped_and_the_order_recovered() {
        // Eight responses in order 0 > 1 > … > 7; every pair judged 10 times by its true
        // probability with s = 1.2·(7 − i), except that (1, 4) is reversed every time.
        let mut judgments = Vec::new();
        for i in 0..8usize {
            for j in i + 1..8 {
                let p = sigmoid(1.2 * (j - i) as f64);
                let wins = if (i, j) == (1, 4) {
                    0
                } else {
                    (10.0 * p).round() as usize
                };
                for k in 0..10 {
                    judgments.push((i, j, if k < wins { 1.0 } else { 0.0 }));
                }
            }
        }
        let counts = PairCounts::from_positions(8, &judgments);
        let trimmed = bt_trim(&counts, PRIOR_PRECISION);
        assert_eq!(trimmed.flagged, [(1, 4)]);
        assert_eq!(trimmed.flagged_per_response, [0, 1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(trimmed.ranks, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(trimmed.iterations, 2);
        let plain = bt_mle(&counts, PRIOR_PRECISION);
        assert!(plain.flagged.is_empty());
    }

    #[test]
    fn deviance_is_zero_for_a_perfect_fit_and_grows_with_surprise() {
        assert!(pair_deviance(5.0, 10.0, 0.0).abs() < 1e-12);
        let surprising = pair_deviance(0.0, 10.0, 2.0);
        assert!((surprising - 2.0 * 10.0 * -ln_sigmoid(-2.0)).abs() < 1e-12);
        assert!(surprising > DEVIANCE_THRESHOLD);
    }
}
