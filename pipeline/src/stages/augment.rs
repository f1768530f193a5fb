//! The `augment` stage: reward-augmented DPO data (Zhang et al., `docs/ALGORITHMS.md` §6). Each pair becomes
//! two rows: a `positive` copy conditioned on the chosen response's score, and a `negative` copy
//! conditioned on the rejected response's score with the roles swapped. The conditioning is the
//! released goal prompt (`prefsmith_udfs::scalar::goal_prompt`). Pairs whose two scores are
//! equal are dropped and counted (their two copies would cancel).
//!
//! Placement, as in the released code:
//! * conversational layout (message lists, e.g. Hugging Face `ultrafeedback_binarized`): a
//!   `system` message in front of every list that holds the prompt (`chosen`/`rejected` when
//!   they hold the whole conversation, `prompt` when it is a list); an existing leading system
//!   message gets the goal text plus a blank line in front of its content instead;
//! * plain-string layout, and `no-system-role` (chat templates without a system turn): the goal
//!   text plus a blank line is prepended to the prompt (the `prompt` string and the first user
//!   message of every list).
//!
//! In the negative copy every `…chosen…` column trades places with its `…rejected…` partner
//! (texts, scores, indices, log-probs), `rating_gap` is recomputed and a `messages` column (the
//! chosen conversation, for SFT) follows the new chosen, so each row's columns still describe
//! its own chosen and rejected responses. Rows are sorted by `prompt_id`, then positive before
//! negative; a `copy` column says which is which.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::{cast, interleave, take};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use prefsmith_udfs::scalar::goal_prompt::goal_prompt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::formats::{
    InputFormat, Message, PairInput, is_message_list, message_list_array, message_list_type,
    messages_at, sorted_by_prompt_id,
};
use crate::input::FileInfo;
use crate::manifest::{InputInfo, Manifest, StageWriter};
use crate::reader::string_at;
use crate::stages::{now_unix, stage_hash};

/// Settings of the `augment` stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AugmentConfig {
    /// Input pair table; in a job, the previous stage's output.
    #[serde(default)]
    pub input: Option<String>,
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// The input's layout (default: detected).
    #[serde(default)]
    pub input_format: InputFormat,
    /// Prepend the goal to the first user message instead of adding a system message.
    #[serde(default)]
    pub no_system_role: bool,
}

impl AugmentConfig {
    /// The hash deciding whether an existing output is up to date.
    pub fn hash(&self, infos: &[FileInfo]) -> String {
        stage_hash("augment", self, infos)
    }
}

/// The partner of a `…chosen…` / `…rejected…` column, if the schema has it.
fn partner(name: &str, schema: &Schema) -> Option<usize> {
    let other = if name.contains("chosen") {
        name.replace("chosen", "rejected")
    } else if name.contains("rejected") {
        name.replace("rejected", "chosen")
    } else {
        return None;
    };
    schema.index_of(&other).ok()
}

impl crate::stage::Stage for AugmentConfig {
    fn kind(&self) -> &'static str {
        "augment"
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

/// Runs `augment` from `input` into `output`.
pub async fn run(config: &AugmentConfig, input: &str, output: &str) -> Result<Manifest> {
    let output = &crate::storage::Location::parse(output)?;
    let started = Instant::now();
    let started_unix = now_unix();
    let pairs = PairInput::open(input, config.input_format).await?;
    pairs.schema.require(
        &["score_chosen", "score_rejected"],
        "augment conditions each copy on a score",
    )?;
    pairs.schema.refuse_existing("copy", "augmented twice?")?;
    let batches = pairs
        .read_all()
        .await?
        .iter()
        .map(normalise)
        .collect::<Result<Vec<_>>>()?;
    let out_schema = match batches.first() {
        Some(b) => with_copy(b.schema()),
        None => return Err(Error::EmptyInput { path: input.into() }),
    };
    let batch = sorted_by_prompt_id(&batches[0].schema(), &batches)?;
    let mut writer = StageWriter::begin(
        output,
        Arc::clone(&out_schema),
        1_000_000,
        Some("prompt_id"),
    )
    .await?;
    let placement = if config.no_system_role || !pairs.schema.conversational() {
        Placement::Prepend
    } else {
        Placement::SystemMessage
    };
    let (written, ties) = augment_batch(&batch, &out_schema, &mut writer, input, placement).await?;
    let pairs_read = written + ties;
    let inputs = pairs.infos.iter().map(InputInfo::from).collect();
    let stats = [
        ("pairs", json!(pairs_read)),
        ("dropped_equal_scores", json!(ties)),
        (
            "placement",
            json!(match placement {
                Placement::SystemMessage => "system-message",
                Placement::Prepend => "prepended-to-prompt",
            }),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let manifest = Manifest::new(
        "augment",
        config.hash(&pairs.infos),
        config,
        inputs,
        stats,
        started_unix,
    );
    let mut manifest = writer.commit(manifest).await?;
    manifest.timing.seconds = started.elapsed().as_secs_f64();
    info!(pairs = pairs_read, ties, rows = manifest.rows, output = %output, "augment: done");
    Ok(manifest)
}

/// Where the goal text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// A system message in front of the message lists.
    SystemMessage,
    /// The text plus a blank line in front of the prompt.
    Prepend,
}

/// Scores as `Float64`, message lists in prefsmith's message type.
fn normalise(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        let column = match name {
            "score_chosen" | "score_rejected" | "rating_gap" => cast(column, &DataType::Float64)?,
            _ if is_message_list(column.data_type()) => {
                let rows = (0..column.len())
                    .map(|row| messages_at(column, name, row))
                    .collect::<Result<Vec<_>>>()?;
                message_list_array(&rows)
            }
            _ => Arc::clone(column),
        };
        fields.push(Field::new(name, column.data_type().clone(), true));
        columns.push(column);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn with_copy(schema: SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("copy", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// `goal` plus a blank line in front of `text`.
fn prepend(goal: &str, text: &str) -> String {
    format!("{goal}\n\n{text}")
}

/// A message list conditioned on `goal`. Lists holding only assistant messages (the TRL
/// conversational layout's responses) are returned unchanged: the prompt carries the goal.
fn condition(messages: &[Message], goal: &str, placement: Placement) -> Result<Vec<Message>> {
    if messages.iter().all(|m| m.role == "assistant") {
        return Ok(messages.to_vec());
    }
    let mut out = messages.to_vec();
    match placement {
        Placement::SystemMessage => match out.first_mut() {
            Some(first) if first.role == "system" => first.content = prepend(goal, &first.content),
            _ => out.insert(0, Message::new("system", goal)),
        },
        Placement::Prepend => match out.iter_mut().find(|m| m.role == "user") {
            Some(user) => user.content = prepend(goal, &user.content),
            None => {
                return Err(Error::InvalidData {
                    context: "augment".into(),
                    message: "a conversation has no user message to prepend the goal to".into(),
                });
            }
        },
    }
    Ok(out)
}

/// Writes the two copies of every non-tied pair of `batch`; returns (pairs kept, ties).
async fn augment_batch(
    batch: &RecordBatch,
    out_schema: &SchemaRef,
    writer: &mut StageWriter,
    input: &str,
    placement: Placement,
) -> Result<(u64, u64)> {
    let schema = batch.schema();
    let col = |name: &str| batch.column(schema.index_of(name).expect("checked"));
    let (sc, sr) = (
        col("score_chosen").as_primitive::<Float64Type>().clone(),
        col("score_rejected").as_primitive::<Float64Type>().clone(),
    );
    let ids = Arc::clone(col("prompt_id"));
    let mut kept = Vec::new();
    let mut ties = 0u64;
    for row in 0..batch.num_rows() {
        let (c, r) = (
            sc.is_valid(row).then(|| sc.value(row)),
            sr.is_valid(row).then(|| sr.value(row)),
        );
        match (c, r) {
            (Some(c), Some(r)) if c.is_finite() && r.is_finite() => {
                if c == r {
                    ties += 1;
                } else {
                    kept.push(row as u32);
                }
            }
            _ => {
                return Err(Error::InvalidData {
                    context: format!("{input}: columns 'score_chosen'/'score_rejected'"),
                    message: format!(
                        "row {} (prompt_id {}) has no finite scores; augment conditions on them",
                        row,
                        string_at(&ids, row).unwrap_or("?")
                    ),
                });
            }
        }
    }
    if kept.is_empty() {
        return Ok((0, ties));
    }
    let kept = UInt32Array::from(kept);
    // Output row 2k is the positive copy of kept row k, 2k + 1 its negative copy.
    let order: Vec<(usize, usize)> = (0..kept.len()).flat_map(|k| [(0, k), (1, k)]).collect();
    let goals: Vec<String> = order
        .iter()
        .map(|&(copy, k)| {
            let row = kept.value(k) as usize;
            let score = if copy == 0 {
                sc.value(row)
            } else {
                sr.value(row)
            };
            goal_prompt(score).expect("scores are finite")
        })
        .collect();
    // The conditioned lists of each output row's chosen and rejected, when they are lists.
    let conditioned = |name: &str| -> Result<Option<Vec<Option<Vec<Message>>>>> {
        let column = col(name);
        if !is_message_list(column.data_type()) {
            return Ok(None);
        }
        order
            .iter()
            .zip(&goals)
            .map(|(&(copy, k), goal)| {
                let row = kept.value(k) as usize;
                // The negative copy's chosen is the pair's rejected, and the other way round.
                let source = match (copy, name) {
                    (1, "chosen") => col("rejected"),
                    (1, "rejected") => col("chosen"),
                    _ => column,
                };
                messages_at(source, name, row)?
                    .map(|m| condition(&m, goal, placement))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    };
    let chosen_lists = conditioned("chosen")?;
    let rejected_lists = conditioned("rejected")?;
    // Whether a row's goal already sits in its response lists (they hold the prompt turns).
    let in_lists: Vec<bool> = (0..order.len())
        .map(|i| {
            placement == Placement::SystemMessage
                && chosen_lists.as_ref().is_some_and(|lists| {
                    lists[i]
                        .as_ref()
                        .is_some_and(|m| m.iter().any(|m| m.role != "assistant"))
                })
        })
        .collect();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let name = field.name().as_str();
        let column = match name {
            "prompt" if is_message_list(field.data_type()) => {
                let rows = order
                    .iter()
                    .zip(&goals)
                    .map(|(&(_, k), goal)| {
                        messages_at(batch.column(i), name, kept.value(k) as usize)?
                            .map(|m| condition(&m, goal, placement))
                            .transpose()
                    })
                    .collect::<Result<Vec<_>>>()?;
                message_list_array(&rows)
            }
            "prompt" => {
                let prompts = batch.column(i);
                let mut texts = StringBuilder::new();
                for (j, &(_, k)) in order.iter().enumerate() {
                    let text = string_at(prompts, kept.value(k) as usize).unwrap_or_default();
                    if in_lists[j] {
                        texts.append_value(text);
                    } else {
                        texts.append_value(prepend(&goals[j], text));
                    }
                }
                Arc::new(texts.finish()) as ArrayRef
            }
            "chosen" if chosen_lists.is_some() => {
                message_list_array(chosen_lists.as_ref().expect("checked"))
            }
            "rejected" if rejected_lists.is_some() => {
                message_list_array(rejected_lists.as_ref().expect("checked"))
            }
            "messages" if field.data_type() == &message_list_type() && chosen_lists.is_some() => {
                // The SFT conversation follows the row's chosen response.
                message_list_array(chosen_lists.as_ref().expect("checked"))
            }
            "rating_gap" => {
                let gaps: Float64Array = order
                    .iter()
                    .map(|(copy, k)| {
                        let row = kept.value(*k) as usize;
                        let gap = sc.value(row) - sr.value(row);
                        Some(if *copy == 0 { gap } else { -gap })
                    })
                    .collect();
                Arc::new(gaps)
            }
            _ => {
                let positive = take(batch.column(i), &kept, None)?;
                let negative = match partner(name, &schema) {
                    Some(p) => take(batch.column(p), &kept, None)?,
                    None => Arc::clone(&positive),
                };
                interleave(&[positive.as_ref(), negative.as_ref()], &order)?
            }
        };
        columns.push(column);
    }
    let copies: StringArray = order
        .iter()
        .map(|(copy, _)| Some(if *copy == 0 { "positive" } else { "negative" }))
        .collect();
    columns.push(Arc::new(copies));
    writer
        .write(&RecordBatch::try_new(Arc::clone(out_schema), columns)?)
        .await?;
    Ok((kept.len() as u64, ties))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goal_goes_into_a_system_message_or_the_first_user_turn() {
        let conversation = vec![
            Message::new("user", "hi"),
            Message::new("assistant", "hello"),
        ];
        let system = condition(&conversation, "GOAL", Placement::SystemMessage).unwrap();
        assert_eq!(system[0], Message::new("system", "GOAL"));
        assert_eq!(&system[1..], &conversation[..]);
        let prepended = condition(&conversation, "GOAL", Placement::Prepend).unwrap();
        assert_eq!(prepended[0], Message::new("user", "GOAL\n\nhi"));
        let with_system = vec![
            Message::new("system", "Be brief."),
            Message::new("user", "hi"),
        ];
        let merged = condition(&with_system, "GOAL", Placement::SystemMessage).unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].content, "GOAL\n\nBe brief.");
        // Responses alone (TRL conversational) stay as they are: the prompt carries the goal.
        let response = vec![Message::new("assistant", "hello")];
        assert_eq!(
            condition(&response, "GOAL", Placement::SystemMessage).unwrap(),
            response
        );
    }
}
