//! The `sample` stage: N responses per prompt from a model (the on-policy samples of the
//! Sweet-Spot recipe). Reads prompts from Parquet (any table with a `prompt` column, string or
//! message list, and optionally `prompt_id`) or JSONL (one object per line with the same
//! keys); writes the wide layout `select` and `reward` read: `prompt_id`, `prompt`,
//! `all_generated_responses`, plus `response_tokens` and `finish_reasons` per response. The
//! manifest records the model (name and hash) and the sampling settings.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, ListBuilder, RecordBatch, StringArray, StringBuilder, UInt32Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use prefsmith_model::sampling::{FinishReason, SamplingConfig, generate};
use prefsmith_model::settings::ModelSettings;
use prefsmith_pipeline::formats::{Message, message_list_array};
use prefsmith_pipeline::input::FileInfo;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::reader::string_at;
use prefsmith_pipeline::stages::{Progress, now_unix};
use prefsmith_udfs::selection::prompt_id_of;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::stages::faults::degenerate_draw;
use crate::stages::{StageOutput, Table, prompt_messages, stable_hash64};

/// Settings of the `sample` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SampleConfig {
    /// The input (default in a job: the previous stage's output).
    #[serde(default)]
    pub input: Option<String>,
    /// The output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// The model.
    #[serde(flatten)]
    pub model: ModelSettings,
    /// Sampling settings.
    #[serde(flatten)]
    pub sampling: SamplingConfig,
    /// Use only the first this many prompts.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Fraction of responses replaced by degenerate output — empty, truncated to a third,
    /// or garbled — each drawn from its own seeded stream (`finish_reasons` names the fault).
    /// Default 0. This is the sampler fault of the gold-reward experiments (`EXPERIMENTS.md`):
    /// at scale a sampler produces such outputs, and the rejected side of a pair must not
    /// be one of them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub degenerate_rate: f64,
    /// The model's content hash (filled in when the stage runs; part of the config hash).
    #[serde(default)]
    pub model_hash: Option<String>,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Prompts as read: one batch with `prompt_id` (Utf8) and `prompt` (string or message list).
async fn read_prompts(spec: &str, limit: Option<usize>) -> Result<(RecordBatch, Vec<FileInfo>)> {
    let is_jsonl = spec.ends_with(".jsonl") || spec.ends_with(".json");
    let (batch, infos) = if is_jsonl {
        (read_jsonl(spec, limit).await?, vec![])
    } else {
        let table = Table::read(spec).await?;
        let prompt = Arc::clone(table.column("prompt", "sample reads the prompts")?);
        let ids: ArrayRef = match table.batch.column_by_name("prompt_id") {
            Some(ids) => datafusion::arrow::compute::cast(ids, &DataType::Utf8)?,
            None => {
                let ids = (0..prompt.len())
                    .map(|row| {
                        string_at(&prompt, row).map(prompt_id_of).ok_or_else(|| {
                            Error::Input(format!(
                                "{spec}: row {row} has no prompt_id and no string prompt to derive one from"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Arc::new(StringArray::from(ids))
            }
        };
        let rows = limit.unwrap_or(usize::MAX).min(prompt.len());
        let schema = Arc::new(Schema::new(vec![
            Field::new("prompt_id", DataType::Utf8, false),
            Field::new("prompt", prompt.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![ids.slice(0, rows), prompt.slice(0, rows)])?;
        (batch, table.infos)
    };
    if batch.num_rows() == 0 {
        return Err(Error::Input(format!("{spec}: no prompts")));
    }
    Ok((batch, infos))
}

/// The digest of a JSON Lines prompts file, which has no footer to list it by: a rewritten
/// file makes the stage rerun.
pub async fn prompts_digest(spec: &str) -> Result<String> {
    let bytes = prefsmith_pipeline::storage::Location::parse(spec)?
        .read_bytes()
        .await?;
    Ok(prompt_id_of(&String::from_utf8_lossy(&bytes)))
}

/// Reads a JSONL prompts file: `prompt` (string or list of {role, content}) and optional
/// `prompt_id` per line.
async fn read_jsonl(spec: &str, limit: Option<usize>) -> Result<RecordBatch> {
    let location = prefsmith_pipeline::storage::Location::parse(spec)?;
    let bytes = location.read_bytes().await?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::Input(format!("{spec}: not UTF-8 text: {e}")))?;
    let mut ids = Vec::new();
    let mut texts: Vec<Option<String>> = Vec::new();
    let mut lists: Vec<Option<Vec<Message>>> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if limit.is_some_and(|l| ids.len() >= l) {
            break;
        }
        let bad = |m: String| Error::Input(format!("{}:{}: {m}", spec, n + 1));
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let prompt = &value["prompt"];
        let id = value["prompt_id"].as_str().map(str::to_string);
        match prompt {
            serde_json::Value::String(s) => {
                ids.push(id.unwrap_or_else(|| prompt_id_of(s)));
                texts.push(Some(s.clone()));
            }
            serde_json::Value::Array(items) => {
                let messages = items
                    .iter()
                    .map(|m| match (m["role"].as_str(), m["content"].as_str()) {
                        (Some(r), Some(c)) => Ok(Message::new(r, c)),
                        _ => Err(bad(
                            "a prompt message needs string 'role' and 'content'".into()
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let id = id.ok_or_else(|| bad("a message-list prompt needs a prompt_id".into()))?;
                ids.push(id);
                lists.push(Some(messages));
            }
            _ => {
                return Err(bad(
                    "'prompt' is missing or neither a string nor a message list".into(),
                ));
            }
        }
        if !texts.is_empty() && !lists.is_empty() {
            return Err(bad("prompts mix strings and message lists".into()));
        }
    }
    let prompt: ArrayRef = if lists.is_empty() {
        Arc::new(StringArray::from(texts))
    } else {
        message_list_array(&lists)
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("prompt_id", DataType::Utf8, false),
        Field::new("prompt", prompt.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(ids)), prompt])?;
    Ok(batch)
}

/// Runs the stage from `input` into `output`; the manifest records `hash` (the job runner's
/// hash of [`settings`] and the input files).
pub async fn run(config: &SampleConfig, input: &str, output: &str, hash: &str) -> Result<Manifest> {
    let started = Instant::now();
    let started_unix = now_unix();
    config.sampling.validate()?;
    if !(0.0..=1.0).contains(&config.degenerate_rate) {
        return Err(Error::Config(format!(
            "degenerate-rate {} must be in [0, 1]",
            config.degenerate_rate
        )));
    }
    let (prompts, infos) = read_prompts(input, config.limit).await?;
    let lm = config.model.load()?;
    let mut config = config.clone();
    config.model_hash = Some(lm.hash.clone());

    let prompt_column = Arc::clone(prompts.column(1));
    let ids = Arc::clone(prompts.column(0));
    let rows = prompts.num_rows();
    let mut responses = ListBuilder::new(StringBuilder::new());
    let mut token_counts = ListBuilder::new(UInt32Builder::new());
    let mut finishes = ListBuilder::new(StringBuilder::new());
    let mut progress = Progress::new("sample", rows as u64);
    let mut generated_tokens = 0usize;
    let mut stopped = 0usize;
    let mut degenerate = 0usize;
    for row in 0..rows {
        let prompt_id = string_at(&ids, row).unwrap_or_default().to_string();
        let messages = prompt_messages(&prompt_column, "prompt", row)?;
        let prompt_ids = lm.prompt_ids(&messages)?;
        let samples = generate(
            &lm,
            &prompt_ids,
            &config.sampling,
            stable_hash64(&prompt_id),
        )
        .map_err(|e| Error::Input(format!("{input}: prompt {prompt_id} (row {row}): {e}")))?;
        for (index, s) in samples.iter().enumerate() {
            generated_tokens += s.ids.len();
            stopped += usize::from(s.finish == FinishReason::Stop);
            let fault = degenerate_draw(
                config.sampling.seed,
                &prompt_id,
                index,
                config.degenerate_rate,
            );
            match fault {
                Some((kind, mut rng)) => {
                    let text = kind.apply(&s.text, &mut rng);
                    token_counts
                        .values()
                        .append_value(lm.response_ids(&text)?.len() as u32);
                    responses.values().append_value(text);
                    finishes.values().append_value(kind.as_str());
                    degenerate += 1;
                }
                None => {
                    responses.values().append_value(&s.text);
                    token_counts.values().append_value(s.ids.len() as u32);
                    finishes.values().append_value(s.finish.as_str());
                }
            }
        }
        responses.append(true);
        token_counts.append(true);
        finishes.append(true);
        progress.advance(1);
    }
    progress.finish();
    let responses: ArrayRef = Arc::new(responses.finish());
    let token_counts: ArrayRef = Arc::new(token_counts.finish());
    let finishes: ArrayRef = Arc::new(finishes.finish());
    let schema = Arc::new(Schema::new(vec![
        Field::new("prompt_id", DataType::Utf8, false),
        Field::new("prompt", prompt_column.data_type().clone(), true),
        Field::new(
            "all_generated_responses",
            responses.data_type().clone(),
            true,
        ),
        Field::new("response_tokens", token_counts.data_type().clone(), true),
        Field::new("finish_reasons", finishes.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![ids, prompt_column, responses, token_counts, finishes],
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = vec![
        ("prompts", json!(rows)),
        ("responses", json!(rows * config.sampling.n)),
        ("model", json!(lm.name)),
        ("model_hash", json!(lm.hash)),
        ("chat_template", json!(lm.template.name())),
        ("generated_tokens", json!(generated_tokens)),
        ("stopped_at_eos", json!(stopped)),
        ("degenerate", json!(degenerate)),
        (
            "tokens_per_second",
            json!(generated_tokens as f64 / seconds.max(1e-9)),
        ),
    ];
    let manifest = StageOutput {
        stage: "sample",
        output,
        sorted_by: None,
        hash: hash.to_string(),
        config: &config,
        infos: &infos,
        stats,
        started,
        started_unix,
    }
    .commit(&batch)
    .await?;
    info!(prompts = rows, tokens = generated_tokens, output = %output, "sample: done");
    Ok(manifest)
}
