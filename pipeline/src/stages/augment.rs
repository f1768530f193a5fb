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

crate::stage::config_stage!(AugmentConfig, "augment", run);

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
    let (kept, ties) = untied_rows(&sc, &sr, col("prompt_id"), input)?;
    if kept.is_empty() {
        return Ok((0, ties));
    }
    let copies = Copies::new(batch, sc, sr, UInt32Array::from(kept), placement);
    let columns = copies.columns(out_schema)?;
    writer
        .write(&RecordBatch::try_new(Arc::clone(out_schema), columns)?)
        .await?;
    Ok((copies.kept.len() as u64, ties))
}

/// The rows whose two scores differ, and how many rows tie; a row without two finite scores
/// is an error naming it.
fn untied_rows(
    sc: &Float64Array,
    sr: &Float64Array,
    ids: &ArrayRef,
    input: &str,
) -> Result<(Vec<u32>, u64)> {
    let mut kept = Vec::new();
    let mut ties = 0u64;
    for row in 0..sc.len() {
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
                        string_at(ids, row).unwrap_or("?")
                    ),
                });
            }
        }
    }
    Ok((kept, ties))
}

/// The message lists of one output column, one entry per output row (`None` = null list).
type ListColumn = Vec<Option<Vec<Message>>>;

/// The two copies of the kept pairs of one batch: what every output column is built from.
struct Copies<'a> {
    /// The sorted input batch.
    batch: &'a RecordBatch,
    /// Its schema.
    schema: SchemaRef,
    /// `score_chosen`, as `Float64`.
    sc: Float64Array,
    /// `score_rejected`, as `Float64`.
    sr: Float64Array,
    /// The rows of `batch` that are augmented.
    kept: UInt32Array,
    /// Per output row, (copy, k): 0 = positive, 1 = negative copy of kept row k.
    order: Vec<(usize, usize)>,
    /// Per output row, its goal text.
    goals: Vec<String>,
    /// Where the goal text goes.
    placement: Placement,
}

impl<'a> Copies<'a> {
    /// The copies of the `kept` rows of `batch`, each with the goal its score gives.
    fn new(
        batch: &'a RecordBatch,
        sc: Float64Array,
        sr: Float64Array,
        kept: UInt32Array,
        placement: Placement,
    ) -> Self {
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
        Self {
            batch,
            schema: batch.schema(),
            sc,
            sr,
            kept,
            order,
            goals,
            placement,
        }
    }

    /// The input column `name` (checked to exist).
    fn col(&self, name: &str) -> &'a ArrayRef {
        self.batch
            .column(self.schema.index_of(name).expect("checked"))
    }

    /// Every output column, in the order of `out_schema`.
    fn columns(&self, out_schema: &SchemaRef) -> Result<Vec<ArrayRef>> {
        let chosen_lists = self.conditioned_lists("chosen")?;
        let rejected_lists = self.conditioned_lists("rejected")?;
        let in_lists = self.goals_in_lists(chosen_lists.as_ref());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
        for (i, field) in self.schema.fields().iter().enumerate() {
            let name = field.name().as_str();
            let column = match name {
                "prompt" if is_message_list(field.data_type()) => {
                    self.conditioned_prompt_lists(i, name)?
                }
                "prompt" => self.prepended_prompts(i, &in_lists),
                "chosen" if chosen_lists.is_some() => {
                    message_list_array(chosen_lists.as_ref().expect("checked"))
                }
                "rejected" if rejected_lists.is_some() => {
                    message_list_array(rejected_lists.as_ref().expect("checked"))
                }
                "messages"
                    if field.data_type() == &message_list_type() && chosen_lists.is_some() =>
                {
                    // The SFT conversation follows the row's chosen response.
                    message_list_array(chosen_lists.as_ref().expect("checked"))
                }
                "rating_gap" => self.rating_gaps(),
                _ => self.swapped_column(i, name)?,
            };
            columns.push(column);
        }
        columns.push(self.copy_labels());
        Ok(columns)
    }

    /// The conditioned lists of each output row's chosen or rejected (`name`), when they are
    /// lists.
    fn conditioned_lists(&self, name: &str) -> Result<Option<ListColumn>> {
        let column = self.col(name);
        if !is_message_list(column.data_type()) {
            return Ok(None);
        }
        self.order
            .iter()
            .zip(&self.goals)
            .map(|(&(copy, k), goal)| {
                let row = self.kept.value(k) as usize;
                // The negative copy's chosen is the pair's rejected, and the other way round.
                let source = match (copy, name) {
                    (1, "chosen") => self.col("rejected"),
                    (1, "rejected") => self.col("chosen"),
                    _ => column,
                };
                messages_at(source, name, row)?
                    .map(|m| condition(&m, goal, self.placement))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Per output row, whether its goal already sits in its response lists (they hold the
    /// prompt turns).
    fn goals_in_lists(&self, chosen_lists: Option<&ListColumn>) -> Vec<bool> {
        (0..self.order.len())
            .map(|i| {
                self.placement == Placement::SystemMessage
                    && chosen_lists.is_some_and(|lists| {
                        lists[i]
                            .as_ref()
                            .is_some_and(|m| m.iter().any(|m| m.role != "assistant"))
                    })
            })
            .collect()
    }

    /// The message-list prompt column `i`, conditioned on each output row's goal.
    fn conditioned_prompt_lists(&self, i: usize, name: &str) -> Result<ArrayRef> {
        let rows = self
            .order
            .iter()
            .zip(&self.goals)
            .map(|(&(_, k), goal)| {
                messages_at(self.batch.column(i), name, self.kept.value(k) as usize)?
                    .map(|m| condition(&m, goal, self.placement))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(message_list_array(&rows))
    }

    /// The string prompt column `i`, with each output row's goal in front unless the goal
    /// already sits in its lists.
    fn prepended_prompts(&self, i: usize, in_lists: &[bool]) -> ArrayRef {
        let prompts = self.batch.column(i);
        let mut texts = StringBuilder::new();
        for (j, &(_, k)) in self.order.iter().enumerate() {
            let text = string_at(prompts, self.kept.value(k) as usize).unwrap_or_default();
            if in_lists[j] {
                texts.append_value(text);
            } else {
                texts.append_value(prepend(&self.goals[j], text));
            }
        }
        Arc::new(texts.finish()) as ArrayRef
    }

    /// `rating_gap` recomputed per output row: chosen minus rejected score, negated for the
    /// negative copy.
    fn rating_gaps(&self) -> ArrayRef {
        let gaps: Float64Array = self
            .order
            .iter()
            .map(|(copy, k)| {
                let row = self.kept.value(*k) as usize;
                let gap = self.sc.value(row) - self.sr.value(row);
                Some(if *copy == 0 { gap } else { -gap })
            })
            .collect();
        Arc::new(gaps)
    }

    /// Column `i` (`name`) for every output row: the kept value in the positive copy, its
    /// `…chosen…`/`…rejected…` partner's in the negative copy (itself when it has none).
    fn swapped_column(&self, i: usize, name: &str) -> Result<ArrayRef> {
        let positive = take(self.batch.column(i), &self.kept, None)?;
        let negative = match partner(name, &self.schema) {
            Some(p) => take(self.batch.column(p), &self.kept, None)?,
            None => Arc::clone(&positive),
        };
        Ok(interleave(
            &[positive.as_ref(), negative.as_ref()],
            &self.order,
        )?)
    }

    /// The `copy` column: `positive` or `negative` per output row.
    fn copy_labels(&self) -> ArrayRef {
        let copies: StringArray = self
            .order
            .iter()
            .map(|(copy, _)| Some(if *copy == 0 { "positive" } else { "negative" }))
            .collect();
        Arc::new(copies)
    }
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
