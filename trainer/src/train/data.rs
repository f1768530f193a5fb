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
//! * Rating gaps (`docs/ALGORITHMS.md` §7.1–§7.2): `rating_gap`, else `score_chosen − score_rejected`; divided by
//!   the standard deviation (ddof = 0) of the table's finite gaps, a factor the run records.
//!   A null gap means unrated; a NaN or infinite one is an error naming the rows when a
//!   rating-aware loss is used.
//! * MixDPO (`docs/ALGORITHMS.md` §8): `route` (`dpo` | `sft`) and `curriculum_rank` from `prefsmith route`.
//! * Reference log-probs: `ref_logp_chosen` / `ref_logp_rejected` (from `prefsmith score
//!   --role reference`) when present.
//! * The evaluation split: the pairs whose seeded hash of `prompt_id` ranks lowest.

use datafusion::arrow::array::RecordBatch;
use prefsmith_model::LanguageModel;
use prefsmith_pipeline::formats::{PairInput, sorted_by_prompt_id};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::stages::pairs::{Cut, pair_side, truncate};
use crate::train::config::DataSection;
use crate::train::pair_columns::{PairColumns, TableReference};

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
    let batch = read_sorted(data).await?;
    let rows = batch.num_rows();
    let columns = PairColumns::of(&batch, data.mixdpo, input)?;
    let mut stats = DataStats {
        rows,
        mixdpo: columns.mixdpo,
        reference_from_table: columns.has_reference(),
        ..Default::default()
    };
    let mut out: Vec<TrainPair> = Vec::with_capacity(rows);
    let mut problems = RowProblems::default();
    for row in 0..rows {
        let id = columns.prompt_id(row);
        let where_ = || format!("{input}: row {row} (prompt_id {id})");
        let Some(tokens) = tokenize_row(&batch, row, lm, data, where_)? else {
            stats.dropped_prompt_too_long += 1;
            continue;
        };
        stats.truncated += tokens.truncated as usize;
        let rating_gap = match columns.raw_gap(row) {
            Some(g) if !g.is_finite() => {
                problems.bad_gaps.push((row, id.clone()));
                None
            }
            other => other,
        };
        let (sft, curriculum_rank) = columns.route(row, where_)?;
        let ref_logps = match columns.reference(row) {
            TableReference::Absent => None,
            TableReference::Invalid => {
                problems.bad_refs.push((row, id.clone()));
                None
            }
            TableReference::Valid {
                logps,
                scored_tokens,
            } => {
                // The table's values are usable only for exactly the sequences trained on:
                // `score` records the lengths it scored.
                match scored_tokens {
                    Some(scored) => {
                        let ours = (
                            Some(tokens.prompt.len() as f64),
                            Some(tokens.chosen.len() as f64),
                            Some(tokens.rejected.len() as f64),
                        );
                        if scored != ours {
                            problems.token_mismatch.push((row, id.clone()));
                        }
                    }
                    None if tokens.truncated => {
                        problems.truncated_with_refs.push((row, id.clone()))
                    }
                    None => {}
                }
                Some(logps)
            }
        };
        out.push(TrainPair {
            row,
            prompt_id: id,
            prompt: tokens.prompt,
            chosen: tokens.chosen,
            rejected: tokens.rejected,
            truncated: tokens.truncated,
            rating_gap,
            sft,
            curriculum_rank,
            ref_logps,
        });
    }
    problems.check(input, needs_rating)?;
    if out.is_empty() {
        return Err(Error::Input(format!(
            "{input}: every one of the {rows} rows has a prompt of at least data.max-length = {} \
             tokens; nothing to train on",
            data.max_length
        )));
    }
    normalise_gaps(&mut out, &mut stats, needs_rating, input)?;
    if let Some(n) = data.subset {
        out = take_subset(out, n, seed)?;
        stats.subset = Some(out.len());
    }
    let (train, eval) = split(out, data.eval_fraction, seed);
    stats.train_pairs = train.len();
    stats.eval_pairs = eval.len();
    stats.data_hash = data_hash(train.iter().chain(&eval));
    Ok(PairData { train, eval, stats })
}

/// The pair table of `data.pairs`, all of it, sorted by `prompt_id`.
async fn read_sorted(data: &DataSection) -> Result<RecordBatch> {
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
    Ok(sorted_by_prompt_id(&batches[0].schema(), &batches)?)
}

/// A row's token sequences after truncation.
struct RowTokens {
    prompt: Vec<u32>,
    chosen: Vec<u32>,
    rejected: Vec<u32>,
    /// Whether the prompt or a response was cut.
    truncated: bool,
}

/// Renders and tokenizes both sides of `row` and cuts them to the configured lengths; `None`
/// when the prompt alone fills `max-length`. `where_` names the row in errors.
fn tokenize_row(
    batch: &RecordBatch,
    row: usize,
    lm: &LanguageModel,
    data: &DataSection,
    where_: impl Fn() -> String,
) -> Result<Option<RowTokens>> {
    let (request, chosen_text) = pair_side(batch, "chosen", row)?;
    let (_, rejected_text) = pair_side(batch, "rejected", row)?;
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
        Cut::PromptTooLong => return Ok(None),
        Cut::Truncated => true,
        Cut::None => false,
    };
    Ok(Some(RowTokens {
        prompt,
        chosen,
        rejected,
        truncated,
    }))
}

/// Rows whose values cannot be trained on, collected over the whole table so that one error
/// names all of them.
#[derive(Default)]
struct RowProblems {
    /// A NaN or infinite rating gap.
    bad_gaps: Vec<(usize, String)>,
    /// A null, NaN or infinite reference log-prob.
    bad_refs: Vec<(usize, String)>,
    /// Reference log-probs of whole sequences for a row that is truncated.
    truncated_with_refs: Vec<(usize, String)>,
    /// Reference log-probs scored on other token sequences than those trained on.
    token_mismatch: Vec<(usize, String)>,
}

impl RowProblems {
    /// The first kind of problem found, as an error naming its rows. Bad rating gaps matter
    /// only to a rating-aware loss (`needs_rating`).
    fn check(&self, input: &str, needs_rating: bool) -> Result<()> {
        if needs_rating && !self.bad_gaps.is_empty() {
            return Err(Error::Input(format!(
                "{input}: the rating gap is NaN or infinite in {} (a rating-aware loss needs a \
                 finite gap, or null for an unrated pair)",
                name_rows(&self.bad_gaps)
            )));
        }
        if !self.bad_refs.is_empty() {
            return Err(Error::Input(format!(
                "{input}: ref_logp_chosen / ref_logp_rejected is null, NaN or infinite in {}",
                name_rows(&self.bad_refs)
            )));
        }
        if !self.truncated_with_refs.is_empty() {
            return Err(Error::Input(format!(
                "{input}: the table's reference log-probs cover whole sequences, but {} must be \
                 truncated to data.max-length / max-prompt-length; score the table with the same \
                 limits (`prefsmith score --max-length … --max-prompt-length …`), raise the limits, \
                 or drop the ref_logp_* columns so that the trainer computes them",
                name_rows(&self.truncated_with_refs)
            )));
        }
        if !self.token_mismatch.is_empty() {
            return Err(Error::Input(format!(
                "{input}: the sequences the table's reference log-probs were computed on \
                 (ref_prompt_tokens, ref_tokens_*) are not those trained on in {}: score the table \
                 with the policy's tokenizer and chat template and with the same --max-length, \
                 --max-prompt-length and --truncation as data.* here",
                name_rows(&self.token_mismatch)
            )));
        }
        Ok(())
    }
}

/// Divides the rating gaps by their standard deviation (ddof = 0), recorded in `stats`; a
/// rating-aware loss (`needs_rating`) needs rated pairs whose gaps differ.
fn normalise_gaps(
    out: &mut [TrainPair],
    stats: &mut DataStats,
    needs_rating: bool,
    input: &str,
) -> Result<()> {
    let gaps: Vec<f64> = out.iter().filter_map(|p| p.rating_gap).collect();
    stats.rated = gaps.len();
    if !gaps.is_empty() {
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let std = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        if std > 0.0 && std.is_finite() {
            stats.rating_gap_std = Some(std);
            for p in out.iter_mut() {
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
    Ok(())
}

/// `data.subset`: the `n` pairs whose seeded hash ranks lowest, in table order.
fn take_subset(out: Vec<TrainPair>, n: usize, seed: u64) -> Result<Vec<TrainPair>> {
    if n < 2 {
        return Err(Error::Config(format!(
            "data.subset = {n}: a subset needs at least 2 pairs"
        )));
    }
    let keep = smallest_by_hash(&out, n, &format!("subset:{seed}"));
    Ok(out
        .into_iter()
        .zip(keep)
        .filter_map(|(pair, kept)| kept.then_some(pair))
        .collect())
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
