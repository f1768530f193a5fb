//! The baseline method `borda` on judgments (`docs/ALGORITHMS.md` §5.12): each response's share of
//! the judgments it won, 0.5 for a response never judged.

use super::{Cleaned, PairCounts};

/// Per response, Σ wins / Σ judgments over its pairs; 0.5 when it has none.
pub(super) fn win_rates(counts: &PairCounts) -> Vec<f64> {
    let mut wins = vec![0.0; counts.n];
    let mut judged = vec![0.0; counts.n];
    for p in &counts.pairs {
        wins[p.i] += p.wins;
        wins[p.j] += p.judgments - p.wins;
        judged[p.i] += p.judgments;
        judged[p.j] += p.judgments;
    }
    wins.iter()
        .zip(&judged)
        .map(|(&w, &m)| if m > 0.0 { w / m } else { 0.5 })
        .collect()
}

/// `borda`: the win rates, ranked; nothing flagged.
pub fn borda(counts: &PairCounts) -> Cleaned {
    Cleaned::unflagged(win_rates(counts), 0, 0.0, true, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win_rates_by_hand() {
        // 0 beats 1 twice, 1 beats 0 once (as (0, 1, 0)), 1 and 2 tie; 3 is never judged.
        let counts =
            PairCounts::from_positions(4, &[(0, 1, 1.0), (1, 0, 0.0), (0, 1, 0.0), (2, 1, 0.5)]);
        let c = borda(&counts);
        assert_eq!(c.scores, [2.0 / 3.0, 1.5 / 4.0, 0.5, 0.5]);
        assert_eq!(c.ranks, [1, 4, 2, 3]);
    }
}
