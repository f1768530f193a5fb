//! The wide layout of `clean` (one row per prompt, scores as a list): one problem per row,
//! the cleaning written back as lists beside the input's.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Float64Builder, Int64Builder, ListBuilder, RecordBatch,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type};

use super::columns::with_columns;
use super::config::CleanConfig;
use super::solve::{Problem, Solved, solve_all};
use super::stats::Totals;
use crate::error::Result;
use crate::reader::string_at;

/// Wide layout: one problem per row.
pub(super) fn clean_wide(
    batches: &[RecordBatch],
    config: &CleanConfig,
    first_row: usize,
    report: bool,
) -> Result<(Vec<RecordBatch>, Totals, u64)> {
    let c = &config.columns;
    let mut problems = Vec::new();
    let mut labels = Vec::new();
    let mut lengths = Vec::new();
    let mut excluded = 0u64;
    for batch in batches {
        let schema = batch.schema();
        let lists = cast(
            batch.column(schema.index_of(&c.scores)?),
            &DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
        )?;
        let lists = lists.as_list::<i32>();
        let ids = schema.index_of(&c.prompt_id).ok().map(|i| batch.column(i));
        for r in 0..batch.num_rows() {
            let (mut indices, mut scores) = (Vec::new(), Vec::new());
            let len = if lists.is_valid(r) {
                lists.value_length(r) as usize
            } else {
                0
            };
            if lists.is_valid(r) {
                let values = lists.value(r);
                let values = values.as_primitive::<Float64Type>();
                for k in 0..values.len() {
                    if values.is_valid(k) && values.value(k).is_finite() {
                        indices.push(k as i64);
                        scores.push(values.value(k));
                    } else {
                        excluded += 1;
                    }
                }
            }
            labels.push(ids.and_then(|ids| string_at(ids, r)).map_or_else(
                || format!("row {}", first_row + labels.len()),
                str::to_string,
            ));
            lengths.push(len);
            problems.push(Problem::Scores { indices, scores });
        }
    }
    let solved = solve_all(&problems, config.settings(false), report);
    let mut totals = Totals::default();
    for (label, (_, cleaned)) in labels.iter().zip(&solved) {
        totals.add(label, cleaned);
    }
    let mut out = Vec::new();
    let mut next = 0;
    for batch in batches {
        let rows = next..next + batch.num_rows();
        out.push(cleaned_lists(batch, &solved[rows.clone()], &lengths[rows])?);
        next += batch.num_rows();
    }
    Ok((out, totals, excluded))
}

/// One input batch with its cleaning lists, `solved` and `lengths` being its rows': each list
/// as long as the row's score list, null where a score was left out.
fn cleaned_lists(batch: &RecordBatch, solved: &[Solved], lengths: &[usize]) -> Result<RecordBatch> {
    let mut score = ListBuilder::new(Float64Builder::new());
    let mut rank = ListBuilder::new(Int64Builder::new());
    let mut flags = ListBuilder::new(Int64Builder::new());
    let mut ok = Vec::new();
    for ((indices, cleaned), &length) in solved.iter().zip(lengths) {
        for k in 0..length as i64 {
            match indices.binary_search(&k) {
                Ok(p) => {
                    score.values().append_value(cleaned.scores[p]);
                    rank.values().append_value(cleaned.ranks[p]);
                    flags.values().append_value(cleaned.flagged_per_response[p]);
                }
                Err(_) => {
                    score.values().append_null();
                    rank.values().append_null();
                    flags.values().append_null();
                }
            }
        }
        score.append(true);
        rank.append(true);
        flags.append(true);
        ok.push(Some(cleaned.converged));
    }
    let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, true)));
    with_columns(
        batch,
        vec![
            (
                Field::new("clean_scores", list(DataType::Float64), true),
                Arc::new(score.finish()),
            ),
            (
                Field::new("clean_ranks", list(DataType::Int64), true),
                Arc::new(rank.finish()),
            ),
            (
                Field::new("flagged_comparisons", list(DataType::Int64), true),
                Arc::new(flags.finish()),
            ),
            (
                Field::new("clean_converged", DataType::Boolean, false),
                Arc::new(BooleanArray::from(ok)),
            ),
        ],
    )
}
