//! The typed settings of the `clean` stage.

use prefsmith_udfs::cleaning::CleanMethod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    /// The cleaning method (`docs/ALGORITHMS.md` §5.8): `bt-trim`, `bt-mle`, `borda`, `pcp` or
    /// `stable-pcp`; unset = `bt-trim` on comparisons, `pcp` on scores.
    #[serde(
        default,
        deserialize_with = "method_by_name",
        serialize_with = "method_name",
        skip_serializing_if = "Option::is_none"
    )]
    pub method: Option<CleanMethod>,
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
            method: None,
            temperature: default_temperature(),
            columns: ColumnMap::default(),
            max_rows_per_file: default_max_rows(),
        }
    }
}

/// Reads a method by its name; an unknown name is an error listing the known ones.
fn method_by_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CleanMethod>, D::Error> {
    let name = String::deserialize(d)?;
    CleanMethod::parse(&name)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn method_name<S: Serializer>(method: &Option<CleanMethod>, s: S) -> Result<S::Ok, S::Error> {
    match method {
        Some(m) => s.serialize_str(m.name()),
        None => s.serialize_none(),
    }
}

impl CleanConfig {
    /// What the solver needs: the method for this input and the temperature.
    pub(super) fn settings(&self, comparisons: bool) -> super::solve::Settings {
        super::solve::Settings {
            method: self.method_for(comparisons),
            temperature: self.temperature,
        }
    }

    /// The method that runs on judgments (`comparisons` true) or on scores.
    pub fn method_for(&self, comparisons: bool) -> CleanMethod {
        self.method.unwrap_or(if comparisons {
            CleanMethod::default_for_judgments()
        } else {
            CleanMethod::default_for_scores()
        })
    }

    /// The hash deciding whether an existing output is up to date.
    pub fn hash(&self, infos: &[FileInfo]) -> String {
        stage_hash("clean", self, infos)
    }
}
