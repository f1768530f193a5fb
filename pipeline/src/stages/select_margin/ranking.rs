//! Ranking in `select-margin` (`docs/ALGORITHMS.md` §3): per source its M2 and tie-break
//! scale, per pair the fused logit, and the top k by logit, tie key and input order.

use prefsmith_udfs::aggregate::margin_upper_bound::upper_bound;
use prefsmith_udfs::scalar::margin_math::{clipped_logit, margin_probability};
use serde_json::json;

use super::config::{Keep, SelectMarginConfig};
use super::margins::Margins;
use super::source::MarginSource;
use crate::error::{Error, Result};

/// One used source: its margins, M2 and tie-break scale.
pub(super) struct SourceBounds<'a> {
    pub(super) source: MarginSource,
    margins: &'a [f64],
    pub(super) m2: f64,
    pub(super) scale: f64,
}

/// The outcome of ranking.
pub(super) struct Ranking {
    /// Per input row: its rank (1-based) if selected, else 0.
    pub(super) ranks: Vec<u32>,
    /// Per input row: the fused logit (NaN when not eligible).
    pub(super) logits: Vec<f64>,
    /// Pairs whose every used margin is finite.
    pub(super) eligible: u64,
    /// Pairs asked for (`top-k`, or the fraction of the eligible ones).
    pub(super) wanted: u64,
    /// Pairs kept: the wanted ones, at most every eligible one.
    pub(super) selected: u64,
}

/// The bounds of every used source: M2 from its finite margins, the tie-break scale M2, or
/// the clip width `M2 − M1` for every source when some M2 ≤ 0; and per source how many of
/// its margins are not finite.
pub(super) fn source_bounds<'a>(
    margins: &'a Margins,
    sources: &[MarginSource],
    config: &SelectMarginConfig,
    input: &str,
) -> Result<(
    Vec<SourceBounds<'a>>,
    serde_json::Map<String, serde_json::Value>,
)> {
    let mut bounds = Vec::new();
    let mut dropped = serde_json::Map::new();
    for &source in sources {
        let values = margins.of(source);
        let non_finite = values.iter().filter(|m| !m.is_finite()).count();
        dropped.insert(source.as_str().into(), json!(non_finite));
        let m2 = upper_bound(values, config.divisor(source)?, config.m1).ok_or_else(|| {
            Error::InvalidData {
                context: format!("{input}: the {} margin", source.as_str()),
                message: format!(
                    "no pair has a finite {} margin (columns {})",
                    source.as_str(),
                    source.columns().join(", ")
                ),
            }
        })?;
        bounds.push(SourceBounds {
            source,
            margins: values,
            m2,
            scale: m2,
        });
    }
    if bounds.iter().any(|b| b.m2 <= 0.0) {
        for b in &mut bounds {
            b.scale = b.m2 - config.m1;
        }
    }
    Ok((bounds, dropped))
}

/// The manifest's `m2` and `tie_break_scales`: per source, its M2 and tie-break scale.
pub(super) fn bound_stats(
    bounds: &[SourceBounds],
) -> (
    serde_json::Map<String, serde_json::Value>,
    serde_json::Map<String, serde_json::Value>,
) {
    let mut m2 = serde_json::Map::new();
    let mut scales = serde_json::Map::new();
    for b in bounds {
        m2.insert(b.source.as_str().into(), json!(b.m2));
        scales.insert(b.source.as_str().into(), json!(b.scale));
    }
    (m2, scales)
}

/// The error when no pair has every used margin finite.
pub(super) fn no_eligible_pair(sources: &[MarginSource], input: &str) -> Error {
    Error::InvalidData {
        context: input.into(),
        message: format!(
            "no pair is eligible: every pair has a non-finite {} margin",
            sources
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

/// The fused logit and tie-break key of rows `first..first + logits.len()`; NaN when not
/// eligible.
fn score_rows(
    bounds: &[SourceBounds],
    m1: f64,
    first: usize,
    logits: &mut [f64],
    ties: &mut [f64],
) {
    for (i, (logit_out, tie_out)) in logits.iter_mut().zip(ties.iter_mut()).enumerate() {
        let row = first + i;
        let mut logit = 0.0;
        let mut tie = 0.0;
        let mut eligible = true;
        for b in bounds {
            let m = b.margins[row];
            match margin_probability(m, m1, b.m2) {
                Some(p) => {
                    logit += clipped_logit(p);
                    tie += m / b.scale;
                }
                None => {
                    eligible = false;
                    break;
                }
            }
        }
        (*logit_out, *tie_out) = if eligible {
            (logit, tie)
        } else {
            (f64::NAN, f64::NAN)
        };
    }
}

/// Ranks the rows (`docs/ALGORITHMS.md` §3) and keeps the top k.
pub(super) fn rank(bounds: &[SourceBounds], rows: usize, m1: f64, keep: Keep) -> Ranking {
    let mut logits = vec![f64::NAN; rows];
    let mut ties = vec![f64::NAN; rows];
    // The per-row arithmetic is independent: split it over the cores.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = rows.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (i, (l, t)) in logits
            .chunks_mut(chunk)
            .zip(ties.chunks_mut(chunk))
            .enumerate()
        {
            scope.spawn(move || score_rows(bounds, m1, i * chunk, l, t));
        }
    });
    let eligible = logits.iter().filter(|l| !l.is_nan()).count() as u64;
    let wanted = match keep {
        Keep::TopK(k) => k,
        Keep::Fraction(f) => (f * eligible as f64).ceil() as u64,
    };
    let selected = wanted.min(eligible) as usize;
    // The k-th largest logit bounds the candidates; only they need the full ordering.
    let threshold = if selected == 0 {
        f64::INFINITY
    } else {
        let mut values: Vec<f64> = logits.iter().copied().filter(|l| !l.is_nan()).collect();
        let (_, kth, _) = values.select_nth_unstable_by(selected - 1, |a, b| b.total_cmp(a));
        *kth
    };
    // (logit, tie key, row), sorted by value: contiguous keys compare faster than lookups.
    let mut chosen: Vec<(f64, f64, u32)> = (0..rows)
        .filter(|&r| logits[r] >= threshold)
        .map(|r| (logits[r], ties[r], r as u32))
        .collect();
    chosen.sort_unstable_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(b.1.total_cmp(&a.1))
            .then(a.2.cmp(&b.2))
    });
    chosen.truncate(selected);
    let mut ranks = vec![0u32; rows];
    for (rank, &(_, _, row)) in chosen.iter().enumerate() {
        ranks[row as usize] = rank as u32 + 1;
    }
    Ranking {
        ranks,
        logits,
        eligible,
        wanted,
        selected: selected as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds<'a>(source: MarginSource, margins: &'a [f64], m2: f64) -> SourceBounds<'a> {
        SourceBounds {
            source,
            margins,
            m2,
            scale: m2,
        }
    }

    #[test]
    fn saturated_pairs_are_ordered_by_scaled_margins_then_input_order() {
        // M2 = 4 and 2: rows 0, 1, 3 saturate both sources (same logit); row 1 has the largest
        // Σ m/M2 (8/4 + 4/2 = 4), rows 0 and 3 tie at 2 + 1 = 3 -> input order.
        let external = [4.0, 8.0, 1.0, 4.0, f64::NAN];
        let implicit = [2.0, 4.0, 0.0, 2.0, 3.0];
        let b = [
            bounds(MarginSource::External, &external, 4.0),
            bounds(MarginSource::Implicit, &implicit, 2.0),
        ];
        let r = rank(&b, 5, -2.0, Keep::TopK(10));
        assert_eq!(r.ranks, [2, 1, 4, 3, 0]);
        assert_eq!((r.eligible, r.wanted, r.selected), (4, 10, 4));
        let r = rank(&b, 5, -2.0, Keep::Fraction(0.5));
        assert_eq!(r.ranks, [2, 1, 0, 0, 0]);
    }

    #[test]
    fn p_zero_and_p_one_cancel() {
        let external = [-3.0, 0.0];
        let implicit = [5.0, 0.0];
        let b = [
            bounds(MarginSource::External, &external, 2.0),
            bounds(MarginSource::Implicit, &implicit, 2.0),
        ];
        let r = rank(&b, 2, -2.0, Keep::TopK(1));
        assert_eq!(r.logits[0], 0.0);
        // Row 1 (p = 0.5 twice) has logit 0 too; the tie goes to row 0's larger Σ m/M2
        // (-3/2 + 5/2 = 1 against 0).
        assert_eq!(r.ranks, [1, 0]);
    }
}
