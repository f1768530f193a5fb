//! Typed, strict configuration of the stages and of jobs (TOML). Unknown keys are errors that
//! name the key; every field documents its default.
//!
//! A job file lists stages in order; each reads the previous stage's output unless it names an
//! `input`:
//!
//! ```toml
//! [[stages]]
//! kind = "select"
//! input = "data/arena_bench_v1_scored.parquet"
//! output = "out/quickstart/pairs"
//! strategy = "sweet-spot"
//! ```

use std::path::Path;

use prefsmith_udfs::selection::{PairRule, Position};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How `select` picks the pair (Decision 2).
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

/// Column names of the input, when they differ from the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ColumnMap {
    /// Prompt id (both layouts; optional: derived as sha256 hex of the prompt). Default `prompt_id`.
    pub prompt_id: String,
    /// Prompt text. Default `prompt`.
    pub prompt: String,
    /// Long layout: response text. Default `response`.
    pub response: String,
    /// Long layout: reward. Default `reward`.
    pub reward: String,
    /// Long layout: 0-based response index (optional: row order otherwise). Default `response_index`.
    pub response_index: String,
    /// Wide layout: list of responses. Default `all_generated_responses`.
    pub responses: String,
    /// Wide layout: list of scores. Default `all_rm_scores`.
    pub scores: String,
}

impl Default for ColumnMap {
    fn default() -> Self {
        Self {
            prompt_id: "prompt_id".into(),
            prompt: "prompt".into(),
            response: "response".into(),
            reward: "reward".into(),
            response_index: "response_index".into(),
            responses: "all_generated_responses".into(),
            scores: "all_rm_scores".into(),
        }
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

/// Settings of the `synth` stage: deterministic synthetic responses with rewards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SynthConfig {
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// Number of prompts (default 1000).
    #[serde(default = "default_prompts")]
    pub prompts: u64,
    /// Responses per prompt (default 16).
    #[serde(default = "default_responses")]
    pub responses: u32,
    /// Number of part files (default 1).
    #[serde(default = "one")]
    pub shards: u32,
    /// `long` (default: one row per response) or `wide` (one row per prompt, lists).
    #[serde(default)]
    pub layout: SynthLayout,
    /// Bytes of each response text (default 64).
    #[serde(default = "default_response_bytes")]
    pub response_bytes: usize,
    /// Bytes of each prompt text (default 48).
    #[serde(default = "default_prompt_bytes")]
    pub prompt_bytes: usize,
    /// Fraction of responses that are degenerate low outliers, μ − 6σ (default 0.02).
    #[serde(default = "default_outliers")]
    pub outlier_fraction: f64,
    /// Fraction of rewards written as null (default 0).
    #[serde(default)]
    pub null_fraction: f64,
    /// Seed (default 0).
    #[serde(default)]
    pub seed: u64,
}

/// Layout of synthetic data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SynthLayout {
    /// One row per response.
    #[default]
    Long,
    /// One row per prompt.
    Wide,
}

fn default_prompts() -> u64 {
    1000
}
fn default_responses() -> u32 {
    16
}
fn one() -> u32 {
    1
}
fn default_response_bytes() -> usize {
    64
}
fn default_prompt_bytes() -> usize {
    48
}
fn default_outliers() -> f64 {
    0.02
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            output: None,
            prompts: default_prompts(),
            responses: default_responses(),
            shards: 1,
            layout: SynthLayout::Long,
            response_bytes: default_response_bytes(),
            prompt_bytes: default_prompt_bytes(),
            outlier_fraction: default_outliers(),
            null_fraction: 0.0,
            seed: 0,
        }
    }
}

/// One stage of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StageConfig {
    /// Generate synthetic data.
    Synth(SynthConfig),
    /// Select preference pairs.
    Select(SelectConfig),
    /// Clean labels by robust PCA.
    Clean(crate::stages::clean::CleanConfig),
    /// Rank pairs by margin and route them to DPO or SFT.
    Route(crate::stages::route::RouteConfig),
    /// Two goal-conditioned copies per pair (reward-augmented DPO).
    Augment(crate::stages::augment::AugmentConfig),
    /// Keep the pairs with the largest fused margins (BeeS).
    SelectMargin(crate::stages::select_margin::SelectMarginConfig),
    /// Write a pair table in a trainer's layout.
    Export(crate::stages::export::ExportConfig),
    /// Sample responses with a language model (run by the trainer crate).
    Sample(ModelStageConfig),
    /// Rate responses with a judge model (run by the trainer crate).
    Reward(ModelStageConfig),
    /// Score a pair table's log-probabilities under a policy or reference model.
    Score(ModelStageConfig),
    /// Train a model on a pair table.
    Train(ModelStageConfig),
}

/// A model stage in a job: its input and output, and settings the trainer crate reads (and
/// checks, naming unknown keys) when the stage runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStageConfig {
    /// The input (default: the previous stage's output).
    #[serde(default)]
    pub input: Option<String>,
    /// The output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// Every other key of the stage.
    #[serde(flatten)]
    pub settings: toml::Table,
}

impl StageConfig {
    /// The stage's name, as in `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Synth(_) => "synth",
            Self::Select(_) => "select",
            Self::Clean(_) => "clean",
            Self::Route(_) => "route",
            Self::Augment(_) => "augment",
            Self::SelectMargin(_) => "select-margin",
            Self::Export(_) => "export",
            Self::Sample(_) => "sample",
            Self::Reward(_) => "reward",
            Self::Score(_) => "score",
            Self::Train(_) => "train",
        }
    }

    /// The stage's output directory.
    pub fn output(&self) -> Option<&str> {
        match self {
            Self::Synth(c) => c.output.as_deref(),
            Self::Select(c) => c.output.as_deref(),
            Self::Clean(c) => c.output.as_deref(),
            Self::Route(c) => c.output.as_deref(),
            Self::Augment(c) => c.output.as_deref(),
            Self::SelectMargin(c) => c.output.as_deref(),
            Self::Export(c) => c.output.as_deref(),
            Self::Sample(c) | Self::Reward(c) | Self::Score(c) | Self::Train(c) => {
                c.output.as_deref()
            }
        }
    }
}

/// A job: stages run in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobConfig {
    /// A name for logs (default: the file's stem).
    #[serde(default)]
    pub name: Option<String>,
    /// How S3 stores are reached (endpoint, region, retries, concurrency); credentials come
    /// from the environment only.
    #[serde(default)]
    pub storage: Option<crate::storage::StorageSettings>,
    /// The stages.
    pub stages: Vec<StageConfig>,
}

/// Parses TOML into `T`, naming the file and the offending key on error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, source_name: &str) -> Result<T> {
    toml::from_str(text)
        .map_err(|e| Error::config(source_name, e.to_string().trim_end().to_string()))
}

/// Reads and parses a TOML file.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    parse_toml(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = parse_toml::<JobConfig>(
            "[[stages]]\nkind = \"select\"\noutput = \"x\"\nstrategyy = \"max-min\"\n",
            "job.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("job.toml") && err.contains("strategyy"),
            "{err}"
        );
    }

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
