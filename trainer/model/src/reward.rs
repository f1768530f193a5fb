//! External rewards from a model.
//!
//! * **LLM-as-judge** (`docs/ALGORITHMS.md` §10): an instruct model reads [`JUDGE_INSTRUCTION`] with the
//!   request and the response, and the reward is the expected rating
//!   `Σ d·p(d) / Σ p(d)` over the next-token probabilities of the digit tokens `1`…`9` at the
//!   first token of its answer. Deterministic: no sampling, one forward pass per response.
//! * **Sequence classifier** (Hugging Face `LlamaForSequenceClassification`, the layout of
//!   reward models such as Skywork-Reward): the final hidden state of the last token of the
//!   templated conversation times the `score` head; the first output is the reward.

use crate::error::{Error, Result};
use crate::lm::LanguageModel;
use crate::scoring::{Precision, last_hidden};
use crate::tokenizer::ChatMessage;

/// The judge's instruction. Fixed, so that ratings are comparable across runs; it is part of
/// the stage's config hash through [`JUDGE_PROMPT_VERSION`].
pub const JUDGE_INSTRUCTION: &str = "Please act as an impartial judge and rate the quality of the \
assistant's response to the user's request below. Consider helpfulness, correctness, relevance \
and clarity. Rate on a scale of 1 to 9, where 1 means very poor and 9 means excellent. Answer \
with a single digit from 1 to 9 and nothing else.";

/// Bumped whenever [`judge_messages`] changes what the judge reads.
pub const JUDGE_PROMPT_VERSION: u32 = 1;

/// The conversation the judge answers: one user message holding the instruction, the request
/// (all its turns, labelled) and the response.
pub fn judge_messages(request: &[ChatMessage], response: &str) -> Vec<ChatMessage> {
    let request_text = match request {
        [only] => only.content.clone(),
        turns => turns
            .iter()
            .map(|m| format!("{}: {}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    vec![ChatMessage::new(
        "user",
        format!(
            "{JUDGE_INSTRUCTION}\n\n[User request]\n{request_text}\n\n[Assistant response]\n{response}\n\n[Rating (1-9)]"
        ),
    )]
}

/// The ids of the tokens `1`…`9`, or an error naming the first digit the vocabulary lacks.
pub fn digit_ids(lm: &LanguageModel) -> Result<[u32; 9]> {
    let mut ids = [0u32; 9];
    for (d, slot) in ids.iter_mut().enumerate() {
        let digit = (d + 1).to_string();
        *slot = lm.tokenizer.token_id(&digit).ok_or_else(|| {
            Error::Config(format!(
                "the judge model's vocabulary has no single token for the digit {digit}"
            ))
        })?;
    }
    Ok(ids)
}

/// What the judge said about one response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgeRating {
    /// `Σ d·p(d) / Σ p(d)` over the digits 1–9.
    pub rating: f64,
    /// `Σ p(d)`: how much of the next-token distribution the digits hold (low values mean the
    /// judge wanted to say something else).
    pub digit_mass: f64,
}

/// The expected rating from one row of next-token logits.
pub fn expected_rating(logits: &[f32], digits: &[u32; 9]) -> JudgeRating {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    let p: Vec<f64> = digits
        .iter()
        .map(|&id| (logits[id as usize] as f64 - max).exp())
        .collect();
    let mass: f64 = p.iter().sum();
    let weighted: f64 = p.iter().enumerate().map(|(d, p)| (d + 1) as f64 * p).sum();
    JudgeRating {
        rating: weighted / mass,
        digit_mass: mass / total,
    }
}

/// Token sequences for the judge, one per (request, response).
pub fn judge_sequences(
    lm: &LanguageModel,
    items: &[(Vec<ChatMessage>, String)],
) -> Result<Vec<Vec<u32>>> {
    items
        .iter()
        .map(|(request, response)| lm.prompt_ids(&judge_messages(request, response)))
        .collect()
}

/// Every sequence must have 1 to context-length tokens; an error names the first that has not.
fn check_sequences(lm: &LanguageModel, sequences: &[Vec<u32>]) -> Result<()> {
    let limit = lm.context_length();
    for (i, s) in sequences.iter().enumerate() {
        if s.is_empty() || s.len() > limit {
            return Err(Error::Input(format!(
                "item {i}: {} tokens; the model takes 1 to {limit}",
                s.len()
            )));
        }
    }
    Ok(())
}

/// Runs `sequences` in batches of about `max_batch_tokens` tokens and hands each batch's
/// last-token hidden states to `per_batch`; `progress` gets the count done.
fn for_last_hidden<T>(
    lm: &LanguageModel,
    sequences: &[Vec<u32>],
    max_batch_tokens: usize,
    mut per_batch: impl FnMut(burn::tensor::Tensor<2>) -> Result<Vec<T>>,
    mut progress: impl FnMut(usize),
) -> Result<Vec<T>> {
    check_sequences(lm, sequences)?;
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
    let mut out: Vec<Option<T>> = (0..sequences.len()).map(|_| None).collect();
    let device = lm.model.device();
    let mut start = 0;
    while start < order.len() {
        let width = sequences[order[start]].len();
        let rows = (max_batch_tokens / width).max(1).min(order.len() - start);
        let batch: Vec<&[u32]> = order[start..start + rows]
            .iter()
            .map(|&i| sequences[i].as_slice())
            .collect();
        let hidden = last_hidden(&lm.model, &batch, lm.pad_id(), &device);
        for (value, &i) in per_batch(hidden)?
            .into_iter()
            .zip(&order[start..start + rows])
        {
            out[i] = Some(value);
        }
        start += rows;
        progress(rows);
    }
    Ok(out
        .into_iter()
        .map(|v| v.expect("every item is in one batch"))
        .collect())
}

fn to_rows(t: burn::tensor::Tensor<2>) -> Result<(usize, Vec<f32>)> {
    let cols = t.dims()[1];
    let values = t
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Input(format!("reading outputs back: {e:?}")))?;
    Ok((cols, values))
}

/// Judge ratings for token sequences built by [`judge_sequences`], at `precision` (int8 runs
/// the CPU engine of [`crate::int8`]; its ratings differ from f32's by the rounding of
/// activations).
pub fn judge(
    lm: &LanguageModel,
    sequences: &[Vec<u32>],
    max_batch_tokens: usize,
    precision: Precision,
    mut progress: impl FnMut(usize),
) -> Result<Vec<JudgeRating>> {
    let digits = digit_ids(lm)?;
    if precision == Precision::Int8 {
        check_sequences(lm, sequences)?;
        let model = lm.int8()?;
        let mut ratings = Vec::with_capacity(sequences.len());
        // Consecutive sequences packed up to the token budget (no padding in this engine).
        let mut start = 0;
        while start < sequences.len() {
            let mut end = start + 1;
            let mut tokens = sequences[start].len();
            while end < sequences.len() && tokens + sequences[end].len() <= max_batch_tokens {
                tokens += sequences[end].len();
                end += 1;
            }
            let batch: Vec<&[u32]> = sequences[start..end].iter().map(Vec::as_slice).collect();
            let logits = model.last_logits(&batch)?;
            ratings.extend(logits.iter().map(|row| expected_rating(row, &digits)));
            progress(end - start);
            start = end;
        }
        return Ok(ratings);
    }
    for_last_hidden(
        lm,
        sequences,
        max_batch_tokens,
        |hidden| {
            let (vocab, logits) = to_rows(lm.model.logits(hidden))?;
            Ok(logits
                .chunks_exact(vocab)
                .map(|row| expected_rating(row, &digits))
                .collect())
        },
        progress,
    )
}

/// Classifier outputs (all labels) for token sequences of whole conversations.
pub fn classify(
    lm: &LanguageModel,
    sequences: &[Vec<u32>],
    max_batch_tokens: usize,
    progress: impl FnMut(usize),
) -> Result<Vec<Vec<f64>>> {
    for_last_hidden(
        lm,
        sequences,
        max_batch_tokens,
        |hidden| {
            let (labels, values) = to_rows(lm.model.classify(hidden)?)?;
            Ok(values
                .chunks_exact(labels)
                .map(|row| row.iter().map(|&v| v as f64).collect())
                .collect())
        },
        progress,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_rating_by_hand() {
        let mut logits = vec![0.0f32; 12];
        let digits = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        // Only "3" and "7" likely, equally: rating 5.
        logits[3] = 10.0;
        logits[7] = 10.0;
        let r = expected_rating(&logits, &digits);
        assert!((r.rating - 5.0).abs() < 1e-3, "{r:?}");
        assert!(r.digit_mass > 0.99);
        // Uniform logits: mean of 1..9 = 5, mass 9/12.
        let r = expected_rating(&[0.0; 12], &digits);
        assert!((r.rating - 5.0).abs() < 1e-12 && (r.digit_mass - 0.75).abs() < 1e-12);
    }
}
