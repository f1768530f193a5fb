//! The `reward` stage: an external reward per response, from an LLM judge (`docs/ALGORITHMS.md` §10, the
//! default, deterministic) or a sequence-classification reward model. Reads the wide layout
//! (`prompt`, `all_generated_responses`) and adds `all_rm_scores`, or the long layout
//! (`prompt`, `response`) and adds `reward` — exactly what `select` reads next.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, Float64Array, Float64Builder, ListBuilder, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema};
use prefsmith_model::lm::LanguageModel;
use prefsmith_model::reward::{JUDGE_PROMPT_VERSION, classify, judge, judge_sequences};
use prefsmith_model::scoring::Precision;
use prefsmith_model::settings::ModelSettings;
use prefsmith_model::tokenizer::ChatMessage;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::reader::string_at;
use prefsmith_pipeline::stages::{Progress, now_unix};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::stages::{StageOutput, Table, prompt_messages, string_list};

/// How the reward is computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardMode {
    /// A classifier when the model has a `score` head, else the judge.
    #[default]
    Auto,
    /// LLM-as-judge, expected 1–9 rating.
    Judge,
    /// Sequence-classification head (first output).
    Classifier,
}

impl RewardMode {
    /// Parses `auto`, `judge` or `classifier`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(Self::Auto),
            "judge" => Ok(Self::Judge),
            "classifier" => Ok(Self::Classifier),
            other => Err(Error::Config(format!(
                "reward mode '{other}': expected auto, judge or classifier"
            ))),
        }
    }
}

/// Settings of the `reward` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RewardConfig {
    /// The input (default in a job: the previous stage's output).
    #[serde(default)]
    pub input: Option<String>,
    /// The output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// The model.
    #[serde(flatten)]
    pub model: ModelSettings,
    /// Judge or classifier.
    #[serde(default)]
    pub mode: RewardMode,
    /// Output column (default `all_rm_scores` for the wide layout, `reward` for the long one).
    #[serde(default)]
    pub column: Option<String>,
    /// The model's content hash (filled in when the stage runs).
    #[serde(default)]
    pub model_hash: Option<String>,
    /// The judge's arithmetic: `f32` (default) or `int8` (CPU only, several times faster; the
    /// classifier mode runs in f32 only).
    #[serde(default)]
    pub precision: Precision,
}

/// Runs the stage from `input` into `output`; the manifest records `hash` (the job runner's
/// hash of the resolved settings and the input files).
pub async fn run(config: &RewardConfig, input: &str, output: &str, hash: &str) -> Result<Manifest> {
    let started = Instant::now();
    let started_unix = now_unix();
    let table = Table::read(input).await?;
    let wide = table
        .batch
        .column_by_name("all_generated_responses")
        .is_some();
    let column = config
        .column
        .clone()
        .unwrap_or_else(|| if wide { "all_rm_scores" } else { "reward" }.to_string());
    table.refuse_existing(&column)?;
    let prompts = Arc::clone(table.column("prompt", "the reward model reads the prompt")?);
    let (items, per_row) = responses_of(&table, &prompts, wide)?;

    let lm = config.model.load()?;
    let mode = match config.mode {
        RewardMode::Auto if lm.model.config().num_labels.is_some() => RewardMode::Classifier,
        RewardMode::Auto => RewardMode::Judge,
        m => m,
    };
    let mut config = config.clone();
    config.model_hash = Some(lm.hash.clone());
    let mut progress = Progress::new("reward", items.len() as u64);
    let mut stats = vec![
        ("responses", json!(items.len())),
        ("model", json!(lm.name)),
        ("model_hash", json!(lm.hash)),
    ];
    let advance = |n: usize| progress.advance(n as u64);
    let scores = match mode {
        RewardMode::Judge => judge_scores(&lm, &items, &config, &mut stats, advance)?,
        RewardMode::Classifier | RewardMode::Auto => {
            classifier_scores(&lm, &items, &config, &mut stats, advance)?
        }
    };
    progress.finish();
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::Input(format!(
            "the reward model produced a non-finite score for response {i}; nothing written"
        )));
    }

    let new_column = reward_column(wide, scores, &per_row);
    let mut fields = table.batch.schema().fields().to_vec();
    fields.push(Arc::new(Field::new(
        &column,
        new_column.data_type().clone(),
        true,
    )));
    let schema = Arc::new(Schema::new(fields));
    let mut columns = table.batch.columns().to_vec();
    columns.push(new_column);
    let batch = RecordBatch::try_new(schema, columns)?;
    let manifest = StageOutput {
        stage: "reward",
        output,
        sorted_by: None,
        hash: hash.to_string(),
        config: &config,
        infos: &table.infos,
        stats,
        started,
        started_unix,
    }
    .commit(&batch)
    .await?;
    info!(responses = items.len(), output = %output, "reward: done");
    Ok(manifest)
}

/// One response to rate, with the chat request it answers.
type RatedItem = (Vec<ChatMessage>, String);

/// (request, response) for every response, in table order, and how many belong to each row.
fn responses_of(
    table: &Table,
    prompts: &ArrayRef,
    wide: bool,
) -> Result<(Vec<RatedItem>, Vec<usize>)> {
    let mut items: Vec<RatedItem> = Vec::new();
    let mut per_row = Vec::with_capacity(table.batch.num_rows());
    for row in 0..table.batch.num_rows() {
        let request = prompt_messages(prompts, "prompt", row)?;
        let responses = if wide {
            let list = table.column("all_generated_responses", "")?;
            string_list(list, "all_generated_responses", row)?
        } else {
            let col = table.column("response", "the long layout has one response per row")?;
            vec![
                string_at(col, row)
                    .ok_or_else(|| Error::Input(format!("column 'response', row {row}: null")))?
                    .to_string(),
            ]
        };
        per_row.push(responses.len());
        items.extend(responses.into_iter().map(|r| (request.clone(), r)));
    }
    Ok((items, per_row))
}

/// The judge's expected ratings, with its figures added to `stats`.
fn judge_scores(
    lm: &LanguageModel,
    items: &[RatedItem],
    config: &RewardConfig,
    stats: &mut Vec<(&'static str, serde_json::Value)>,
    advance: impl FnMut(usize),
) -> Result<Vec<f64>> {
    let sequences = judge_sequences(lm, items)?;
    let ratings = judge(
        lm,
        &sequences,
        config.model.max_batch_tokens,
        config.precision,
        advance,
    )?;
    let masses: Vec<f64> = ratings.iter().map(|r| r.digit_mass).collect();
    let mean = masses.iter().sum::<f64>() / masses.len().max(1) as f64;
    let min = masses.iter().copied().fold(f64::INFINITY, f64::min);
    stats.push(("mode", json!("judge")));
    stats.push(("precision", json!(config.precision)));
    stats.push(("judge_prompt_version", json!(JUDGE_PROMPT_VERSION)));
    stats.push(("digit_mass_mean", json!(mean)));
    stats.push(("digit_mass_min", json!(min)));
    Ok(ratings.iter().map(|r| r.rating).collect())
}

/// A classifier's first output per response, with its figures added to `stats`.
fn classifier_scores(
    lm: &LanguageModel,
    items: &[RatedItem],
    config: &RewardConfig,
    stats: &mut Vec<(&'static str, serde_json::Value)>,
    advance: impl FnMut(usize),
) -> Result<Vec<f64>> {
    if config.precision != Precision::F32 {
        return Err(Error::Config(
            "precision int8 is for the judge mode; a classifier's score head runs in f32".into(),
        ));
    }
    let sequences = items
        .iter()
        .map(|(request, response)| {
            let mut ids = lm.prompt_ids(request)?;
            ids.extend(lm.response_ids(response)?);
            Ok(ids)
        })
        .collect::<Result<Vec<_>>>()?;
    let outputs = classify(lm, &sequences, config.model.max_batch_tokens, advance)?;
    stats.push(("mode", json!("classifier")));
    stats.push(("labels", json!(outputs.first().map_or(0, Vec::len))));
    Ok(outputs.iter().map(|o| o[0]).collect())
}

/// The reward column: a list per row (wide layout) or one value per row (long layout).
fn reward_column(wide: bool, scores: Vec<f64>, per_row: &[usize]) -> ArrayRef {
    if wide {
        let mut builder = ListBuilder::new(Float64Builder::new());
        let mut at = 0;
        for n in per_row {
            builder.values().append_slice(&scores[at..at + n]);
            builder.append(true);
            at += n;
        }
        Arc::new(builder.finish())
    } else {
        Arc::new(Float64Array::from(scores))
    }
}
