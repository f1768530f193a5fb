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
//! Training runs in stages: one shuffled stage normally; with MixDPO (a `route` column), the
//! `dpo` pairs in curriculum order with the configured preference losses, then the `sft` pairs
//! with SFT, continuing from the same weights, optimizer state and schedule.
//!
//! Everything that decides the trajectory is saved in checkpoints, so `--resume` continues
//! exactly: on the CPU the weights and metrics of a resumed run equal those of a run that was
//! never stopped, bit for bit (a test checks it).

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod optim;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use serde_json::{Value as Json, json};
use tracing::info;

use crate::error::{Error, Result};
use crate::lm::LanguageModel;
use crate::losses::{LossMix, PairBatch, PairLogps, StepTotals};
use crate::model::Llama;
use crate::rng::Rng;
use crate::scoring::{
    PaddedBatch, PaddingSide, Precision, ScoreItem, ScoreOptions, score_sequences, sum_per_row,
    token_logps,
};
use crate::stages::score::{cache_file, read_cache, write_cache};
use checkpoint::TrainerState;
use config::TrainConfig;
use data::{DataStats, TrainPair};

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

/// One stage of training: which pairs, in which order, with which losses.
struct Stage {
    name: &'static str,
    pairs: Vec<usize>,
    shuffle: bool,
    mix: LossMix,
}

/// The summed log-probs of a micro-batch's sequences.
struct Forward {
    chosen: Tensor<1>,
    rejected: Option<Tensor<1>>,
    tokens: usize,
}

/// Runs the policy over the chosen (and, for preference losses, rejected) sequences of
/// `pairs`, truncated already, right-padded.
fn forward(model: &Llama, pairs: &[&TrainPair], both: bool, pad: u32, device: &Device) -> Forward {
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

fn host(t: Tensor<1>) -> Result<Vec<f64>> {
    t.into_data()
        .try_into_vec_as::<f64>()
        .map_err(|e| Error::Input(format!("reading values back: {e:?}")))
}

/// The loss inputs of `pairs` given the policy's sums.
fn pair_batch(pairs: &[&TrainPair], fwd: &Forward, device: &Device) -> PairBatch {
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

/// Sums of the TRL metrics over the pairs of a step (or an evaluation).
#[derive(Debug, Default)]
struct MetricSums {
    pairs: usize,
    tokens: usize,
    loss: f64,
    reward_chosen: f64,
    reward_rejected: f64,
    correct: f64,
    logp_chosen: f64,
    logp_rejected: f64,
    preference: bool,
}

impl MetricSums {
    fn add(&mut self, pairs: &[&TrainPair], chosen: &[f64], rejected: Option<&[f64]>, beta: f64) {
        self.pairs += pairs.len();
        for (i, p) in pairs.iter().enumerate() {
            self.logp_chosen += chosen[i];
            if let (Some(rejected), Some((rc, rr))) = (rejected, p.ref_logps) {
                self.preference = true;
                let (wc, wr) = (beta * (chosen[i] - rc), beta * (rejected[i] - rr));
                self.logp_rejected += rejected[i];
                self.reward_chosen += wc;
                self.reward_rejected += wr;
                self.correct += if wc > wr { 1.0 } else { 0.0 };
            }
        }
    }

    /// The metrics as TRL names them, with `prefix` (`""` or `"eval_"`).
    fn to_json(&self, prefix: &str) -> serde_json::Map<String, Json> {
        let n = self.pairs.max(1) as f64;
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: f64| {
            m.insert(format!("{prefix}{k}"), json!(v));
        };
        put("loss", self.loss);
        put("logps/chosen", self.logp_chosen / n);
        if self.preference {
            put("logps/rejected", self.logp_rejected / n);
            put("rewards/chosen", self.reward_chosen / n);
            put("rewards/rejected", self.reward_rejected / n);
            put(
                "rewards/margins",
                (self.reward_chosen - self.reward_rejected) / n,
            );
            put("rewards/accuracies", self.correct / n);
        }
        m
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

use prefsmith_pipeline::stages::peak_rss_bytes;

/// Fills in reference log-probs the table did not carry, with the reference model, once
/// (through the score cache, so a rerun or a resume does not recompute them).
fn compute_reference(
    config: &TrainConfig,
    policy: &LanguageModel,
    pairs: &mut [&mut TrainPair],
    device: &Device,
) -> Result<()> {
    let missing: Vec<usize> = (0..pairs.len())
        .filter(|&i| pairs[i].ref_logps.is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let spec = config
        .model
        .reference
        .as_deref()
        .unwrap_or(&config.model.model);
    let resolved = config.model.settings(spec).resolved_model()?;
    let reference = LanguageModel::load(&resolved, device)?;
    if reference.tokenizer.vocab_size() != policy.tokenizer.vocab_size() {
        return Err(Error::Config(format!(
            "model.reference '{resolved}' has a vocabulary of {} tokens, the policy {}: the \
             log-ratios need one tokenizer",
            reference.tokenizer.vocab_size(),
            policy.tokenizer.vocab_size()
        )));
    }
    let mut items = Vec::with_capacity(missing.len() * 2);
    for &i in &missing {
        let p = &pairs[i];
        items.push(ScoreItem {
            prompt: p.prompt.clone(),
            response: p.chosen.clone(),
        });
        items.push(ScoreItem {
            prompt: p.prompt.clone(),
            response: p.rejected.clone(),
        });
    }
    let cache = cache_file(&reference, &items, Precision::F32);
    let scores = match read_cache(&cache, items.len()) {
        Some(scores) => {
            info!(cache = %cache.display(), "train: reference log-probs from the cache");
            scores
        }
        None => {
            let mut progress = prefsmith_pipeline::stages::Progress::new(
                "reference log-probs",
                items.len() as u64,
            );
            let options = ScoreOptions {
                max_batch_tokens: config.model.max_batch_tokens,
                ..Default::default()
            };
            let scores =
                score_sequences(&reference, &items, options, |n| progress.advance(n as u64))?;
            progress.finish();
            write_cache(&cache, &scores)?;
            scores
        }
    };
    for (k, &i) in missing.iter().enumerate() {
        let (c, r) = (scores[2 * k].logp, scores[2 * k + 1].logp);
        if !(c.is_finite() && r.is_finite()) {
            return Err(Error::Input(format!(
                "{}: row {} (prompt_id {}): the reference model gave a non-finite log-prob",
                config.data.pairs, pairs[i].row, pairs[i].prompt_id
            )));
        }
        pairs[i].ref_logps = Some((c, r));
    }
    Ok(())
}

/// Evaluates `model` (no autodiff) on `pairs` with `mix`.
fn evaluate(
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

/// Keeps the lines of `metrics.jsonl` up to `step` (a resumed run rewrites what follows).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<Json>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).map_err(Error::io(path))
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
        .parse::<crate::DeviceSpec>()
        .map_err(|e| Error::Config(format!("model.device: {e}")))?
        .device()
        .map_err(Error::Config)?;
    let train_device = device.clone().autodiff();

    // Model, data, losses: everything checked before the first step.
    let spec = config
        .model
        .settings(&config.model.model)
        .resolved_model()?;
    let mut lm = LanguageModel::load_for_training(&spec, &train_device)?;
    let mix = config.loss_mix()?;
    let mut data = data::load_pairs(&config.data, &lm, mix.uses_rating(), config.run.seed).await?;
    let pad = lm.pad_id();
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

    // Stages.
    let mut stages = Vec::new();
    if data.stats.mixdpo {
        let by_rank = |sft: bool| {
            let mut idx: Vec<usize> = (0..data.train.len())
                .filter(|&i| data.train[i].sft == sft)
                .collect();
            idx.sort_by_key(|&i| data.train[i].curriculum_rank);
            idx
        };
        stages.push(Stage {
            name: "dpo",
            pairs: by_rank(false),
            shuffle: false,
            mix: mix.clone(),
        });
        stages.push(Stage {
            name: "sft",
            pairs: by_rank(true),
            shuffle: false,
            mix: LossMix::sft(),
        });
    } else {
        stages.push(Stage {
            name: "train",
            pairs: (0..data.train.len()).collect(),
            shuffle: true,
            mix: mix.clone(),
        });
    }

    // Reference log-probs for every pair a preference loss will see.
    let eval_mix = mix.clone();
    if mix.needs_reference() {
        let in_preference_stage: Vec<bool> = {
            let mut v = vec![false; data.train.len()];
            for stage in &stages {
                if stage.mix.needs_reference() {
                    for &i in &stage.pairs {
                        v[i] = true;
                    }
                }
            }
            v
        };
        let mut needing: Vec<&mut TrainPair> = data
            .train
            .iter_mut()
            .zip(&in_preference_stage)
            .filter(|(_, needed)| **needed)
            .map(|(p, _)| p)
            .chain(data.eval.iter_mut())
            .collect();
        compute_reference(config, &lm, &mut needing, &device)?;
    }

    let r = &config.run;
    let step_pairs = r.micro_batch_size * r.gradient_accumulation_steps;
    let steps_per_epoch: Vec<usize> = stages
        .iter()
        .map(|s| s.pairs.len().div_ceil(step_pairs))
        .collect();
    let mut total_steps: usize = steps_per_epoch.iter().sum::<usize>() * r.epochs;
    if r.max_steps > 0 {
        total_steps = total_steps.min(r.max_steps);
    }
    let config_hash = config.trajectory_hash();

    // Fresh state, or the checkpoint's.
    let mut optimizer = optim::AdamW::new(config.optim);
    let mut state = TrainerState {
        global_step: 0,
        total_steps,
        stage: 0,
        epoch: 0,
        position: 0,
        order: Vec::new(),
        rng_state: Rng::new(r.seed).state(),
        config_hash: config_hash.clone(),
        data_hash: data.stats.data_hash.clone(),
    };
    std::fs::create_dir_all(&output).map_err(Error::io(&output))?;
    let metrics_path = output.join("metrics.jsonl");
    if options.resume
        && let Some((step, path)) = existing.last()
    {
        let loaded = checkpoint::load(path, config.optim, &device)?;
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
        lm.model = Llama::from_weights(lm.model.config(), &mut weights, &train_device)?;
        optimizer = loaded.optimizer;
        state = loaded.state;
        truncate_metrics(&metrics_path, *step)?;
        info!(step, checkpoint = %path.display(), "train: resuming");
    } else {
        if options.resume {
            info!(
                "train: nothing to resume in {}; starting fresh",
                output.display()
            );
        }
        std::fs::write(&metrics_path, "").map_err(Error::io(&metrics_path))?;
    }
    let mut metrics_file = std::fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .map_err(Error::io(&metrics_path))?;
    let mut write_metrics = |line: &Json| -> Result<()> {
        writeln!(metrics_file, "{line}").map_err(Error::io(&metrics_path))
    };

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

    let mut rng = Rng::from_state(state.rng_state);
    let mut progress = prefsmith_pipeline::stages::Progress::new(
        "train",
        total_steps.saturating_sub(state.global_step) as u64,
    );
    let mut last_metrics = None;
    let mut eval_metrics = None;
    let (mut pairs_done, mut tokens_done) = (0usize, 0usize);
    let mut step_seconds = Vec::new();
    let loop_started = Instant::now();
    let mut stopped = false;
    while state.global_step < total_steps && state.stage < stages.len() {
        let stage = &stages[state.stage];
        if stage.pairs.is_empty() || state.epoch >= r.epochs {
            state.stage += 1;
            state.epoch = 0;
            state.position = 0;
            state.order.clear();
            continue;
        }
        if state.order.is_empty() {
            let mut order = stage.pairs.clone();
            if stage.shuffle {
                for i in (1..order.len()).rev() {
                    let j = rng.below(i as u64 + 1) as usize;
                    order.swap(i, j);
                }
            }
            state.order = order;
            state.position = 0;
        }
        let step_started = Instant::now();
        let end = (state.position + step_pairs).min(state.order.len());
        let step: Vec<&TrainPair> = state.order[state.position..end]
            .iter()
            .map(|&i| &data.train[i])
            .collect();
        let totals = StepTotals {
            pairs: step.len(),
            chosen_tokens: step.iter().map(|p| p.chosen.len()).sum(),
        };
        let both = stage.mix.needs_reference();
        let mut accumulator = GradientsAccumulator::<Llama>::new();
        let mut sums = MetricSums::default();
        for micro in step.chunks(r.micro_batch_size) {
            let fwd = forward(&lm.model, micro, both, pad, &train_device);
            let batch = pair_batch(micro, &fwd, &train_device);
            let loss = stage.mix.step_share(&batch, totals);
            let chosen = host(fwd.chosen.clone())?;
            let rejected = fwd.rejected.clone().map(host).transpose()?;
            sums.add(micro, &chosen, rejected.as_deref(), stage.mix.params.beta);
            sums.tokens += fwd.tokens;
            sums.loss += host(loss.clone())?[0];
            let grads = GradientsParams::from_grads(loss.backward(), &lm.model);
            reduce_gradients(&lm.model, &mut accumulator, grads);
        }
        if !sums.loss.is_finite() {
            return Err(Error::Input(format!(
                "step {}: the loss is {} (learning rate too high, or non-finite inputs); \
                 the last checkpoint is intact",
                state.global_step + 1,
                sums.loss
            )));
        }
        let grads = accumulator.grads();
        let grad_norm = optim::gradient_norm(&lm.model, &grads);
        let lr = optim::learning_rate(&config.optim, state.global_step, total_steps);
        let scale = optim::clip_factor(grad_norm, config.optim.max_grad_norm);
        lm.model = optimizer.step(lm.model.clone(), grads, lr, scale);

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

        let mut line = serde_json::Map::new();
        line.insert("step".into(), json!(state.global_step));
        line.insert("epoch".into(), json!(epoch_progress));
        line.insert("stage".into(), json!(stage.name));
        line.extend(sums.to_json(""));
        line.insert("grad_norm".into(), json!(grad_norm));
        line.insert("learning_rate".into(), json!(lr));
        line.insert("pairs".into(), json!(sums.pairs));
        line.insert("tokens".into(), json!(sums.tokens));
        let line = Json::Object(line);
        write_metrics(&line)?;
        pairs_done += sums.pairs;
        tokens_done += sums.tokens;
        step_seconds.push(step_started.elapsed().as_secs_f64());
        progress.advance(1);
        if state.global_step.is_multiple_of(r.logging_steps) {
            let elapsed = loop_started.elapsed().as_secs_f64().max(1e-9);
            info!(
                step = state.global_step,
                total = total_steps,
                stage = stage.name,
                loss = format!("{:.4}", sums.loss),
                accuracy = line
                    .get("rewards/accuracies")
                    .and_then(Json::as_f64)
                    .map(|a| format!("{a:.2}"))
                    .unwrap_or_else(|| "-".into()),
                grad_norm = format!("{grad_norm:.3}"),
                lr = format!("{lr:.2e}"),
                pairs_per_s = format!("{:.2}", pairs_done as f64 / elapsed),
                tokens_per_s = format!("{:.0}", tokens_done as f64 / elapsed),
                "train: step"
            );
        }
        last_metrics = Some(line);

        let finished = state.global_step >= total_steps;
        if !data.eval.is_empty()
            && (finished || (r.eval_steps > 0 && state.global_step.is_multiple_of(r.eval_steps)))
        {
            let valid = lm.model.valid();
            let mut eval = evaluate(&valid, &data.eval, &eval_mix, r.micro_batch_size, pad)?;
            eval.insert("step".into(), json!(state.global_step));
            let eval = Json::Object(eval);
            write_metrics(&eval)?;
            info!(step = state.global_step, metrics = %eval, "train: eval");
            eval_metrics = Some(eval);
        }
        if finished || (r.save_steps > 0 && state.global_step.is_multiple_of(r.save_steps)) {
            let path = checkpoint::save(
                &checkpoints_dir,
                &state,
                &lm.model,
                &optimizer,
                r.keep_checkpoints,
            )?;
            info!(step = state.global_step, checkpoint = %path.display(), "train: checkpoint");
        }
        if options.stop_after_step == Some(state.global_step) && !finished {
            stopped = true;
            break;
        }
    }
    progress.finish();
    let elapsed = loop_started.elapsed().as_secs_f64().max(1e-9);

    let mut saved = None;
    if !stopped {
        // The final model, written beside and renamed into place.
        let partial = output.join(".model.partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(Error::io(&partial))?;
        }
        lm.model = lm.model.valid();
        lm.save_pretrained(&partial)?;
        if model_dir.exists() {
            std::fs::remove_dir_all(&model_dir).map_err(Error::io(&model_dir))?;
        }
        std::fs::rename(&partial, &model_dir).map_err(Error::io(&model_dir))?;
        saved = Some(model_dir.clone());
        let summary = json!({
            "steps": state.global_step,
            "total_steps": total_steps,
            "model": lm.name,
            "data": data.stats,
            "losses": mix.terms.iter().map(|(k, w)| json!({"type": k.name(), "weight": w})).collect::<Vec<_>>(),
            "beta": mix.params.beta,
            "last_metrics": last_metrics,
            "eval_metrics": eval_metrics,
            "timing": {
                "seconds": started.elapsed().as_secs_f64(),
                "loop_seconds": elapsed,
                "step_seconds": step_seconds,
                "pairs_per_second": pairs_done as f64 / elapsed,
                "tokens_per_second": tokens_done as f64 / elapsed,
                "peak_rss_bytes": peak_rss_bytes(),
            },
            "config": config,
        });
        let path = output.join("summary.json");
        let tmp = output.join("summary.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_string_pretty(&summary).unwrap_or_default(),
        )
        .map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        info!(model = %model_dir.display(), steps = state.global_step, "train: done");
    }
    Ok(TrainReport {
        steps: state.global_step,
        total_steps,
        completed: !stopped,
        model_dir: saved,
        last_metrics,
        eval_metrics,
        data: data.stats,
        pairs_per_second: pairs_done as f64 / elapsed,
        tokens_per_second: tokens_done as f64 / elapsed,
    })
}
