//! Label cleaning of one prompt (`docs/ALGORITHMS.md` §5): a prompt's pairwise judgments, or its
//! scores, in; one score, rank and count of flagged comparisons per response out, by one of five
//! methods ([`CleanMethod`]). Pure computation, no I/O; the `clean_scores` /
//! `clean_comparisons` aggregates and the `clean` stage both call [`clean_judgments`] and
//! [`clean_indexed_scores`].
//!
//! | module | what it holds |
//! |---|---|
//! | `bradley_terry` | `bt-mle` and the default `bt-trim` (§5.9–§5.10) |
//! | `win_rate` | `borda`, the win-rate baseline (§5.12) |
//! | `low_rank` | `pcp` and `stable-pcp` on the logit matrix (§5.3–§5.5, §5.11) |

mod bradley_terry;
mod low_rank;
mod win_rate;

use std::fmt;

pub use bradley_terry::{DEVIANCE_THRESHOLD, MAX_FITS, PRIOR_PRECISION, bt_mle, bt_trim};
pub use low_rank::{clean_matrix, clean_matrix_stable};
pub use win_rate::borda;

use crate::rpca::{
    RpcaOptions, StableOptions, comparison_matrix, comparison_weights, score_matrix,
};

/// The cleaning methods of `docs/ALGORITHMS.md` §5.8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CleanMethod {
    /// Bradley–Terry with pairs that contradict the fit dropped (the default on judgments).
    BtTrim,
    /// Bradley–Terry maximum a posteriori.
    BtMle,
    /// Win rate (on scores: row means of the score matrix).
    Borda,
    /// Principal component pursuit (the default on scores).
    Pcp,
    /// Noise-aware principal component pursuit.
    StablePcp,
}

impl CleanMethod {
    /// Every method, in the order of the documentation.
    pub const ALL: [CleanMethod; 5] = [
        CleanMethod::BtTrim,
        CleanMethod::BtMle,
        CleanMethod::Borda,
        CleanMethod::Pcp,
        CleanMethod::StablePcp,
    ];

    /// The method's name in configs, on the command line and in SQL.
    pub fn name(self) -> &'static str {
        match self {
            CleanMethod::BtTrim => "bt-trim",
            CleanMethod::BtMle => "bt-mle",
            CleanMethod::Borda => "borda",
            CleanMethod::Pcp => "pcp",
            CleanMethod::StablePcp => "stable-pcp",
        }
    }

    /// The method named `name`, or an error listing the names.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown cleaning method '{name}' (one of {})",
                    names.join(", ")
                )
            })
    }

    /// The default on pairwise judgments.
    pub const fn default_for_judgments() -> Self {
        CleanMethod::BtTrim
    }

    /// The default on scores: the only method that can flag anything there.
    pub const fn default_for_scores() -> Self {
        CleanMethod::Pcp
    }

    /// Whether the method is defined on scores (§5.8: the others need judgment counts).
    pub fn reads_scores(self) -> bool {
        matches!(self, CleanMethod::Pcp | CleanMethod::Borda)
    }
}

impl fmt::Display for CleanMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything label cleaning reports for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Cleaned {
    /// Score per response, in input order (what a score means depends on the method, §5.8).
    pub scores: Vec<f64>,
    /// 1-based rank per response: score descending, ties by position.
    pub ranks: Vec<i64>,
    /// Per response, how many of its comparisons were flagged as corrupted.
    pub flagged_per_response: Vec<i64>,
    /// Flagged comparisons as (i, j), i < j, positions in input order.
    pub flagged: Vec<(usize, usize)>,
    /// Solver steps (Newton steps for `bt-mle`, fits for `bt-trim`, 0 for `borda`).
    pub iterations: u32,
    /// Final relative residual (low-rank methods) or last step (Bradley–Terry).
    pub residual: f64,
    /// False when the solver did not converge; the scores are then the uncleaned ones.
    pub converged: bool,
    /// Whether the method's result is used (false when passed through: n ≤ 2, an all-zero
    /// matrix, no convergence, or a degenerate result).
    pub solved: bool,
    /// The low-rank solver explained the whole matrix as corruption (L = 0): passed through
    /// rather than reporting every score as equal.
    pub degenerate: bool,
}

impl Cleaned {
    /// A result that flags nothing: `scores` ranked, no corruption found, not degenerate.
    pub fn unflagged(
        scores: Vec<f64>,
        iterations: u32,
        residual: f64,
        converged: bool,
        solved: bool,
    ) -> Self {
        Self {
            ranks: ranks_by_score(&scores),
            flagged_per_response: vec![0; scores.len()],
            scores,
            flagged: Vec::new(),
            iterations,
            residual,
            converged,
            solved,
            degenerate: false,
        }
    }
}

/// Why a prompt cannot be cleaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanError {
    /// A response index that appears twice among a prompt's scores.
    DuplicateIndex(i64),
    /// A method that needs pairwise judgments, asked to clean scores.
    NeedsJudgments(CleanMethod),
}

impl fmt::Display for CleanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CleanError::DuplicateIndex(index) => {
                write!(f, "response_index {index} appears twice")
            }
            CleanError::NeedsJudgments(method) => write!(
                f,
                "method '{method}' needs pairwise judgments (prompt_id, i, j, outcome); on scores use 'pcp' or 'borda'"
            ),
        }
    }
}

impl std::error::Error for CleanError {}

/// One unordered pair of positions (i < j) with its judgments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgedPair {
    /// The first position (the smaller).
    pub i: usize,
    /// The second position.
    pub j: usize,
    /// m_ij, the number of judgments.
    pub judgments: f64,
    /// w_ij, the sum of the outcomes for "i beats j".
    pub wins: f64,
}

/// A prompt's judgments counted per unordered pair (`docs/ALGORITHMS.md` §5.8).
#[derive(Debug, Clone, PartialEq)]
pub struct PairCounts {
    /// Number of responses (positions 0..n).
    pub n: usize,
    /// The judged pairs, ordered by (i, j).
    pub pairs: Vec<JudgedPair>,
}

impl PairCounts {
    /// Counts judgments `(i, j, outcome)` over positions; a judgment of (j, i) counts as
    /// 1 − outcome for (i, j); i = j is ignored (the readers reject it first).
    pub fn from_positions(n: usize, judgments: &[(usize, usize, f64)]) -> Self {
        let mut wins = vec![0.0; n * n];
        let mut counts = vec![0.0; n * n];
        for &(a, b, outcome) in judgments {
            let (i, j, won) = match a.cmp(&b) {
                std::cmp::Ordering::Less => (a, b, outcome),
                std::cmp::Ordering::Greater => (b, a, 1.0 - outcome),
                std::cmp::Ordering::Equal => continue,
            };
            wins[i * n + j] += won;
            counts[i * n + j] += 1.0;
        }
        let mut pairs = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                if counts[i * n + j] > 0.0 {
                    pairs.push(JudgedPair {
                        i,
                        j,
                        judgments: counts[i * n + j],
                        wins: wins[i * n + j],
                    });
                }
            }
        }
        Self { n, pairs }
    }
}

/// Per response, how many of the flagged pairs it is in.
fn flags_per_response(n: usize, flagged: &[(usize, usize)]) -> Vec<i64> {
    let mut per_response = vec![0i64; n];
    for &(i, j) in flagged {
        per_response[i] += 1;
        per_response[j] += 1;
    }
    per_response
}

/// 1-based ranks, score descending, ties by position. Scores equal to 1e-9 of the largest
/// magnitude count as tied: the solvers often shrink several outliers to exactly the same
/// level, and rounding noise must not decide their order.
pub fn ranks_by_score(scores: &[f64]) -> Vec<i64> {
    let scale = scores.iter().fold(0.0f64, |m, s| m.max(s.abs()));
    // `+ 0.0` turns −0 into +0: `total_cmp` orders −0 below +0, and a score that rounds to
    // zero from below must tie with one that is exactly zero.
    let key = |s: f64| {
        if scale > 0.0 {
            (s / scale * 1e9).round() + 0.0
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

/// Cleans one prompt's scores, given with their response indices in any order, by `method`
/// (`pcp` or `borda`): returns the indices ascending and the cleaning.
pub fn clean_indexed_scores(
    indices: &[i64],
    scores: &[f64],
    temperature: f64,
    method: CleanMethod,
) -> Result<(Vec<i64>, Cleaned), CleanError> {
    if !method.reads_scores() {
        return Err(CleanError::NeedsJudgments(method));
    }
    let mut rows: Vec<(i64, f64)> = indices
        .iter()
        .copied()
        .zip(scores.iter().copied())
        .collect();
    rows.sort_by_key(|r| r.0);
    if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(CleanError::DuplicateIndex(w[0].0));
    }
    let (indices, scores): (Vec<i64>, Vec<f64>) = rows.into_iter().unzip();
    let n = scores.len();
    let x = score_matrix(&scores, temperature);
    let cleaned = if method == CleanMethod::Pcp {
        clean_matrix(&x, n, None, RpcaOptions::default())
    } else {
        // Borda on scores: the row means of X, i.e. (s_i − mean s)/T (§5.12).
        Cleaned::unflagged(low_rank::borda_scores(&x, n), 0, 0.0, true, true)
    };
    Ok((indices, cleaned))
}

/// Cleans one prompt's judgments `(i, j, outcome)` over response indices by `method`: returns
/// the indices seen (ascending) and the cleaning.
pub fn clean_judgments(judgments: &[(i64, i64, f64)], method: CleanMethod) -> (Vec<i64>, Cleaned) {
    let mut indices: Vec<i64> = judgments.iter().flat_map(|&(i, j, _)| [i, j]).collect();
    indices.sort_unstable();
    indices.dedup();
    let at = |v: i64| indices.binary_search(&v).expect("collected above");
    let positions: Vec<(usize, usize, f64)> = judgments
        .iter()
        .map(|&(i, j, o)| (at(i), at(j), o))
        .collect();
    let n = indices.len();
    let cleaned = match method {
        CleanMethod::BtTrim => bt_trim(&PairCounts::from_positions(n, &positions), PRIOR_PRECISION),
        CleanMethod::BtMle => bt_mle(&PairCounts::from_positions(n, &positions), PRIOR_PRECISION),
        CleanMethod::Borda => borda(&PairCounts::from_positions(n, &positions)),
        CleanMethod::Pcp => {
            let (x, observed) = comparison_matrix(n, &positions);
            clean_matrix(&x, n, Some(&observed), RpcaOptions::default())
        }
        CleanMethod::StablePcp => {
            let (x, observed) = comparison_matrix(n, &positions);
            let weights = comparison_weights(n, &positions, &x);
            clean_matrix_stable(&x, &weights, n, Some(&observed), StableOptions::default())
        }
    };
    (indices, cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_listed() {
        for m in CleanMethod::ALL {
            assert_eq!(CleanMethod::parse(m.name()), Ok(m));
        }
        let e = CleanMethod::parse("rpca").unwrap_err();
        assert!(e.contains("'rpca'") && e.contains("bt-trim, bt-mle, borda, pcp, stable-pcp"));
    }

    #[test]
    fn scores_take_only_the_score_methods() {
        let r = clean_indexed_scores(&[0, 1, 2], &[1.0, 0.0, 2.0], 1.0, CleanMethod::BtTrim);
        assert_eq!(r, Err(CleanError::NeedsJudgments(CleanMethod::BtTrim)));
        let (indices, c) =
            clean_indexed_scores(&[2, 0, 1], &[2.0, 1.0, 0.0], 1.0, CleanMethod::Borda).unwrap();
        assert_eq!(indices, [0, 1, 2]);
        assert_eq!(c.scores, [0.0, -1.0, 1.0]);
        assert!(c.solved && c.converged);
    }

    #[test]
    fn every_method_handles_all_ties_and_a_response_seen_only_in_one_pair() {
        // Every judgment a tie (0.5): all scores equal, ranks by position.
        let ties: Vec<(i64, i64, f64)> = (0..4)
            .flat_map(|i| (i + 1..4).map(move |j| (i, j, 0.5)))
            .collect();
        for m in CleanMethod::ALL {
            let (_, c) = clean_judgments(&ties, m);
            assert_eq!(c.ranks, [1, 2, 3, 4], "{m}");
            assert!(c.flagged.is_empty(), "{m}");
        }
        // A prompt with every pair missing (no judgments at all): no responses, no panic.
        for m in CleanMethod::ALL {
            let (indices, c) = clean_judgments(&[], m);
            assert!(
                indices.is_empty() && c.scores.is_empty() && c.flagged.is_empty(),
                "{m}"
            );
        }
        // n = 2: every method orders the winner first.
        for m in CleanMethod::ALL {
            let (indices, c) = clean_judgments(&[(7, 3, 1.0)], m);
            assert_eq!(indices, [3, 7]);
            assert_eq!(c.ranks, [2, 1], "{m}");
        }
    }
}
