//! The `route` stage, MixDPO's data side (`docs/ALGORITHMS.md` §8): rank pairs by margin, descending and
//! stable (`curriculum_rank`, from 1), and route the large-margin ones to DPO and the small-margin
//! ones to SFT on the chosen response (`route` = `dpo` | `sft`).
//!
//! * `route-threshold τ` (default 0.5): margin ≥ τ → `dpo`, below → `sft`;
//! * `route-percentile p`: the ⌈p·n/100⌉ pairs last in curriculum order (smallest margins, ties
//!   broken by curriculum order) → `sft`, the rest → `dpo`.
//!
//! Ties in the ranking keep input order, which for a pair table is `prompt_id` order (then
//! copy order). Rows are written in input order; the trainer orders by `curriculum_rank`. A
//! null, NaN or infinite margin is an error naming the margin column and the first such row.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::formats::{InputFormat, PairInput};
use crate::input::FileInfo;
use crate::manifest::{InputInfo, Manifest, StageWriter};
use crate::reader::string_at;
use crate::stages::{now_unix, stage_hash};

/// Settings of the `route` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouteConfig {
    /// Input pair table (a stage output, file or glob); in a job, the previous stage's output.
    #[serde(default)]
    pub input: Option<String>,
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// Margin at or above which a pair goes to DPO (default 0.5 when no percentile is given).
    #[serde(default)]
    pub route_threshold: Option<f64>,
    /// Percentage (0–100) of pairs, smallest margins first, that go to SFT.
    #[serde(default)]
    pub route_percentile: Option<f64>,
    /// The margin column (default `rating_gap`).
    #[serde(default = "default_margin_column")]
    pub margin_column: String,
    /// Rows per output part (default 1,000,000).
    #[serde(default = "default_max_rows")]
    pub max_rows_per_file: usize,
    /// Partition the output Hive-style by a column: `route` gives `route=dpo/` and
    /// `route=sft/`, the two training sets.
    #[serde(default)]
    pub partition_by: Option<String>,
    /// The input's layout (default: detected).
    #[serde(default)]
    pub input_format: InputFormat,
}

fn default_margin_column() -> String {
    "rating_gap".into()
}

fn default_max_rows() -> usize {
    1_000_000
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            input: None,
            output: None,
            partition_by: None,
            route_threshold: None,
            route_percentile: None,
            margin_column: default_margin_column(),
            max_rows_per_file: default_max_rows(),
            input_format: InputFormat::Auto,
        }
    }
}

/// How the split is made.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Split {
    Threshold(f64),
    Percentile(f64),
}

impl RouteConfig {
    fn split(&self) -> Result<Split> {
        match (self.route_threshold, self.route_percentile) {
            (Some(_), Some(_)) => Err(Error::config(
                "route",
                "give route-threshold or route-percentile, not both",
            )),
            (Some(t), None) if t.is_finite() => Ok(Split::Threshold(t)),
            (Some(t), None) => Err(Error::config(
                "route-threshold",
                format!("must be finite, got {t}"),
            )),
            (None, Some(p)) if (0.0..=100.0).contains(&p) => Ok(Split::Percentile(p)),
            (None, Some(p)) => Err(Error::config(
                "route-percentile",
                format!("must be in [0, 100], got {p}"),
            )),
            (None, None) => Ok(Split::Threshold(0.5)),
        }
    }

    /// The hash deciding whether an existing output is up to date.
    pub fn hash(&self, infos: &[FileInfo]) -> String {
        stage_hash("route", self, infos)
    }
}

crate::stage::config_stage!(RouteConfig, "route", run);

/// Runs `route` from `input` into `output`.
pub async fn run(config: &RouteConfig, input: &str, output: &str) -> Result<Manifest> {
    let output = &crate::storage::Location::parse(output)?;
    let started = Instant::now();
    let started_unix = now_unix();
    let split = config.split()?;
    let pairs = PairInput::open(input, config.input_format).await?;
    let infos = &pairs.infos;
    let schema = Arc::clone(pairs.schema.canonical());
    let margin_at = margin_index(
        &schema,
        &config.margin_column,
        &infos[0].location.to_string(),
    )?;
    // Read every row in order (files in order, rows in file order): that order breaks ties.
    let batches = pairs.read_all().await?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 {
        return Err(Error::EmptyInput { path: input.into() });
    }
    let margins = finite_margins(&batches, margin_at, rows, input, &config.margin_column)?;
    let (ranks, routes, min_dpo_margin) = route(&margins, split);
    let sft = routes.iter().filter(|&&dpo| !dpo).count();
    let out_schema = routed_schema(&schema, input)?;
    let mut writer = StageWriter::begin(
        output,
        Arc::clone(&out_schema),
        config.max_rows_per_file,
        Some("prompt_id"),
    )
    .await?
    .partition_by(config.partition_by.as_deref())?;
    write_routed(&mut writer, &batches, &schema, &out_schema, &routes, &ranks).await?;
    let inputs = infos.iter().map(InputInfo::from).collect();
    let stats = [
        ("pairs", json!(rows)),
        ("dpo", json!(rows - sft)),
        ("sft", json!(sft)),
        ("margin_column", json!(config.margin_column)),
        (
            "split",
            json!(match split {
                Split::Threshold(t) => format!("threshold {t}"),
                Split::Percentile(p) => format!("percentile {p}"),
            }),
        ),
        ("min_dpo_margin", json!(min_dpo_margin)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let manifest = Manifest::new(
        "route",
        config.hash(infos),
        config,
        inputs,
        stats,
        started_unix,
    );
    let mut manifest = writer.commit(manifest).await?;
    manifest.timing.seconds = started.elapsed().as_secs_f64();
    info!(pairs = rows, dpo = rows - sft, sft, output = %output, "route: done");
    Ok(manifest)
}

/// The index of the numeric margin column `column` in `schema` (read from `file`).
fn margin_index(schema: &Schema, column: &str, file: &str) -> Result<usize> {
    let margin_at = schema.index_of(column).map_err(|_| Error::MissingColumn {
        file: file.to_string(),
        column: column.to_string(),
        context: "the margin to route by".into(),
    })?;
    if !schema.field(margin_at).data_type().is_numeric() {
        return Err(Error::WrongType {
            file: file.to_string(),
            column: column.to_string(),
            found: schema.field(margin_at).data_type().to_string(),
            expected: "a number".into(),
        });
    }
    Ok(margin_at)
}

/// Every row's margin (column `margin_at`, named `column`) as `f64`, in input order; a null,
/// NaN or infinite margin is an error naming the first such row.
fn finite_margins(
    batches: &[RecordBatch],
    margin_at: usize,
    rows: usize,
    input: &str,
    column: &str,
) -> Result<Vec<f64>> {
    let mut margins = Vec::with_capacity(rows);
    for batch in batches {
        let m = cast(batch.column(margin_at), &DataType::Float64)?;
        let m = m.as_primitive::<Float64Type>();
        for i in 0..m.len() {
            if m.is_null(i) || !m.value(i).is_finite() {
                let id = batch
                    .column_by_name("prompt_id")
                    .and_then(|c| string_at(c, i).map(str::to_string));
                return Err(Error::InvalidData {
                    context: format!("{input}: column '{column}'"),
                    message: format!(
                        "row {} (prompt_id {}) has margin {}; every pair needs a finite margin",
                        margins.len(),
                        id.unwrap_or_else(|| "?".into()),
                        if m.is_null(i) {
                            "null".to_string()
                        } else {
                            m.value(i).to_string()
                        }
                    ),
                });
            }
            margins.push(m.value(i));
        }
    }
    Ok(margins)
}

/// `schema` plus the `route` and `curriculum_rank` columns; an error if it has them already.
fn routed_schema(schema: &Schema, input: &str) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for name in ["route", "curriculum_rank"] {
        if schema.index_of(name).is_ok() {
            return Err(Error::InvalidData {
                context: input.into(),
                message: format!("already has a '{name}' column (routed twice?)"),
            });
        }
    }
    fields.push(Field::new("route", DataType::Utf8, false));
    fields.push(Field::new("curriculum_rank", DataType::Int64, false));
    Ok(Arc::new(Schema::new(fields)))
}

/// Writes `batches` in input order with each row's route and curriculum rank appended.
async fn write_routed(
    writer: &mut StageWriter,
    batches: &[RecordBatch],
    schema: &Schema,
    out_schema: &SchemaRef,
    routes: &[bool],
    ranks: &[i64],
) -> Result<()> {
    let mut offset = 0;
    for batch in batches {
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            columns.push(cast(column, field.data_type())?);
        }
        let route: StringArray = routes[offset..offset + n]
            .iter()
            .map(|&dpo| Some(if dpo { "dpo" } else { "sft" }))
            .collect();
        columns.push(Arc::new(route));
        columns.push(Arc::new(Int64Array::from(
            ranks[offset..offset + n].to_vec(),
        )));
        writer
            .write(&RecordBatch::try_new(Arc::clone(out_schema), columns)?)
            .await?;
        offset += n;
    }
    Ok(())
}

/// Curriculum ranks (1-based, margin descending, stable) and routes (`true` = DPO) in input
/// order, plus the smallest margin routed to DPO.
fn route(margins: &[f64], split: Split) -> (Vec<i64>, Vec<bool>, Option<f64>) {
    let n = margins.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Stable: equal margins keep input order.
    order.sort_by(|&a, &b| margins[b].total_cmp(&margins[a]));
    let mut ranks = vec![0i64; n];
    for (rank, &row) in order.iter().enumerate() {
        ranks[row] = rank as i64 + 1;
    }
    let routes: Vec<bool> = match split {
        Split::Threshold(t) => margins.iter().map(|&m| m >= t).collect(),
        Split::Percentile(p) => {
            let sft = ((p / 100.0) * n as f64).ceil() as usize;
            ranks
                .iter()
                .map(|&r| (r as usize) <= n - sft.min(n))
                .collect()
        }
    };
    let min_dpo = margins
        .iter()
        .zip(&routes)
        .filter(|(_, dpo)| **dpo)
        .map(|(&m, _)| m)
        .reduce(f64::min);
    (ranks, routes, min_dpo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ranks_and_threshold() {
        let (ranks, routes, min_dpo) = route(&[1.0, 0.2, 1.0, 3.0, 0.5], Split::Threshold(0.5));
        assert_eq!(ranks, [2, 5, 3, 1, 4]);
        assert_eq!(routes, [true, false, true, true, true]);
        assert_eq!(min_dpo, Some(0.5));
    }

    #[test]
    fn percentile_routes_the_last_in_curriculum_order() {
        // 40 % of 5 = 2 pairs to SFT: the two smallest margins; the tie at 1.0 is broken by order.
        let (_, routes, _) = route(&[1.0, 0.2, 1.0, 3.0, 0.5], Split::Percentile(40.0));
        assert_eq!(routes, [true, false, true, true, false]);
        let (_, routes, min_dpo) = route(&[1.0, 1.0, 1.0], Split::Percentile(50.0));
        assert_eq!(routes, [true, false, false]);
        assert_eq!(min_dpo, Some(1.0));
        let (_, routes, _) = route(&[1.0, 2.0], Split::Percentile(0.0));
        assert_eq!(routes, [true, true]);
    }
}
