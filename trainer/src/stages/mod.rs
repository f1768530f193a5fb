//! The pipeline stages that run a model: `sample`, `reward` and `score`. Each reads a table
//! (through the pipeline's readers, so stage outputs are read through their manifests), runs
//! the model, and writes its output with the pipeline's stage contract (parts, then
//! `_manifest.json` last). [`pairs`] and [`score_cache`] hold what `score` shares with
//! training: the sides of a pair row, the truncation rule, and the cache of sequence scores.

pub mod faults;
pub mod pairs;
pub mod reward;
pub mod sample;
pub mod score;
pub mod score_cache;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use prefsmith_model::tokenizer::ChatMessage;
use prefsmith_pipeline::formats::{Message, messages_at};
use prefsmith_pipeline::input::{self, FileInfo};
use prefsmith_pipeline::reader::{read_all_in_order, string_at};
use serde::Serialize;

use crate::error::{Error, Result};

/// A whole table read in order: its files' footers, schema and rows as one batch.
pub struct Table {
    /// Footers of the files read.
    pub infos: Vec<FileInfo>,
    /// All rows.
    pub batch: RecordBatch,
}

impl Table {
    /// Reads `spec` (file, glob, or complete stage output).
    pub async fn read(spec: &str) -> Result<Self> {
        let files = input::resolve(spec).await?;
        let infos = files.infos().await?;
        let schema: SchemaRef = std::sync::Arc::clone(&infos[0].schema);
        let batches = read_all_in_order(&files.files, &schema).await?;
        // The reader may hand strings back as views: take the schema from what it returned.
        let schema = batches.first().map_or(schema, |b| b.schema());
        let batch = concat_batches(&schema, &batches)?;
        if batch.num_rows() == 0 {
            return Err(Error::Input(format!("{spec}: the table has no rows")));
        }
        Ok(Self { infos, batch })
    }

    /// The column `name`, or an error naming the file and what needs it.
    pub fn column(&self, name: &str, needed_for: &str) -> Result<&ArrayRef> {
        self.batch.column_by_name(name).ok_or_else(|| {
            Error::Input(format!(
                "{}: column '{name}' is missing ({needed_for})",
                self.infos[0].location
            ))
        })
    }

    /// Refuses to overwrite an existing column.
    pub fn refuse_existing(&self, name: &str) -> Result<()> {
        if self.batch.column_by_name(name).is_some() {
            return Err(Error::Input(format!(
                "{}: column '{name}' already exists; choose another output column or drop it first",
                self.infos[0].location
            )));
        }
        Ok(())
    }
}

/// The conversation of row `row` of a prompt column: a string is one user message, a message
/// list is taken as it is. A null or empty prompt is an error naming the column and row.
pub fn prompt_messages(column: &ArrayRef, name: &str, row: usize) -> Result<Vec<ChatMessage>> {
    let empty = || {
        Error::Input(format!(
            "column '{name}', row {row}: the prompt is empty or null"
        ))
    };
    let messages = match column.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = string_at(column, row).ok_or_else(empty)?;
            vec![ChatMessage::new("user", text)]
        }
        _ => messages_at(column, name, row)?
            .ok_or_else(empty)?
            .iter()
            .map(chat_message)
            .collect(),
    };
    if messages.iter().all(|m| m.content.trim().is_empty()) {
        return Err(empty());
    }
    Ok(messages)
}

/// The strings of row `row` of a `list<string>` column (nulls are errors naming the row).
pub fn string_list(column: &ArrayRef, name: &str, row: usize) -> Result<Vec<String>> {
    let bad = |m: &str| Error::Input(format!("column '{name}', row {row}: {m}"));
    if column.is_null(row) {
        return Err(bad("null list"));
    }
    let items = match column.data_type() {
        DataType::List(_) => column.as_list::<i32>().value(row),
        DataType::LargeList(_) => column.as_list::<i64>().value(row),
        other => return Err(bad(&format!("expected a list of strings, found {other}"))),
    };
    (0..items.len())
        .map(|i| {
            string_at(&items, i)
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("item {i} is null or not a string")))
        })
        .collect()
}

/// Writes a model stage's whole output (one batch) under the stage contract and commits its
/// manifest: the one tail `sample`, `reward` and `score` share.
pub struct StageOutput<'a, C: Serialize> {
    /// Stage name.
    pub stage: &'static str,
    /// Output directory.
    pub output: &'a str,
    /// Leading sort column, if the rows are sorted.
    pub sorted_by: Option<&'a str>,
    /// The config hash.
    pub hash: String,
    /// The resolved config.
    pub config: &'a C,
    /// The input files.
    pub infos: &'a [FileInfo],
    /// Stage statistics.
    pub stats: Vec<(&'static str, serde_json::Value)>,
    /// When the stage started.
    pub started: std::time::Instant,
    /// The same, as Unix seconds.
    pub started_unix: f64,
}

impl<C: Serialize> StageOutput<'_, C> {
    /// Writes `batch` and commits the manifest.
    pub async fn commit(
        self,
        batch: &RecordBatch,
    ) -> Result<prefsmith_pipeline::manifest::Manifest> {
        use prefsmith_pipeline::manifest::{InputInfo, Manifest, StageWriter};
        let output = prefsmith_pipeline::storage::Location::parse(self.output)?;
        let mut writer =
            StageWriter::begin(&output, batch.schema(), 1_000_000, self.sorted_by).await?;
        writer.write(batch).await?;
        let stats = self
            .stats
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let manifest = Manifest::new(
            self.stage,
            self.hash,
            self.config,
            self.infos.iter().map(InputInfo::from).collect(),
            stats,
            self.started_unix,
        );
        let mut manifest = writer.commit(manifest).await?;
        manifest.timing.seconds = self.started.elapsed().as_secs_f64();
        Ok(manifest)
    }
}

/// A table's chat message as the model's chat template takes it.
pub fn chat_message(message: &Message) -> ChatMessage {
    ChatMessage::new(&message.role, message.content.clone())
}

/// A stable 64-bit hash of a string (the first 8 bytes of its sha256): the same on every
/// machine and in every run, for random-stream ids and directory names.
pub fn stable_hash64(text: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}
