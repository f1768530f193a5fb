//! From a pair table to token sequences the trainer can batch.
//!
//! * The table is read like every other pair input (plain or Hugging Face
//!   `ultrafeedback_binarized` layout), sorted by `prompt_id`.
//! * Each side is rendered with the model's chat template (the prompt as the conversation with
//!   the assistant turn opened, the response with its end-of-turn marker) and tokenized; the
//!   prompt is context only, never trained on.
//! * Truncation: a prompt longer than `max-prompt-length` keeps its start or its end; a row
//!   whose prompt alone fills `max-length` is dropped and counted; a response that does not fit
//!   in what is left is cut (keeping its start).
//! * Rating gaps (Decision 7): `rating_gap`, else `score_chosen − score_rejected`; divided by
//!   the standard deviation (ddof = 0) of the table's finite gaps, a factor the run records.
//!   A null gap means unrated; a NaN or infinite one is an error naming the rows when a
//!   rating-aware loss is used.
//! * MixDPO (Decision 8): `route` (`dpo` | `sft`) and `curriculum_rank` from `prefsmith route`.
//! * Reference log-probs: `ref_logp_chosen` / `ref_logp_rejected` (from `prefsmith score
//!   --role reference`) when present.
//! * The evaluation split: the pairs whose seeded hash of `prompt_id` ranks lowest.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use prefsmith_model::LanguageModel;
use prefsmith_pipeline::formats::{PairInput, sorted_by_prompt_id};
use prefsmith_pipeline::reader::string_at;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::stages::pairs::{Cut, pair_side, truncate};
use crate::train::config::{DataSection, MixDpo};

/// One training pair, tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainPair {
    /// Row in the `prompt_id`-sorted table.
    pub row: usize,
    /// The prompt's id.
    pub prompt_id: String,
    /// Prompt tokens (template applied, possibly truncated).
    pub prompt: Vec<u32>,
    /// Chosen response tokens (possibly cut).
    pub chosen: Vec<u32>,
    /// Rejected response tokens (possibly cut).
    pub rejected: Vec<u32>,
    /// Whether anything was cut.
    pub truncated: bool,
    /// Normalised rating gap, `None` when unrated.
    pub rating_gap: Option<f64>,
    /// MixDPO: routed to SFT on the chosen response.
    pub sft: bool,
    /// MixDPO: position in the curriculum (1 = largest margin).
    pub curriculum_rank: Option<i64>,
    /// Reference log-probs (chosen, rejected), from the table or computed.
    pub ref_logps: Option<(f64, f64)>,
}

/// What loading did, for the run summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataStats {
    /// Rows in the table.
    pub rows: usize,
    /// Rows dropped because the prompt alone fills `max-length`.
    pub dropped_prompt_too_long: usize,
    /// Rows with a truncated prompt or response.
    pub truncated: usize,
    /// Rows with a finite rating gap.
    pub rated: usize,
    /// The standard deviation the raw gaps were divided by.
    pub rating_gap_std: Option<f64>,
    /// Whether MixDPO routing is on.
    pub mixdpo: bool,
    /// Training pairs.
    pub train_pairs: usize,
    /// Evaluation pairs.
    pub eval_pairs: usize,
    /// Whether reference log-probs came from the table.
    pub reference_from_table: bool,
    /// sha256 (first 16 bytes, hex) over every token sequence, gap, route and reference value.
    pub data_hash: String,
    /// Pairs kept by `data.subset` (before the eval split), when set.
    pub subset: Option<usize>,
}

/// The training and evaluation pairs.
#[derive(Debug, Clone)]
pub struct PairData {
    /// Training pairs, in table order.
    pub train: Vec<TrainPair>,
    /// Held-out pairs, in table order.
    pub eval: Vec<TrainPair>,
    /// Counts.
    pub stats: DataStats,
}

/// The float values of `name` (cast from any numeric type), if the column exists.
fn float_column(batch: &RecordBatch, name: &str, input: &str) -> Result<Option<ArrayRef>> {
    let Some(column) = batch.column_by_name(name) else {
        return Ok(None);
    };
    if !column.data_type().is_numeric() {
        return Err(Error::Input(format!(
            "{input}: column '{name}' has type {}, expected a number",
            column.data_type()
        )));
    }
    Ok(Some(cast(column, &DataType::Float64)?))
}

fn value_at(column: &ArrayRef, row: usize) -> Option<f64> {
    let values = column.as_primitive::<Float64Type>();
    (!values.is_null(row)).then(|| values.value(row))
}

/// Names up to five rows for an error message.
fn name_rows(rows: &[(usize, String)]) -> String {
    let shown: Vec<String> = rows
        .iter()
        .take(5)
        .map(|(row, id)| format!("row {row} (prompt_id {id})"))
        .collect();
    let more = rows.len().saturating_sub(5);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Reads, tokenizes and splits the pair table. `needs_rating`: a rating-aware loss is used.
pub async fn load_pairs(
    data: &DataSection,
    lm: &LanguageModel,
    needs_rating: bool,
    seed: u64,
) -> Result<PairData> {
    let input = data.pairs.as_str();
    let pairs = PairInput::open(input, data.input_format).await?;
    pairs.schema.require(
        &["prompt", "chosen", "rejected"],
        "train reads both responses",
    )?;
    let batches = pairs.read_all().await?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Err(Error::Input(format!(
            "{input}: the pair table has no rows; nothing to train on"
        )));
    }
    let batch = sorted_by_prompt_id(&batches[0].schema(), &batches)?;
    let rows = batch.num_rows();
    let ids = batch
        .column_by_name("prompt_id")
        .ok_or_else(|| Error::Input(format!("{input}: no prompt_id column")))?;
    let prompt_id = |row: usize| string_at(ids, row).unwrap_or_default().to_string();

    // MixDPO routing.
    let route_column = batch.column_by_name("route");
    let mixdpo = match (data.mixdpo, route_column) {
        (MixDpo::Off, _) | (MixDpo::Auto, None) => false,
        (MixDpo::Auto | MixDpo::On, Some(_)) => true,
        (MixDpo::On, None) => {
            return Err(Error::Input(format!(
                "{input}: data.mixdpo = \"on\" needs a 'route' column (run `prefsmith route` first)"
            )));
        }
    };
    let curriculum = if mixdpo {
        let column = batch.column_by_name("curriculum_rank").ok_or_else(|| {
            Error::Input(format!(
                "{input}: a 'route' column without 'curriculum_rank' (MixDPO orders by it)"
            ))
        })?;
        Some(cast(column, &DataType::Int64)?)
    } else {
        None
    };

    // Rating gaps, raw.
    let gap_column = float_column(&batch, "rating_gap", input)?;
    let score_columns = (
        float_column(&batch, "score_chosen", input)?,
        float_column(&batch, "score_rejected", input)?,
    );
    let raw_gap = |row: usize| -> Option<f64> {
        if let Some(c) = &gap_column {
            return value_at(c, row);
        }
        match &score_columns {
            (Some(c), Some(r)) => Some(value_at(c, row)? - value_at(r, row)?),
            _ => None,
        }
    };

    // Reference log-probs from the table.
    let ref_columns = match (
        float_column(&batch, "ref_logp_chosen", input)?,
        float_column(&batch, "ref_logp_rejected", input)?,
    ) {
        (Some(c), Some(r)) => Some((c, r)),
        (None, None) => None,
        _ => {
            return Err(Error::Input(format!(
                "{input}: only one of ref_logp_chosen / ref_logp_rejected is present"
            )));
        }
    };
    let ref_token_columns = (
        float_column(&batch, "ref_prompt_tokens", input)?,
        float_column(&batch, "ref_tokens_chosen", input)?,
        float_column(&batch, "ref_tokens_rejected", input)?,
    );

    let mut stats = DataStats {
        rows,
        mixdpo,
        reference_from_table: ref_columns.is_some(),
        ..Default::default()
    };
    let mut out: Vec<TrainPair> = Vec::with_capacity(rows);
    let mut bad_gaps = Vec::new();
    let mut bad_refs = Vec::new();
    let mut truncated_with_refs = Vec::new();
    let mut token_mismatch = Vec::new();
    for row in 0..rows {
        let id = prompt_id(row);
        let where_ = || format!("{input}: row {row} (prompt_id {id})");
        let (request, chosen_text) = pair_side(&batch, "chosen", row)?;
        let (_, rejected_text) = pair_side(&batch, "rejected", row)?;
        let mut prompt = lm.prompt_ids(&request)?;
        let mut chosen = lm.response_ids(&chosen_text)?;
        let mut rejected = lm.response_ids(&rejected_text)?;
        if prompt.is_empty() {
            return Err(Error::Input(format!("{}: the prompt is empty", where_())));
        }
        if chosen.is_empty() || rejected.is_empty() {
            return Err(Error::Input(format!(
                "{}: a response has no tokens",
                where_()
            )));
        }
        let truncated = match truncate(
            &mut prompt,
            &mut [&mut chosen, &mut rejected],
            data.max_length,
            data.max_prompt_length,
            data.truncation,
        ) {
            Cut::PromptTooLong => {
                stats.dropped_prompt_too_long += 1;
                continue;
            }
            Cut::Truncated => true,
            Cut::None => false,
        };
        stats.truncated += truncated as usize;

        let rating_gap = match raw_gap(row) {
            Some(g) if !g.is_finite() => {
                bad_gaps.push((row, id.clone()));
                None
            }
            other => other,
        };
        let (sft, curriculum_rank) = match (&curriculum, route_column) {
            (Some(ranks), Some(routes)) => {
                let route = string_at(routes, row);
                let sft = match route {
                    Some("sft") => true,
                    Some("dpo") => false,
                    other => {
                        return Err(Error::Input(format!(
                            "{}: route {other:?}, expected \"dpo\" or \"sft\"",
                            where_()
                        )));
                    }
                };
                let ranks = ranks.as_primitive::<Int64Type>();
                if ranks.is_null(row) {
                    return Err(Error::Input(format!(
                        "{}: curriculum_rank is null",
                        where_()
                    )));
                }
                (sft, Some(ranks.value(row)))
            }
            _ => (false, None),
        };
        let ref_logps = match &ref_columns {
            Some((c, r)) => match (value_at(c, row), value_at(r, row)) {
                (Some(c), Some(r)) if c.is_finite() && r.is_finite() => {
                    // The table's values are usable only for exactly the sequences trained on:
                    // `score` records the lengths it scored.
                    let (tp, tc, tr) = &ref_token_columns;
                    match (tp, tc, tr) {
                        (Some(tp), Some(tc), Some(tr)) => {
                            let scored = (value_at(tp, row), value_at(tc, row), value_at(tr, row));
                            let ours = (
                                Some(prompt.len() as f64),
                                Some(chosen.len() as f64),
                                Some(rejected.len() as f64),
                            );
                            if scored != ours {
                                token_mismatch.push((row, id.clone()));
                            }
                        }
                        _ if truncated => truncated_with_refs.push((row, id.clone())),
                        _ => {}
                    }
                    Some((c, r))
                }
                _ => {
                    bad_refs.push((row, id.clone()));
                    None
                }
            },
            None => None,
        };
        out.push(TrainPair {
            row,
            prompt_id: id,
            prompt,
            chosen,
            rejected,
            truncated,
            rating_gap,
            sft,
            curriculum_rank,
            ref_logps,
        });
    }
    if needs_rating && !bad_gaps.is_empty() {
        return Err(Error::Input(format!(
            "{input}: the rating gap is NaN or infinite in {} (a rating-aware loss needs a \
             finite gap, or null for an unrated pair)",
            name_rows(&bad_gaps)
        )));
    }
    if !bad_refs.is_empty() {
        return Err(Error::Input(format!(
            "{input}: ref_logp_chosen / ref_logp_rejected is null, NaN or infinite in {}",
            name_rows(&bad_refs)
        )));
    }
    if !truncated_with_refs.is_empty() {
        return Err(Error::Input(format!(
            "{input}: the table's reference log-probs cover whole sequences, but {} must be \
             truncated to data.max-length / max-prompt-length; score the table with the same \
             limits (`prefsmith score --max-length … --max-prompt-length …`), raise the limits, \
             or drop the ref_logp_* columns so that the trainer computes them",
            name_rows(&truncated_with_refs)
        )));
    }
    if !token_mismatch.is_empty() {
        return Err(Error::Input(format!(
            "{input}: the sequences the table's reference log-probs were computed on \
             (ref_prompt_tokens, ref_tokens_*) are not those trained on in {}: score the table \
             with the policy's tokenizer and chat template and with the same --max-length, \
             --max-prompt-length and --truncation as data.* here",
            name_rows(&token_mismatch)
        )));
    }
    if out.is_empty() {
        return Err(Error::Input(format!(
            "{input}: every one of the {rows} rows has a prompt of at least data.max-length = {} \
             tokens; nothing to train on",
            data.max_length
        )));
    }

    // Normalise the gaps by their standard deviation (ddof = 0).
    let gaps: Vec<f64> = out.iter().filter_map(|p| p.rating_gap).collect();
    stats.rated = gaps.len();
    if !gaps.is_empty() {
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let std = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        if std > 0.0 && std.is_finite() {
            stats.rating_gap_std = Some(std);
            for p in &mut out {
                p.rating_gap = p.rating_gap.map(|g| g / std);
            }
        } else if needs_rating {
            return Err(Error::Input(format!(
                "{input}: every rating gap is {mean}; their standard deviation is 0, so they \
                 cannot be normalised for a rating-aware loss"
            )));
        }
    } else if needs_rating {
        return Err(Error::Input(format!(
            "{input}: a rating-aware loss (rdpo, ml-rdpo) needs a 'rating_gap' column or \
             'score_chosen' and 'score_rejected', and at least one rated pair"
        )));
    }

    if let Some(n) = data.subset {
        if n < 2 {
            return Err(Error::Config(format!(
                "data.subset = {n}: a subset needs at least 2 pairs"
            )));
        }
        let keep = smallest_by_hash(&out, n, &format!("subset:{seed}"));
        out = out
            .into_iter()
            .zip(keep)
            .filter_map(|(pair, kept)| kept.then_some(pair))
            .collect();
        stats.subset = Some(out.len());
    }
    let (train, eval) = split(out, data.eval_fraction, seed);
    stats.train_pairs = train.len();
    stats.eval_pairs = eval.len();
    stats.data_hash = data_hash(train.iter().chain(&eval));
    Ok(PairData { train, eval, stats })
}

/// Holds out `round(fraction · n)` pairs: those whose sha256 of `"{seed}:{prompt_id}:{row}"`
/// is smallest. Both halves keep table order.
fn split(pairs: Vec<TrainPair>, fraction: f64, seed: u64) -> (Vec<TrainPair>, Vec<TrainPair>) {
    let n_eval = ((fraction * pairs.len() as f64).round() as usize).min(pairs.len() - 1);
    if n_eval == 0 {
        return (pairs, Vec::new());
    }
    let is_eval = smallest_by_hash(&pairs, n_eval, &seed.to_string());
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (pair, held_out) in pairs.into_iter().zip(is_eval) {
        if held_out {
            eval.push(pair);
        } else {
            train.push(pair);
        }
    }
    (train, eval)
}

/// Marks the `n` pairs whose sha256 of `"{salt}:{prompt_id}:{row}"` is smallest.
fn smallest_by_hash(pairs: &[TrainPair], n: usize, salt: &str) -> Vec<bool> {
    let mut keyed: Vec<([u8; 32], usize)> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let digest = Sha256::digest(format!("{salt}:{}:{}", p.prompt_id, p.row).as_bytes());
            (digest.into(), i)
        })
        .collect();
    keyed.sort();
    let mut marked = vec![false; pairs.len()];
    for (_, i) in keyed.iter().take(n) {
        marked[*i] = true;
    }
    marked
}

fn data_hash<'a>(pairs: impl Iterator<Item = &'a TrainPair>) -> String {
    let mut hasher = Sha256::new();
    for p in pairs {
        for side in [&p.prompt, &p.chosen, &p.rejected] {
            hasher.update((side.len() as u64).to_le_bytes());
            for t in side.iter() {
                hasher.update(t.to_le_bytes());
            }
        }
        hasher.update(p.rating_gap.unwrap_or(f64::NAN).to_le_bytes());
        hasher.update([p.sft as u8]);
        hasher.update(p.curriculum_rank.unwrap_or(-1).to_le_bytes());
        if let Some((c, r)) = p.ref_logps {
            hasher.update(c.to_le_bytes());
            hasher.update(r.to_le_bytes());
        }
    }
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_seeded_and_keeps_order() {
        let pairs: Vec<TrainPair> = (0..20)
            .map(|i| TrainPair {
                row: i,
                prompt_id: format!("p{i:02}"),
                prompt: vec![1],
                chosen: vec![2],
                rejected: vec![3],
                truncated: false,
                rating_gap: None,
                sft: false,
                curriculum_rank: None,
                ref_logps: None,
            })
            .collect();
        let (train, eval) = split(pairs.clone(), 0.25, 7);
        assert_eq!((train.len(), eval.len()), (15, 5));
        assert!(eval.windows(2).all(|w| w[0].row < w[1].row));
        let again = split(pairs.clone(), 0.25, 7).1;
        assert_eq!(eval, again);
        assert_ne!(eval, split(pairs, 0.25, 8).1);
    }
}
