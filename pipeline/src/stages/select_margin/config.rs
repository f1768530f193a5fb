//! The typed settings of the `select-margin` stage and how many pairs they keep.

use prefsmith_udfs::aggregate::margin_upper_bound::{DEFAULT_DIVISOR, DEFAULT_M1};
use serde::{Deserialize, Serialize};

use super::source::MarginSource;
use crate::error::{Error, Result};
use crate::formats::InputFormat;
use crate::input::FileInfo;
use crate::stages::stage_hash;

/// Settings of the `select-margin` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SelectMarginConfig {
    /// Input pair table; in a job, the previous stage's output.
    #[serde(default)]
    pub input: Option<String>,
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// The input's layout (default: detected).
    #[serde(default)]
    pub input_format: InputFormat,
    /// Keep this many pairs.
    #[serde(default)]
    pub top_k: Option<u64>,
    /// Keep `ceil(fraction × eligible)` pairs.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// The sources fused (default: every source whose columns the input has).
    #[serde(default)]
    pub sources: Option<Vec<MarginSource>>,
    /// Divisor d of the external source's M2 search (default 1.5).
    #[serde(default = "default_external_divisor")]
    pub external_divisor: f64,
    /// Divisor d of the implicit source's M2 search (default 2).
    #[serde(default = "default_implicit_divisor")]
    pub implicit_divisor: f64,
    /// The lower clip M1 of every source (default −2).
    #[serde(default = "default_m1")]
    pub m1: f64,
    /// The unit margins are measured in before M1, M2 and p (`docs/ALGORITHMS.md` §3.11):
    /// `auto` (default) measures a source whose 90th-percentile |margin| is below 4 in units
    /// of that quantile / 4; `paper` keeps whole reward units, as the paper did.
    #[serde(default)]
    pub margin_scale: MarginScale,
    /// Rows per output part (default 1,000,000).
    #[serde(default = "default_max_rows")]
    pub max_rows_per_file: usize,
}

fn default_external_divisor() -> f64 {
    DEFAULT_DIVISOR
}

fn default_implicit_divisor() -> f64 {
    2.0
}

fn default_m1() -> f64 {
    DEFAULT_M1
}

fn default_max_rows() -> usize {
    1_000_000
}

impl Default for SelectMarginConfig {
    fn default() -> Self {
        Self {
            input: None,
            output: None,
            input_format: InputFormat::Auto,
            top_k: None,
            fraction: None,
            sources: None,
            external_divisor: default_external_divisor(),
            implicit_divisor: default_implicit_divisor(),
            m1: default_m1(),
            margin_scale: MarginScale::default(),
            max_rows_per_file: default_max_rows(),
        }
    }
}

/// The unit of a source's margins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarginScale {
    /// Rescale a source whose margins span fewer than 4 whole units at their 90th percentile.
    #[default]
    Auto,
    /// Whole reward units (the paper's rule).
    Paper,
}

/// How many pairs to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Keep {
    /// This many pairs.
    TopK(u64),
    /// `ceil(fraction × eligible)` pairs.
    Fraction(f64),
}

impl SelectMarginConfig {
    /// How many pairs to keep: `top-k` or `fraction`, exactly one of them.
    pub(super) fn keep(&self) -> Result<Keep> {
        match (self.top_k, self.fraction) {
            (Some(_), Some(_)) => Err(Error::config(
                "select-margin",
                "give top-k or fraction, not both",
            )),
            (Some(0), None) => Err(Error::config("top-k", "must be at least 1")),
            (Some(k), None) => Ok(Keep::TopK(k)),
            (None, Some(f)) if f > 0.0 && f <= 1.0 => Ok(Keep::Fraction(f)),
            (None, Some(f)) => Err(Error::config(
                "fraction",
                format!("must be in (0, 1], got {f}"),
            )),
            (None, None) => Err(Error::config(
                "select-margin",
                "say how many pairs to keep: top-k or fraction",
            )),
        }
    }

    /// The divisor of `source`'s M2 search, which must be positive.
    pub(super) fn divisor(&self, source: MarginSource) -> Result<f64> {
        let (key, d) = match source {
            MarginSource::External => ("external-divisor", self.external_divisor),
            MarginSource::Implicit => ("implicit-divisor", self.implicit_divisor),
        };
        if d.is_finite() && d > 0.0 {
            Ok(d)
        } else {
            Err(Error::config(key, format!("must be positive, got {d}")))
        }
    }

    /// The hash deciding whether an existing output is up to date.
    pub fn hash(&self, infos: &[FileInfo]) -> String {
        stage_hash("select-margin", self, infos)
    }
}
