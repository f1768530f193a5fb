//! The comparisons input of `clean` (`prompt_id`, `i`, `j`, `outcome`, one row per judgment):
//! judgments grouped by prompt, solved, and one output row per (prompt_id, response_index).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::columns::{floats, ints};
use super::config::CleanConfig;
use super::solve::{Problem, solve_all};
use super::stats::Totals;
use crate::error::{Error, Result};
use crate::reader::string_at;

/// Per prompt id (ascending), its judgments (i, j, outcome).
type JudgmentsByPrompt = Vec<(String, Vec<(i64, i64, f64)>)>;

/// Comparisons: one output row per (prompt_id, response_index), sorted.
/// `first_row` is the number of input rows before `batches` (errors name rows over the whole
/// input); `report` prints progress (false when the caller reports chunk by chunk).
pub(super) fn clean_comparisons(
    batches: &[RecordBatch],
    config: &CleanConfig,
    input: &str,
    first_row: u64,
    report: bool,
) -> Result<(Vec<RecordBatch>, Totals, u64)> {
    let (by_prompt, skipped) = read_judgments(batches, config, input, first_row)?;
    let (prompts, problems): (Vec<String>, Vec<Problem>) = by_prompt
        .into_iter()
        .map(|(id, judgments)| (id, Problem::Judgments(judgments)))
        .unzip();
    let solved = solve_all(&problems, config.settings(true), report);
    let mut totals = Totals::default();
    let (mut ids, mut index, mut score, mut rank, mut flags, mut ok) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (prompt, (indices, cleaned)) in prompts.iter().zip(&solved) {
        totals.add(prompt, cleaned);
        for (k, &idx) in indices.iter().enumerate() {
            ids.push(prompt.as_str());
            index.push(idx);
            score.push(cleaned.scores[k]);
            rank.push(cleaned.ranks[k]);
            flags.push(cleaned.flagged_per_response[k]);
            ok.push(cleaned.converged);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("prompt_id", DataType::Utf8, false),
        Field::new("response_index", DataType::Int64, false),
        Field::new("clean_score", DataType::Float64, false),
        Field::new("clean_rank", DataType::Int64, false),
        Field::new("flagged_comparisons", DataType::Int64, false),
        Field::new("clean_converged", DataType::Boolean, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Int64Array::from(index)),
            Arc::new(Float64Array::from(score)),
            Arc::new(Int64Array::from(rank)),
            Arc::new(Int64Array::from(flags)),
            Arc::new(BooleanArray::from(ok)),
        ],
    )?;
    Ok((vec![batch], totals, skipped))
}

/// The judgments per prompt, in prompt order, and how many rows were skipped for a null
/// outcome; a null key or index, a negative index or an outcome outside [0, 1] is an error.
fn read_judgments(
    batches: &[RecordBatch],
    config: &CleanConfig,
    input: &str,
    first_row: u64,
) -> Result<(JudgmentsByPrompt, u64)> {
    let mut by_prompt: JudgmentsByPrompt = Vec::new();
    // Judgments of a prompt usually come together: the last prompt's slot is checked first, so
    // the map (and a key allocation) is touched once per run of rows, not once per row.
    let mut slot_of: HashMap<String, usize> = HashMap::new();
    let mut last: Option<usize> = None;
    let mut skipped = 0u64;
    let mut row_number = first_row;
    for batch in batches {
        let schema = batch.schema();
        let ids = batch.column(schema.index_of(&config.columns.prompt_id)?);
        let i = ints(batch.column(schema.index_of("i")?))?;
        let j = ints(batch.column(schema.index_of("j")?))?;
        let o = floats(batch.column(schema.index_of("outcome")?))?;
        for r in 0..batch.num_rows() {
            let bad = |message: String| Error::InvalidData {
                context: format!("{input}: row {}", row_number + r as u64),
                message,
            };
            let id = string_at(ids, r).ok_or_else(|| bad("prompt_id is null".into()))?;
            if i.is_null(r) || j.is_null(r) {
                return Err(bad("i and j must not be null".into()));
            }
            if i.value(r) < 0 || j.value(r) < 0 {
                return Err(bad(format!(
                    "response indices are 0-based, got ({}, {})",
                    i.value(r),
                    j.value(r)
                )));
            }
            if i.value(r) == j.value(r) {
                return Err(bad(format!(
                    "i = j = {}: a response judged against itself",
                    i.value(r)
                )));
            }
            if o.is_null(r) {
                skipped += 1;
                continue;
            }
            let outcome = o.value(r);
            if outcome.is_nan() {
                return Err(bad("outcome is NaN".into()));
            }
            if !(0.0..=1.0).contains(&outcome) {
                return Err(bad(format!(
                    "outcome must be in [0, 1] (the probability that i beats j), got {outcome}"
                )));
            }
            let slot = match last {
                Some(k) if by_prompt[k].0 == id => k,
                _ => *slot_of.entry(id.to_owned()).or_insert_with(|| {
                    by_prompt.push((id.to_owned(), Vec::new()));
                    by_prompt.len() - 1
                }),
            };
            last = Some(slot);
            by_prompt[slot].1.push((i.value(r), j.value(r), outcome));
        }
        row_number += batch.num_rows() as u64;
    }
    by_prompt.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok((by_prompt, skipped))
}
