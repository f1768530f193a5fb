//! `prefsmith inspect`: a per-dataset summary — files, layout, prompts, responses per prompt,
//! invalid rewards, reward quantiles — and whether a directory is a complete stage output.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type, Schema};
use serde::Serialize;

use crate::error::Result;
use crate::input::ColumnMap;
use crate::input::{self, FileInfo, InputFiles, Layout};
use crate::manifest::Manifest;
use crate::session::ident;
use crate::sql::collect;

/// What `inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The path inspected.
    pub path: String,
    /// Parquet files read.
    pub files: usize,
    /// Bytes on disk.
    pub bytes: u64,
    /// Rows over all files.
    pub rows: u64,
    /// `complete (stage NAME)`, `incomplete`, or `not a stage output`.
    pub stage_output: String,
    /// `wide`, `long`, `pairs` or `unknown`.
    pub layout: String,
    /// Columns and types.
    pub columns: Vec<(String, String)>,
    /// Distinct prompts (wide/long/pairs).
    pub prompts: Option<u64>,
    /// Responses over all prompts (wide/long).
    pub responses: Option<u64>,
    /// Responses per prompt: min, median, max.
    pub responses_per_prompt: Option<[f64; 3]>,
    /// Null rewards.
    pub null_rewards: Option<u64>,
    /// NaN rewards.
    pub nan_rewards: Option<u64>,
    /// ±inf rewards.
    pub infinite_rewards: Option<u64>,
    /// Quantiles (0, 5, 25, 50, 75, 95, 100 %) of the finite rewards (or of `rating_gap` for a
    /// pair table).
    pub reward_quantiles: Option<Vec<(f64, f64)>>,
}

const QUANTILES: [f64; 7] = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0];

/// Summarises the dataset at `path`.
pub async fn inspect(path: &str, columns: &ColumnMap) -> Result<Summary> {
    let location = crate::storage::Location::parse(path)?;
    let stage_output = stage_output_status(&location, path).await?;
    let files = input::resolve_any(path).await?;
    let infos = files.infos().await?;
    let mut summary = footer_summary(path, &infos, stage_output);
    let ctx = crate::session::new_context(0)?;
    crate::session::register_parquet(&ctx, "t", &files.files).await?;
    let Some((layout, values_sql, per_prompt_sql)) =
        layout_queries(files, &infos[0].schema, columns).await
    else {
        return Ok(summary);
    };
    summary.layout = layout.into();
    let counts = collect(
        &ctx,
        &format!(
            "SELECT count(DISTINCT id), CAST(sum(n) AS BIGINT), CAST(min(n) AS DOUBLE), CAST(median(n) AS DOUBLE), CAST(max(n) AS DOUBLE) FROM ({per_prompt_sql})"
        ),
    )
    .await?;
    add_prompt_counts(&mut summary, &counts);
    let values = collect(&ctx, &values_sql).await?;
    add_reward_stats(&mut summary, &values);
    Ok(summary)
}

/// Whether `location` is a complete stage output (and of which stage), an incomplete one, or
/// not one at all.
async fn stage_output_status(location: &crate::storage::Location, path: &str) -> Result<String> {
    Ok(if location.head().await?.is_none() {
        match Manifest::read_dir(location).await? {
            Some(m) => format!(
                "complete (stage {}, {} part{})",
                m.stage,
                m.parts.len(),
                if m.parts.len() == 1 { "" } else { "s" }
            ),
            None if input::resolve(path).await.is_err() => {
                "incomplete (no _manifest.json)".to_string()
            }
            None => "not a stage output".to_string(),
        }
    } else {
        "not a stage output".to_string()
    })
}

/// The summary the footers give (files, bytes, rows, columns); layout `unknown`, no statistics.
fn footer_summary(path: &str, infos: &[FileInfo], stage_output: String) -> Summary {
    Summary {
        path: path.to_string(),
        files: infos.len(),
        bytes: infos.iter().map(|i| i.bytes).sum(),
        rows: infos.iter().map(|i| i.rows).sum(),
        stage_output,
        layout: "unknown".into(),
        columns: infos[0]
            .schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect(),
        prompts: None,
        responses: None,
        responses_per_prompt: None,
        null_rewards: None,
        nan_rewards: None,
        infinite_rewards: None,
        reward_quantiles: None,
    }
}

/// The layout of a table with `schema` (`pairs`, `wide` or `long`), the SQL of its rewards
/// (column `r`) and the SQL of its responses per prompt (columns `id`, `n`) over table `t`;
/// `None` when the layout is unknown.
async fn layout_queries(
    files: InputFiles,
    schema: &Schema,
    columns: &ColumnMap,
) -> Option<(&'static str, String, String)> {
    let has = |c: &str| schema.field_with_name(c).is_ok();
    let pid = if has(&columns.prompt_id) {
        ident(&columns.prompt_id)
    } else {
        format!("hf_prompt_id({})", ident(&columns.prompt))
    };
    if has("chosen") && has("rejected") && has("rating_gap") {
        return Some((
            "pairs",
            "SELECT CAST(rating_gap AS DOUBLE) AS r FROM t".to_string(),
            format!("SELECT {pid} AS id, 1 AS n FROM t"),
        ));
    }
    let probe = input::validate(files, columns, None).await;
    match probe.map(|v| v.layout) {
        Ok(Layout::Wide) => {
            let scores = ident(&columns.scores);
            Some((
                "wide",
                format!("SELECT CAST(r AS DOUBLE) AS r FROM (SELECT unnest({scores}) AS r FROM t)"),
                format!(
                    "SELECT {pid} AS id, CAST(coalesce(cardinality({scores}), 0) AS BIGINT) AS n FROM t"
                ),
            ))
        }
        Ok(Layout::Long) => Some((
            "long",
            format!(
                "SELECT CAST({} AS DOUBLE) AS r FROM t",
                ident(&columns.reward)
            ),
            format!("SELECT {pid} AS id, count(*) AS n FROM t GROUP BY {pid}"),
        )),
        Err(_) => None,
    }
}

/// Fills in prompts (and, except for pairs, responses and responses per prompt) from the
/// result of the per-prompt counting query.
fn add_prompt_counts(summary: &mut Summary, counts: &[RecordBatch]) {
    if let Some(b) = counts.first().filter(|b| b.num_rows() > 0) {
        summary.prompts = Some(b.column(0).as_primitive::<Int64Type>().value(0) as u64);
        if summary.layout != "pairs" {
            summary.responses = Some(b.column(1).as_primitive::<Int64Type>().value(0) as u64);
            let f = |i: usize| b.column(i).as_primitive::<Float64Type>().value(0);
            summary.responses_per_prompt = Some([f(2), f(3), f(4)]);
        }
    }
}

/// Fills in the null, NaN and infinite counts and the quantiles of the finite rewards `values`.
fn add_reward_stats(summary: &mut Summary, values: &[RecordBatch]) {
    let (mut finite, mut nulls, mut nans, mut infs) = (Vec::new(), 0u64, 0u64, 0u64);
    for batch in values {
        let col = batch.column(0).as_primitive::<Float64Type>();
        for i in 0..col.len() {
            if col.is_null(i) {
                nulls += 1;
            } else if col.value(i).is_nan() {
                nans += 1;
            } else if col.value(i).is_infinite() {
                infs += 1;
            } else {
                finite.push(col.value(i));
            }
        }
    }
    finite.sort_by(f64::total_cmp);
    summary.null_rewards = Some(nulls);
    summary.nan_rewards = Some(nans);
    summary.infinite_rewards = Some(infs);
    if !finite.is_empty() {
        let at = |q: f64| finite[((finite.len() - 1) as f64 * q).round() as usize];
        summary.reward_quantiles = Some(QUANTILES.iter().map(|&q| (q, at(q))).collect());
    }
}
