//! The `score` stage: summed response log-probs under a model, as the policy or as the
//! reference. For a pair table it adds `{p}_logp_chosen`, `{p}_logp_rejected`,
//! `{p}_tokens_chosen`, `{p}_tokens_rejected` and `{p}_prompt_tokens` (`p` = `policy` or
//! `ref`), the columns `select-margin` and the trainer read; for a responses table it adds
//! `{p}_logp` and `{p}_tokens` (long layout) or lists `{p}_logps` and `{p}_tokens` (wide
//! layout). With `max-length` the sequences are cut exactly as the trainer cuts them, so a
//! reference scored here is the reference the trainer needs (it checks the token counts).
//!
//! Results are cached by (model hash, data hash): the data hash covers every token sequence
//! scored, so rerunning on the same data with the same model, into any output, reads the
//! cache instead of running the model.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Float64Builder, ListBuilder, RecordBatch, UInt32Array, UInt32Builder,
};
use datafusion::arrow::datatypes::{Field, Schema};
use prefsmith_model::lm::LanguageModel;
use prefsmith_model::scoring::{
    Precision, ScoreOptions, SequenceScore, check_items, score_sequences,
};
use prefsmith_model::sequence::ScoreItem;
use prefsmith_model::settings::ModelSettings;
use prefsmith_model::tokenizer::ChatMessage;
use prefsmith_pipeline::formats::{InputFormat, PairInput, sorted_by_prompt_id};
use prefsmith_pipeline::input::FileInfo;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::reader::string_at;
use prefsmith_pipeline::stages::{Progress, now_unix};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::stages::pairs::{Cut, Truncation, pair_side, truncate};
use crate::stages::score_cache::{cache_file, read_cache, write_cache};
use crate::stages::{StageOutput, Table, prompt_messages, string_list};

/// Whose log-probs these are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The policy being trained (columns `policy_…`).
    Policy,
    /// The frozen reference (columns `ref_…`).
    Reference,
}

impl Role {
    /// Parses `policy` or `reference` (`ref`).
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "policy" => Ok(Self::Policy),
            "reference" | "ref" => Ok(Self::Reference),
            other => Err(Error::Config(format!(
                "role '{other}': expected policy or reference"
            ))),
        }
    }

    /// The column prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Reference => "ref",
        }
    }
}

/// Settings of the `score` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScoreConfig {
    /// The input (default in a job: the previous stage's output).
    #[serde(default)]
    pub input: Option<String>,
    /// The output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// The model.
    #[serde(flatten)]
    pub model: ModelSettings,
    /// Policy or reference.
    pub role: Role,
    /// The pair input's layout (default: detected).
    #[serde(default)]
    pub input_format: InputFormat,
    /// Read and write the (model hash, data hash) cache.
    #[serde(default = "cache_by_default")]
    pub cache: bool,
    /// The model's content hash (filled in when the stage runs).
    #[serde(default)]
    pub model_hash: Option<String>,
    /// Cut sequences as the trainer does (`data.max-length`), so that reference log-probs
    /// scored here are the ones `prefsmith train` needs. Default: no cut.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Cut prompts first to this many tokens (the trainer's `data.max-prompt-length`).
    #[serde(default)]
    pub max_prompt_length: Option<usize>,
    /// Which end of a cut prompt is kept (`keep-end` default, or `keep-start`).
    #[serde(default)]
    pub truncation: Truncation,
    /// The arithmetic: `f32` (default; the trainer's own) or `int8` (CPU only, several times
    /// faster on CPUs with AVX-512 VNNI; policy and reference compared with each other should
    /// be scored with the same precision).
    #[serde(default)]
    pub precision: Precision,
}

/// The cache is used unless turned off.
fn cache_by_default() -> bool {
    true
}

/// What the input is.
#[derive(Clone, Copy)]
enum Shape {
    Pairs,
    Wide,
    Long,
}

impl Shape {
    /// The columns this stage adds for role prefix `p`, in order.
    fn new_column_names(self, p: &str) -> Vec<String> {
        match self {
            Self::Pairs => vec![
                format!("{p}_logp_chosen"),
                format!("{p}_logp_rejected"),
                format!("{p}_tokens_chosen"),
                format!("{p}_tokens_rejected"),
                format!("{p}_prompt_tokens"),
            ],
            Self::Wide => vec![format!("{p}_logps"), format!("{p}_tokens")],
            Self::Long => vec![format!("{p}_logp"), format!("{p}_tokens")],
        }
    }
}

/// The scored sequences of a table: (request, response) per sequence, and how many belong to
/// each row (so that errors name the row and the results go back to it).
struct Sequences {
    texts: Vec<(Vec<ChatMessage>, String)>,
    per_row: Vec<usize>,
}

impl Sequences {
    /// Where sequence `i` came from, for error messages.
    fn row_of(&self, input: &str, i: usize) -> String {
        let mut at = 0;
        for (row, n) in self.per_row.iter().enumerate() {
            if i < at + n {
                return format!("{input}: row {row}");
            }
            at += n;
        }
        format!("{input}: item {i}")
    }
}

/// Runs the stage from `input` into `output`; the manifest records `hash` (the job runner's
/// hash of the resolved settings and the input files).
pub async fn run(config: &ScoreConfig, input: &str, output: &str, hash: &str) -> Result<Manifest> {
    let started = Instant::now();
    let started_unix = now_unix();
    let (shape, batch, infos) = read_input(input, config.input_format).await?;
    let p = config.role.prefix();
    let new_names = shape.new_column_names(p);
    for name in &new_names {
        if batch.column_by_name(name).is_some() {
            return Err(Error::Input(format!(
                "{input}: column '{name}' already exists (scored twice with the same role?)"
            )));
        }
    }

    let lm = config.model.load()?;
    let sequences = sequences_of(&batch, shape, input)?;
    let items = tokenized(&lm, config, &sequences, input)?;
    let row_of = |i: usize| sequences.row_of(input, i);
    check_items(&lm, &items, row_of)?;

    let total_tokens: usize = items.iter().map(ScoreItem::len).sum();
    let model_started = Instant::now();
    let (scores, from_cache) = scores_of(&lm, config, &items)?;
    let model_seconds = model_started.elapsed().as_secs_f64();
    if let Some(i) = scores.iter().position(|s| !s.logp.is_finite()) {
        return Err(Error::Input(format!(
            "{}: the model gave a non-finite log-prob; nothing written",
            row_of(i)
        )));
    }

    let new_columns = score_columns(shape, &scores, &items, &sequences.per_row);
    let mut fields = batch.schema().fields().to_vec();
    for (name, column) in new_names.iter().zip(&new_columns) {
        fields.push(Arc::new(Field::new(
            name,
            column.data_type().clone(),
            false,
        )));
    }
    let schema = Arc::new(Schema::new(fields));
    let mut columns = batch.columns().to_vec();
    columns.extend(new_columns);
    let out = RecordBatch::try_new(schema, columns)?;
    let sorted = matches!(shape, Shape::Pairs).then_some("prompt_id");
    let mut config = config.clone();
    config.model_hash = Some(lm.hash.clone());
    let stats = vec![
        ("sequences", json!(items.len())),
        ("tokens", json!(total_tokens)),
        ("model", json!(lm.name)),
        ("model_hash", json!(lm.hash)),
        ("role", json!(p)),
        ("precision", json!(config.precision)),
        ("from_cache", json!(from_cache)),
        (
            "tokens_per_second",
            json!(total_tokens as f64 / model_seconds.max(1e-9)),
        ),
    ];
    let manifest = StageOutput {
        stage: "score",
        output,
        sorted_by: sorted,
        hash: hash.to_string(),
        config: &config,
        infos: &infos,
        stats,
        started,
        started_unix,
    }
    .commit(&out)
    .await?;
    info!(sequences = items.len(), from_cache, output = %output, "score: done");
    Ok(manifest)
}

/// Reads the input whole: its shape (decided from the first file's footer, so the rows are
/// read only once), its rows (a pair table sorted by `prompt_id`) and its files.
async fn read_input(
    input: &str,
    format: InputFormat,
) -> Result<(Shape, RecordBatch, Vec<FileInfo>)> {
    let footers = prefsmith_pipeline::input::resolve(input)
        .await?
        .infos()
        .await?;
    let has = |c: &str| footers[0].schema.field_with_name(c).is_ok();
    let shape = if has("all_generated_responses") {
        Shape::Wide
    } else if has("response") {
        Shape::Long
    } else {
        Shape::Pairs
    };
    if let Shape::Pairs = shape {
        let pairs = PairInput::open(input, format).await?;
        pairs
            .schema
            .require(&["chosen", "rejected"], "score reads both responses")?;
        let batches = pairs.read_all().await?;
        let batch = sorted_by_prompt_id(&batches[0].schema(), &batches)?;
        Ok((shape, batch, pairs.infos))
    } else {
        let table = Table::read(input).await?;
        Ok((shape, table.batch, table.infos))
    }
}

/// The (request, response) sequences of every row: both sides of a pair, every response of
/// a wide row, the one response of a long row.
fn sequences_of(batch: &RecordBatch, shape: Shape, input: &str) -> Result<Sequences> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::Input(format!("{input}: column '{name}' is missing (score)")))
    };
    let mut texts: Vec<(Vec<ChatMessage>, String)> = Vec::new();
    let mut per_row = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        match shape {
            Shape::Pairs => {
                texts.push(pair_side(batch, "chosen", row)?);
                texts.push(pair_side(batch, "rejected", row)?);
                per_row.push(2);
            }
            Shape::Wide => {
                let prompt = prompt_messages(column("prompt")?, "prompt", row)?;
                let list = column("all_generated_responses")?;
                let responses = string_list(list, "all_generated_responses", row)?;
                per_row.push(responses.len());
                texts.extend(responses.into_iter().map(|r| (prompt.clone(), r)));
            }
            Shape::Long => {
                let prompt = prompt_messages(column("prompt")?, "prompt", row)?;
                let response = string_at(column("response")?, row)
                    .ok_or_else(|| Error::Input(format!("column 'response', row {row}: null")))?;
                texts.push((prompt, response.to_string()));
                per_row.push(1);
            }
        }
    }
    Ok(Sequences { texts, per_row })
}

/// The token ids of every sequence, cut as the trainer cuts them when `max-length` is set.
fn tokenized(
    lm: &LanguageModel,
    config: &ScoreConfig,
    sequences: &Sequences,
    input: &str,
) -> Result<Vec<ScoreItem>> {
    let mut items = sequences
        .texts
        .iter()
        .map(|(request, response)| {
            Ok(ScoreItem {
                prompt: lm.prompt_ids(request)?,
                response: lm.response_ids(response)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(max_length) = config.max_length {
        for (i, item) in items.iter_mut().enumerate() {
            let cut = truncate(
                &mut item.prompt,
                &mut [&mut item.response],
                max_length,
                config.max_prompt_length,
                config.truncation,
            );
            if cut == Cut::PromptTooLong {
                return Err(Error::Input(format!(
                    "{}: the prompt alone is at least --max-length = {max_length} tokens (the \
                     trainer drops such rows; drop them here too, or raise the limit)",
                    sequences.row_of(input, i)
                )));
            }
        }
    } else if config.max_prompt_length.is_some() {
        return Err(Error::Config(
            "--max-prompt-length needs --max-length (the trainer's data.max-length)".into(),
        ));
    }
    Ok(items)
}

/// The scores of `items`, from the (model hash, data hash) cache when it holds them, else
/// from the model (then cached); and whether they came from the cache.
fn scores_of(
    lm: &LanguageModel,
    config: &ScoreConfig,
    items: &[ScoreItem],
) -> Result<(Vec<SequenceScore>, bool)> {
    let cache = cache_file(lm, items, config.precision);
    if config.cache
        && let Some(scores) = read_cache(&cache, items.len())
    {
        info!(cache = %cache.display(), "score: cache hit, the model is not run");
        return Ok((scores, true));
    }
    let mut progress = Progress::new("score", items.len() as u64);
    let options = ScoreOptions {
        max_batch_tokens: config.model.max_batch_tokens,
        precision: config.precision,
        ..Default::default()
    };
    let scores = score_sequences(lm, items, options, |n| progress.advance(n as u64))?;
    progress.finish();
    if config.cache {
        write_cache(&cache, &scores)?;
    }
    Ok((scores, false))
}

/// The added columns, in the order of [`Shape::new_column_names`].
fn score_columns(
    shape: Shape,
    scores: &[SequenceScore],
    items: &[ScoreItem],
    per_row: &[usize],
) -> Vec<ArrayRef> {
    let logps = |s: &mut dyn Iterator<Item = &SequenceScore>| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(s.map(|s| s.logp)))
    };
    let tokens = |s: &mut dyn Iterator<Item = &SequenceScore>| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(s.map(|s| s.tokens as u32)))
    };
    match shape {
        Shape::Pairs => {
            let side = |k: usize| scores.iter().skip(k).step_by(2);
            vec![
                logps(&mut side(0)),
                logps(&mut side(1)),
                tokens(&mut side(0)),
                tokens(&mut side(1)),
                Arc::new(UInt32Array::from_iter_values(
                    items.iter().step_by(2).map(|i| i.prompt.len() as u32),
                )),
            ]
        }
        Shape::Wide => {
            let mut logp_lists = ListBuilder::new(Float64Builder::new());
            let mut token_lists = ListBuilder::new(UInt32Builder::new());
            let mut at = 0;
            for n in per_row {
                for s in &scores[at..at + n] {
                    logp_lists.values().append_value(s.logp);
                    token_lists.values().append_value(s.tokens as u32);
                }
                logp_lists.append(true);
                token_lists.append(true);
                at += n;
            }
            vec![
                Arc::new(logp_lists.finish()),
                Arc::new(token_lists.finish()),
            ]
        }
        Shape::Long => vec![logps(&mut scores.iter()), tokens(&mut scores.iter())],
    }
}
