//! The streaming plan of `clean`: the wide layout, and the long layout and comparisons whose
//! prompts come in ascending key order, cleaned in chunks cut at prompt boundaries, so that
//! memory stays a chunk of rows whatever the input size.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;

use super::comparisons::clean_comparisons;
use super::config::CleanConfig;
use super::long::clean_long;
use super::stats::Totals;
use super::wide::clean_wide;
use crate::error::{Error, Result};
use crate::input::{self, Layout};

/// What the streaming plan reads.
pub(super) enum Streamed<'a> {
    /// Responses, wide or long (validated).
    Responses(&'a input::ValidatedInput),
    /// Judgments (`prompt_id`, `i`, `j`, `outcome`), `rows` over all files.
    Comparisons { rows: u64 },
}

impl Streamed<'_> {
    /// Whether a prompt's rows can span batches (so keys must ascend and a chunk ends at a
    /// prompt boundary): long responses and comparisons.
    fn keyed_rows(&self) -> bool {
        match self {
            Streamed::Responses(v) => v.layout == Layout::Long,
            Streamed::Comparisons { .. } => true,
        }
    }

    /// Whether the output comes in ascending prompt id order.
    fn sorted_output(&self) -> bool {
        match self {
            Streamed::Responses(v) => v.layout == Layout::Long && v.has_prompt_id,
            Streamed::Comparisons { .. } => true,
        }
    }

    fn rows(&self) -> u64 {
        match self {
            Streamed::Responses(v) => v.rows,
            Streamed::Comparisons { rows } => *rows,
        }
    }
}
use crate::manifest::StageWriter;
use crate::reader::string_at;
use crate::stages::Progress;

/// Rows per chunk of the streaming path (a chunk ends at a prompt boundary, so it can run
/// over by the rest of one prompt).
const CHUNK_ROWS: usize = 1 << 16;

/// Cleans the wide layout (one prompt per row), or the long layout or comparisons when their
/// prompts come in ascending key order (each prompt's rows then lie together), chunk by chunk:
/// memory stays a chunk of rows, not the input. Returns `None`, having written nothing that
/// counts (no manifest), as soon as keyed input turns out to be out of order.
pub(super) async fn clean_in_chunks<F, Fut>(
    files: &[crate::storage::Location],
    schema: &Schema,
    config: &CleanConfig,
    streamed: Streamed<'_>,
    begin: F,
    input: &str,
) -> Result<Option<(StageWriter, Totals, u64)>>
where
    F: Fn(datafusion::arrow::datatypes::SchemaRef, bool) -> Fut,
    Fut: std::future::Future<Output = Result<StageWriter>>,
{
    use futures::StreamExt;
    let long = streamed.keyed_rows();
    let key_column = match &streamed {
        Streamed::Responses(v) if !v.has_prompt_id => &config.columns.prompt,
        _ => &config.columns.prompt_id,
    };
    let mut stream = crate::reader::stream_in_order(files, schema)?;
    let mut writer: Option<StageWriter> = None;
    let mut totals = Totals::default();
    let mut excluded = 0u64;
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;
    let mut rows_done = 0usize;
    let mut last_key: Option<String> = None;
    let mut progress = Progress::new("clean", streamed.rows());
    loop {
        let next = stream.next().await.transpose()?;
        let finished = next.is_none();
        if let Some(batch) = next {
            if long && !keys_continue_in_order(&batch, key_column, &mut last_key)? {
                return Ok(None);
            }
            pending_rows += batch.num_rows();
            pending.push(batch);
            if pending_rows < CHUNK_ROWS {
                continue;
            }
        }
        // The chunk: everything pending, less (long layout, more to come) the rows of its
        // last prompt, which may continue in the next batch.
        let mut carry = Vec::new();
        if long && !finished {
            match hold_back_last_prompt(&mut pending, key_column)? {
                Some(last_prompt) => carry.push(last_prompt),
                // The whole batch is one prompt: keep gathering.
                None => continue,
            }
        }
        let chunk = std::mem::replace(&mut pending, carry);
        pending_rows = pending.iter().map(RecordBatch::num_rows).sum();
        let chunk_rows: usize = chunk.iter().map(RecordBatch::num_rows).sum();
        if chunk_rows > 0 {
            let (batches, chunk_totals, chunk_excluded) =
                clean_chunk(&chunk, config, &streamed, rows_done, input)?;
            for batch in &batches {
                if writer.is_none() {
                    // Rows keyed by prompt id come out in its order (or not at all).
                    writer = Some(begin(batch.schema(), streamed.sorted_output()).await?);
                }
                writer.as_mut().expect("begun").write(batch).await?;
            }
            totals.merge(chunk_totals);
            excluded += chunk_excluded;
            rows_done += chunk_rows;
            progress.advance(chunk_rows as u64);
        }
        if finished {
            break;
        }
    }
    progress.finish();
    match writer {
        Some(writer) => Ok(Some((writer, totals, excluded))),
        None => Err(Error::EmptyInput { path: input.into() }),
    }
}

/// Whether the prompt keys of a long batch keep ascending from `last_key` (equal keys
/// continue a prompt); `last_key` becomes the batch's last key.
fn keys_continue_in_order(
    batch: &RecordBatch,
    key_column: &str,
    last_key: &mut Option<String>,
) -> Result<bool> {
    let keys = batch.column(batch.schema().index_of(key_column)?);
    for r in 0..batch.num_rows() {
        // Nulls are reported by clean_long, which names the row.
        let Some(key) = string_at(keys, r) else {
            continue;
        };
        match last_key {
            Some(previous) if previous.as_str() > key => return Ok(false),
            Some(previous) if previous.as_str() == key => {}
            _ => *last_key = Some(key.to_string()),
        }
    }
    Ok(true)
}

/// Cuts the rows of the last prompt off the last pending batch and returns them, or `None`
/// (nothing cut) when that batch is all one prompt.
fn hold_back_last_prompt(
    pending: &mut Vec<RecordBatch>,
    key_column: &str,
) -> Result<Option<RecordBatch>> {
    let last = pending.last().expect("a batch was just added");
    let keys = last.column(last.schema().index_of(key_column)?);
    let end = last.num_rows();
    let key_at = |r: usize| string_at(keys, r);
    let mut cut = end;
    while cut > 0 && key_at(cut - 1) == key_at(end - 1) {
        cut -= 1;
    }
    if cut == 0 {
        return Ok(None);
    }
    let last = pending.pop().expect("checked");
    pending.push(last.slice(0, cut));
    Ok(Some(last.slice(cut, end - cut)))
}

/// Cleans one chunk in the input's layout; `rows_done` (the rows before it) names bad rows.
fn clean_chunk(
    chunk: &[RecordBatch],
    config: &CleanConfig,
    streamed: &Streamed<'_>,
    rows_done: usize,
    input: &str,
) -> Result<(Vec<RecordBatch>, Totals, u64)> {
    match streamed {
        Streamed::Responses(v) if v.layout == Layout::Long => {
            clean_long(chunk, config, v.has_response_index, v.has_prompt_id, false)
        }
        Streamed::Responses(_) => clean_wide(chunk, config, rows_done, false),
        Streamed::Comparisons { .. } => {
            clean_comparisons(chunk, config, input, rows_done as u64, false)
        }
    }
}
