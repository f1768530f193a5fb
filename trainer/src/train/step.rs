//! One optimizer step: the policy's forward pass over the micro-batches of a step, each
//! micro-batch's share of the loss and its gradients, their reduction, gradient clipping and
//! the AdamW update.

use std::time::Instant;

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use prefsmith_model::LanguageModel;
use prefsmith_model::llama::Llama;
use prefsmith_model::scoring::{PaddedBatch, PaddingSide, sum_per_row, token_logps};
use prefsmith_model::sequence::ScoreItem;

use crate::error::{Error, Result};
use crate::losses::{LossMix, PairBatch, PairLogps, StepTotals};
use crate::train::config::TrainConfig;
use crate::train::data::TrainPair;
use crate::train::metrics::MetricSums;
use crate::train::optim;

/// The summed log-probs of a micro-batch's sequences.
pub(super) struct Forward {
    /// Per pair: the chosen response's summed log-prob.
    pub(super) chosen: Tensor<1>,
    /// Per pair: the rejected response's, when the losses need it.
    pub(super) rejected: Option<Tensor<1>>,
    /// Tokens run (prompt + response, no padding).
    pub(super) tokens: usize,
}

/// Runs the policy over the chosen (and, for preference losses, rejected) sequences of
/// `pairs`, truncated already, right-padded.
pub(super) fn forward(
    model: &Llama,
    pairs: &[&TrainPair],
    both: bool,
    pad: u32,
    device: &Device,
) -> Forward {
    let mut items: Vec<ScoreItem> = pairs
        .iter()
        .map(|p| ScoreItem {
            prompt: p.prompt.clone(),
            response: p.chosen.clone(),
        })
        .collect();
    if both {
        items.extend(pairs.iter().map(|p| ScoreItem {
            prompt: p.prompt.clone(),
            response: p.rejected.clone(),
        }));
    }
    let tokens = items.iter().map(ScoreItem::len).sum();
    let refs: Vec<&ScoreItem> = items.iter().collect();
    let batch = PaddedBatch::new(&refs, pad, PaddingSide::Right, device);
    let sums = sum_per_row(token_logps(model, &batch), &batch.owner, batch.rows);
    let n = pairs.len();
    Forward {
        chosen: sums.clone().narrow(0, 0, n),
        rejected: both.then(|| sums.narrow(0, n, n)),
        tokens,
    }
}

fn floats(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// The values of `t` on the host.
pub(super) fn host(t: Tensor<1>) -> Result<Vec<f64>> {
    t.into_data()
        .try_into_vec_as::<f64>()
        .map_err(|e| Error::Input(format!("reading values back: {e:?}")))
}

/// The loss inputs of `pairs` given the policy's sums.
pub(super) fn pair_batch(pairs: &[&TrainPair], fwd: &Forward, device: &Device) -> PairBatch {
    let n = pairs.len();
    let zeros = || floats(vec![0.0; n], device);
    let refs = |f: fn(&(f64, f64)) -> f64| {
        floats(
            pairs
                .iter()
                .map(|p| p.ref_logps.as_ref().map_or(0.0, f) as f32)
                .collect(),
            device,
        )
    };
    PairBatch {
        logps: PairLogps {
            policy_chosen: fwd.chosen.clone(),
            policy_rejected: fwd.rejected.clone().unwrap_or_else(zeros),
            ref_chosen: refs(|r| r.0),
            ref_rejected: refs(|r| r.1),
        },
        chosen_tokens: floats(
            pairs.iter().map(|p| p.chosen.len() as f32).collect(),
            device,
        ),
        rejected_tokens: floats(
            pairs.iter().map(|p| p.rejected.len() as f32).collect(),
            device,
        ),
        rating_gap: floats(
            pairs
                .iter()
                .map(|p| p.rating_gap.unwrap_or(0.0) as f32)
                .collect(),
            device,
        ),
        rated: floats(
            pairs
                .iter()
                .map(|p| if p.rating_gap.is_some() { 1.0 } else { 0.0 })
                .collect(),
            device,
        ),
    }
}

/// The one place where the gradients of a step's micro-batches are combined (summed: each
/// micro-batch's loss is already its share of the step mean). A data-parallel version
/// all-reduces here.
pub fn reduce_gradients(
    model: &Llama,
    accumulator: &mut GradientsAccumulator<Llama>,
    micro: GradientsParams,
) {
    accumulator.accumulate(model, micro);
}

/// What one optimizer step did.
pub(super) struct StepResult {
    /// The step's metric sums (loss, rewards, pairs, tokens).
    pub(super) sums: MetricSums,
    /// The global gradient norm before clipping.
    pub(super) grad_norm: f64,
    /// The learning rate the step used.
    pub(super) learning_rate: f64,
    /// Where the step's wall-clock time went.
    pub(super) phases: PhaseSeconds,
}

/// A step's wall-clock time by phase. burn's CPU backend runs each operation when it is
/// called, so the clock between calls measures the work itself; autodiff bookkeeping is
/// inside `forward` (recording the graph) and `backward` (walking it).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(super) struct PhaseSeconds {
    /// The policy's forward passes, the loss and reading the log-probs back.
    pub(super) forward: f64,
    /// The backward passes and the accumulation of the micro-batches' gradients.
    pub(super) backward: f64,
    /// The gradient norm, clipping and the AdamW update.
    pub(super) optimizer: f64,
}

impl PhaseSeconds {
    /// Adds another step's phases to these.
    pub(super) fn add(&mut self, other: &PhaseSeconds) {
        self.forward += other.forward;
        self.backward += other.backward;
        self.optimizer += other.optimizer;
    }
}

/// Runs one optimizer step over `pairs` with `mix`: step number `done + 1` of `total_steps`.
pub(super) fn optimizer_step(
    lm: &mut LanguageModel,
    optimizer: &mut optim::AdamW,
    config: &TrainConfig,
    mix: &LossMix,
    pairs: &[&TrainPair],
    (done, total_steps): (usize, usize),
    device: &Device,
) -> Result<StepResult> {
    let pad = lm.pad_id();
    let totals = StepTotals {
        pairs: pairs.len(),
        chosen_tokens: pairs.iter().map(|p| p.chosen.len()).sum(),
    };
    let both = mix.needs_reference();
    let mut accumulator = GradientsAccumulator::<Llama>::new();
    let mut sums = MetricSums::default();
    let mut phases = PhaseSeconds::default();
    for micro in pairs.chunks(config.run.micro_batch_size) {
        let clock = Instant::now();
        let fwd = forward(&lm.model, micro, both, pad, device);
        let batch = pair_batch(micro, &fwd, device);
        let loss = mix.step_share(&batch, totals);
        let chosen = host(fwd.chosen.clone())?;
        let rejected = fwd.rejected.clone().map(host).transpose()?;
        sums.add(micro, &chosen, rejected.as_deref(), mix.params.beta);
        sums.tokens += fwd.tokens;
        sums.loss += host(loss.clone())?[0];
        phases.forward += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &lm.model);
        reduce_gradients(&lm.model, &mut accumulator, grads);
        phases.backward += clock.elapsed().as_secs_f64();
    }
    if !sums.loss.is_finite() {
        return Err(Error::Input(format!(
            "step {}: the loss is {} (learning rate too high, or non-finite inputs); \
             the last checkpoint is intact",
            done + 1,
            sums.loss
        )));
    }
    let clock = Instant::now();
    let grads = accumulator.grads();
    let grad_norm = optim::gradient_norm(&lm.model, &grads);
    let learning_rate = optim::learning_rate(&config.optim, done, total_steps);
    let scale = optim::clip_factor(grad_norm, config.optim.max_grad_norm);
    lm.model = optimizer.step(lm.model.clone(), grads, learning_rate, scale);
    phases.optimizer = clock.elapsed().as_secs_f64();
    Ok(StepResult {
        sums,
        grad_norm,
        learning_rate,
        phases,
    })
}
