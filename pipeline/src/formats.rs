//! Dataset layouts: which one an input is in (`--input-format`), and how a pair table in any
//! accepted layout becomes the canonical one the pair stages work on.
//!
//! Layouts read:
//! * `plain`: `prompt`, `chosen`, `rejected` as strings (prefsmith's own pair tables, TRL
//!   standard, OpenRLHF, NeMo's `chosen_response`/`rejected_response`), scores under
//!   `score_chosen`/`score_rejected` or a known alias (`chosen_reward`, `rejected_reward`,
//!   `reject_reward`, `chosen_rating`, `rejected_rating`, `chosen_score`, `rejected_score`);
//! * `hf-binarized`: Hugging Face `ultrafeedback_binarized` (`chosen`/`rejected` as
//!   `list<struct<content, role>>` holding the whole conversation, `score_chosen`,
//!   `score_rejected`), and TRL's conversational layout (the prompt as its own message list);
//! * `wide` and `long`: responses with rewards, read by `select` only;
//! * `auto` (default): detected from the columns.
//!
//! A missing `prompt_id` is derived as the sha256 hex of the prompt (the Hugging Face
//! convention). Every other column is kept as it is.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::{
    SortColumn, cast, concat_batches, lexsort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use prefsmith_udfs::selection::prompt_id_of;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::input::{self, FileInfo, InputFiles, Layout};
use crate::reader::{read_all_in_order, string_at};

mod messages;

pub use messages::{
    Message, is_message_list, last_assistant, message_list_array, message_list_type, messages_at,
};

/// The layout of an input, as given by `--input-format` / `input-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    /// Detected from the columns.
    #[default]
    Auto,
    /// Pairs with string texts.
    Plain,
    /// Pairs with message-list texts (Hugging Face `ultrafeedback_binarized`, TRL conversational).
    HfBinarized,
    /// Responses, one row per prompt with lists of responses and rewards.
    Wide,
    /// Responses, one row per response.
    Long,
    /// Pairwise judgments: `prompt_id`, `i`, `j`, `outcome` (read by `clean`).
    Comparisons,
}

impl InputFormat {
    /// Every accepted name.
    pub const NAMES: &'static str = "auto, plain, hf-binarized, wide, long, comparisons";

    /// Parses a name as written on the command line or in a config file.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(Self::Auto),
            "plain" => Ok(Self::Plain),
            "hf-binarized" | "ultrafeedback-binarized" => Ok(Self::HfBinarized),
            "wide" => Ok(Self::Wide),
            "long" => Ok(Self::Long),
            "comparisons" => Ok(Self::Comparisons),
            other => Err(Error::config(
                "input-format",
                format!("unknown format '{other}'; expected one of {}", Self::NAMES),
            )),
        }
    }

    /// The layout `select` must read, when this format forces one; an error for pair formats.
    pub fn response_layout(self) -> Result<Option<Layout>> {
        match self {
            Self::Auto => Ok(None),
            Self::Wide => Ok(Some(Layout::Wide)),
            Self::Long => Ok(Some(Layout::Long)),
            Self::Plain | Self::HfBinarized | Self::Comparisons => Err(Error::config(
                "input-format",
                "select reads responses with rewards (wide or long); this format is not one",
            )),
        }
    }
}

/// Alternative names of the canonical pair columns, tried in order when the canonical name is
/// absent.
const ALIASES: &[(&str, &[&str])] = &[
    ("chosen", &["chosen_response"]),
    ("rejected", &["rejected_response"]),
    (
        "score_chosen",
        &["chosen_reward", "chosen_rating", "chosen_score"],
    ),
    (
        "score_rejected",
        &[
            "rejected_reward",
            "reject_reward",
            "rejected_rating",
            "rejected_score",
        ],
    ),
];

/// How a pair input maps onto the canonical pair table.
#[derive(Debug, Clone)]
pub struct PairSchema {
    /// The file the layout was read from (for messages).
    pub file: String,
    /// `Plain` or `HfBinarized` (never `Auto`).
    pub format: InputFormat,
    /// The input's own schema.
    source: SchemaRef,
    /// Per source column, its canonical name.
    names: Vec<String>,
    /// Whether `prompt_id` is derived from `prompt`.
    derive_prompt_id: bool,
    /// The canonical schema: `prompt_id` first, strings as `Utf8`.
    canonical: SchemaRef,
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn utf8(t: &DataType) -> DataType {
    if is_string(t) {
        DataType::Utf8
    } else {
        t.clone()
    }
}

/// Per column of `schema`, its canonical name: its own, or the canonical one it is an alias of
/// when the canonical column is absent.
fn canonical_names(schema: &Schema) -> Result<Vec<String>> {
    let has = |name: &str| schema.index_of(name).is_ok();
    let mut names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    for (canonical, aliases) in ALIASES {
        if has(canonical) {
            continue;
        }
        if let Some(alias) = aliases.iter().find(|a| has(a)) {
            names[schema.index_of(alias)?] = canonical.to_string();
        }
    }
    Ok(names)
}

/// The field of `schema` whose canonical name (per `names`) is `canonical`.
fn field_of<'a>(schema: &'a Schema, names: &[String], canonical: &str) -> Option<&'a Field> {
    names
        .iter()
        .position(|n| n == canonical)
        .map(|i| schema.field(i))
}

/// The `chosen` field; its absence is an error saying what the table looks like instead.
fn chosen_field<'a>(file: &str, schema: &'a Schema, names: &[String]) -> Result<&'a Field> {
    if let Some(chosen) = field_of(schema, names, "chosen") {
        return Ok(chosen);
    }
    let has = |name: &str| schema.index_of(name).is_ok();
    let responses = has("all_generated_responses") || has("response") || has("reward");
    Err(Error::MissingColumn {
        file: file.to_string(),
        column: "chosen".into(),
        context: if responses {
            "this is a table of responses (wide or long layout); run `prefsmith select` \
             to make pairs first"
                .into()
        } else {
            "a pair table needs prompt, chosen and rejected".into()
        },
    })
}

/// The pair layout the type of `chosen` shows, checked against the `format` asked for.
fn checked_format(file: &str, chosen: &Field, format: InputFormat) -> Result<InputFormat> {
    let detected = if is_message_list(chosen.data_type()) {
        InputFormat::HfBinarized
    } else if is_string(chosen.data_type()) {
        InputFormat::Plain
    } else {
        return Err(Error::WrongType {
            file: file.to_string(),
            column: chosen.name().clone(),
            found: chosen.data_type().to_string(),
            expected: "a string or a list of {content, role} messages".into(),
        });
    };
    match format {
        InputFormat::Auto => Ok(detected),
        InputFormat::Wide | InputFormat::Long | InputFormat::Comparisons => Err(Error::config(
            "input-format",
            format!(
                "'{}' is not a pair layout; this stage reads pairs (plain or hf-binarized)",
                match format {
                    InputFormat::Wide => "wide",
                    InputFormat::Long => "long",
                    _ => "comparisons",
                }
            ),
        )),
        given if given == detected => Ok(given),
        given => Err(Error::WrongType {
            file: file.to_string(),
            column: chosen.name().clone(),
            found: chosen.data_type().to_string(),
            expected: if given == InputFormat::Plain {
                "a string (input-format plain)".into()
            } else {
                "a list of {content, role} messages (input-format hf-binarized)".into()
            },
        }),
    }
}

/// Checks that `prompt` and `rejected` are present, `prompt` as a string or message list and
/// `rejected` in the type of `chosen`.
fn check_prompt_and_rejected(
    file: &str,
    schema: &Schema,
    names: &[String],
    chosen: &Field,
) -> Result<()> {
    for column in ["prompt", "rejected"] {
        let Some(field) = field_of(schema, names, column) else {
            return Err(Error::MissingColumn {
                file: file.to_string(),
                column: column.into(),
                context: "a pair table needs prompt, chosen and rejected".into(),
            });
        };
        let ok = match column {
            "rejected" => {
                field.data_type() == chosen.data_type()
                    || is_string(field.data_type()) && is_string(chosen.data_type())
            }
            _ => is_string(field.data_type()) || is_message_list(field.data_type()),
        };
        if !ok {
            return Err(Error::WrongType {
                file: file.to_string(),
                column: field.name().clone(),
                found: field.data_type().to_string(),
                expected: format!("the same type as 'chosen' ({})", chosen.data_type()),
            });
        }
    }
    Ok(())
}

/// The canonical schema: a derived `prompt_id` first when asked for, then every source column
/// under its canonical name, strings as `Utf8`, all nullable.
fn canonical_schema(schema: &Schema, names: &[String], derive_prompt_id: bool) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::with_capacity(names.len() + 1);
    if derive_prompt_id {
        fields.push(Field::new("prompt_id", DataType::Utf8, false));
    }
    for (field, name) in schema.fields().iter().zip(names) {
        fields.push(Field::new(name, utf8(field.data_type()), true));
    }
    Arc::new(Schema::new(fields))
}

impl PairSchema {
    /// Works out the layout of `schema` (read from `file`) under `format`.
    pub fn detect(file: &str, schema: &SchemaRef, format: InputFormat) -> Result<Self> {
        let names = canonical_names(schema)?;
        let chosen = chosen_field(file, schema, &names)?;
        let format = checked_format(file, chosen, format)?;
        check_prompt_and_rejected(file, schema, &names, chosen)?;
        let derive_prompt_id = field_of(schema, &names, "prompt_id").is_none();
        if derive_prompt_id
            && !is_string(
                field_of(schema, &names, "prompt")
                    .expect("checked")
                    .data_type(),
            )
        {
            return Err(Error::MissingColumn {
                file: file.to_string(),
                column: "prompt_id".into(),
                context: "it is derived from a string prompt only; this prompt is a message list"
                    .into(),
            });
        }
        let canonical = canonical_schema(schema, &names, derive_prompt_id);
        Ok(Self {
            file: file.to_string(),
            format,
            source: Arc::clone(schema),
            names,
            derive_prompt_id,
            canonical,
        })
    }

    /// The canonical schema.
    pub fn canonical(&self) -> &SchemaRef {
        &self.canonical
    }

    /// The input's own schema.
    pub fn source(&self) -> &SchemaRef {
        &self.source
    }

    /// Whether the texts are message lists.
    pub fn conversational(&self) -> bool {
        self.format == InputFormat::HfBinarized
    }

    /// The input's name of a canonical column, if present.
    pub fn source_name(&self, canonical: &str) -> Option<&str> {
        self.names
            .iter()
            .position(|n| n == canonical)
            .map(|i| self.source.field(i).name().as_str())
    }

    /// Whether the canonical table has `column`.
    pub fn has(&self, column: &str) -> bool {
        self.canonical.index_of(column).is_ok()
    }

    /// A named error unless every one of `columns` is present.
    pub fn require(&self, columns: &[&str], context: &str) -> Result<()> {
        match columns.iter().find(|c| !self.has(c)) {
            None => Ok(()),
            Some(column) => Err(Error::MissingColumn {
                file: self.file.clone(),
                column: column.to_string(),
                context: context.into(),
            }),
        }
    }

    /// A named error if the canonical table already has `column` (a stage run twice).
    pub fn refuse_existing(&self, column: &str, why: &str) -> Result<()> {
        if self.has(column) {
            return Err(Error::InvalidData {
                context: self.file.clone(),
                message: format!("already has a '{column}' column ({why})"),
            });
        }
        Ok(())
    }

    /// A batch of the input (all source columns, in order) as a canonical batch.
    pub fn to_canonical(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.canonical.fields().len());
        if self.derive_prompt_id {
            let prompts = batch.column(
                self.names
                    .iter()
                    .position(|n| n == "prompt")
                    .expect("checked"),
            );
            let mut ids = Vec::with_capacity(batch.num_rows());
            for row in 0..batch.num_rows() {
                let Some(prompt) = string_at(prompts, row) else {
                    return Err(Error::InvalidData {
                        context: format!("{}: column 'prompt'", self.file),
                        message: format!(
                            "row {row} has a null prompt; its prompt_id cannot be derived"
                        ),
                    });
                };
                ids.push(prompt_id_of(prompt));
            }
            columns.push(Arc::new(StringArray::from(ids)));
        }
        for column in batch.columns() {
            columns.push(
                if matches!(column.data_type(), DataType::Utf8View | DataType::LargeUtf8) {
                    cast(column, &DataType::Utf8)?
                } else {
                    Arc::clone(column)
                },
            );
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.canonical), columns)?)
    }
}

/// A whole pair input, read in order and made canonical.
#[derive(Debug)]
pub struct PairInput {
    /// The files.
    pub files: InputFiles,
    /// Their footers.
    pub infos: Vec<FileInfo>,
    /// The layout.
    pub schema: PairSchema,
}

impl PairInput {
    /// Resolves `spec` and works out its layout under `format` (footers only).
    pub async fn open(spec: &str, format: InputFormat) -> Result<Self> {
        let files = input::resolve(spec).await?;
        let infos = files.infos().await?;
        let schema = PairSchema::detect(&infos[0].location.to_string(), &infos[0].schema, format)?;
        for info in &infos[1..] {
            if info.schema.fields().len() != schema.source.fields().len()
                || info
                    .schema
                    .fields()
                    .iter()
                    .zip(schema.source.fields())
                    .any(|(a, b)| a.name() != b.name())
            {
                return Err(Error::InvalidData {
                    context: info.location.to_string(),
                    message: format!("its columns differ from those of {}", infos[0].location),
                });
            }
        }
        Ok(Self {
            files,
            infos,
            schema,
        })
    }

    /// Every row, canonical, in input order.
    pub async fn read_all(&self) -> Result<Vec<RecordBatch>> {
        read_all_in_order(&self.files.files, &self.schema.source)
            .await?
            .iter()
            .map(|b| self.schema.to_canonical(b))
            .collect()
    }
}

/// All rows of `batches` in one batch, sorted by `prompt_id` (byte order), ties in input order.
pub fn sorted_by_prompt_id(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let batch = concat_batches(schema, batches)?;
    let ids = batch.column(schema.index_of("prompt_id")?);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    fn messages() -> DataType {
        let item = DataType::Struct(
            vec![
                Field::new("content", DataType::Utf8, true),
                Field::new("role", DataType::Utf8, true),
            ]
            .into(),
        );
        DataType::List(Arc::new(Field::new_list_field(item, true)))
    }

    #[test]
    fn nemo_names_are_aliases_and_prompt_id_is_derived() {
        let s = schema(&[
            ("prompt", DataType::Utf8),
            ("chosen_response", DataType::Utf8),
            ("rejected_response", DataType::Utf8),
            ("chosen_reward", DataType::Float64),
            ("rejected_reward", DataType::Float64),
        ]);
        let p = PairSchema::detect("x.parquet", &s, InputFormat::Auto).unwrap();
        assert_eq!(p.format, InputFormat::Plain);
        let names: Vec<&str> = p
            .canonical()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "prompt_id",
                "prompt",
                "chosen",
                "rejected",
                "score_chosen",
                "score_rejected"
            ]
        );
        assert_eq!(p.source_name("score_rejected"), Some("rejected_reward"));
    }

    #[test]
    fn formats_are_checked_against_the_columns() {
        let hf = schema(&[
            ("prompt", DataType::Utf8),
            ("prompt_id", DataType::Utf8),
            ("chosen", messages()),
            ("rejected", messages()),
        ]);
        let p = PairSchema::detect("hf.parquet", &hf, InputFormat::Auto).unwrap();
        assert!(p.conversational());
        let err = PairSchema::detect("hf.parquet", &hf, InputFormat::Plain)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hf.parquet") && err.contains("chosen"),
            "{err}"
        );
        let wide = schema(&[
            ("prompt", DataType::Utf8),
            ("all_generated_responses", DataType::Utf8),
        ]);
        let err = PairSchema::detect("w.parquet", &wide, InputFormat::Auto)
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefsmith select"), "{err}");
        assert!(
            InputFormat::parse("jsonl")
                .unwrap_err()
                .to_string()
                .contains("hf-binarized")
        );
    }
}
