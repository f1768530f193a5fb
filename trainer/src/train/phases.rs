//! The phases of a run: one shuffled phase normally; with MixDPO (a `route` column), the
//! `dpo` pairs in curriculum order with the configured preference losses, then the `sft` pairs
//! with SFT, continuing from the same weights, optimizer state and schedule. Also where a run
//! is within them ([`TrainerState`]: phase, epoch, position in the epoch's order).

use prefsmith_model::rng::Rng;

use crate::losses::LossMix;
use crate::train::checkpoint::TrainerState;
use crate::train::config::RunSection;
use crate::train::data::PairData;

/// One phase of training: which pairs, in which order, with which losses.
pub(super) struct TrainingPhase {
    /// `train`, or `dpo` / `sft` with MixDPO (the `stage` of each metrics line).
    pub(super) name: &'static str,
    /// Indices into the training pairs.
    pub(super) pairs: Vec<usize>,
    /// Whether each epoch visits the pairs in a fresh random order.
    pub(super) shuffle: bool,
    /// The losses.
    pub(super) mix: LossMix,
}

/// The phases of a run on `data` with the configured losses `mix`.
pub(super) fn plan_phases(data: &PairData, mix: &LossMix) -> Vec<TrainingPhase> {
    if !data.stats.mixdpo {
        return vec![TrainingPhase {
            name: "train",
            pairs: (0..data.train.len()).collect(),
            shuffle: true,
            mix: mix.clone(),
        }];
    }
    let by_rank = |sft: bool| {
        let mut idx: Vec<usize> = (0..data.train.len())
            .filter(|&i| data.train[i].sft == sft)
            .collect();
        idx.sort_by_key(|&i| data.train[i].curriculum_rank);
        idx
    };
    vec![
        TrainingPhase {
            name: "dpo",
            pairs: by_rank(false),
            shuffle: false,
            mix: mix.clone(),
        },
        TrainingPhase {
            name: "sft",
            pairs: by_rank(true),
            shuffle: false,
            mix: LossMix::sft(),
        },
    ]
}

/// Per training pair: whether a phase with a preference loss (which needs reference
/// log-probs) visits it.
pub(super) fn in_preference_phase(phases: &[TrainingPhase], train_pairs: usize) -> Vec<bool> {
    let mut v = vec![false; train_pairs];
    for phase in phases {
        if phase.mix.needs_reference() {
            for &i in &phase.pairs {
                v[i] = true;
            }
        }
    }
    v
}

/// The optimizer steps the schedule spans: every phase's epochs, capped by `max-steps`.
pub(super) fn total_steps(run: &RunSection, phases: &[TrainingPhase]) -> usize {
    let step_pairs = run.micro_batch_size * run.gradient_accumulation_steps;
    let steps_per_epoch: Vec<usize> = phases
        .iter()
        .map(|s| s.pairs.len().div_ceil(step_pairs))
        .collect();
    let mut total_steps: usize = steps_per_epoch.iter().sum::<usize>() * run.epochs;
    if run.max_steps > 0 {
        total_steps = total_steps.min(run.max_steps);
    }
    total_steps
}

/// Moves `state` to the start of the next phase.
pub(super) fn next_phase(state: &mut TrainerState) {
    state.stage += 1;
    state.epoch = 0;
    state.position = 0;
    state.order.clear();
}

/// Starts an epoch of `phase` when none is under way: its pairs, shuffled with `rng` if the
/// phase shuffles.
pub(super) fn start_epoch_if_needed(
    state: &mut TrainerState,
    phase: &TrainingPhase,
    rng: &mut Rng,
) {
    if !state.order.is_empty() {
        return;
    }
    let mut order = phase.pairs.clone();
    if phase.shuffle {
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
    }
    state.order = order;
    state.position = 0;
}

/// Records a finished step that ran the epoch's order up to `end`; returns the epoch
/// progress (epochs done plus the fraction of this one) for the metrics line.
pub(super) fn finish_step(state: &mut TrainerState, end: usize, rng: &Rng) -> f64 {
    state.global_step += 1;
    state.position = end;
    let epoch_progress =
        state.epoch as f64 + state.position as f64 / state.order.len().max(1) as f64;
    if state.position >= state.order.len() {
        state.epoch += 1;
        state.order.clear();
        state.position = 0;
    }
    state.rng_state = rng.state();
    epoch_progress
}
