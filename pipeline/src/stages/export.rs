//! The `export` stage: a pair table in the layout a trainer reads, scores always kept.
//!
//! * `trl-standard`: `prompt`, `chosen`, `rejected` as strings (TRL's standard format);
//! * `trl-conversational`: `prompt` as a message list, `chosen`/`rejected` as one-message
//!   assistant lists (TRL's conversational format with an explicit prompt);
//! * `openrlhf`: `prompt`, `chosen`, `rejected` strings plus `margin` = score_chosen −
//!   score_rejected (`--data.prompt_key prompt --data.chosen_key chosen --data.rejected_key
//!   rejected`);
//! * `nemo`: `prompt`, `chosen_response`, `rejected_response`, `chosen_reward`,
//!   `rejected_reward` (NeMo-Aligner / NeMo RL RPO).
//!
//! Every other column (`prompt_id`, `score_chosen`, `score_rejected`, margins, `copy`, `route`,
//! log-probs, …) is kept as it is, after the text columns; a Hugging Face `messages` column
//! (the chosen conversation again) is dropped. Rows keep input order.
//!
//! From message lists, a response is the last assistant message and the prompt is everything
//! before it (or the `prompt` column when the lists hold the responses only). A prompt becomes
//! a string as its user message, after a leading system message plus a blank line when there
//! is one (the no-system-role placement); a multi-turn prompt has no string form and is an
//! error naming the row (export it as `trl-conversational`).

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::formats::{
    InputFormat, Message, PairInput, is_message_list, last_assistant, message_list_array,
    message_list_type, messages_at,
};
use crate::input::FileInfo;
use crate::manifest::{InputInfo, Manifest, StageWriter};
use crate::reader::{stream_in_order, string_at};
use crate::stages::{Progress, now_unix, stage_hash};

/// The layouts written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    /// TRL standard: strings.
    #[default]
    TrlStandard,
    /// TRL conversational: message lists.
    TrlConversational,
    /// OpenRLHF: strings plus `margin`.
    Openrlhf,
    /// NeMo: `chosen_response`/`rejected_response`, `chosen_reward`/`rejected_reward`.
    Nemo,
}

impl ExportFormat {
    /// Every accepted name.
    pub const NAMES: &'static str = "trl-standard, trl-conversational, openrlhf, nemo";

    /// Parses a name.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "trl-standard" | "trl" => Ok(Self::TrlStandard),
            "trl-conversational" => Ok(Self::TrlConversational),
            "openrlhf" => Ok(Self::Openrlhf),
            "nemo" => Ok(Self::Nemo),
            other => Err(Error::config(
                "format",
                format!(
                    "unknown export format '{other}'; expected one of {}",
                    Self::NAMES
                ),
            )),
        }
    }

    /// The name in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrlStandard => "trl-standard",
            Self::TrlConversational => "trl-conversational",
            Self::Openrlhf => "openrlhf",
            Self::Nemo => "nemo",
        }
    }
}

/// Settings of the `export` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExportConfig {
    /// Input pair table; in a job, the previous stage's output.
    #[serde(default)]
    pub input: Option<String>,
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// The input's layout (default: detected).
    #[serde(default)]
    pub input_format: InputFormat,
    /// The layout written.
    #[serde(default)]
    pub format: ExportFormat,
    /// Rows per output part (default 1,000,000).
    #[serde(default = "default_max_rows")]
    pub max_rows_per_file: usize,
}

fn default_max_rows() -> usize {
    1_000_000
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            input: None,
            output: None,
            input_format: InputFormat::Auto,
            format: ExportFormat::default(),
            max_rows_per_file: default_max_rows(),
        }
    }
}

impl ExportConfig {
    /// The hash deciding whether an existing output is up to date.
    pub fn hash(&self, infos: &[FileInfo]) -> String {
        stage_hash("export", self, infos)
    }
}

/// Columns replaced by the export's own text columns.
const TEXT_COLUMNS: &[&str] = &["prompt", "chosen", "rejected", "messages"];

/// The export's text (and score-name) columns, for `format`.
fn text_fields(format: ExportFormat, has_scores: bool) -> Vec<Field> {
    let string = |n: &str| Field::new(n, DataType::Utf8, false);
    let mut fields = match format {
        ExportFormat::TrlStandard | ExportFormat::Openrlhf => {
            vec![string("prompt"), string("chosen"), string("rejected")]
        }
        ExportFormat::TrlConversational => ["prompt", "chosen", "rejected"]
            .iter()
            .map(|n| Field::new(*n, message_list_type(), false))
            .collect(),
        ExportFormat::Nemo => vec![
            string("prompt"),
            string("chosen_response"),
            string("rejected_response"),
        ],
    };
    if has_scores {
        match format {
            ExportFormat::Openrlhf => fields.push(Field::new("margin", DataType::Float64, true)),
            ExportFormat::Nemo => {
                fields.push(Field::new("chosen_reward", DataType::Float64, true));
                fields.push(Field::new("rejected_reward", DataType::Float64, true));
            }
            _ => {}
        }
    }
    fields
}

/// One pair's prompt messages and response texts.
struct PairTexts {
    prompt: Vec<Message>,
    chosen: String,
    rejected: String,
}

/// The prompt messages and responses of `row`.
fn pair_texts(batch: &RecordBatch, row: usize) -> Result<PairTexts> {
    let schema = batch.schema();
    let col = |n: &str| batch.column(schema.index_of(n).expect("canonical column"));
    let null = |column: &str| Error::InvalidData {
        context: format!("column '{column}'"),
        message: "is null".into(),
    };
    let response = |name: &str| -> Result<(String, Option<Vec<Message>>)> {
        let column = col(name);
        if is_message_list(column.data_type()) {
            let messages = messages_at(column, name, row)?.ok_or_else(|| null(name))?;
            let text = last_assistant(&messages)
                .ok_or_else(|| Error::InvalidData {
                    context: format!("column '{name}'"),
                    message: "has no assistant message".into(),
                })?
                .to_string();
            Ok((text, Some(messages)))
        } else {
            let text = string_at(column, row).ok_or_else(|| null(name))?;
            Ok((text.to_string(), None))
        }
    };
    let (chosen, chosen_messages) = response("chosen")?;
    let (rejected, _) = response("rejected")?;
    let holds_prompt = chosen_messages
        .as_ref()
        .is_some_and(|m| m.iter().any(|m| m.role != "assistant"));
    let prompt = if holds_prompt {
        let messages = chosen_messages.expect("checked");
        let last = messages
            .iter()
            .rposition(|m| m.role == "assistant")
            .expect("has an assistant message");
        messages[..last].to_vec()
    } else {
        let column = col("prompt");
        if is_message_list(column.data_type()) {
            messages_at(column, "prompt", row)?.ok_or_else(|| null("prompt"))?
        } else {
            vec![Message::new(
                "user",
                string_at(column, row).ok_or_else(|| null("prompt"))?,
            )]
        }
    };
    Ok(PairTexts {
        prompt,
        chosen,
        rejected,
    })
}

/// A prompt as one string: the user message, after a leading system message and a blank line.
fn prompt_string(messages: &[Message]) -> Result<String> {
    match messages {
        [user] if user.role == "user" => Ok(user.content.clone()),
        [system, user] if system.role == "system" && user.role == "user" => {
            Ok(format!("{}\n\n{}", system.content, user.content))
        }
        _ => Err(Error::InvalidData {
            context: "prompt".into(),
            message: format!(
                "a prompt of {} messages ({}) has no plain-string form; export it \
                 with --format trl-conversational",
                messages.len(),
                messages
                    .iter()
                    .map(|m| m.role.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Converts one canonical batch whose first row is row `first_row` of the input.
fn export_batch(
    batch: &RecordBatch,
    format: ExportFormat,
    out: &SchemaRef,
    input: &str,
    first_row: u64,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let n = batch.num_rows();
    let ids = batch.column(schema.index_of("prompt_id")?);
    // Names the input row of an error found in row `row` of this batch.
    let at_row = |row: usize| {
        move |e: Error| match e {
            Error::InvalidData { context, message } => Error::InvalidData {
                context: format!("{input}: {context}"),
                message: format!(
                    "row {} (prompt_id {}): {message}",
                    first_row + row as u64,
                    string_at(ids, row).unwrap_or("?")
                ),
            },
            other => other,
        }
    };
    let texts = (0..n)
        .map(|row| pair_texts(batch, row).map_err(at_row(row)))
        .collect::<Result<Vec<_>>>()?;
    let strings = |f: &dyn Fn(&PairTexts) -> String| -> ArrayRef {
        Arc::new(texts.iter().map(|t| Some(f(t))).collect::<StringArray>())
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(out.fields().len());
    columns.push(Arc::clone(batch.column(schema.index_of("prompt_id")?)));
    match format {
        ExportFormat::TrlConversational => {
            let prompts: Vec<Option<Vec<Message>>> =
                texts.iter().map(|t| Some(t.prompt.clone())).collect();
            let chosen: Vec<Option<Vec<Message>>> = texts
                .iter()
                .map(|t| Some(vec![Message::new("assistant", t.chosen.clone())]))
                .collect();
            let rejected: Vec<Option<Vec<Message>>> = texts
                .iter()
                .map(|t| Some(vec![Message::new("assistant", t.rejected.clone())]))
                .collect();
            columns.push(message_list_array(&prompts));
            columns.push(message_list_array(&chosen));
            columns.push(message_list_array(&rejected));
        }
        _ => {
            let prompts = texts
                .iter()
                .enumerate()
                .map(|(row, t)| prompt_string(&t.prompt).map(Some).map_err(at_row(row)))
                .collect::<Result<StringArray>>()?;
            columns.push(Arc::new(prompts));
            columns.push(strings(&|t| t.chosen.clone()));
            columns.push(strings(&|t| t.rejected.clone()));
        }
    }
    let score = |name: &str| -> Result<Option<Float64Array>> {
        match schema.index_of(name) {
            Ok(i) => Ok(Some(
                cast(batch.column(i), &DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone(),
            )),
            Err(_) => Ok(None),
        }
    };
    if let (Some(c), Some(r)) = (score("score_chosen")?, score("score_rejected")?) {
        match format {
            ExportFormat::Openrlhf => {
                let margin: Float64Array = (0..n)
                    .map(|i| (c.is_valid(i) && r.is_valid(i)).then(|| c.value(i) - r.value(i)))
                    .collect();
                columns.push(Arc::new(margin));
            }
            ExportFormat::Nemo => {
                columns.push(Arc::new(c));
                columns.push(Arc::new(r));
            }
            _ => {}
        }
    }
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if field.name() != "prompt_id" && !TEXT_COLUMNS.contains(&field.name().as_str()) {
            columns.push(Arc::clone(column));
        }
    }
    Ok(RecordBatch::try_new(Arc::clone(out), columns)?)
}

crate::stage::config_stage!(ExportConfig, "export", run);

/// Runs `export` from `input` into `output`.
pub async fn run(config: &ExportConfig, input: &str, output: &str) -> Result<Manifest> {
    let output = &crate::storage::Location::parse(output)?;
    let started = Instant::now();
    let started_unix = now_unix();
    let pairs = PairInput::open(input, config.input_format).await?;
    let canonical = pairs.schema.canonical();
    let has_scores = pairs.schema.has("score_chosen") && pairs.schema.has("score_rejected");
    let mut fields = vec![canonical.field_with_name("prompt_id")?.clone()];
    fields.extend(text_fields(config.format, has_scores));
    for field in canonical.fields() {
        let name = field.name().as_str();
        if name == "prompt_id" || TEXT_COLUMNS.contains(&name) {
            continue;
        }
        if fields.iter().any(|f| f.name() == name) {
            return Err(Error::InvalidData {
                context: input.into(),
                message: format!(
                    "column '{name}' would be written twice: the {} layout writes its own",
                    config.format.as_str()
                ),
            });
        }
        fields.push(field.as_ref().clone());
    }
    let out = Arc::new(Schema::new(fields));
    let mut writer = StageWriter::begin(
        output,
        Arc::clone(&out),
        config.max_rows_per_file,
        Some("prompt_id"),
    )
    .await?;
    let total: u64 = pairs.infos.iter().map(|i| i.rows).sum();
    let mut progress = Progress::new("export", total);
    let mut stream = stream_in_order(&pairs.files.files, pairs.schema.source())?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = pairs.schema.to_canonical(&batch?)?;
        let converted = export_batch(&batch, config.format, &out, input, rows)?;
        writer.write(&converted).await?;
        rows += batch.num_rows() as u64;
        progress.advance(batch.num_rows() as u64);
    }
    progress.finish();
    if rows == 0 {
        return Err(Error::EmptyInput { path: input.into() });
    }
    let stats = [
        ("pairs", json!(rows)),
        ("format", json!(config.format.as_str())),
        (
            "input_format",
            json!(if pairs.schema.conversational() {
                "hf-binarized"
            } else {
                "plain"
            }),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let manifest = Manifest::new(
        "export",
        config.hash(&pairs.infos),
        config,
        pairs.infos.iter().map(InputInfo::from).collect(),
        stats,
        started_unix,
    );
    let mut manifest = writer.commit(manifest).await?;
    manifest.timing.seconds = started.elapsed().as_secs_f64();
    info!(rows, format = config.format.as_str(), output = %output, "export: done");
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_become_strings_only_when_single_turn() {
        let user = Message::new("user", "hi");
        assert_eq!(prompt_string(std::slice::from_ref(&user)).unwrap(), "hi");
        let system = Message::new("system", "GOAL");
        assert_eq!(
            prompt_string(&[system, user.clone()]).unwrap(),
            "GOAL\n\nhi"
        );
        let turns = [user.clone(), Message::new("assistant", "a"), user];
        let err = prompt_string(&turns).unwrap_err().to_string();
        assert!(
            err.contains("3 messages") && err.contains("trl-conversational"),
            "{err}"
        );
    }
}
