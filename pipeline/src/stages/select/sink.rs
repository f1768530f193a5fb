//! Where the selection plans' rows go: [`PairSink`] checks that prompt ids come out strictly
//! ascending, counts prompts, responses and skip reasons, and writes the kept pairs through
//! the stage writer, so that every plan (wide, hash, streaming) reports the same figures.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use prefsmith_udfs::selection::SkipReason;
use serde_json::json;

use crate::error::{Error, Result};
use crate::input::ValidatedInput;
use crate::manifest::{Manifest, StageWriter};
use crate::reader::string_at;
use crate::stages::Progress;

/// The pair table's columns: the contract later stages extend.
pub fn pair_table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("prompt_id", DataType::Utf8, false),
        Field::new("prompt", DataType::Utf8, true),
        Field::new("chosen", DataType::Utf8, true),
        Field::new("rejected", DataType::Utf8, true),
        Field::new("score_chosen", DataType::Float64, false),
        Field::new("score_rejected", DataType::Float64, false),
        Field::new("rating_gap", DataType::Float64, false),
        Field::new("chosen_index", DataType::Int64, false),
        Field::new("rejected_index", DataType::Int64, false),
        Field::new("reward_mean", DataType::Float64, false),
        Field::new("reward_std", DataType::Float64, false),
        Field::new("n_valid", DataType::Int64, false),
        Field::new("strategy", DataType::Utf8, false),
    ]))
}

/// Why consuming the plan's output stopped.
pub(super) enum SinkError {
    /// Prompt ids did not come out strictly ascending.
    OutOfOrder { previous: String, next: String },
    /// A wide row whose lists differ in length.
    ListLengths {
        prompt_id: String,
        responses: i64,
        scores: i64,
    },
    /// Any other error.
    Stage(Error),
}

impl SinkError {
    pub(super) fn into_error(self) -> Error {
        match self {
            Self::Stage(e) => e,
            Self::OutOfOrder { previous, next } => Error::InvalidData {
                context: "select".into(),
                message: format!("output out of order: {next} after {previous}"),
            },
            Self::ListLengths {
                prompt_id,
                responses,
                scores,
            } => Error::InvalidData {
                context: "select".into(),
                message: format!(
                    "prompt_id {prompt_id}: {responses} responses but {scores} scores"
                ),
            },
        }
    }
}

impl<E: Into<Error>> From<E> for SinkError {
    fn from(e: E) -> Self {
        Self::Stage(e.into())
    }
}

/// Consumes the plan's rows (one per prompt, skipped ones included): checks order, counts
/// skips, keeps the pairs and writes them.
pub(super) struct PairSink {
    writer: StageWriter,
    label: String,
    previous: Option<String>,
    prompts: u64,
    responses: u64,
    invalid_rewards: u64,
    skipped: BTreeMap<&'static str, u64>,
    pairs: u64,
    sum_chosen: f64,
    sum_rejected: f64,
    progress: Progress,
}

impl PairSink {
    pub(super) async fn begin(
        output: &crate::storage::Location,
        max_rows_per_file: usize,
        partition_by: Option<&str>,
        label: &str,
        input_rows: u64,
    ) -> Result<Self> {
        Ok(Self {
            writer: StageWriter::begin(
                output,
                pair_table_schema(),
                max_rows_per_file,
                Some("prompt_id"),
            )
            .await?
            .partition_by(partition_by)?,
            label: label.to_string(),
            previous: None,
            prompts: 0,
            responses: 0,
            invalid_rewards: 0,
            skipped: SkipReason::ALL.iter().map(|r| (r.as_str(), 0)).collect(),
            pairs: 0,
            sum_chosen: 0.0,
            sum_rejected: 0.0,
            progress: Progress::new("select", input_rows),
        })
    }

    pub(super) async fn consume(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .expect("the plan projects this column")
        };
        let ids = column("prompt_id");
        self.check_order(ids)?;
        if let (Some(lr), Some(ls)) = (
            batch.column_by_name("list_responses"),
            batch.column_by_name("list_scores"),
        ) {
            let (lr, ls) = (
                lr.as_primitive::<Int64Type>(),
                ls.as_primitive::<Int64Type>(),
            );
            if let Some(i) = (0..rows).find(|&i| lr.value(i) != ls.value(i)) {
                return Err(SinkError::ListLengths {
                    prompt_id: string_at(ids, i).unwrap_or_default().to_string(),
                    responses: lr.value(i),
                    scores: ls.value(i),
                });
            }
        }
        let reasons = column("skip_reason");
        let n_valid = column("n_valid").as_primitive::<Int64Type>().clone();
        let n_responses = column("n_responses").as_primitive::<Int64Type>().clone();
        let mut keep = Vec::with_capacity(rows);
        for i in 0..rows {
            self.responses += n_responses.value(i) as u64;
            self.invalid_rewards += (n_responses.value(i) - n_valid.value(i)) as u64;
            match string_at(reasons, i) {
                Some(reason) => {
                    let key = SkipReason::ALL
                        .iter()
                        .find(|r| r.as_str() == reason)
                        .map_or("unknown", |r| r.as_str());
                    *self.skipped.entry(key).or_insert(0) += 1;
                    keep.push(false);
                }
                None => keep.push(true),
            }
        }
        self.prompts += rows as u64;
        let keep = BooleanArray::from(keep);
        let kept = filter_record_batch(batch, &keep)?;
        let out = self.to_pair_table(&kept)?;
        self.pairs += out.num_rows() as u64;
        self.sum_chosen += sum(out.column(4));
        self.sum_rejected += sum(out.column(5));
        self.writer.write(&out).await?;
        self.progress
            .advance(n_responses.values().iter().map(|&n| n as u64).sum());
        Ok(())
    }

    fn check_order(&mut self, ids: &ArrayRef) -> Result<(), SinkError> {
        for i in 0..ids.len() {
            let Some(id) = string_at(ids, i) else {
                return Err(SinkError::Stage(Error::InvalidData {
                    context: "select: column prompt_id".into(),
                    message: "null prompt id".into(),
                }));
            };
            if let Some(previous) = &self.previous
                && previous.as_str() >= id
            {
                return Err(SinkError::OutOfOrder {
                    previous: previous.clone(),
                    next: id.to_string(),
                });
            }
            if i + 1 == ids.len() {
                self.previous = Some(id.to_string());
            } else if string_at(ids, i + 1).is_some_and(|next| next <= id) {
                return Err(SinkError::OutOfOrder {
                    previous: id.to_string(),
                    next: string_at(ids, i + 1).unwrap_or_default().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Casts the plan's columns to the pair-table schema and adds `strategy`.
    fn to_pair_table(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let schema = pair_table_schema();
        let rows = batch.num_rows();
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column: ArrayRef = if field.name() == "strategy" {
                Arc::new(StringArray::from(vec![self.label.as_str(); rows]))
            } else {
                let source = batch
                    .column_by_name(field.name())
                    .expect("the plan projects every pair column");
                cast(source, field.data_type())?
            };
            columns.push(column);
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    pub(super) fn stats(
        &self,
        input: &ValidatedInput,
        path: &str,
        seed: u64,
    ) -> BTreeMap<String, serde_json::Value> {
        let mean = |sum: f64| {
            if self.pairs > 0 {
                json!(sum / self.pairs as f64)
            } else {
                json!(null)
            }
        };
        BTreeMap::from([
            ("layout".into(), json!(input.layout.as_str())),
            ("plan".into(), json!(path)),
            ("strategy".into(), json!(self.label)),
            ("seed".into(), json!(seed)),
            ("input_rows".into(), json!(input.rows)),
            ("prompts".into(), json!(self.prompts)),
            ("responses".into(), json!(self.responses)),
            ("invalid_rewards".into(), json!(self.invalid_rewards)),
            ("pairs_written".into(), json!(self.pairs)),
            ("skipped".into(), json!(self.skipped)),
            ("mean_score_chosen".into(), mean(self.sum_chosen)),
            ("mean_score_rejected".into(), mean(self.sum_rejected)),
            (
                "mean_rating_gap".into(),
                mean(self.sum_chosen - self.sum_rejected),
            ),
        ])
    }

    pub(super) async fn commit(self, manifest: Manifest) -> Result<Manifest> {
        self.progress.finish();
        self.writer.commit(manifest).await
    }
}

/// The sum of a Float64 column's non-null values.
fn sum(array: &ArrayRef) -> f64 {
    let values: &Float64Array = array.as_primitive::<Float64Type>();
    values.iter().flatten().sum()
}
