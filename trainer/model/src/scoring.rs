//! Sequence log-probabilities: `lp(y) = Σ_t log π(y_t | x, y_<t)` over the response tokens only
//! (the prompt is context, never scored), for many (prompt, response) pairs at once.
//!
//! Pairs are grouped into padded batches by length (longest first, so padding stays small and
//! the token budget bounds memory), run through the model once, and the language-model head
//! is applied only at the positions that predict a response token — for long prompts that is
//! most of the work saved. [`token_logps`] is differentiable, so the trainer uses the same code.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::llama::{AttentionMask, Llama, Positions};
use crate::lm::LanguageModel;
use crate::sequence::ScoreItem;

/// The summed log-prob of one response and how many tokens it has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequenceScore {
    /// `Σ log π(y_t | …)` in nats.
    pub logp: f64,
    /// Response tokens scored.
    pub tokens: usize,
}

/// Which side padding goes on. The result does not depend on it (a test checks that);
/// right padding needs no mask and is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingSide {
    /// Pad after the sequence.
    #[default]
    Right,
    /// Pad before the sequence (positions and attention shifted accordingly).
    Left,
}

/// The arithmetic of a scoring pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// f32 throughout, on the configured device (the trainer's own arithmetic).
    #[default]
    F32,
    /// 8-bit integer linear layers on the CPU ([`crate::int8`]): several times faster on CPUs
    /// with AVX-512 VNNI, log-probs within a few hundredths of a nat per token of f32's.
    Int8,
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "f32" => Ok(Self::F32),
            "int8" => Ok(Self::Int8),
            other => Err(Error::Config(format!(
                "precision '{other}': expected f32 or int8"
            ))),
        }
    }
}

/// How scoring batches.
#[derive(Debug, Clone, Copy)]
pub struct ScoreOptions {
    /// Upper bound on `rows × padded length` per forward pass.
    pub max_batch_tokens: usize,
    /// Padding side.
    pub padding: PaddingSide,
    /// The arithmetic.
    pub precision: Precision,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            max_batch_tokens: 4096,
            padding: PaddingSide::Right,
            precision: Precision::F32,
        }
    }
}

/// A padded batch on the device, with the positions whose hidden state predicts a scored
/// token.
#[derive(Debug, Clone)]
pub struct PaddedBatch {
    /// Token ids `[rows, width]`.
    pub ids: Tensor<2, Int>,
    /// Positions of the tokens.
    pub positions: Positions,
    /// Attention mask.
    pub mask: AttentionMask,
    /// Flat index `row · width + t` of each hidden state that predicts a scored token.
    pub predict_at: Tensor<1, Int>,
    /// The token each of those predicts.
    pub targets: Tensor<1, Int>,
    /// The row each scored token belongs to.
    pub owner: Vec<usize>,
    /// Rows.
    pub rows: usize,
    /// Padded length.
    pub width: usize,
}

impl PaddedBatch {
    /// Pads `items` to a common width with `pad_id`.
    pub fn new(items: &[&ScoreItem], pad_id: u32, side: PaddingSide, device: &Device) -> Self {
        let rows = items.len();
        let width = items.iter().map(|i| i.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows * width);
        let mut predict_at = Vec::new();
        let mut targets = Vec::new();
        let mut owner = Vec::new();
        let mut positions = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width * width);
        for (row, item) in items.iter().enumerate() {
            let pad = width - item.len();
            let start = match side {
                PaddingSide::Right => 0,
                PaddingSide::Left => pad,
            };
            let sequence = item.prompt.iter().chain(&item.response).map(|&t| t as i64);
            match side {
                PaddingSide::Right => {
                    ids.extend(sequence);
                    ids.extend(std::iter::repeat_n(pad_id as i64, pad));
                }
                PaddingSide::Left => {
                    ids.extend(std::iter::repeat_n(pad_id as i64, pad));
                    ids.extend(sequence);
                }
            }
            for (k, &token) in item.response.iter().enumerate() {
                // The token at sequence index p is predicted by the hidden state at p - 1.
                let p = start + item.prompt.len() + k;
                predict_at.push((row * width + p - 1) as i64);
                targets.push(token as i64);
                owner.push(row);
            }
            if side == PaddingSide::Left {
                positions.extend((0..width).map(|t| t.saturating_sub(pad) as i64));
                for i in 0..width {
                    // Padding keys are hidden; a padding query sees itself so no row is empty.
                    mask.extend((0..width).map(|j| j > i || (j < pad && j != i)));
                }
            }
        }
        let (positions, mask) = match side {
            PaddingSide::Right => (Positions::Contiguous(0), AttentionMask::Causal),
            PaddingSide::Left => (
                Positions::PerRow(Box::new(Tensor::from_data(
                    TensorData::new(positions, [rows, width]),
                    device,
                ))),
                AttentionMask::Explicit(Box::new(Tensor::<4, Bool>::from_data(
                    TensorData::new(mask, [rows, 1, width, width]),
                    device,
                ))),
            ),
        };
        let n = targets.len();
        Self {
            ids: Tensor::from_data(TensorData::new(ids, [rows, width]), device),
            positions,
            mask,
            predict_at: Tensor::from_data(TensorData::new(predict_at, [n]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
            owner,
            rows,
            width,
        }
    }
}

/// Rows of hidden states sent through the language-model head at once (bounds the
/// `rows × vocab` logits matrix: 1024 × 49152 floats is 200 MB).
const HEAD_CHUNK_ROWS: usize = 1024;

/// `log π(target)` for every scored token of `batch`, `[scored tokens]`, differentiable.
pub fn token_logps(model: &Llama, batch: &PaddedBatch) -> Tensor<1> {
    let hidden = model.hidden(batch.ids.clone(), &batch.positions, &batch.mask, None);
    let width = hidden.dims()[2];
    let flat = hidden.reshape([batch.rows * batch.width, width]);
    let scored = batch.targets.dims()[0];
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < scored {
        let len = HEAD_CHUNK_ROWS.min(scored - start);
        let at = batch.predict_at.clone().narrow(0, start, len);
        let targets = batch.targets.clone().narrow(0, start, len);
        let logits = model.logits(flat.clone().select(0, at));
        let logps = log_softmax(logits, 1).gather(1, targets.unsqueeze_dim::<2>(1));
        pieces.push(logps.reshape([len]));
        start += len;
    }
    if pieces.is_empty() {
        return Tensor::zeros([0], &batch.ids.device());
    }
    Tensor::cat(pieces, 0)
}

/// Per-row sums of per-token values (`[scored tokens]` → `[rows]`), differentiable.
pub fn sum_per_row(values: Tensor<1>, owner: &[usize], rows: usize) -> Tensor<1> {
    let n = owner.len();
    let mut one_hot = vec![0.0f32; rows * n];
    for (k, &row) in owner.iter().enumerate() {
        one_hot[row * n + k] = 1.0;
    }
    let device = values.device();
    let one_hot = Tensor::<2>::from_data(TensorData::new(one_hot, [rows, n]), &device);
    one_hot.matmul(values.reshape([n, 1])).reshape([rows])
}

/// Groups item indices into batches under the token budget, longest first.
pub fn plan_batches(items: &[ScoreItem], max_batch_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].len()));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match batches.last_mut() {
            // Sorted longest first: the batch's width is its first item's length.
            Some(batch) if (batch.len() + 1) * items[batch[0]].len() <= max_batch_tokens => {
                batch.push(i)
            }
            _ => batches.push(vec![i]),
        }
    }
    batches
}

/// Checks that every item fits the model and has something to score.
pub fn check_items(
    lm: &LanguageModel,
    items: &[ScoreItem],
    what: impl Fn(usize) -> String,
) -> Result<()> {
    let limit = lm.context_length();
    for (i, item) in items.iter().enumerate() {
        if item.prompt.is_empty() {
            return Err(Error::Input(format!("{}: the prompt is empty", what(i))));
        }
        if item.response.is_empty() {
            return Err(Error::Input(format!(
                "{}: the response has no tokens",
                what(i)
            )));
        }
        if item.len() > limit {
            return Err(Error::Input(format!(
                "{}: prompt + response is {} tokens, longer than the model's context of {limit}",
                what(i),
                item.len()
            )));
        }
    }
    Ok(())
}

/// Summed response log-probs for every item, in input order. `progress` is called with the
/// number of items finished after each batch.
pub fn score_sequences(
    lm: &LanguageModel,
    items: &[ScoreItem],
    options: ScoreOptions,
    mut progress: impl FnMut(usize),
) -> Result<Vec<SequenceScore>> {
    let device = lm.model.device();
    let mut out = vec![
        SequenceScore {
            logp: 0.0,
            tokens: 0
        };
        items.len()
    ];
    if options.precision == Precision::Int8 {
        let model = lm.int8()?;
        for plan in plan_batches(items, options.max_batch_tokens) {
            let batch_items: Vec<&ScoreItem> = plan.iter().map(|&i| &items[i]).collect();
            for (&i, logps) in plan.iter().zip(model.response_token_logps(&batch_items)?) {
                out[i] = SequenceScore {
                    logp: logps.iter().map(|&v| v as f64).sum(),
                    tokens: logps.len(),
                };
            }
            progress(plan.len());
        }
        return Ok(out);
    }
    for plan in plan_batches(items, options.max_batch_tokens) {
        let batch_items: Vec<&ScoreItem> = plan.iter().map(|&i| &items[i]).collect();
        let batch = PaddedBatch::new(&batch_items, lm.pad_id(), options.padding, &device);
        let values = token_logps(&lm.model, &batch)
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| Error::Input(format!("reading log-probs back: {e:?}")))?;
        for (value, &row) in values.iter().zip(&batch.owner) {
            let slot = &mut out[plan[row]];
            slot.logp += *value as f64;
            slot.tokens += 1;
        }
        progress(plan.len());
    }
    Ok(out)
}

/// The final-norm hidden state at each row's last token, `[rows, hidden]`, for right-padded
/// sequences (judge and classifier read their answer there).
pub fn last_hidden(model: &Llama, sequences: &[&[u32]], pad_id: u32, device: &Device) -> Tensor<2> {
    let rows = sequences.len();
    let width = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows * width);
    let mut last = Vec::with_capacity(rows);
    for (row, s) in sequences.iter().enumerate() {
        ids.extend(s.iter().map(|&t| t as i64));
        ids.extend(std::iter::repeat_n(pad_id as i64, width - s.len()));
        last.push((row * width + s.len() - 1) as i64);
    }
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, width]), device);
    let hidden = model.hidden(ids, &Positions::Contiguous(0), &AttentionMask::Causal, None);
    let size = hidden.dims()[2];
    hidden
        .reshape([rows * width, size])
        .select(0, Tensor::from_data(TensorData::new(last, [rows]), device))
}

/// The next-token logits after `ids` (one sequence, no template applied).
pub fn next_token_logits(lm: &LanguageModel, ids: &[u32]) -> Result<Vec<f32>> {
    if ids.is_empty() || ids.len() > lm.context_length() {
        return Err(Error::Input(format!(
            "{} tokens; the model takes 1 to {}",
            ids.len(),
            lm.context_length()
        )));
    }
    let hidden = last_hidden(&lm.model, &[ids], lm.pad_id(), &lm.model.device());
    lm.model
        .logits(hidden)
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Input(format!("reading logits back: {e:?}")))
}
