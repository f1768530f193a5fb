//! The `clean` stage: label cleaning per prompt (`docs/ALGORITHMS.md` §5) by the method of the
//! config (§5.8: trimmed Bradley–Terry by default on judgments, robust PCA on scores), with the
//! kernels of the `clean_scores` / `clean_comparisons` aggregates.
//!
//! * long layout (one row per response): the same rows, in input order, plus `clean_score`,
//!   `clean_rank`, `flagged_comparisons` and `clean_converged` (null score, rank and flags for a
//!   response whose reward is null, NaN or infinite: it is left out of the matrix);
//! * wide layout (lists per prompt): the same rows plus the lists `clean_scores`, `clean_ranks`,
//!   `flagged_comparisons` and `clean_converged`;
//! * comparisons (`prompt_id`, `i`, `j`, `outcome`, one row per judgment): one row per
//!   (prompt_id, response_index) with the same four columns, sorted.
//!
//! Scores give X_ij = (s_i − s_j)/T, which is rank 2 by construction: cleaning can then only
//! flag whole responses whose score disagrees with the rest. `select --reward-column
//! clean_score` (long) or `clean_scores` (wide) selects pairs on the cleaned scores. Prompts
//! are cleaned in parallel; a prompt that does not converge is passed through (uncleaned Borda
//! scores), marked `clean_converged = false` and listed in the manifest.
//!
//! Memory: the wide layout, and the long layout and comparisons whose prompts come in ascending
//! key order (as `synth` writes responses, or a judge writes judgments prompt by prompt), are
//! cleaned in chunks of about 65,536 rows cut at prompt boundaries, so memory stays a chunk
//! whatever the input size (manifest `plan`: `streaming`; the output then records that it is
//! sorted by prompt id when keyed by it). Long input and comparisons out of order are read
//! whole (`plan`: `whole`); both plans write the same rows.

mod chunks;
mod columns;
mod comparisons;
mod config;
mod long;
mod solve;
mod stats;
mod wide;

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use tracing::info;

use crate::error::{Error, Result};
use crate::formats::InputFormat;
use crate::input::{self, FileInfo, Layout};
use crate::manifest::{InputInfo, Manifest, StageWriter};
use crate::reader::read_all_in_order;
use crate::stages::now_unix;
use chunks::{Streamed, clean_in_chunks};
use comparisons::clean_comparisons;
pub use config::CleanConfig;
use long::clean_long;

crate::stage::config_stage!(CleanConfig, "clean", run);

/// Runs `clean` from `input` into `output`.
pub async fn run(config: &CleanConfig, input: &str, output: &str) -> Result<Manifest> {
    let output = &crate::storage::Location::parse(output)?;
    let started = Instant::now();
    let started_unix = now_unix();
    if !(config.temperature.is_finite() && config.temperature > 0.0) {
        return Err(Error::config(
            "temperature",
            format!("must be positive, got {}", config.temperature),
        ));
    }
    let files = input::resolve(input).await?;
    let infos = files.infos().await?;
    let first = &infos[0];
    let comparisons = reads_comparisons(config.input_format, first)?;
    let method = config.method_for(comparisons);
    if !comparisons && !method.reads_scores() {
        return Err(Error::config(
            "method",
            format!(
                "{input} holds scores, not pairwise judgments: {}",
                prefsmith_udfs::cleaning::CleanError::NeedsJudgments(method)
            ),
        ));
    }
    let schema = Arc::clone(&first.schema);
    // `sorted`: the rows are in ascending prompt id order, recorded in the Parquet metadata
    // so that `select` after `clean` can stream too.
    let begin = |schema, sorted: bool| {
        let sorted_by = sorted.then_some(config.columns.prompt_id.as_str());
        StageWriter::begin(output, schema, config.max_rows_per_file, sorted_by)
    };
    let (writer, mut totals, excluded, layout, streaming) = if comparisons {
        require_comparison_columns(config, first)?;
        let rows: u64 = infos.iter().map(|i| i.rows).sum();
        let streamed = Streamed::Comparisons { rows };
        match clean_in_chunks(&files.files, &schema, config, streamed, begin, input).await? {
            Some((writer, totals, excluded)) => (writer, totals, excluded, "comparisons", true),
            None => {
                info!("clean: judgments are not in prompt order; reading the input whole");
                let rows = read_all_in_order(&files.files, &schema).await?;
                let (batches, totals, excluded) = clean_comparisons(&rows, config, input, 0, true)?;
                let writer = write_all(begin, batches, input).await?;
                (writer, totals, excluded, "comparisons", false)
            }
        }
    } else {
        let validated = input::validate(
            files.clone(),
            &config.columns,
            config.input_format.response_layout()?,
        )
        .await?;
        let long = validated.layout == Layout::Long;
        let streamed = clean_in_chunks(
            &files.files,
            &schema,
            config,
            Streamed::Responses(&validated),
            begin,
            input,
        )
        .await?;
        let streaming = streamed.is_some();
        let (writer, totals, excluded) = match streamed {
            Some(done) => done,
            None => {
                // Long input whose prompts are not in key order: a prompt's rows can be
                // anywhere, so read it whole.
                info!("clean: prompts are not in order; reading the input whole");
                let rows = read_all_in_order(&files.files, &schema).await?;
                let (batches, totals, excluded) = clean_long(
                    &rows,
                    config,
                    validated.has_response_index,
                    validated.has_prompt_id,
                    true,
                )?;
                (write_all(begin, batches, input).await?, totals, excluded)
            }
        };
        let layout = if long { "long" } else { "wide" };
        (writer, totals, excluded, layout, streaming)
    };
    totals.non_converged.sort();
    let stats = totals.manifest_stats(
        layout,
        streaming,
        method,
        comparisons,
        excluded,
        config.temperature,
    );
    let manifest = Manifest::new(
        "clean",
        config.hash(&infos),
        config,
        infos.iter().map(InputInfo::from).collect(),
        stats,
        started_unix,
    );
    let mut manifest = writer.commit(manifest).await?;
    manifest.timing.seconds = started.elapsed().as_secs_f64();
    info!(prompts = totals.prompts, non_converged = totals.non_converged.len(), flagged = totals.flagged, output = %output, "clean: done");
    Ok(manifest)
}

/// Whether the input is comparisons (one row per judgment) rather than responses: as
/// configured, or (`auto`) when it has the columns `i`, `j` and `outcome`.
fn reads_comparisons(format: InputFormat, first: &FileInfo) -> Result<bool> {
    let has = |c: &str| first.schema.index_of(c).is_ok();
    match format {
        InputFormat::Comparisons => Ok(true),
        InputFormat::Auto => Ok(has("i") && has("j") && has("outcome")),
        InputFormat::Wide | InputFormat::Long => Ok(false),
        InputFormat::Plain | InputFormat::HfBinarized => Err(Error::config(
            "input-format",
            "clean reads responses with rewards (wide or long) or comparisons, not pairs",
        )),
    }
}

/// Comparisons need the prompt id and the judgment columns.
fn require_comparison_columns(config: &CleanConfig, first: &FileInfo) -> Result<()> {
    let has = |c: &str| first.schema.index_of(c).is_ok();
    for column in [&config.columns.prompt_id, "i", "j", "outcome"] {
        if !has(column) {
            return Err(Error::MissingColumn {
                file: first.location.to_string(),
                column: column.to_string(),
                context: "comparisons: prompt_id, i, j, outcome (one row per judgment)".into(),
            });
        }
    }
    Ok(())
}

/// Writes the batches of an in-memory run; no batches means no input rows.
async fn write_all<F, Fut>(begin: F, batches: Vec<RecordBatch>, input: &str) -> Result<StageWriter>
where
    F: FnOnce(datafusion::arrow::datatypes::SchemaRef, bool) -> Fut,
    Fut: std::future::Future<Output = Result<StageWriter>>,
{
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Err(Error::EmptyInput { path: input.into() });
    };
    let mut writer = begin(schema, false).await?;
    for batch in &batches {
        writer.write(batch).await?;
    }
    Ok(writer)
}
