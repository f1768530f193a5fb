//! The long layout of `clean` (one row per response): rows grouped by prompt into score
//! problems, solved, and the cleaning written back row by row, in input order.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, Float64Builder, Int64Builder, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field};

use super::columns::{floats, ints, with_columns};
use super::config::CleanConfig;
use super::solve::{Problem, Solved, solve_all};
use super::stats::Totals;
use crate::error::{Error, Result};
use crate::reader::string_at;

/// The rows of a long input grouped by prompt.
struct Grouped {
    /// Prompt keys, in order of first appearance.
    prompts: Vec<String>,
    /// Per prompt: the response indices and finite scores.
    problems: Vec<(Vec<i64>, Vec<f64>)>,
    /// Per batch, per row: (prompt, response index, whether the score is finite).
    row_keys: Vec<Vec<(usize, i64, bool)>>,
    /// Rows left out of the matrix for a null or non-finite score.
    excluded: u64,
}

/// Long layout: group rows by prompt, clean, write the columns back row by row.
pub(super) fn clean_long(
    batches: &[RecordBatch],
    config: &CleanConfig,
    has_index: bool,
    has_prompt_id: bool,
    report: bool,
) -> Result<(Vec<RecordBatch>, Totals, u64)> {
    let grouped = group_by_prompt(batches, config, has_index, has_prompt_id)?;
    reject_duplicate_indices(&grouped, config)?;
    let Grouped {
        prompts,
        problems,
        row_keys,
        excluded,
    } = grouped;
    let problems: Vec<Problem> = problems
        .into_iter()
        .map(|(indices, scores)| Problem::Scores { indices, scores })
        .collect();
    let solved = solve_all(&problems, config.settings(false), report);
    let mut totals = Totals::default();
    for (p, (_, cleaned)) in solved.iter().enumerate() {
        totals.add(&prompts[p], cleaned);
    }
    let mut out = Vec::with_capacity(batches.len());
    for (batch, keys) in batches.iter().zip(&row_keys) {
        out.push(cleaned_rows(batch, keys, &solved)?);
    }
    Ok((out, totals, excluded))
}

/// Reads every row's prompt, response index and score; a null key or index is an error.
fn group_by_prompt(
    batches: &[RecordBatch],
    config: &CleanConfig,
    has_index: bool,
    has_prompt_id: bool,
) -> Result<Grouped> {
    let c = &config.columns;
    // (batch, row) of every response, its prompt and index.
    let mut prompt_of: HashMap<String, usize> = HashMap::new();
    let mut prompts: Vec<String> = Vec::new();
    let mut problems: Vec<(Vec<i64>, Vec<f64>)> = Vec::new();
    let mut seen: Vec<i64> = Vec::new();
    let mut row_keys: Vec<Vec<(usize, i64, bool)>> = Vec::new();
    let mut excluded = 0u64;
    for batch in batches {
        let schema = batch.schema();
        let key_column = if has_prompt_id {
            &c.prompt_id
        } else {
            &c.prompt
        };
        let ids = batch.column(schema.index_of(key_column)?);
        let rewards = floats(batch.column(schema.index_of(&c.reward)?))?;
        let index = if has_index {
            Some(ints(batch.column(schema.index_of(&c.response_index)?))?)
        } else {
            None
        };
        let mut keys = Vec::with_capacity(batch.num_rows());
        for r in 0..batch.num_rows() {
            let Some(id) = string_at(ids, r) else {
                return Err(Error::InvalidData {
                    context: format!("column '{key_column}'"),
                    message: format!("row {r} is null"),
                });
            };
            let p = match prompt_of.get(id) {
                Some(&p) => p,
                None => {
                    prompt_of.insert(id.to_string(), prompts.len());
                    prompts.push(id.to_string());
                    problems.push((Vec::new(), Vec::new()));
                    seen.push(0);
                    prompts.len() - 1
                }
            };
            let idx = match &index {
                Some(a) if a.is_valid(r) => a.value(r),
                Some(_) => {
                    return Err(Error::InvalidData {
                        context: format!("column '{}'", c.response_index),
                        message: format!("row {r} (prompt {id}) is null"),
                    });
                }
                None => seen[p],
            };
            seen[p] += 1;
            let finite = rewards.is_valid(r) && rewards.value(r).is_finite();
            if finite {
                problems[p].0.push(idx);
                problems[p].1.push(rewards.value(r));
            } else {
                excluded += 1;
            }
            keys.push((p, idx, finite));
        }
        row_keys.push(keys);
    }
    Ok(Grouped {
        prompts,
        problems,
        row_keys,
        excluded,
    })
}

/// A prompt must not have a response index twice: the solver keys responses by index.
fn reject_duplicate_indices(grouped: &Grouped, config: &CleanConfig) -> Result<()> {
    let c = &config.columns;
    for (p, (indices, _)) in grouped.problems.iter().enumerate() {
        let mut sorted = indices.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::InvalidData {
                context: format!("column '{}'", c.response_index),
                message: format!(
                    "prompt {} has response index {} twice",
                    grouped.prompts[p], w[0]
                ),
            });
        }
    }
    Ok(())
}

/// One input batch with its cleaning columns (null where the row's score was left out).
fn cleaned_rows(
    batch: &RecordBatch,
    keys: &[(usize, i64, bool)],
    solved: &[Solved],
) -> Result<RecordBatch> {
    let (mut score, mut rank, mut flags, mut ok) = (
        Float64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Vec::new(),
    );
    for &(p, idx, finite) in keys {
        let (indices, cleaned) = &solved[p];
        ok.push(Some(cleaned.converged));
        match (finite, indices.binary_search(&idx)) {
            (true, Ok(k)) => {
                score.append_value(cleaned.scores[k]);
                rank.append_value(cleaned.ranks[k]);
                flags.append_value(cleaned.flagged_per_response[k]);
            }
            _ => {
                score.append_null();
                rank.append_null();
                flags.append_null();
            }
        }
    }
    with_columns(
        batch,
        vec![
            (
                Field::new("clean_score", DataType::Float64, true),
                Arc::new(score.finish()),
            ),
            (
                Field::new("clean_rank", DataType::Int64, true),
                Arc::new(rank.finish()),
            ),
            (
                Field::new("flagged_comparisons", DataType::Int64, true),
                Arc::new(flags.finish()),
            ),
            (
                Field::new("clean_converged", DataType::Boolean, false),
                Arc::new(BooleanArray::from(ok)),
            ),
        ],
    )
}
