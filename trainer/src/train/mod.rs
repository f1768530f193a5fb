//! `prefsmith train`: rating-aware DPO on a pair table, with its own loop over burn's autodiff.
//!
//! One optimizer step = `gradient-accumulation-steps` micro-batches of `micro-batch-size`
//! pairs. Each micro-batch runs the policy over its chosen and rejected sequences together,
//! sums response log-probs, adds its share of the step's loss ([`crate::losses`]), and hands its
//! gradients to [`reduce_gradients`], the one place where micro-batch gradients meet (where a
//! data-parallel all-reduce would go). Then the global gradient norm is measured and clipped,
//! AdamW updates the weights at the schedule's learning rate, the metrics of the step are
//! written to `metrics.jsonl` under TRL's names, and every `save-steps` a checkpoint is written.
//!
//! Training runs in phases ([`phases`]): one shuffled phase normally; with MixDPO (a `route`
//! column), the `dpo` pairs in curriculum order with the configured preference losses, then the
//! `sft` pairs with SFT, continuing from the same weights, optimizer state and schedule.
//!
//! Everything that decides the trajectory is saved in checkpoints, so `--resume` continues
//! exactly: on the CPU the weights and metrics of a resumed run equal those of a run that was
//! never stopped, bit for bit (a test checks it).

pub mod checkpoint;
pub mod config;
pub mod data;
mod evaluation;
mod metrics;
pub mod optim;
mod pair_columns;
mod phases;
mod reference;
mod step;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use prefsmith_model::DeviceSpec;
use prefsmith_model::LanguageModel;
use prefsmith_model::llama::Llama;
use prefsmith_model::rng::Rng;
use prefsmith_pipeline::stages::{Progress, peak_rss_bytes};
use serde_json::{Value as Json, json};
use tracing::info;

use crate::error::{Error, Result};
use crate::losses::LossMix;
use checkpoint::TrainerState;
use config::TrainConfig;
use data::{DataStats, PairData, TrainPair};
use metrics::{MetricsLog, Throughput, truncate_metrics};
use phases::TrainingPhase;
use step::StepResult;
pub use step::reduce_gradients;

/// How a run starts and ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainOptions {
    /// Continue from the newest checkpoint in the output directory (a fresh start when there
    /// is none).
    pub resume: bool,
    /// Stop right after the checkpoint of this step, as a job killed there would (no final
    /// model); for time-sliced jobs and for the resume tests.
    pub stop_after_step: Option<usize>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Optimizer steps done in total (including those before a resume).
    pub steps: usize,
    /// Steps the schedule spans.
    pub total_steps: usize,
    /// Whether training finished (false when stopped by `stop_after_step`).
    pub completed: bool,
    /// The saved model (Hugging Face directory), when finished.
    pub model_dir: Option<PathBuf>,
    /// The last step's metrics.
    pub last_metrics: Option<Json>,
    /// The last evaluation's metrics.
    pub eval_metrics: Option<Json>,
    /// Data counts.
    pub data: DataStats,
    /// Training pairs per second in this process.
    pub pairs_per_second: f64,
    /// Tokens (prompt + response, no padding) per second in this process.
    pub tokens_per_second: f64,
}

/// Trains as `config` says.
pub async fn train(config: &TrainConfig, options: TrainOptions) -> Result<TrainReport> {
    config.validate()?;
    let started = Instant::now();
    let output = config.run.output.clone();
    let checkpoints_dir = output.join("checkpoints");
    let model_dir = output.join("model");
    let existing = checkpoint::list(&checkpoints_dir)?;
    if !options.resume && (!existing.is_empty() || model_dir.exists()) {
        return Err(Error::Config(format!(
            "{} holds an earlier run (checkpoints or a model); pass --resume to continue it, \
             or choose another run.output",
            output.display()
        )));
    }
    let device = config
        .model
        .device
        .parse::<DeviceSpec>()
        .map_err(|e| Error::Config(format!("model.device: {e}")))?
        .device()
        .map_err(Error::Config)?;
    let train_device = device.clone().autodiff();
    let Prepared {
        mut lm,
        mix,
        data,
        phases,
        total_steps,
    } = prepare(config, &device, &train_device).await?;
    let metrics_path = output.join("metrics.jsonl");
    let (state, optimizer) = start_or_resume(
        config,
        (options.resume, existing.last()),
        &mut lm,
        (&data, total_steps),
        &metrics_path,
        (&device, &train_device),
    )?;
    let metrics = MetricsLog::open(&metrics_path)?;
    info!(
        model = %lm.name,
        train_pairs = data.train.len(),
        eval_pairs = data.eval.len(),
        dropped = data.stats.dropped_prompt_too_long,
        truncated = data.stats.truncated,
        mixdpo = data.stats.mixdpo,
        steps = total_steps,
        from_step = state.global_step,
        "train: starting"
    );
    let mut run = Run {
        config,
        lm,
        optimizer,
        state,
        phases,
        data,
        mix,
        total_steps,
        metrics,
        device: train_device,
        checkpoints_dir,
    };
    let outcome = run.run_steps(options.stop_after_step)?;
    let elapsed = outcome.throughput.elapsed();
    let mut saved = None;
    if !outcome.stopped {
        save_final_model(&mut run.lm, &output, &model_dir)?;
        saved = Some(model_dir.clone());
        write_summary(&output, &run.summary(&outcome, started, elapsed))?;
        info!(model = %model_dir.display(), steps = run.state.global_step, "train: done");
    }
    Ok(TrainReport {
        steps: run.state.global_step,
        total_steps,
        completed: !outcome.stopped,
        model_dir: saved,
        last_metrics: outcome.last_metrics,
        eval_metrics: outcome.eval_metrics,
        data: run.data.stats,
        pairs_per_second: outcome.throughput.pairs as f64 / elapsed,
        tokens_per_second: outcome.throughput.tokens as f64 / elapsed,
    })
}

/// A run under way: the policy, its optimizer, the pairs and where training stands.
struct Run<'a> {
    config: &'a TrainConfig,
    /// The policy, on the autodiff device.
    lm: LanguageModel,
    optimizer: optim::AdamW,
    state: TrainerState,
    phases: Vec<TrainingPhase>,
    data: PairData,
    /// The configured losses (evaluation uses them in every phase).
    mix: LossMix,
    total_steps: usize,
    metrics: MetricsLog,
    /// The autodiff device.
    device: Device,
    checkpoints_dir: PathBuf,
}

/// What the loop of steps leaves for the summary and the report.
struct LoopOutcome {
    /// Stopped by `stop_after_step` before the end.
    stopped: bool,
    /// The last step's metrics line.
    last_metrics: Option<Json>,
    /// The last evaluation's metrics line.
    eval_metrics: Option<Json>,
    /// What this process ran.
    throughput: Throughput,
}

impl Run<'_> {
    /// Runs optimizer steps until the schedule ends (or right after the checkpoint of step
    /// `stop_after_step`), evaluating and checkpointing as configured.
    fn run_steps(&mut self, stop_after_step: Option<usize>) -> Result<LoopOutcome> {
        let config = self.config;
        let r = &config.run;
        let step_pairs = r.micro_batch_size * r.gradient_accumulation_steps;
        let mut rng = Rng::from_state(self.state.rng_state);
        let mut progress = Progress::new(
            "train",
            self.total_steps.saturating_sub(self.state.global_step) as u64,
        );
        let mut outcome = LoopOutcome {
            stopped: false,
            last_metrics: None,
            eval_metrics: None,
            throughput: Throughput::start(),
        };
        while self.state.global_step < self.total_steps && self.state.stage < self.phases.len() {
            let phase = &self.phases[self.state.stage];
            if phase.pairs.is_empty() || self.state.epoch >= r.epochs {
                phases::next_phase(&mut self.state);
                continue;
            }
            phases::start_epoch_if_needed(&mut self.state, phase, &mut rng);
            let step_started = Instant::now();
            let end = (self.state.position + step_pairs).min(self.state.order.len());
            let step: Vec<&TrainPair> = self.state.order[self.state.position..end]
                .iter()
                .map(|&i| &self.data.train[i])
                .collect();
            let result = step::optimizer_step(
                &mut self.lm,
                &mut self.optimizer,
                config,
                &phase.mix,
                &step,
                (self.state.global_step, self.total_steps),
                &self.device,
            )?;
            let epoch_progress = phases::finish_step(&mut self.state, end, &rng);
            let line = step_line(&self.state, epoch_progress, phase, &result);
            self.metrics.write(&line)?;
            let throughput = &mut outcome.throughput;
            throughput.pairs += result.sums.pairs;
            throughput.tokens += result.sums.tokens;
            throughput
                .step_seconds
                .push(step_started.elapsed().as_secs_f64());
            throughput.phase_seconds.push(result.phases);
            progress.advance(1);
            if self.state.global_step.is_multiple_of(r.logging_steps) {
                log_step(
                    &self.state,
                    self.total_steps,
                    phase,
                    &result,
                    &line,
                    throughput,
                );
            }
            outcome.last_metrics = Some(line);
            let finished = self.state.global_step >= self.total_steps;
            self.evaluate_if_due(finished, &mut outcome.eval_metrics)?;
            self.checkpoint_if_due(finished)?;
            if stop_after_step == Some(self.state.global_step) && !finished {
                outcome.stopped = true;
                break;
            }
        }
        progress.finish();
        Ok(outcome)
    }

    /// Evaluates on the held-out pairs at the end and every `eval-steps`, writing the metrics
    /// line and keeping it in `eval_metrics`.
    fn evaluate_if_due(&mut self, finished: bool, eval_metrics: &mut Option<Json>) -> Result<()> {
        let config = self.config;
        let r = &config.run;
        let step = self.state.global_step;
        if self.data.eval.is_empty()
            || !(finished || (r.eval_steps > 0 && step.is_multiple_of(r.eval_steps)))
        {
            return Ok(());
        }
        let valid = self.lm.model.valid();
        let pad = self.lm.pad_id();
        let mut eval =
            evaluation::evaluate(&valid, &self.data.eval, &self.mix, r.micro_batch_size, pad)?;
        eval.insert("step".into(), json!(step));
        let eval = Json::Object(eval);
        self.metrics.write(&eval)?;
        info!(step, metrics = %eval, "train: eval");
        *eval_metrics = Some(eval);
        Ok(())
    }

    /// Writes a checkpoint at the end and every `save-steps`.
    fn checkpoint_if_due(&self, finished: bool) -> Result<()> {
        let r = &self.config.run;
        let step = self.state.global_step;
        if !(finished || (r.save_steps > 0 && step.is_multiple_of(r.save_steps))) {
            return Ok(());
        }
        let path = checkpoint::save(
            &self.checkpoints_dir,
            &self.state,
            &self.lm.model,
            &self.optimizer,
            r.keep_checkpoints,
        )?;
        info!(step, checkpoint = %path.display(), "train: checkpoint");
        Ok(())
    }

    /// `summary.json`: what ran, on what, with which losses, the last metrics and the timing.
    fn summary(&self, outcome: &LoopOutcome, started: Instant, elapsed: f64) -> Json {
        let mix = &self.mix;
        json!({
            "steps": self.state.global_step,
            "total_steps": self.total_steps,
            "model": self.lm.name,
            "data": self.data.stats,
            "losses": mix.terms.iter().map(|(k, w)| json!({"type": k.name(), "weight": w})).collect::<Vec<_>>(),
            "beta": mix.params.beta,
            "last_metrics": outcome.last_metrics,
            "eval_metrics": outcome.eval_metrics,
            "timing": {
                "seconds": started.elapsed().as_secs_f64(),
                "loop_seconds": elapsed,
                "step_seconds": outcome.throughput.step_seconds,
                "phase_seconds": outcome.throughput.phase_seconds,
                "phase_totals": phase_totals(&outcome.throughput.phase_seconds),
                "pairs_per_second": outcome.throughput.pairs as f64 / elapsed,
                "tokens_per_second": outcome.throughput.tokens as f64 / elapsed,
                "peak_rss_bytes": peak_rss_bytes(),
            },
            "config": self.config,
        })
    }
}

/// Everything checked and prepared before the first step.
struct Prepared {
    /// The policy, on the autodiff device.
    lm: LanguageModel,
    /// The configured losses (evaluation uses them in every phase).
    mix: LossMix,
    /// The training and evaluation pairs, with reference log-probs where a loss needs them.
    data: PairData,
    /// The phases of the run.
    phases: Vec<TrainingPhase>,
    /// The optimizer steps the schedule spans.
    total_steps: usize,
}

/// Loads the policy and the pairs, checks the pairs fit the model's context, plans the
/// phases and fills in the reference log-probs every pair a preference loss sees needs.
async fn prepare(config: &TrainConfig, device: &Device, train_device: &Device) -> Result<Prepared> {
    let spec = config
        .model
        .settings(&config.model.model)
        .resolved_model()?;
    let mut lm = LanguageModel::load_for_training(&spec, train_device)?;
    lm.model = lm.model.with_matmul_precision(config.model.precision);
    let mix = config.loss_mix()?;
    let mut data = data::load_pairs(&config.data, &lm, mix.uses_rating(), config.run.seed).await?;
    let limit = lm.context_length();
    if let Some(p) = data
        .train
        .iter()
        .chain(&data.eval)
        .find(|p| p.prompt.len() + p.chosen.len().max(p.rejected.len()) > limit)
    {
        return Err(Error::Config(format!(
            "data.max-length {}: row {} (prompt_id {}) is longer than the model's context of \
             {limit} tokens; lower data.max-length",
            config.data.max_length, p.row, p.prompt_id
        )));
    }
    let phases = phases::plan_phases(&data, &mix);
    if mix.needs_reference() {
        let in_preference_phase = phases::in_preference_phase(&phases, data.train.len());
        let mut needing: Vec<&mut TrainPair> = data
            .train
            .iter_mut()
            .zip(&in_preference_phase)
            .filter(|(_, needed)| **needed)
            .map(|(p, _)| p)
            .chain(data.eval.iter_mut())
            .collect();
        reference::compute_reference(config, &lm, &mut needing, device)?;
    }
    let total_steps = phases::total_steps(&config.run, &phases);
    Ok(Prepared {
        lm,
        mix,
        data,
        phases,
        total_steps,
    })
}

/// The run's state and optimizer: fresh, or, with `resume`, those of `latest`, the newest
/// checkpoint (whose weights replace the policy's, and after whose step `metrics.jsonl` is cut).
fn start_or_resume(
    config: &TrainConfig,
    (resume, latest): (bool, Option<&(usize, PathBuf)>),
    lm: &mut LanguageModel,
    (data, total_steps): (&PairData, usize),
    metrics_path: &Path,
    (device, train_device): (&Device, &Device),
) -> Result<(TrainerState, optim::AdamW)> {
    let output = &config.run.output;
    let config_hash = config.trajectory_hash();
    let mut optimizer = optim::AdamW::new(config.optim);
    let mut state = TrainerState {
        global_step: 0,
        total_steps,
        stage: 0,
        epoch: 0,
        position: 0,
        order: Vec::new(),
        rng_state: Rng::new(config.run.seed).state(),
        config_hash: config_hash.clone(),
        data_hash: data.stats.data_hash.clone(),
    };
    std::fs::create_dir_all(output).map_err(Error::io(output))?;
    if resume && let Some((step, path)) = latest {
        let loaded = checkpoint::load(path, config.optim, device)?;
        if loaded.state.config_hash != config_hash {
            return Err(Error::Config(format!(
                "{}: this checkpoint was made with another configuration (data, model, losses \
                 or schedule changed); resume needs the same config",
                path.display()
            )));
        }
        if loaded.state.data_hash != data.stats.data_hash {
            return Err(Error::Input(format!(
                "{}: this checkpoint was made on other data than {} holds now",
                path.display(),
                config.data.pairs
            )));
        }
        let mut weights = loaded.weights;
        lm.model = Llama::from_weights(lm.model.config(), &mut weights, train_device)?;
        optimizer = loaded.optimizer;
        state = loaded.state;
        truncate_metrics(metrics_path, *step)?;
        info!(step, checkpoint = %path.display(), "train: resuming");
    } else {
        if resume {
            info!(
                "train: nothing to resume in {}; starting fresh",
                output.display()
            );
        }
        std::fs::write(metrics_path, "").map_err(Error::io(metrics_path))?;
    }
    Ok((state, optimizer))
}

/// The `metrics.jsonl` line of a finished step, under TRL's names.
fn step_line(
    state: &TrainerState,
    epoch_progress: f64,
    phase: &TrainingPhase,
    result: &StepResult,
) -> Json {
    let mut line = serde_json::Map::new();
    line.insert("step".into(), json!(state.global_step));
    line.insert("epoch".into(), json!(epoch_progress));
    line.insert("stage".into(), json!(phase.name));
    line.extend(result.sums.to_json(""));
    line.insert("grad_norm".into(), json!(result.grad_norm));
    line.insert("learning_rate".into(), json!(result.learning_rate));
    line.insert("pairs".into(), json!(result.sums.pairs));
    line.insert("tokens".into(), json!(result.sums.tokens));
    Json::Object(line)
}

/// The progress line of a step (every `logging-steps`).
fn log_step(
    state: &TrainerState,
    total_steps: usize,
    phase: &TrainingPhase,
    result: &StepResult,
    line: &Json,
    throughput: &Throughput,
) {
    let elapsed = throughput.elapsed();
    info!(
        step = state.global_step,
        total = total_steps,
        stage = phase.name,
        loss = format!("{:.4}", result.sums.loss),
        accuracy = line
            .get("rewards/accuracies")
            .and_then(Json::as_f64)
            .map(|a| format!("{a:.2}"))
            .unwrap_or_else(|| "-".into()),
        grad_norm = format!("{:.3}", result.grad_norm),
        lr = format!("{:.2e}", result.learning_rate),
        pairs_per_s = format!("{:.2}", throughput.pairs as f64 / elapsed),
        tokens_per_s = format!("{:.0}", throughput.tokens as f64 / elapsed),
        forward_s = format!("{:.2}", result.phases.forward),
        backward_s = format!("{:.2}", result.phases.backward),
        optimizer_s = format!("{:.2}", result.phases.optimizer),
        "train: step"
    );
}

/// The phases' seconds summed over the steps after the first (the first is warm-up: it
/// grows the allocator's pools), or over the one step a run of one step has.
fn phase_totals(steps: &[step::PhaseSeconds]) -> step::PhaseSeconds {
    let mut total = step::PhaseSeconds::default();
    for phases in steps.iter().skip(usize::from(steps.len() > 1)) {
        total.add(phases);
    }
    total
}

/// Writes the final model (for inference) to `model_dir`: beside it first, then renamed into
/// place.
fn save_final_model(lm: &mut LanguageModel, output: &Path, model_dir: &Path) -> Result<()> {
    let partial = output.join(".model.partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(Error::io(&partial))?;
    }
    lm.model = lm.model.valid();
    lm.save_pretrained(&partial)?;
    if model_dir.exists() {
        std::fs::remove_dir_all(model_dir).map_err(Error::io(model_dir))?;
    }
    std::fs::rename(&partial, model_dir).map_err(Error::io(model_dir))
}

/// Writes `summary.json` in `output` (under a temporary name, renamed into place).
fn write_summary(output: &Path, summary: &Json) -> Result<()> {
    let path = output.join("summary.json");
    let tmp = output.join("summary.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(summary).unwrap_or_default(),
    )
    .map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(Error::io(&path))
}
