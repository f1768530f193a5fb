//! The typed settings of the `select` stage and the selection rule they resolve to
//! (`docs/ALGORITHMS.md` §2).

use prefsmith_udfs::selection::{PairRule, Position};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::input::ColumnMap;

/// How `select` picks the pair (`docs/ALGORITHMS.md` §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Chosen = max, rejected = nearest μ − 2σ.
    #[default]
    SweetSpot,
    /// Chosen = max, rejected = min (the conventional baseline).
    MaxMin,
    /// Chosen = max of all, rejected = min of a seeded random subset of 5.
    Scalable,
    /// Chosen nearest μ + `chosen-k`·σ, rejected nearest μ + `rejected-k`·σ.
    Positions,
}

impl Strategy {
    /// Parses the name used on the command line and in configs.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "sweet-spot" => Ok(Self::SweetSpot),
            "max-min" => Ok(Self::MaxMin),
            "scalable" => Ok(Self::Scalable),
            "positions" => Ok(Self::Positions),
            other => Err(Error::config(
                "strategy",
                format!(
                    "unknown strategy '{other}': use sweet-spot, max-min, scalable or positions"
                ),
            )),
        }
    }
}

/// A position multiplier as the user wrote it: a TOML number or a string (`"+inf"`, `"max"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KValue {
    /// A number.
    Number(f64),
    /// A string such as `"-inf"`, `"max"` or `"2.5"`.
    Text(String),
}

impl KValue {
    /// The text used in the `strategy` column (`positions(KC,KR)`): as written.
    pub fn label(&self) -> String {
        match self {
            Self::Number(k) => format!("{k}"),
            Self::Text(t) => t.trim().to_string(),
        }
    }

    fn position(&self, key: &str) -> Result<Position> {
        match self {
            Self::Number(k) => Position::from_k(*k),
            Self::Text(t) => Position::parse(t),
        }
        .map_err(|e| Error::config(key, e))
    }
}

/// Settings of the `select` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SelectConfig {
    /// Input: a Parquet file, a directory of shards (or a stage output), or a glob. In a job,
    /// defaults to the previous stage's output.
    #[serde(default)]
    pub input: Option<String>,
    /// Output directory (stage contract: `part-NNNNN.parquet` + `_manifest.json`).
    #[serde(default)]
    pub output: Option<String>,
    /// `sweet-spot` (default), `max-min`, `scalable` or `positions`.
    #[serde(default)]
    pub strategy: Strategy,
    /// `positions` only: where the chosen response sits (number, `"+inf"`, `"max"`, …).
    #[serde(default)]
    pub chosen_k: Option<KValue>,
    /// `positions` only: where the rejected response sits.
    #[serde(default)]
    pub rejected_k: Option<KValue>,
    /// Run seed for `scalable` (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Delta degrees of freedom of σ: 0 (population, default) or 1 (sample).
    #[serde(default)]
    pub ddof: u32,
    /// Input column names.
    #[serde(default)]
    pub columns: ColumnMap,
    /// Rows per output part file (default 1,000,000).
    #[serde(default = "default_max_rows_per_file")]
    pub max_rows_per_file: usize,
    /// Partition the pair table Hive-style by this column (`strategy=…/part-00000.parquet`).
    #[serde(default)]
    pub partition_by: Option<String>,
    /// Declare the long-layout input sorted by prompt id (files in path order, rows in file
    /// order), enabling the streaming aggregation. Verified while running: an input that turns
    /// out unsorted falls back to the hash aggregation. Default: detected from Parquet metadata.
    #[serde(default)]
    pub input_sorted: Option<bool>,
    /// The input's layout: `auto` (default, detected from the columns), `wide` or `long`.
    #[serde(default)]
    pub input_format: crate::formats::InputFormat,
}

fn default_max_rows_per_file() -> usize {
    1_000_000
}

impl Default for SelectConfig {
    fn default() -> Self {
        Self {
            input: None,
            output: None,
            strategy: Strategy::default(),
            chosen_k: None,
            rejected_k: None,
            seed: 0,
            ddof: 0,
            columns: ColumnMap::default(),
            max_rows_per_file: default_max_rows_per_file(),
            partition_by: None,
            input_sorted: None,
            input_format: crate::formats::InputFormat::Auto,
        }
    }
}

/// A validated selection rule with its `strategy` label.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRule {
    /// The label written in the `strategy` column.
    pub label: String,
    /// Positions, or `None` for `scalable` (seeded per prompt).
    pub positions: Option<(Position, Position)>,
    /// The SQL literals for `k_chosen`, `k_rejected` (positions only).
    pub k_sql: Option<(String, String)>,
}

impl SelectConfig {
    /// Checks the settings and resolves the rule.
    pub fn resolve(&self) -> Result<ResolvedRule> {
        if self.ddof > 1 {
            return Err(Error::config(
                "ddof",
                format!("must be 0 or 1, got {}", self.ddof),
            ));
        }
        if self.max_rows_per_file == 0 {
            return Err(Error::config("max-rows-per-file", "must be at least 1"));
        }
        let has_k = self.chosen_k.is_some() || self.rejected_k.is_some();
        let fixed = |chosen: Position, rejected: Position, label: &str| ResolvedRule {
            label: label.to_string(),
            positions: Some((chosen, rejected)),
            k_sql: Some((position_sql(chosen), position_sql(rejected))),
        };
        let rule = match self.strategy {
            Strategy::Positions => {
                let (Some(kc), Some(kr)) = (&self.chosen_k, &self.rejected_k) else {
                    return Err(Error::config(
                        "strategy",
                        "'positions' needs both chosen-k and rejected-k",
                    ));
                };
                let label = format!("positions({},{})", kc.label(), kr.label());
                fixed(kc.position("chosen-k")?, kr.position("rejected-k")?, &label)
            }
            _ if has_k => {
                return Err(Error::config(
                    "chosen-k/rejected-k",
                    "only apply to strategy 'positions' (sweet-spot is (+inf, -2), max-min is (+inf, -inf))",
                ));
            }
            Strategy::SweetSpot => fixed(Position::Max, Position::Sigma(-2.0), "sweet-spot"),
            Strategy::MaxMin => fixed(Position::Max, Position::Min, "max-min"),
            Strategy::Scalable => ResolvedRule {
                label: "scalable".into(),
                positions: None,
                k_sql: None,
            },
        };
        Ok(rule)
    }

    /// The kernel rule for positions strategies (`None` for scalable).
    pub fn pair_rule(&self) -> Result<Option<PairRule>> {
        Ok(self
            .resolve()?
            .positions
            .map(|(chosen, rejected)| PairRule::Positions { chosen, rejected }))
    }
}

fn position_sql(p: Position) -> String {
    match p {
        Position::Max => "'+inf'".into(),
        Position::Min => "'-inf'".into(),
        // `{:?}` prints enough digits to round-trip an f64.
        Position::Sigma(k) => format!("CAST({k:?} AS DOUBLE)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_label_keeps_what_was_written() {
        let cfg = SelectConfig {
            strategy: Strategy::Positions,
            chosen_k: Some(KValue::Number(2.0)),
            rejected_k: Some(KValue::Text("-inf".into())),
            ..SelectConfig::default()
        };
        assert_eq!(cfg.resolve().unwrap().label, "positions(2,-inf)");
    }

    #[test]
    fn k_without_positions_is_an_error() {
        let cfg = SelectConfig {
            chosen_k: Some(KValue::Number(1.0)),
            ..SelectConfig::default()
        };
        assert!(cfg.resolve().unwrap_err().to_string().contains("positions"));
    }
}
