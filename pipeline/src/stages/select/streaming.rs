//! Pair selection over input sorted by prompt id, one run of equal ids at a time: the
//! streaming plan of `select`. Each run is one prompt; the selection kernel of
//! `prefsmith_udfs::selection` (the one behind `select_pair`) picks its pair, and the texts are
//! gathered from the input batches by reference, so nothing is hashed and only the two chosen
//! texts per prompt are ever copied. Ids must rise strictly from run to run; the first id that
//! does not is reported (the caller then falls back to the hash aggregation).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use prefsmith_udfs::selection::{PairRule, Selection, scalable_seed, select, sort_and_check};
use prefsmith_udfs::string_at;

use crate::error::{Error, Result};

/// Output rows per batch.
const OUTPUT_ROWS: usize = 8192;

/// Where the needed columns sit in the input batches.
#[derive(Debug, Clone, Copy)]
pub struct RunColumns {
    /// Prompt id.
    pub prompt_id: usize,
    /// Prompt text.
    pub prompt: usize,
    /// Response text.
    pub response: usize,
    /// Reward.
    pub reward: usize,
    /// Response index.
    pub index: usize,
}

/// The rule: fixed positions, or `scalable` seeded per prompt.
#[derive(Debug, Clone, Copy)]
pub enum RunRule {
    /// Positions (sweet-spot, max-min, positions).
    Fixed(PairRule),
    /// Scalable with this run seed.
    Scalable(u64),
}

/// Why a run-based selection stopped.
#[derive(Debug)]
pub enum RunError {
    /// Prompt ids did not rise strictly: `next` came after `previous`.
    OutOfOrder {
        /// The earlier id.
        previous: String,
        /// The id that broke the order.
        next: String,
    },
    /// Any other error.
    Stage(Error),
}

impl<E: Into<Error>> From<E> for RunError {
    fn from(e: E) -> Self {
        Self::Stage(e.into())
    }
}

/// The columns this produces: those of the SQL plans, so one sink consumes both.
pub fn output_schema() -> SchemaRef {
    let f = |name: &str, t: DataType| Field::new(name, t, true);
    Arc::new(Schema::new(vec![
        f("prompt_id", DataType::Utf8),
        f("prompt", DataType::Utf8View),
        f("chosen", DataType::Utf8View),
        f("rejected", DataType::Utf8View),
        f("score_chosen", DataType::Float64),
        f("score_rejected", DataType::Float64),
        f("rating_gap", DataType::Float64),
        f("chosen_index", DataType::Int64),
        f("rejected_index", DataType::Int64),
        f("reward_mean", DataType::Float64),
        f("reward_std", DataType::Float64),
        f("n_valid", DataType::Int64),
        f("n_responses", DataType::Int64),
        f("skip_reason", DataType::Utf8),
    ]))
}

/// A row of an input batch, by global batch number.
type RowRef = (usize, usize);

struct OpenRun {
    id: String,
    first: RowRef,
    /// `(response_index, reward, where)`.
    entries: Vec<(i64, f64, RowRef)>,
}

/// Selects pairs from `input` (sorted by prompt id), returning the output batches.
///
/// Finished batches go to `output` as soon as they are complete, so that memory holds a few
/// batches per file, not the file's result (the receiver bounds the channel). A closed
/// receiver (the consumer stopped) ends the work early.
pub async fn select_runs(
    mut input: SendableRecordBatchStream,
    columns: RunColumns,
    rule: RunRule,
    ddof: u32,
    output: tokio::sync::mpsc::Sender<RecordBatch>,
) -> Result<(), RunError> {
    let mut state = Runs::new(columns, rule, ddof);
    while let Some(batch) = input.next().await {
        state.push_batch(batch?)?;
        for done in std::mem::take(&mut state.done) {
            if output.send(done).await.is_err() {
                return Ok(());
            }
        }
    }
    for done in state.finish()? {
        if output.send(done).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

struct Runs {
    columns: RunColumns,
    rule: RunRule,
    ddof: u32,
    /// Retained input batches; global batch `g` is `batches[g - base]`.
    batches: Vec<RecordBatch>,
    base: usize,
    open: Option<OpenRun>,
    out: Pending,
    done: Vec<RecordBatch>,
}

/// Output rows not yet materialised: texts as references into the retained batches.
#[derive(Default)]
struct Pending {
    ids: Vec<String>,
    prompts: Vec<RowRef>,
    chosen: Vec<Option<RowRef>>,
    rejected: Vec<Option<RowRef>>,
    selections: Vec<Selection>,
}

impl Runs {
    fn new(columns: RunColumns, rule: RunRule, ddof: u32) -> Self {
        Self {
            columns,
            rule,
            ddof,
            batches: Vec::new(),
            base: 0,
            open: None,
            out: Pending::default(),
            done: Vec::new(),
        }
    }

    fn push_batch(&mut self, batch: RecordBatch) -> Result<(), RunError> {
        let g = self.base + self.batches.len();
        let ids = Arc::clone(batch.column(self.columns.prompt_id));
        let index = cast(batch.column(self.columns.index), &DataType::Int64)?;
        let reward = cast(batch.column(self.columns.reward), &DataType::Float64)?;
        let (index, reward) = (
            index.as_primitive::<Int64Type>(),
            reward.as_primitive::<Float64Type>(),
        );
        self.batches.push(batch);
        for row in 0..ids.len() {
            let Some(id) = string_at(&ids, row) else {
                return Err(RunError::Stage(Error::InvalidData {
                    context: "select: column prompt_id".into(),
                    message: "null prompt id".into(),
                }));
            };
            let same = self.open.as_ref().is_some_and(|open| open.id == id);
            if !same {
                if let Some(open) = self.open.take() {
                    if open.id.as_str() > id {
                        return Err(RunError::OutOfOrder {
                            previous: open.id,
                            next: id.to_string(),
                        });
                    }
                    self.close(open)?;
                }
                self.open = Some(OpenRun {
                    id: id.to_string(),
                    first: (g, row),
                    entries: Vec::with_capacity(16),
                });
            }
            if index.is_null(row) {
                return Err(RunError::Stage(Error::InvalidData {
                    context: format!("select: prompt_id {id}"),
                    message: "response_index must not be null".into(),
                }));
            }
            let r = if reward.is_valid(row) {
                reward.value(row)
            } else {
                f64::NAN
            };
            let open = self.open.as_mut().expect("a run is open");
            open.entries.push((index.value(row), r, (g, row)));
        }
        if self.out.ids.len() >= OUTPUT_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn close(&mut self, mut run: OpenRun) -> Result<(), RunError> {
        run.entries.sort_by_key(|e| e.0);
        let mut responses: Vec<(i64, f64)> = run.entries.iter().map(|e| (e.0, e.1)).collect();
        if let Err(message) = sort_and_check(&mut responses) {
            return Err(RunError::Stage(Error::InvalidData {
                context: format!("select: prompt_id {}", run.id),
                message,
            }));
        }
        let rule = match self.rule {
            RunRule::Fixed(rule) => rule,
            RunRule::Scalable(seed) => PairRule::Scalable {
                seed: scalable_seed(seed, &run.id),
            },
        };
        let selection = select(&responses, rule, self.ddof);
        let at = |index: i64| run.entries.iter().find(|e| e.0 == index).map(|e| e.2);
        let (chosen, rejected) = match selection.pair {
            Ok(pair) => (at(pair.chosen_index), at(pair.rejected_index)),
            Err(_) => (None, None),
        };
        self.out.ids.push(run.id);
        self.out.prompts.push(run.first);
        self.out.chosen.push(chosen);
        self.out.rejected.push(rejected);
        self.out.selections.push(selection);
        Ok(())
    }

    /// Materialises the pending rows and drops the batches nothing refers to any more.
    fn flush(&mut self) -> Result<(), RunError> {
        if self.out.ids.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let texts = |column: usize, refs: &[Option<RowRef>]| -> Result<ArrayRef, RunError> {
            let arrays: Vec<&dyn Array> = self
                .batches
                .iter()
                .map(|b| b.column(column).as_ref())
                .collect();
            // Rows without a pair point at any row and are nulled below.
            let picks: Vec<(usize, usize)> = refs
                .iter()
                .map(|r| r.map_or((0, 0), |(g, row)| (g - self.base, row)))
                .collect();
            let gathered = cast(&interleave(&arrays, &picks)?, &DataType::Utf8View)?;
            let nulls = datafusion::arrow::buffer::NullBuffer::from(
                refs.iter().map(Option::is_some).collect::<Vec<_>>(),
            );
            let data = gathered
                .to_data()
                .into_builder()
                .nulls(Some(nulls))
                .build()?;
            Ok(datafusion::arrow::array::make_array(data))
        };
        let prompts: Vec<Option<RowRef>> = out.prompts.iter().copied().map(Some).collect();
        let prompt = texts(self.columns.prompt, &prompts)?;
        let chosen = texts(self.columns.response, &out.chosen)?;
        let rejected = texts(self.columns.response, &out.rejected)?;
        let rows = out.ids.len();
        let mut ids = StringBuilder::with_capacity(rows, rows * 16);
        out.ids.iter().for_each(|id| ids.append_value(id));
        let f = || Float64Builder::with_capacity(rows);
        let (mut sc, mut sr, mut gap, mut mean, mut std) = (f(), f(), f(), f(), f());
        let i = || Int64Builder::with_capacity(rows);
        let (mut ci, mut ri, mut nv, mut nr) = (i(), i(), i(), i());
        let mut skip = StringBuilder::with_capacity(rows, rows * 8);
        for s in &out.selections {
            let pair = s.pair.ok();
            sc.append_option(pair.map(|p| p.score_chosen));
            sr.append_option(pair.map(|p| p.score_rejected));
            gap.append_option(pair.map(|p| p.score_chosen - p.score_rejected));
            ci.append_option(pair.map(|p| p.chosen_index));
            ri.append_option(pair.map(|p| p.rejected_index));
            mean.append_option(s.stats.mean.is_finite().then_some(s.stats.mean));
            std.append_option(s.stats.std.is_finite().then_some(s.stats.std));
            nv.append_value(s.stats.n_valid as i64);
            nr.append_value(s.stats.n as i64);
            skip.append_option(s.pair.err().map(|r| r.as_str()));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ids.finish()),
            prompt,
            chosen,
            rejected,
            Arc::new(sc.finish()),
            Arc::new(sr.finish()),
            Arc::new(gap.finish()),
            Arc::new(ci.finish()),
            Arc::new(ri.finish()),
            Arc::new(mean.finish()),
            Arc::new(std.finish()),
            Arc::new(nv.finish()),
            Arc::new(nr.finish()),
            Arc::new(skip.finish()),
        ];
        self.done
            .push(RecordBatch::try_new(output_schema(), columns)?);
        // Only the open run still refers to input batches: keep those from its first row on.
        let keep_from = self
            .open
            .as_ref()
            .map_or(self.base + self.batches.len(), |o| o.first.0);
        let drop = keep_from - self.base;
        self.batches.drain(..drop);
        self.base = keep_from;
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<RecordBatch>, RunError> {
        if let Some(open) = self.open.take() {
            self.close(open)?;
        }
        self.flush()?;
        Ok(self.done)
    }
}
