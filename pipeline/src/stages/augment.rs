//! The `augment` stage: reward-augmented DPO data (Zhang et al., Decision 6). Each pair becomes
//! two rows: a `positive` copy conditioned on the chosen response's score, and a `negative` copy
//! conditioned on the rejected response's score with the roles swapped. The conditioning is the
//! released goal prompt (`prefsmith_udfs::scalar::goal_prompt`), prepended to the prompt with a
//! blank line (the plain-string layout, and the no-system-role variant of the paper). Pairs
//! whose two scores are equal are dropped and counted (their two copies would cancel).
//!
//! In the negative copy every `…chosen…` column trades places with its `…rejected…` partner
//! (texts, scores, indices, log-probs), and `rating_gap` is recomputed, so each row's columns
//! still describe its own chosen and rejected responses. Rows are sorted by `prompt_id`, then
//! positive before negative; a `copy` column says which is which. The Hugging Face
//! `ultrafeedback_binarized` layout (chosen/rejected as message lists) is read by taking the last
//! assistant message as the response text.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::{
    SortColumn, cast, concat_batches, interleave, lexsort_to_indices, take, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use prefsmith_udfs::scalar::goal_prompt::goal_prompt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::input::{self, FileInfo};
use crate::manifest::{InputInfo, Manifest, StageWriter};
use crate::reader::{read_all_in_order, string_at};
use crate::stages::{config_hash, input_listing, now_unix};

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
}

impl AugmentConfig {
    /// The hash deciding whether an existing output is up to date.
    pub fn hash(&self, infos: &[FileInfo]) -> String {
        config_hash(
            "augment",
            &json!({"config": self, "inputs": input_listing(infos)}),
        )
    }
}

/// The text of a response column: strings as they are; a message list
/// (`list<struct<content, role>>`) as the content of its last `assistant` message.
fn response_text(column: &ArrayRef, name: &str) -> Result<ArrayRef> {
    match column.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Ok(cast(column, &DataType::Utf8)?)
        }
        DataType::List(_) => {
            let lists = column.as_list::<i32>();
            let mut out = StringBuilder::new();
            for row in 0..lists.len() {
                if lists.is_null(row) {
                    out.append_null();
                    continue;
                }
                let messages = lists.value(row);
                let messages = messages.as_struct_opt().ok_or_else(|| bad_messages(name))?;
                let (Some(content), Some(role)) = (
                    messages.column_by_name("content"),
                    messages.column_by_name("role"),
                ) else {
                    return Err(bad_messages(name));
                };
                let last = (0..messages.len())
                    .rev()
                    .find(|&i| string_at(role, i) == Some("assistant"));
                out.append_option(last.and_then(|i| string_at(content, i)));
            }
            Ok(Arc::new(out.finish()))
        }
        other => Err(Error::InvalidData {
            context: format!("column '{name}'"),
            message: format!(
                "expected a string or a list of {{content, role}} messages, got {other}"
            ),
        }),
    }
}

fn bad_messages(name: &str) -> Error {
    Error::InvalidData {
        context: format!("column '{name}'"),
        message: "a message list needs struct fields 'content' and 'role'".into(),
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

/// Runs `augment` from `input` into `output`.
pub async fn run(config: &AugmentConfig, input: &str, output: &Path) -> Result<Manifest> {
    let started = Instant::now();
    let started_unix = now_unix();
    let files = input::resolve(input)?;
    let infos = files.infos()?;
    let schema = Arc::clone(&infos[0].schema);
    for column in [
        "prompt_id",
        "prompt",
        "chosen",
        "rejected",
        "score_chosen",
        "score_rejected",
    ] {
        if schema.index_of(column).is_err() {
            return Err(Error::MissingColumn {
                file: infos[0].path.clone(),
                column: column.into(),
                context: "augment needs a pair table with scores".into(),
            });
        }
    }
    if schema.index_of("copy").is_ok() {
        return Err(Error::InvalidData {
            context: input.into(),
            message: "already has a 'copy' column (augmented twice?)".into(),
        });
    }
    let batches = read_all_in_order(&files.files, &schema)
        .await?
        .iter()
        .map(normalise)
        .collect::<Result<Vec<_>>>()?;
    let out_schema = match batches.first() {
        Some(b) => with_copy(b.schema()),
        None => return Err(Error::EmptyInput { path: input.into() }),
    };
    let batch = sorted_by_prompt_id(&batches)?;
    let mut writer = StageWriter::begin(
        output,
        Arc::clone(&out_schema),
        1_000_000,
        Some("prompt_id"),
    )?;
    let (written, ties) = augment_batch(&batch, &out_schema, &mut writer, input)?;
    let pairs = written + ties;
    let inputs = infos.iter().map(InputInfo::from).collect();
    let stats = [
        ("pairs", json!(pairs)),
        ("dropped_equal_scores", json!(ties)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let manifest = Manifest::new(
        "augment",
        config.hash(&infos),
        config,
        inputs,
        stats,
        started_unix,
    );
    let mut manifest = writer.commit(manifest)?;
    manifest.timing.seconds = started.elapsed().as_secs_f64();
    info!(pairs, ties, rows = manifest.rows, output = %output.display(), "augment: done");
    Ok(manifest)
}

/// All rows in one batch, sorted by `prompt_id` (byte order), ties in input order: the output
/// must be sorted so even when the input (e.g. a Hugging Face dataset) is not.
fn sorted_by_prompt_id(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let batch = concat_batches(&batches[0].schema(), batches)?;
    let ids = batch.column(batch.schema().index_of("prompt_id")?);
    let position: ArrayRef = Arc::new(UInt32Array::from_iter_values(0..batch.num_rows() as u32));
    let keys = [
        SortColumn {
            values: Arc::clone(ids),
            options: None,
        },
        SortColumn {
            values: position,
            options: None,
        },
    ];
    let order = lexsort_to_indices(&keys, None)?;
    Ok(take_record_batch(&batch, &order)?)
}

/// Response columns as plain strings, string columns as `Utf8`, scores as `Float64`.
fn normalise(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        let column = match name {
            "chosen" | "rejected" => response_text(column, name)?,
            "score_chosen" | "score_rejected" | "rating_gap" => cast(column, &DataType::Float64)?,
            _ if matches!(column.data_type(), DataType::Utf8View | DataType::LargeUtf8) => {
                cast(column, &DataType::Utf8)?
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

/// Writes the two copies of every non-tied pair of `batch`; returns (pairs kept, ties).
fn augment_batch(
    batch: &RecordBatch,
    out_schema: &SchemaRef,
    writer: &mut StageWriter,
    input: &str,
) -> Result<(u64, u64)> {
    let schema = batch.schema();
    let col = |name: &str| batch.column(schema.index_of(name).expect("checked"));
    let (sc, sr) = (
        col("score_chosen").as_primitive::<Float64Type>().clone(),
        col("score_rejected").as_primitive::<Float64Type>().clone(),
    );
    let (prompt, ids) = (Arc::clone(col("prompt")), Arc::clone(col("prompt_id")));
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
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let name = field.name().as_str();
        let positive = take(batch.column(i), &kept, None)?;
        let column = match name {
            "prompt" => {
                let mut texts = StringBuilder::new();
                for (copy, k) in &order {
                    let row = kept.value(*k) as usize;
                    let score = if *copy == 0 {
                        sc.value(row)
                    } else {
                        sr.value(row)
                    };
                    let goal = goal_prompt(score).expect("scores are finite");
                    texts.append_value(format!(
                        "{goal}\n\n{}",
                        string_at(&prompt, row).unwrap_or_default()
                    ));
                }
                Arc::new(texts.finish()) as ArrayRef
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
    writer.write(&RecordBatch::try_new(Arc::clone(out_schema), columns)?)?;
    Ok((kept.len() as u64, ties))
}
