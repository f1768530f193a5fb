//! Evaluation on the held-out pairs: the step's losses and TRL metrics, without autodiff.

use prefsmith_model::llama::Llama;
use serde_json::Value as Json;

use crate::error::Result;
use crate::losses::{LossMix, StepTotals};
use crate::train::data::TrainPair;
use crate::train::metrics::MetricSums;
use crate::train::step::{forward, host, pair_batch};

/// Evaluates `model` (no autodiff) on `pairs` with `mix`.
pub(super) fn evaluate(
    model: &Llama,
    pairs: &[TrainPair],
    mix: &LossMix,
    micro_batch: usize,
    pad: u32,
) -> Result<serde_json::Map<String, Json>> {
    let device = model.device();
    let refs: Vec<&TrainPair> = pairs.iter().collect();
    let totals = StepTotals {
        pairs: pairs.len(),
        chosen_tokens: pairs.iter().map(|p| p.chosen.len()).sum(),
    };
    let both = mix.needs_reference();
    let mut sums = MetricSums::default();
    for chunk in refs.chunks(micro_batch) {
        let fwd = forward(model, chunk, both, pad, &device);
        let batch = pair_batch(chunk, &fwd, &device);
        sums.loss += host(mix.step_share(&batch, totals))?[0];
        let chosen = host(fwd.chosen.clone())?;
        let rejected = fwd.rejected.clone().map(host).transpose()?;
        sums.add(chunk, &chosen, rejected.as_deref(), mix.params.beta);
    }
    Ok(sums.to_json("eval_"))
}
