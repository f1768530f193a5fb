//! The `clean` stage: label cleaning by robust PCA (CURATRON / RORATRON, `docs/ALGORITHMS.md` §5), per
//! prompt, with the kernel of the `clean_scores` / `clean_comparisons` aggregates.
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
//! Memory: the wide layout, and the long layout whose prompts come in ascending key order
//! (as `synth` writes it), are cleaned in chunks of about 65,536 rows cut
//! at prompt boundaries, so memory stays a chunk whatever the input size (manifest `plan`:
//! `streaming`; the output then records that it is sorted by prompt id). Comparisons, and long
//! input out of order, are read whole (`plan`: `whole`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Float64Builder, Int64Array, Int64Builder,
    ListBuilder, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use prefsmith_udfs::rpca::{Cleaned, clean_indexed_scores, clean_judgments};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::formats::InputFormat;
use crate::input::ColumnMap;
use crate::input::{self, FileInfo, Layout};
use crate::manifest::{InputInfo, Manifest, StageWriter};
use crate::reader::{read_all_in_order, string_at};
use crate::stages::{Progress, now_unix, stage_hash};

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

/// One prompt's input to the solver.
enum Problem {
    /// Scores of responses with these indices (finite scores only).
    Scores { indices: Vec<i64>, scores: Vec<f64> },
    /// Judgments (i, j, outcome) over response indices.
    Judgments(Vec<(i64, i64, f64)>),
}

/// One prompt's result: response indices (ascending) and the cleaning.
type Solved = (Vec<i64>, Cleaned);

fn solve(problem: &Problem, temperature: f64) -> Solved {
    match problem {
        Problem::Scores { indices, scores } => clean_indexed_scores(indices, scores, temperature)
            .expect("duplicate response indices are rejected while reading"),
        Problem::Judgments(judgments) => clean_judgments(judgments),
    }
}

/// Solves every problem, the prompts split over the cores, with progress lines unless the
/// caller reports progress itself (`report` false: the streaming path, chunk by chunk).
fn solve_all(problems: &[Problem], temperature: f64, report: bool) -> Vec<Solved> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let progress = std::sync::Mutex::new(Progress::new("clean", problems.len() as u64));
    let next = std::sync::atomic::AtomicUsize::new(0);
    const CHUNK: usize = 64;
    let mut results: Vec<Option<Solved>> = (0..problems.len()).map(|_| None).collect();
    let slots: Vec<std::sync::Mutex<&mut [Option<Solved>]>> = results
        .chunks_mut(CHUNK)
        .map(std::sync::Mutex::new)
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let chunk = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(slot) = slots.get(chunk) else { break };
                    let mut slot = slot.lock().expect("one worker per chunk");
                    for (k, out) in slot.iter_mut().enumerate() {
                        *out = Some(solve(&problems[chunk * CHUNK + k], temperature));
                    }
                    if report && let Ok(mut p) = progress.lock() {
                        p.advance(slot.len() as u64);
                    }
                }
            });
        }
    });
    drop(slots);
    if report && let Ok(p) = progress.lock() {
        p.finish();
    }
    results.into_iter().map(|r| r.expect("solved")).collect()
}

/// Totals for the manifest.
#[derive(Default)]
struct Totals {
    prompts: u64,
    solved: u64,
    passed_through: u64,
    degenerate: u64,
    non_converged: Vec<String>,
    iterations: u64,
    max_iterations: u32,
    max_residual: f64,
    flagged: u64,
}

impl Totals {
    fn add(&mut self, prompt: &str, c: &Cleaned) {
        self.prompts += 1;
        if c.solved {
            self.solved += 1;
        } else if c.converged {
            self.passed_through += 1;
        }
        if c.degenerate {
            self.degenerate += 1;
        }
        if !c.converged {
            self.non_converged.push(prompt.to_string());
        }
        self.iterations += u64::from(c.iterations);
        self.max_iterations = self.max_iterations.max(c.iterations);
        if c.residual.is_finite() {
            self.max_residual = self.max_residual.max(c.residual);
        }
        self.flagged += c.flagged.len() as u64;
    }

    /// Adds the totals of another chunk.
    fn merge(&mut self, other: Totals) {
        self.prompts += other.prompts;
        self.solved += other.solved;
        self.passed_through += other.passed_through;
        self.degenerate += other.degenerate;
        self.non_converged.extend(other.non_converged);
        self.iterations += other.iterations;
        self.max_iterations = self.max_iterations.max(other.max_iterations);
        self.max_residual = self.max_residual.max(other.max_residual);
        self.flagged += other.flagged;
    }
}

impl crate::stage::Stage for CleanConfig {
    fn kind(&self) -> &'static str {
        "clean"
    }

    fn input(&self) -> Option<&str> {
        self.input.as_deref()
    }

    fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }

    fn settings<'a>(
        &'a self,
        _: &'a crate::stage::StageContext<'a>,
    ) -> futures::future::BoxFuture<'a, Result<serde_json::Value>> {
        crate::stage::config_settings(self)
    }

    fn run<'a>(
        &'a self,
        ctx: &'a crate::stage::StageContext<'a>,
    ) -> futures::future::BoxFuture<'a, Result<Manifest>> {
        Box::pin(async move { run(self, ctx.input()?, ctx.output).await })
    }
}

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
    let has = |c: &str| first.schema.index_of(c).is_ok();
    let comparisons = match config.input_format {
        InputFormat::Comparisons => true,
        InputFormat::Auto => has("i") && has("j") && has("outcome"),
        InputFormat::Wide | InputFormat::Long => false,
        InputFormat::Plain | InputFormat::HfBinarized => {
            return Err(Error::config(
                "input-format",
                "clean reads responses with rewards (wide or long) or comparisons, not pairs",
            ));
        }
    };
    let schema = Arc::clone(&first.schema);
    // `sorted`: the rows are in ascending prompt id order, recorded in the Parquet metadata
    // so that `select` after `clean` can stream too.
    let begin = |schema, sorted: bool| {
        let sorted_by = sorted.then_some(config.columns.prompt_id.as_str());
        StageWriter::begin(output, schema, config.max_rows_per_file, sorted_by)
    };
    let (writer, mut totals, excluded, layout, streaming) = if comparisons {
        for column in [&config.columns.prompt_id, "i", "j", "outcome"] {
            if !has(column) {
                return Err(Error::MissingColumn {
                    file: first.location.to_string(),
                    column: column.to_string(),
                    context: "comparisons: prompt_id, i, j, outcome (one row per judgment)".into(),
                });
            }
        }
        let rows = read_all_in_order(&files.files, &schema).await?;
        let (batches, totals, excluded) = clean_comparisons(&rows, config, input)?;
        let writer = write_all(begin, batches, input).await?;
        (writer, totals, excluded, "comparisons", false)
    } else {
        let validated = input::validate(
            files.clone(),
            &config.columns,
            config.input_format.response_layout()?,
        )
        .await?;
        let long = validated.layout == Layout::Long;
        let streamed =
            clean_in_chunks(&files.files, &schema, config, &validated, begin, input).await?;
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
    let stats = [
        ("layout", json!(layout)),
        // "streaming": chunk by chunk in bounded memory (wide, or long in prompt order);
        // "whole": the input read whole (comparisons, or long out of order).
        ("plan", json!(if streaming { "streaming" } else { "whole" })),
        ("prompts", json!(totals.prompts)),
        ("solved", json!(totals.solved)),
        ("passed_through", json!(totals.passed_through)),
        ("degenerate", json!(totals.degenerate)),
        ("non_converged", json!(totals.non_converged.len())),
        ("non_converged_prompts", json!(totals.non_converged.iter().take(100).collect::<Vec<_>>())),
        ("mean_iterations", json!(totals.iterations as f64 / totals.prompts.max(1) as f64)),
        ("max_iterations", json!(totals.max_iterations)),
        ("max_residual", json!(totals.max_residual)),
        ("flagged_comparisons", json!(totals.flagged)),
        ("excluded_non_finite_scores", json!(excluded)),
        ("temperature", json!(config.temperature)),
        (
            "note",
            json!(if comparisons {
                "pairwise judgments: flags point at individual corrupted comparisons"
            } else {
                "score-derived matrices are rank 2 by construction: flags can only point at whole responses whose score disagrees with the rest"
            }),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
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

/// Rows per chunk of the streaming path (a chunk ends at a prompt boundary, so it can run
/// over by the rest of one prompt).
const CHUNK_ROWS: usize = 1 << 16;

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

/// Cleans the wide layout (one prompt per row), or the long layout when its prompts come in
/// ascending key order (each prompt's rows then lie together), chunk by chunk: memory stays
/// a chunk of rows, not the input. Returns `None`, having written nothing that counts (no
/// manifest), as soon as a long input turns out to be out of order.
async fn clean_in_chunks<F, Fut>(
    files: &[crate::storage::Location],
    schema: &Schema,
    config: &CleanConfig,
    validated: &input::ValidatedInput,
    begin: F,
    input: &str,
) -> Result<Option<(StageWriter, Totals, u64)>>
where
    F: Fn(datafusion::arrow::datatypes::SchemaRef, bool) -> Fut,
    Fut: std::future::Future<Output = Result<StageWriter>>,
{
    use futures::StreamExt;
    let long = validated.layout == Layout::Long;
    let key_column = if validated.has_prompt_id {
        &config.columns.prompt_id
    } else {
        &config.columns.prompt
    };
    let mut stream = crate::reader::stream_in_order(files, schema)?;
    let mut writer: Option<StageWriter> = None;
    let mut totals = Totals::default();
    let mut excluded = 0u64;
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;
    let mut rows_done = 0usize;
    let mut last_key: Option<String> = None;
    let mut progress = Progress::new("clean", validated.rows);
    loop {
        let next = stream.next().await.transpose()?;
        let finished = next.is_none();
        if let Some(batch) = next {
            if long {
                let keys = batch.column(batch.schema().index_of(key_column)?);
                for r in 0..batch.num_rows() {
                    // Nulls are reported by clean_long, which names the row.
                    let Some(key) = string_at(keys, r) else {
                        continue;
                    };
                    match &last_key {
                        Some(previous) if previous.as_str() > key => return Ok(None),
                        Some(previous) if previous.as_str() == key => {}
                        _ => last_key = Some(key.to_string()),
                    }
                }
            }
            pending_rows += batch.num_rows();
            pending.push(batch);
            if pending_rows < CHUNK_ROWS {
                continue;
            }
        }
        // The chunk: everything pending, less (long layout, more to come) the rows of its
        // last prompt, which may continue in the next batch.
        let mut carry = Vec::new();
        if long && !finished {
            let last = pending.last().expect("a batch was just added");
            let keys = last.column(last.schema().index_of(key_column)?);
            let end = last.num_rows();
            let key_at = |r: usize| string_at(keys, r);
            let mut cut = end;
            while cut > 0 && key_at(cut - 1) == key_at(end - 1) {
                cut -= 1;
            }
            if cut == 0 {
                // The whole batch is one prompt: keep gathering.
                continue;
            }
            let last = pending.pop().expect("checked");
            pending.push(last.slice(0, cut));
            carry.push(last.slice(cut, end - cut));
        }
        let chunk = std::mem::replace(&mut pending, carry);
        pending_rows = pending.iter().map(RecordBatch::num_rows).sum();
        let chunk_rows: usize = chunk.iter().map(RecordBatch::num_rows).sum();
        if chunk_rows > 0 {
            let (batches, chunk_totals, chunk_excluded) = if long {
                clean_long(
                    &chunk,
                    config,
                    validated.has_response_index,
                    validated.has_prompt_id,
                    false,
                )?
            } else {
                clean_wide(&chunk, config, rows_done, false)?
            };
            for batch in &batches {
                if writer.is_none() {
                    // Long rows keyed by prompt id come out in its order (or not at all).
                    let sorted = long && validated.has_prompt_id;
                    writer = Some(begin(batch.schema(), sorted).await?);
                }
                writer.as_mut().expect("begun").write(batch).await?;
            }
            totals.merge(chunk_totals);
            excluded += chunk_excluded;
            rows_done += chunk_rows;
            progress.advance(chunk_rows as u64);
        }
        if finished {
            break;
        }
    }
    progress.finish();
    match writer {
        Some(writer) => Ok(Some((writer, totals, excluded))),
        None => Err(Error::EmptyInput { path: input.into() }),
    }
}

/// A column as f64 (null where null).
fn floats(column: &ArrayRef) -> Result<Float64Array> {
    Ok(cast(column, &DataType::Float64)?
        .as_primitive::<Float64Type>()
        .clone())
}

/// A column as i64.
fn ints(column: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(column, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

fn with_columns(batch: &RecordBatch, extra: Vec<(Field, ArrayRef)>) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns = batch.columns().to_vec();
    for (field, column) in extra {
        if batch.schema().index_of(field.name()).is_ok() {
            return Err(Error::InvalidData {
                context: "clean".into(),
                message: format!(
                    "the input already has a '{}' column (cleaned twice?)",
                    field.name()
                ),
            });
        }
        fields.push(field);
        columns.push(column);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Long layout: group rows by prompt, clean, write the columns back row by row.
fn clean_long(
    batches: &[RecordBatch],
    config: &CleanConfig,
    has_index: bool,
    has_prompt_id: bool,
    report: bool,
) -> Result<(Vec<RecordBatch>, Totals, u64)> {
    let c = &config.columns;
    // (batch, row) of every response, its prompt and index.
    let mut prompt_of: HashMap<String, usize> = HashMap::new();
    let mut prompts: Vec<String> = Vec::new();
    let mut problems: Vec<(Vec<i64>, Vec<f64>)> = Vec::new();
    let mut seen: Vec<i64> = Vec::new();
    let mut row_keys: Vec<Vec<(usize, i64, bool)>> = Vec::new();
    let mut excluded = 0u64;
    for batch in batches {
        let schema = batch.schema();
        let key_column = if has_prompt_id {
            &c.prompt_id
        } else {
            &c.prompt
        };
        let ids = batch.column(schema.index_of(key_column)?);
        let rewards = floats(batch.column(schema.index_of(&c.reward)?))?;
        let index = if has_index {
            Some(ints(batch.column(schema.index_of(&c.response_index)?))?)
        } else {
            None
        };
        let mut keys = Vec::with_capacity(batch.num_rows());
        for r in 0..batch.num_rows() {
            let Some(id) = string_at(ids, r) else {
                return Err(Error::InvalidData {
                    context: format!("column '{key_column}'"),
                    message: format!("row {r} is null"),
                });
            };
            let p = match prompt_of.get(id) {
                Some(&p) => p,
                None => {
                    prompt_of.insert(id.to_string(), prompts.len());
                    prompts.push(id.to_string());
                    problems.push((Vec::new(), Vec::new()));
                    seen.push(0);
                    prompts.len() - 1
                }
            };
            let idx = match &index {
                Some(a) if a.is_valid(r) => a.value(r),
                Some(_) => {
                    return Err(Error::InvalidData {
                        context: format!("column '{}'", c.response_index),
                        message: format!("row {r} (prompt {id}) is null"),
                    });
                }
                None => seen[p],
            };
            seen[p] += 1;
            let finite = rewards.is_valid(r) && rewards.value(r).is_finite();
            if finite {
                problems[p].0.push(idx);
                problems[p].1.push(rewards.value(r));
            } else {
                excluded += 1;
            }
            keys.push((p, idx, finite));
        }
        row_keys.push(keys);
    }
    for (p, (indices, _)) in problems.iter().enumerate() {
        let mut sorted = indices.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::InvalidData {
                context: format!("column '{}'", c.response_index),
                message: format!("prompt {} has response index {} twice", prompts[p], w[0]),
            });
        }
    }
    let problems: Vec<Problem> = problems
        .into_iter()
        .map(|(indices, scores)| Problem::Scores { indices, scores })
        .collect();
    let solved = solve_all(&problems, config.temperature, report);
    let mut totals = Totals::default();
    for (p, (_, cleaned)) in solved.iter().enumerate() {
        totals.add(&prompts[p], cleaned);
    }
    let mut out = Vec::with_capacity(batches.len());
    for (batch, keys) in batches.iter().zip(&row_keys) {
        let (mut score, mut rank, mut flags, mut ok) = (
            Float64Builder::new(),
            Int64Builder::new(),
            Int64Builder::new(),
            Vec::new(),
        );
        for &(p, idx, finite) in keys {
            let (indices, cleaned) = &solved[p];
            ok.push(Some(cleaned.converged));
            match (finite, indices.binary_search(&idx)) {
                (true, Ok(k)) => {
                    score.append_value(cleaned.scores[k]);
                    rank.append_value(cleaned.ranks[k]);
                    flags.append_value(cleaned.flagged_per_response[k]);
                }
                _ => {
                    score.append_null();
                    rank.append_null();
                    flags.append_null();
                }
            }
        }
        out.push(with_columns(
            batch,
            vec![
                (
                    Field::new("clean_score", DataType::Float64, true),
                    Arc::new(score.finish()),
                ),
                (
                    Field::new("clean_rank", DataType::Int64, true),
                    Arc::new(rank.finish()),
                ),
                (
                    Field::new("flagged_comparisons", DataType::Int64, true),
                    Arc::new(flags.finish()),
                ),
                (
                    Field::new("clean_converged", DataType::Boolean, false),
                    Arc::new(BooleanArray::from(ok)),
                ),
            ],
        )?);
    }
    Ok((out, totals, excluded))
}

/// Wide layout: one problem per row.
fn clean_wide(
    batches: &[RecordBatch],
    config: &CleanConfig,
    first_row: usize,
    report: bool,
) -> Result<(Vec<RecordBatch>, Totals, u64)> {
    let c = &config.columns;
    let mut problems = Vec::new();
    let mut labels = Vec::new();
    let mut lengths = Vec::new();
    let mut excluded = 0u64;
    for batch in batches {
        let schema = batch.schema();
        let lists = cast(
            batch.column(schema.index_of(&c.scores)?),
            &DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
        )?;
        let lists = lists.as_list::<i32>();
        let ids = schema.index_of(&c.prompt_id).ok().map(|i| batch.column(i));
        for r in 0..batch.num_rows() {
            let (mut indices, mut scores) = (Vec::new(), Vec::new());
            let len = if lists.is_valid(r) {
                lists.value_length(r) as usize
            } else {
                0
            };
            if lists.is_valid(r) {
                let values = lists.value(r);
                let values = values.as_primitive::<Float64Type>();
                for k in 0..values.len() {
                    if values.is_valid(k) && values.value(k).is_finite() {
                        indices.push(k as i64);
                        scores.push(values.value(k));
                    } else {
                        excluded += 1;
                    }
                }
            }
            labels.push(ids.and_then(|ids| string_at(ids, r)).map_or_else(
                || format!("row {}", first_row + labels.len()),
                str::to_string,
            ));
            lengths.push(len);
            problems.push(Problem::Scores { indices, scores });
        }
    }
    let solved = solve_all(&problems, config.temperature, report);
    let mut totals = Totals::default();
    for (label, (_, cleaned)) in labels.iter().zip(&solved) {
        totals.add(label, cleaned);
    }
    let mut out = Vec::new();
    let mut next = 0;
    for batch in batches {
        let mut score = ListBuilder::new(Float64Builder::new());
        let mut rank = ListBuilder::new(Int64Builder::new());
        let mut flags = ListBuilder::new(Int64Builder::new());
        let mut ok = Vec::new();
        for _ in 0..batch.num_rows() {
            let (indices, cleaned) = &solved[next];
            for k in 0..lengths[next] as i64 {
                match indices.binary_search(&k) {
                    Ok(p) => {
                        score.values().append_value(cleaned.scores[p]);
                        rank.values().append_value(cleaned.ranks[p]);
                        flags.values().append_value(cleaned.flagged_per_response[p]);
                    }
                    Err(_) => {
                        score.values().append_null();
                        rank.values().append_null();
                        flags.values().append_null();
                    }
                }
            }
            score.append(true);
            rank.append(true);
            flags.append(true);
            ok.push(Some(cleaned.converged));
            next += 1;
        }
        let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, true)));
        out.push(with_columns(
            batch,
            vec![
                (
                    Field::new("clean_scores", list(DataType::Float64), true),
                    Arc::new(score.finish()),
                ),
                (
                    Field::new("clean_ranks", list(DataType::Int64), true),
                    Arc::new(rank.finish()),
                ),
                (
                    Field::new("flagged_comparisons", list(DataType::Int64), true),
                    Arc::new(flags.finish()),
                ),
                (
                    Field::new("clean_converged", DataType::Boolean, false),
                    Arc::new(BooleanArray::from(ok)),
                ),
            ],
        )?);
    }
    Ok((out, totals, excluded))
}

/// Comparisons: one output row per (prompt_id, response_index), sorted.
fn clean_comparisons(
    batches: &[RecordBatch],
    config: &CleanConfig,
    input: &str,
) -> Result<(Vec<RecordBatch>, Totals, u64)> {
    let mut by_prompt: std::collections::BTreeMap<String, Vec<(i64, i64, f64)>> =
        Default::default();
    let mut skipped = 0u64;
    let mut row_number = 0u64;
    for batch in batches {
        let schema = batch.schema();
        let ids = batch.column(schema.index_of(&config.columns.prompt_id)?);
        let i = ints(batch.column(schema.index_of("i")?))?;
        let j = ints(batch.column(schema.index_of("j")?))?;
        let o = floats(batch.column(schema.index_of("outcome")?))?;
        for r in 0..batch.num_rows() {
            let bad = |message: String| Error::InvalidData {
                context: format!("{input}: row {}", row_number + r as u64),
                message,
            };
            let id = string_at(ids, r).ok_or_else(|| bad("prompt_id is null".into()))?;
            if i.is_null(r) || j.is_null(r) {
                return Err(bad("i and j must not be null".into()));
            }
            if i.value(r) < 0 || j.value(r) < 0 {
                return Err(bad(format!(
                    "response indices are 0-based, got ({}, {})",
                    i.value(r),
                    j.value(r)
                )));
            }
            if o.is_null(r) {
                skipped += 1;
                continue;
            }
            let outcome = o.value(r);
            if !(0.0..=1.0).contains(&outcome) {
                return Err(bad(format!(
                    "outcome must be in [0, 1] (the probability that i beats j), got {outcome}"
                )));
            }
            by_prompt
                .entry(id.to_string())
                .or_default()
                .push((i.value(r), j.value(r), outcome));
        }
        row_number += batch.num_rows() as u64;
    }
    let prompts: Vec<String> = by_prompt.keys().cloned().collect();
    let problems: Vec<Problem> = by_prompt.into_values().map(Problem::Judgments).collect();
    let solved = solve_all(&problems, config.temperature, true);
    let mut totals = Totals::default();
    let (mut ids, mut index, mut score, mut rank, mut flags, mut ok) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (prompt, (indices, cleaned)) in prompts.iter().zip(&solved) {
        totals.add(prompt, cleaned);
        for (k, &idx) in indices.iter().enumerate() {
            ids.push(prompt.as_str());
            index.push(idx);
            score.push(cleaned.scores[k]);
            rank.push(cleaned.ranks[k]);
            flags.push(cleaned.flagged_per_response[k]);
            ok.push(cleaned.converged);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("prompt_id", DataType::Utf8, false),
        Field::new("response_index", DataType::Int64, false),
        Field::new("clean_score", DataType::Float64, false),
        Field::new("clean_rank", DataType::Int64, false),
        Field::new("flagged_comparisons", DataType::Int64, false),
        Field::new("clean_converged", DataType::Boolean, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Int64Array::from(index)),
            Arc::new(Float64Array::from(score)),
            Arc::new(Int64Array::from(rank)),
            Arc::new(Int64Array::from(flags)),
            Arc::new(BooleanArray::from(ok)),
        ],
    )?;
    Ok((vec![batch], totals, skipped))
}
