//! Ranking in `select-margin` (`docs/ALGORITHMS.md` §3): per source its M2 and tie-break
//! scale, per pair the fused logit, and the top k by logit, tie key and input order.

use prefsmith_udfs::aggregate::margin_upper_bound::upper_bound;
use prefsmith_udfs::scalar::margin_math::{clipped_logit, margin_probability};
use serde_json::json;

use super::config::{Keep, MarginScale, SelectMarginConfig};
use super::margins::Margins;
use super::source::MarginSource;
use crate::error::{Error, Result};

/// One used source: its margins, the unit they are measured in, M2 and tie-break scale (both
/// in that unit).
pub(super) struct SourceBounds<'a> {
    pub(super) source: MarginSource,
    margins: &'a [f64],
    pub(super) unit: f64,
    pub(super) m2: f64,
    pub(super) scale: f64,
}

/// The q-quantile (linear interpolation between order statistics) of the absolute values of
/// the finite margins; `None` when there are none.
pub(super) fn abs_quantile(margins: &[f64], q: f64) -> Option<f64> {
    let mut values: Vec<f64> = margins
        .iter()
        .filter(|m| m.is_finite())
        .map(|m| m.abs())
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let position = q * (values.len() - 1) as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    let weight = position - below as f64;
    Some(values[below] + (values[above] - values[below]) * weight)
}

/// The unit a source's margins are measured in (`docs/ALGORITHMS.md` §3.11): 1 under the
/// paper's rule; under `auto`, q90(|m|) / 4 when that quantile is below 4 (too few whole units
/// for the M2 search to move in), else 1.
pub(super) fn margin_unit(margins: &[f64], scale: MarginScale) -> f64 {
    match scale {
        MarginScale::Paper => 1.0,
        MarginScale::Auto => match abs_quantile(margins, 0.9) {
            Some(q) if q > 0.0 && q < AUTO_UNITS => q / AUTO_UNITS,
            _ => 1.0,
        },
    }
}

/// Under `margin-scale = "auto"`, a source's 90th percentile |margin| is this many units.
pub(super) const AUTO_UNITS: f64 = 4.0;

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
        let unit = margin_unit(values, config.margin_scale);
        let scaled: Vec<f64>;
        let in_units = if unit == 1.0 {
            values
        } else {
            scaled = values.iter().map(|m| m / unit).collect();
            &scaled
        };
        let m2 = upper_bound(in_units, config.divisor(source)?, config.m1).ok_or_else(|| {
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
            unit,
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

/// Per-source figures of the manifest: `m2`, `tie_break_scales` and `margin_units`.
pub(super) struct BoundStats {
    pub(super) m2: serde_json::Map<String, serde_json::Value>,
    pub(super) scales: serde_json::Map<String, serde_json::Value>,
    pub(super) units: serde_json::Map<String, serde_json::Value>,
}

/// The manifest's per-source figures: M2, tie-break scale and margin unit.
pub(super) fn bound_stats(bounds: &[SourceBounds]) -> BoundStats {
    let mut stats = BoundStats {
        m2: serde_json::Map::new(),
        scales: serde_json::Map::new(),
        units: serde_json::Map::new(),
    };
    for b in bounds {
        let name = b.source.as_str().to_string();
        stats.m2.insert(name.clone(), json!(b.m2));
        stats.scales.insert(name.clone(), json!(b.scale));
        stats.units.insert(name, json!(b.unit));
    }
    stats
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
            let m = b.margins[row] / b.unit;
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
            unit: 1.0,
            m2,
            scale: m2,
        }
    }

    #[test]
    fn the_auto_unit_by_hand() {
        // |m| = 0, 0.5, 1, …, 4.5: q90 at position 8.1 = 4.05 ≥ 4, so whole units stay.
        let wide: Vec<f64> = (0..10).map(|i| -(i as f64) * 0.5).collect();
        assert!((abs_quantile(&wide, 0.9).unwrap() - 4.05).abs() < 1e-12);
        assert_eq!(margin_unit(&wide, MarginScale::Auto), 1.0);
        // A tenth of that: q90 = 0.405, so the unit is 0.405 / 4.
        let narrow: Vec<f64> = wide.iter().map(|m| m / 10.0).collect();
        let unit = margin_unit(&narrow, MarginScale::Auto);
        assert!((unit - 0.405 / 4.0).abs() < 1e-12, "{unit}");
        assert_eq!(margin_unit(&narrow, MarginScale::Paper), 1.0);
        // Non-finite margins are left out; all zero or none finite keeps the unit 1.
        assert_eq!(margin_unit(&[0.0, 0.0, f64::NAN], MarginScale::Auto), 1.0);
        assert_eq!(margin_unit(&[f64::NAN], MarginScale::Auto), 1.0);
        assert_eq!(abs_quantile(&[f64::INFINITY, 2.0], 0.9), Some(2.0));
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
