//! The typed settings of the `clean` stage.

use serde::{Deserialize, Serialize};

use crate::formats::InputFormat;
use crate::input::{ColumnMap, FileInfo};
use crate::stages::stage_hash;

/// Settings of the `clean` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CleanConfig {
    /// Input; in a job, the previous stage's output.
    #[serde(default)]
    pub input: Option<String>,
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// `auto` (default), `wide`, `long` or `comparisons`.
    #[serde(default)]
    pub input_format: InputFormat,
    /// Temperature T of the score matrix (default 1).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Input column names (wide and long layouts).
    #[serde(default)]
    pub columns: ColumnMap,
    /// Rows per output part (default 1,000,000).
    #[serde(default = "default_max_rows")]
    pub max_rows_per_file: usize,
}

fn default_temperature() -> f64 {
    1.0
}

fn default_max_rows() -> usize {
    1_000_000
}

impl Default for CleanConfig {
    fn default() -> Self {
        Self {
            input: None,
            output: None,
            input_format: InputFormat::Auto,
            temperature: default_temperature(),
            columns: ColumnMap::default(),
            max_rows_per_file: default_max_rows(),
        }
    }
}

impl CleanConfig {
    /// The hash deciding whether an existing output is up to date.
    pub fn hash(&self, infos: &[FileInfo]) -> String {
        stage_hash("clean", self, infos)
    }
}
