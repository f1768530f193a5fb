//! The data behind the report's figures, free of I/O and drawing: histogram bins, summary
//! figures and the flattening of manifest statistics into rows.

use std::collections::BTreeMap;

/// Equal-width bins over `[lo, hi]`: bin `b` holds `lo + b·w ≤ v < lo + (b+1)·w`, the last bin
/// also holds `hi`. When every value is equal the range is widened to `[v − 0.5, v + 0.5]`
/// with one bin, so a constant column still draws a bar at its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Lower edge of the first bin.
    pub lo: f64,
    /// Width of every bin.
    pub width: f64,
    /// Counts per bin.
    pub counts: Vec<u64>,
    /// Values left out because they are NaN or ±inf.
    pub non_finite: u64,
}

impl Histogram {
    /// The bins for values in `[min, max]`: `bins` of them, or one when `min == max`.
    pub fn empty(min: f64, max: f64, bins: usize) -> Self {
        if max > min {
            Self {
                lo: min,
                width: (max - min) / bins.max(1) as f64,
                counts: vec![0; bins.max(1)],
                non_finite: 0,
            }
        } else {
            Self {
                lo: min - 0.5,
                width: 1.0,
                counts: vec![0],
                non_finite: 0,
            }
        }
    }

    /// The bin of a finite value in range: the formula the SQL form also uses.
    pub fn bin_of(&self, value: f64) -> usize {
        let bin = ((value - self.lo) / self.width).floor();
        (bin.max(0.0) as usize).min(self.counts.len() - 1)
    }

    /// The histogram of `values` in `bins` bins between their finite minimum and maximum;
    /// `None` when no value is finite.
    pub fn of(values: &[f64], bins: usize) -> Option<Self> {
        let finite = values.iter().copied().filter(|v| v.is_finite());
        let (min, max) = finite.fold(None, |acc: Option<(f64, f64)>, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })?;
        let mut histogram = Self::empty(min, max, bins);
        for &v in values {
            if v.is_finite() {
                let bin = histogram.bin_of(v);
                histogram.counts[bin] += 1;
            } else {
                histogram.non_finite += 1;
            }
        }
        Some(histogram)
    }

    /// Edges `(low, high)` of bin `b`.
    pub fn edges(&self, b: usize) -> (f64, f64) {
        let low = self.lo + b as f64 * self.width;
        (low, low + self.width)
    }

    /// Values counted in the bins.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The number of bins for `n` values: Sturges' rule (⌈log₂ n⌉ + 1), between 5 and 40.
pub fn bins_for(n: u64) -> usize {
    let sturges = (n.max(1) as f64).log2().ceil() as usize + 1;
    sturges.clamp(5, 40)
}

/// Every leaf of a manifest's `stats` as `(dotted.key, value)` rows, in key order, so that no
/// figure is only in the JSON. Lists of numbers or strings stay one row.
pub fn flatten_stats(stats: &BTreeMap<String, serde_json::Value>) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for (key, value) in stats {
        flatten_into(key, value, &mut rows);
    }
    rows
}

fn flatten_into(key: &str, value: &serde_json::Value, rows: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (child, v) in map {
                flatten_into(&format!("{key}.{child}"), v, rows);
            }
        }
        other => rows.push((key.to_string(), format_value(other))),
    }
}

/// A JSON value as a table cell: numbers with at most 6 significant decimals, strings bare.
pub fn format_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "—".into(),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => format_number(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A float for a table: integers as integers, else 6 significant digits.
pub fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value == value.trunc() && value.abs() < 1e15 {
        return format!("{}", value as i64);
    }
    let magnitude = value.abs().log10().floor() as i32;
    if !(-4..=9).contains(&magnitude) {
        return format!("{value:.5e}");
    }
    let decimals = (5 - magnitude).max(0) as usize;
    let text = format!("{value:.decimals$}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_by_hand() {
        // [0, 4] in 4 bins of width 1: 0 → 0, 0.99 → 0, 1 → 1, 3.5 → 3, 4 (the maximum) → 3.
        let h = Histogram::of(&[0.0, 0.99, 1.0, 3.5, 4.0, f64::NAN, f64::INFINITY], 4).unwrap();
        assert_eq!(h.lo, 0.0);
        assert_eq!(h.width, 1.0);
        assert_eq!(h.counts, vec![2, 1, 0, 2]);
        assert_eq!(h.non_finite, 2);
        assert_eq!(h.total(), 5);
        assert_eq!(h.edges(2), (2.0, 3.0));
    }

    #[test]
    fn constant_values_get_one_bin_around_them() {
        let h = Histogram::of(&[2.0, 2.0, 2.0], 10).unwrap();
        assert_eq!((h.lo, h.width, h.counts.clone()), (1.5, 1.0, vec![3]));
        assert!(Histogram::of(&[f64::NAN], 10).is_none());
        assert!(Histogram::of(&[], 10).is_none());
    }

    #[test]
    fn bin_counts_follow_sturges() {
        assert_eq!(bins_for(1), 5);
        assert_eq!(bins_for(32), 6); // log2 32 = 5, + 1
        assert_eq!(bins_for(1000), 11); // ⌈9.97⌉ + 1
        assert_eq!(bins_for(u64::MAX), 40);
    }

    #[test]
    fn stats_flatten_to_dotted_rows() {
        let stats: BTreeMap<String, serde_json::Value> = serde_json::from_str(
            r#"{"skipped": {"zero-std": 1, "no-margin": 0}, "mean": 0.123456789, "sources": ["a", "b"], "empty": {}}"#,
        )
        .unwrap();
        assert_eq!(
            flatten_stats(&stats),
            vec![
                ("empty".to_string(), "{}".to_string()),
                ("mean".to_string(), "0.123457".to_string()),
                ("skipped.no-margin".to_string(), "0".to_string()),
                ("skipped.zero-std".to_string(), "1".to_string()),
                ("sources".to_string(), "[\"a\",\"b\"]".to_string()),
            ]
        );
        assert_eq!(format_number(1234.5678), "1234.57");
        assert_eq!(format_number(5e-6), "5.00000e-6");
        assert_eq!(format_number(3.0), "3");
    }
}
