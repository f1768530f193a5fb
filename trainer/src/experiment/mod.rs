//! `prefsmith experiment CONFIG.toml`: the article's claims tested on a task with a known gold
//! reward ([`task`]), end to end through prefsmith's own stages.
//!
//! An experiment is a list of arms (what differs: responses per prompt, the pair rule, margin
//! selection, routing, the loss, cleaning) run under several seeds. For every (arm, seed) the
//! runner writes an ordinary job file, `<output>/<arm>/seed-<s>/job.toml`, and runs it with the
//! job runner, so any one run can be inspected or rerun alone with `prefsmith run`:
//!
//! ```text
//! task-prompts (train, heldout) → train (SFT start, from tiny:seed) → sample N → task-reward
//!   → sql (first n responses) [→ task-reward judgments → clean → sql (clean scores back)]
//!   → select → [score, train (seed model), score, select-margin | sql (random subset)]
//!   → [route [→ sql (dpo rows)]] → [augment] → train (DPO from the SFT start)
//!   → sample (held-out prompts) → task-reward (gold)
//! ```
//!
//! The stages a seed's arms share (prompts, the SFT start, the N samples, the SFT start's own
//! held-out samples) have one output directory under `<output>/seed-<s>/`; the first job
//! writes them and the others find them up to date. An `experiment-summary` stage
//! ([`summary`]) then reads every held-out evaluation: the trained policy's mean gold reward
//! and its win rate against the SFT start, with mean and 95 % t-interval over the seeds, and
//! the page `prefsmith report` draws from it.

pub mod stages;
pub mod summary;
pub mod task;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prefsmith_pipeline::job::{self, Job};
use prefsmith_pipeline::stage::{RunOptions, StageRegistry};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::error::{Error, Result};

/// Registers `task-prompts`, `task-reward` and `experiment-summary`.
pub fn register_task_stages(registry: &mut StageRegistry) {
    registry.register::<stages::TaskPromptsConfig>("task-prompts");
    registry.register::<stages::TaskRewardConfig>("task-reward");
    registry.register::<summary::SummaryConfig>("experiment-summary");
}

/// An experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExperimentConfig {
    /// A name for the page and the logs.
    pub name: String,
    /// The claim under test, one sentence (shown on the page).
    #[serde(default)]
    pub claim: String,
    /// Where everything goes.
    pub output: String,
    /// The seeds: each changes the prompts, the SFT start, the samples, the noise and the
    /// training order.
    pub seeds: Vec<u64>,
    /// The generated prompts.
    #[serde(default)]
    pub task: TaskSection,
    /// The SFT start.
    #[serde(default)]
    pub sft: TrainSection,
    /// Sampling the N responses per prompt the pairs come from.
    #[serde(default)]
    pub sampling: SamplingSection,
    /// The external reward model.
    #[serde(default)]
    pub reward: RewardSection,
    /// Preference training.
    #[serde(default)]
    pub dpo: DpoSection,
    /// The held-out evaluation.
    #[serde(default)]
    pub eval: EvalSection,
    /// Keys swept over every arm (`n = [4, 8, 16]`): each arm runs once per value.
    #[serde(default)]
    pub sweep: Sweep,
    /// What the plot's x axis and series are (`x = "n"`, `series = "arm"`).
    #[serde(default)]
    pub plot: PlotSection,
    /// The arms.
    pub arms: Vec<Arm>,
}

/// `[task]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct TaskSection {
    /// Training prompts (pairs come from these). Default 512.
    pub train_prompts: usize,
    /// Held-out prompts the trained policy is evaluated on. Default 128.
    pub heldout_prompts: usize,
    /// Letters come from the first this many lowercase letters. Default 12.
    pub alphabet: usize,
    /// Fewest letters per prompt. Default 4.
    pub min_letters: usize,
    /// Most letters per prompt. Default 8.
    pub max_letters: usize,
}

impl Default for TaskSection {
    fn default() -> Self {
        Self {
            train_prompts: 512,
            heldout_prompts: 128,
            alphabet: 12,
            min_letters: 4,
            max_letters: 8,
        }
    }
}

/// `[sft]` and `[dpo]`: the `train` stage's settings that experiments vary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct TrainSection {
    /// Passes over the data.
    pub epochs: usize,
    /// Peak learning rate (cosine schedule, 10 % warm-up).
    pub learning_rate: f64,
    /// Pairs per optimizer step.
    pub micro_batch_size: usize,
    /// β of the DPO losses.
    pub beta: f64,
    /// The losses (`sigmoid`, `rdpo`, `ml-rdpo`, …; `[sft]` always uses `sft`).
    pub loss: Vec<String>,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            epochs: 3,
            learning_rate: 1e-2,
            micro_batch_size: 16,
            beta: 0.1,
            loss: vec!["sft".into()],
        }
    }
}

/// `[dpo]`: the same keys as `[sft]`, with preference-training defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DpoSection {
    /// Passes over the pairs. Default 4.
    pub epochs: usize,
    /// Peak learning rate. Default 3e-3.
    pub learning_rate: f64,
    /// Pairs per optimizer step. Default 16.
    pub micro_batch_size: usize,
    /// β. Default 0.1.
    pub beta: f64,
    /// The losses. Default `["sigmoid"]`.
    pub loss: Vec<String>,
}

impl Default for DpoSection {
    fn default() -> Self {
        Self {
            epochs: 4,
            learning_rate: 3e-3,
            micro_batch_size: 16,
            beta: 0.1,
            loss: vec!["sigmoid".into()],
        }
    }
}

impl DpoSection {
    fn as_train(&self) -> TrainSection {
        TrainSection {
            epochs: self.epochs,
            learning_rate: self.learning_rate,
            micro_batch_size: self.micro_batch_size,
            beta: self.beta,
            loss: self.loss.clone(),
        }
    }
}

/// `[sampling]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SamplingSection {
    /// Responses sampled per prompt: the most any arm uses (an arm takes the first n, which
    /// do not depend on N). Default: the largest n of the arms and the sweep.
    pub n: Option<usize>,
    /// Temperature. Default 1.
    pub temperature: f64,
    /// Nucleus mass. Default 1 (off).
    pub top_p: f64,
    /// Longest response in tokens. Default 16.
    pub max_new_tokens: usize,
    /// Fraction of degenerate responses the sampler produces. Default 0.05.
    pub degenerate_rate: f64,
}

impl Default for SamplingSection {
    fn default() -> Self {
        Self {
            n: None,
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 16,
            degenerate_rate: 0.05,
        }
    }
}

/// `[reward]`: the external reward model (`task-reward`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RewardSection {
    /// σ of the noise on the gold reward. Default 0.1.
    pub noise: f64,
    /// Subtracted from degenerate text. Default 1.
    pub degenerate_penalty: f64,
    /// The reward's scale. Default 1.
    pub scale: f64,
    /// Judgments per pair when an arm's labels are judgments. Default 3.
    pub judgments: usize,
}

impl Default for RewardSection {
    fn default() -> Self {
        Self {
            noise: 0.1,
            degenerate_penalty: 1.0,
            scale: 1.0,
            judgments: 3,
        }
    }
}

/// `[eval]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct EvalSection {
    /// Samples per held-out prompt. Default 4.
    pub n: usize,
    /// Their temperature. Default 0.7.
    pub temperature: f64,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            n: 4,
            temperature: 0.7,
        }
    }
}

/// `[sweep]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Sweep {
    /// Responses per prompt.
    #[serde(default)]
    pub n: Vec<usize>,
}

/// `[plot]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PlotSection {
    /// The x axis: `n` (responses per prompt) or `flip` (the judge's wrong pairs), or none:
    /// one point per arm.
    #[serde(default)]
    pub x: Option<String>,
}

/// How an arm selects pairs after `select`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// Every pair.
    #[default]
    All,
    /// BeeS: the top fraction by fused external and implicit margin (`select-margin`).
    Bees,
    /// A seeded random fraction (`sql`).
    Random,
}

/// How an arm treats small-margin pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// Every pair is a DPO pair.
    #[default]
    None,
    /// MixDPO: the smallest margins to SFT, curriculum order (`route`).
    Mixdpo,
    /// The smallest margins dropped.
    Drop,
}

/// Where an arm's labels come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Labels {
    /// One noisy score per response.
    #[default]
    Scores,
    /// Pairwise judgments of the noisy reward, aggregated by `clean` (`borda` = the plain win
    /// rate, no cleaning).
    Judgments,
}

/// One arm: what it changes from the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Arm {
    /// Name on the page, and (slugged) its directory.
    pub name: String,
    /// The plot series it belongs to (default: its name).
    #[serde(default)]
    pub series: Option<String>,
    /// Responses per prompt (default: the sweep, else `[sampling] n`).
    #[serde(default)]
    pub n: Option<usize>,
    /// `select`'s strategy. Default `sweet-spot`.
    #[serde(default = "default_strategy")]
    pub strategy: String,
    /// `positions`: where the chosen response sits.
    #[serde(default)]
    pub chosen_k: Option<toml::Value>,
    /// `positions`: where the rejected response sits.
    #[serde(default)]
    pub rejected_k: Option<toml::Value>,
    /// `all` (default), `bees` or `random`.
    #[serde(default)]
    pub selection: Selection,
    /// The fraction `bees` and `random` keep. Default 0.1.
    #[serde(default = "default_fraction")]
    pub fraction: f64,
    /// `select-margin`'s `margin-scale` for `bees` (`auto`, the default, or `paper`).
    #[serde(default)]
    pub margin_scale: Option<String>,
    /// `none` (default), `mixdpo` or `drop`.
    #[serde(default)]
    pub route: Routing,
    /// Percent of pairs (smallest rating gap) routed to SFT or dropped. Default 25.
    #[serde(default = "default_route_percentile")]
    pub route_percentile: f64,
    /// The losses (default: `[dpo] loss`).
    #[serde(default)]
    pub loss: Option<Vec<String>>,
    /// Reward-augmented copies (`augment`) before training.
    #[serde(default)]
    pub augment: bool,
    /// `scores` (default) or `judgments`.
    #[serde(default)]
    pub labels: Labels,
    /// Fraction of pairs the judge gets wrong (judgments). Default 0.
    #[serde(default)]
    pub flip: f64,
    /// A `clean` method applied to the labels (judgments: default `borda`, the win rate).
    #[serde(default)]
    pub clean: Option<String>,
    /// The external reward's scale (default: `[reward] scale`).
    #[serde(default)]
    pub scale: Option<f64>,
}

fn default_strategy() -> String {
    "sweet-spot".into()
}
fn default_fraction() -> f64 {
    0.1
}
fn default_route_percentile() -> f64 {
    25.0
}

/// One arm at one sweep value: what a job is made for, per seed.
#[derive(Debug, Clone)]
pub struct ArmRun {
    /// The arm.
    pub arm: Arm,
    /// Its responses per prompt.
    pub n: usize,
    /// Name on the page.
    pub label: String,
    /// Directory name.
    pub slug: String,
    /// The x value, when the plot has one.
    pub x: Option<f64>,
}

/// Lowercase letters, digits and dashes.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            'A'..='Z' => out.push(c.to_ascii_lowercase()),
            'μ' => out.push_str("mu"),
            'σ' => out.push_str("sigma"),
            _ if !out.ends_with('-') && !out.is_empty() => out.push('-'),
            _ => {}
        }
    }
    out.trim_end_matches('-').to_string()
}

impl ExperimentConfig {
    /// Reads and checks an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let config: Self = prefsmith_pipeline::config::load_toml(path)?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    fn validate(&self, source: &str) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("{source}: {m}")));
        if self.seeds.is_empty() {
            return bad("seeds: at least one seed".into());
        }
        if self.arms.is_empty() {
            return bad("arms: at least one arm".into());
        }
        if self.task.train_prompts == 0 || self.task.heldout_prompts == 0 {
            return bad("task: train-prompts and heldout-prompts must be at least 1".into());
        }
        if let Some(x) = &self.plot.x
            && x != "n"
            && x != "flip"
        {
            return bad(format!("plot.x '{x}': the x axis is 'n' or 'flip'"));
        }
        let mut slugs = BTreeMap::new();
        for run in self.arm_runs() {
            if run.n < 2 {
                return bad(format!(
                    "arm '{}': n = {} (pairs need n ≥ 2)",
                    run.label, run.n
                ));
            }
            if run.n > self.sampled_n() {
                return bad(format!(
                    "arm '{}': n = {} exceeds sampling.n = {}",
                    run.label,
                    run.n,
                    self.sampled_n()
                ));
            }
            if !(run.arm.fraction > 0.0 && run.arm.fraction <= 1.0) {
                return bad(format!(
                    "arm '{}': fraction {} must be in (0, 1]",
                    run.label, run.arm.fraction
                ));
            }
            if run.arm.flip > 0.0 && run.arm.labels != Labels::Judgments {
                return bad(format!(
                    "arm '{}': flip needs labels = \"judgments\"",
                    run.label
                ));
            }
            if run.slug.is_empty() {
                return bad(format!(
                    "arm '{}': the name needs a letter or digit",
                    run.label
                ));
            }
            if let Some(other) = slugs.insert(run.slug.clone(), run.label.clone()) {
                return bad(format!(
                    "arms '{other}' and '{}' share the directory '{}': rename one",
                    run.label, run.slug
                ));
            }
        }
        Ok(())
    }

    /// Every arm at every sweep value, in order.
    pub fn arm_runs(&self) -> Vec<ArmRun> {
        let mut runs = Vec::new();
        for arm in &self.arms {
            let ns: Vec<usize> = match (arm.n, self.sweep.n.is_empty()) {
                (Some(n), _) => vec![n],
                (None, false) => self.sweep.n.clone(),
                (None, true) => vec![self.sampling.n.unwrap_or(8)],
            };
            let swept = arm.n.is_none() && !self.sweep.n.is_empty();
            for n in ns {
                let (label, slug_text) = if swept {
                    (format!("{} N={n}", arm.name), format!("{}-n{n}", arm.name))
                } else {
                    (arm.name.clone(), arm.name.clone())
                };
                runs.push(ArmRun {
                    arm: arm.clone(),
                    n,
                    label,
                    slug: slug(&slug_text),
                    x: match self.plot.x.as_deref() {
                        Some("n") => Some(n as f64),
                        Some(_) => Some(arm.flip),
                        None => None,
                    },
                });
            }
        }
        runs
    }

    /// Responses sampled per prompt.
    pub fn sampled_n(&self) -> usize {
        let most = self
            .arms
            .iter()
            .filter_map(|a| a.n)
            .chain(self.sweep.n.iter().copied())
            .max()
            .unwrap_or(8);
        self.sampling.n.unwrap_or(most)
    }

    /// The same experiment at CI size, into `<output>-reduced`: two seeds (an interval needs
    /// two), at most 48 training and 16 held-out prompts, one epoch of SFT and of DPO, two
    /// samples per held-out prompt. It checks that everything runs, not what comes out.
    pub fn reduced(mut self) -> Self {
        self.seeds.truncate(2);
        self.task.train_prompts = self.task.train_prompts.min(48);
        self.task.heldout_prompts = self.task.heldout_prompts.min(16);
        self.sft.epochs = 1;
        self.dpo.epochs = 1;
        self.eval.n = self.eval.n.min(2);
        self.output = format!("{}-reduced", self.output.trim_end_matches('/'));
        self
    }
}

/// Where the runs of a seed share their stages.
fn seed_dir(config: &ExperimentConfig, seed: u64) -> String {
    format!("{}/seed-{seed}", config.output)
}

fn q(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn string_list(items: &[String]) -> String {
    toml::Value::Array(
        items
            .iter()
            .map(|s| toml::Value::String(s.clone()))
            .collect(),
    )
    .to_string()
}

/// The `train` stage table (from `model`, on `input`, into `output`, with `section`'s losses).
fn train_stage(
    input: &str,
    output: &str,
    model: &str,
    section: &TrainSection,
    mixdpo: &str,
    seed: u64,
    subset: Option<usize>,
) -> String {
    let subset = subset.map_or(String::new(), |k| format!("subset = {k}\n"));
    format!(
        "[[stages]]\nkind = \"train\"\ninput = {}\noutput = {}\n\
         [stages.model]\nmodel = {}\n\
         [stages.data]\nmax-length = 256\neval-fraction = 0.0\nmixdpo = \"{mixdpo}\"\n{subset}\
         [stages.loss]\ntypes = {}\nbeta = {:?}\n\
         [stages.optim]\nlearning-rate = {:?}\nwarmup-ratio = 0.1\nlr-scheduler = \"cosine\"\nmax-grad-norm = 1.0\n\
         [stages.run]\nepochs = {}\nmicro-batch-size = {}\nseed = {seed}\nlogging-steps = 1000\n\n",
        q(input),
        q(output),
        q(model),
        string_list(&section.loss),
        section.beta,
        section.learning_rate,
        section.epochs,
        section.micro_batch_size,
    )
}

/// How a `sample` stage draws.
struct Draw {
    n: usize,
    temperature: f64,
    top_p: f64,
    tokens: usize,
    seed: u64,
    degenerate: f64,
}

/// The held-out evaluation's draw: the same prompts and seed for the SFT start and for every
/// trained policy of a seed, so sample k of one is compared with sample k of the other.
fn eval_draw(config: &ExperimentConfig, seed: u64) -> Draw {
    Draw {
        n: config.eval.n,
        temperature: config.eval.temperature,
        top_p: 1.0,
        tokens: config.sampling.max_new_tokens,
        seed: 1_000_000 + seed,
        degenerate: 0.0,
    }
}

fn sample_stage(input: &str, output: &str, model: &str, draw: &Draw) -> String {
    let Draw {
        n,
        temperature,
        top_p,
        tokens,
        seed,
        degenerate,
    } = *draw;
    let degenerate = if degenerate > 0.0 {
        format!("degenerate-rate = {degenerate:?}\n")
    } else {
        String::new()
    };
    format!(
        "[[stages]]\nkind = \"sample\"\ninput = {}\noutput = {}\nmodel = {}\nn = {n}\n\
         temperature = {temperature:?}\ntop-p = {top_p:?}\nmax-new-tokens = {tokens}\nseed = {seed}\n{degenerate}\n",
        q(input),
        q(output),
        q(model)
    )
}

fn task_reward_stage(
    input: &str,
    output: &str,
    seed: u64,
    reward: &RewardSection,
    scale: f64,
    judgments: usize,
    flip: f64,
) -> String {
    format!(
        "[[stages]]\nkind = \"task-reward\"\ninput = {}\noutput = {}\nseed = {seed}\nnoise = {:?}\n\
         degenerate-penalty = {:?}\nscale = {scale:?}\njudgments = {judgments}\nflip = {flip:?}\n\n",
        q(input),
        q(output),
        reward.noise,
        reward.degenerate_penalty,
    )
}

fn sql_stage(input: &str, output: &str, query: &str, tables: &[(&str, &str)]) -> String {
    let mut text = format!(
        "[[stages]]\nkind = \"sql\"\ninput = {}\noutput = {}\nquery = {}\n",
        q(input),
        q(output),
        q(query)
    );
    if !tables.is_empty() {
        let list: Vec<String> = tables
            .iter()
            .map(|(k, v)| format!("{k} = {}", q(v)))
            .collect();
        text.push_str(&format!("tables = {{ {} }}\n", list.join(", ")));
    }
    text.push('\n');
    text
}

/// The stages every run of a seed shares: prompts, the SFT start, its samples and its
/// held-out evaluation.
fn shared_stages(config: &ExperimentConfig, seed: u64) -> String {
    let dir = seed_dir(config, seed);
    let t = &config.task;
    let prompts = |split: &str, count: usize| {
        format!(
            "[[stages]]\nkind = \"task-prompts\"\noutput = {}\nsplit = \"{split}\"\nprompts = {count}\n\
             seed = {seed}\nalphabet = {}\nmin-letters = {}\nmax-letters = {}\n\n",
            q(&format!("{dir}/{split}-prompts")),
            t.alphabet,
            t.min_letters,
            t.max_letters
        )
    };
    let s = &config.sampling;
    let mut text = prompts("train", t.train_prompts);
    text.push_str(&prompts("heldout", t.heldout_prompts));
    text.push_str(&train_stage(
        &format!("{dir}/train-prompts"),
        &format!("{dir}/sft"),
        &format!("tiny:{seed}"),
        &TrainSection {
            loss: vec!["sft".to_string()],
            ..config.sft.clone()
        },
        "off",
        seed,
        None,
    ));
    let sft_model = format!("{dir}/sft/model");
    text.push_str(&sample_stage(
        &format!("{dir}/train-prompts"),
        &format!("{dir}/responses"),
        &sft_model,
        &Draw {
            n: config.sampled_n(),
            temperature: s.temperature,
            top_p: s.top_p,
            tokens: s.max_new_tokens,
            seed,
            degenerate: s.degenerate_rate,
        },
    ));
    text.push_str(&sample_stage(
        &format!("{dir}/heldout-prompts"),
        &format!("{dir}/sft-eval"),
        &sft_model,
        &eval_draw(config, seed),
    ));
    text.push_str(&task_reward_stage(
        &format!("{dir}/sft-eval"),
        &format!("{dir}/sft-eval-rated"),
        seed,
        &config.reward,
        config.reward.scale,
        0,
        0.0,
    ));
    text
}

/// The whole job of one arm run under one seed.
pub fn job_text(config: &ExperimentConfig, run: &ArmRun, seed: u64) -> String {
    let shared = seed_dir(config, seed);
    let dir = format!("{}/{}/seed-{seed}", config.output, run.slug);
    let arm = &run.arm;
    let sft_model = format!("{shared}/sft/model");
    let scale = arm.scale.unwrap_or(config.reward.scale);
    let mut text = format!(
        "# {} — arm '{}', seed {seed}: written by `prefsmith experiment`; `prefsmith run` reruns it.\n\
         name = {}\n\n",
        config.name,
        run.label,
        q(&format!("{} / {} / seed {seed}", config.name, run.label))
    );
    text.push_str(&shared_stages(config, seed));
    text.push_str(&task_reward_stage(
        &format!("{shared}/responses"),
        &format!("{dir}/rated"),
        seed,
        &config.reward,
        scale,
        0,
        0.0,
    ));
    let n = run.n;
    text.push_str(&sql_stage(
        &format!("{dir}/rated"),
        &format!("{dir}/responses-n"),
        &format!(
            "SELECT prompt_id, prompt, \
             array_slice(all_generated_responses, 1, {n}) AS all_generated_responses, \
             array_slice(all_gold_rewards, 1, {n}) AS all_gold_rewards, \
             array_slice(all_rm_scores, 1, {n}) AS all_rm_scores \
             FROM input ORDER BY prompt_id"
        ),
        &[],
    ));
    let mut last = format!("{dir}/responses-n");
    let mut scores_column = "all_rm_scores".to_string();
    match arm.labels {
        Labels::Judgments => {
            text.push_str(&task_reward_stage(
                &last,
                &format!("{dir}/judgments"),
                seed,
                &config.reward,
                scale,
                config.reward.judgments.max(1),
                arm.flip,
            ));
            let method = arm.clean.clone().unwrap_or_else(|| "borda".into());
            text.push_str(&format!(
                "[[stages]]\nkind = \"clean\"\ninput = {}\noutput = {}\nmethod = {}\n\n",
                q(&format!("{dir}/judgments")),
                q(&format!("{dir}/cleaned")),
                q(&method)
            ));
            // The responses with the aggregated (cleaned) judgments as their scores.
            text.push_str(&sql_stage(
                &format!("{dir}/cleaned"),
                &format!("{dir}/relabelled"),
                "WITH scores AS (SELECT prompt_id, \
                 array_agg(clean_score ORDER BY response_index) AS all_rm_scores \
                 FROM input GROUP BY prompt_id) \
                 SELECT r.prompt_id, r.prompt, r.all_generated_responses, r.all_gold_rewards, \
                 s.all_rm_scores FROM responses r JOIN scores s ON r.prompt_id = s.prompt_id \
                 ORDER BY r.prompt_id",
                &[("responses", &last)],
            ));
            last = format!("{dir}/relabelled");
        }
        Labels::Scores => {
            if let Some(method) = &arm.clean {
                text.push_str(&format!(
                    "[[stages]]\nkind = \"clean\"\ninput = {}\noutput = {}\nmethod = {}\n\n",
                    q(&last),
                    q(&format!("{dir}/cleaned")),
                    q(method)
                ));
                last = format!("{dir}/cleaned");
                scores_column = "clean_scores".into();
            }
        }
    }
    if arm.strategy == "random" {
        // The random-pair baseline: two responses drawn per prompt (seeded), the better one
        // chosen; equal scores give no pair, as `select` skips a zero margin.
        text.push_str(&sql_stage(
            &last,
            &format!("{dir}/pairs"),
            &format!(
                "WITH r AS (SELECT prompt_id, prompt, \
                 unnest({scores_column}) AS score, \
                 unnest(all_generated_responses) AS response, \
                 unnest(generate_series(0, CAST(cardinality({scores_column}) AS BIGINT) - 1)) AS idx FROM input), \
                 d AS (SELECT *, row_number() OVER (PARTITION BY prompt_id \
                 ORDER BY md5(concat('{seed}:', prompt_id, ':', CAST(idx AS VARCHAR)))) AS draw \
                 FROM r WHERE score IS NOT NULL AND NOT isnan(score) AND abs(score) < 1e308), \
                 two AS (SELECT * FROM d WHERE draw <= 2) \
                 SELECT a.prompt_id, a.prompt, a.response AS chosen, b.response AS rejected, \
                 a.score AS score_chosen, b.score AS score_rejected, \
                 a.score - b.score AS rating_gap, a.idx AS chosen_index, \
                 b.idx AS rejected_index, 'random' AS strategy \
                 FROM two a JOIN two b ON a.prompt_id = b.prompt_id AND a.score > b.score \
                 ORDER BY a.prompt_id"
            ),
            &[],
        ));
    } else {
        let mut select = format!(
            "[[stages]]\nkind = \"select\"\ninput = {}\noutput = {}\nstrategy = {}\nseed = {seed}\n",
            q(&last),
            q(&format!("{dir}/pairs")),
            q(&arm.strategy)
        );
        for (key, value) in [("chosen-k", &arm.chosen_k), ("rejected-k", &arm.rejected_k)] {
            if let Some(v) = value {
                select.push_str(&format!("{key} = {v}\n"));
            }
        }
        select.push_str(&format!(
            "[stages.columns]\nscores = {}\n\n",
            q(&scores_column)
        ));
        text.push_str(&select);
    }
    last = format!("{dir}/pairs");
    match arm.selection {
        Selection::All => {}
        Selection::Random => {
            let f = arm.fraction;
            text.push_str(&sql_stage(
                &last,
                &format!("{dir}/selected"),
                &format!(
                    "SELECT * EXCLUDE (pick, total) FROM (\
                     SELECT *, row_number() OVER (ORDER BY md5(concat('{seed}:', prompt_id))) AS pick, \
                     count(*) OVER () AS total FROM input) \
                     WHERE pick <= ceil({f:?} * total) ORDER BY prompt_id"
                ),
                &[],
            ));
            last = format!("{dir}/selected");
        }
        Selection::Bees => {
            // BeeS's seed model: DPO on a random quarter of the pairs, from the SFT start;
            // the implicit margin is its log-ratio against the SFT start.
            let score = |input: &str, output: &str, model: &str, role: &str| {
                format!(
                    "[[stages]]\nkind = \"score\"\ninput = {}\noutput = {}\nmodel = {}\nrole = \"{role}\"\nmax-length = 256\n\n",
                    q(input),
                    q(output),
                    q(model)
                )
            };
            text.push_str(&score(
                &last,
                &format!("{dir}/scored-ref"),
                &sft_model,
                "reference",
            ));
            text.push_str(&train_stage(
                &format!("{dir}/scored-ref"),
                &format!("{dir}/seed-model"),
                &sft_model,
                &config.dpo.as_train(),
                "off",
                seed,
                Some((config.task.train_prompts / 4).max(8)),
            ));
            text.push_str(&score(
                &format!("{dir}/scored-ref"),
                &format!("{dir}/scored-policy"),
                &format!("{dir}/seed-model/model"),
                "policy",
            ));
            text.push_str(&format!(
                "[[stages]]\nkind = \"select-margin\"\ninput = {}\noutput = {}\nsources = [\"external\", \"implicit\"]\nfraction = {:?}\n{}\n",
                q(&format!("{dir}/scored-policy")),
                q(&format!("{dir}/selected")),
                arm.fraction,
                arm.margin_scale
                    .as_ref()
                    .map_or(String::new(), |m| format!("margin-scale = {}\n", q(m)))
            ));
            last = format!("{dir}/selected");
        }
    }
    let mut mixdpo = "off";
    match arm.route {
        Routing::None => {}
        Routing::Mixdpo | Routing::Drop => {
            text.push_str(&format!(
                "[[stages]]\nkind = \"route\"\ninput = {}\noutput = {}\nmargin-column = \"rating_gap\"\nroute-percentile = {:?}\n\n",
                q(&last),
                q(&format!("{dir}/routed")),
                arm.route_percentile
            ));
            last = format!("{dir}/routed");
            if arm.route == Routing::Mixdpo {
                mixdpo = "on";
            } else {
                text.push_str(&sql_stage(
                    &last,
                    &format!("{dir}/kept"),
                    "SELECT * FROM input WHERE route = 'dpo' ORDER BY prompt_id",
                    &[],
                ));
                last = format!("{dir}/kept");
            }
        }
    }
    if arm.augment {
        text.push_str(&format!(
            "[[stages]]\nkind = \"augment\"\ninput = {}\noutput = {}\n\n",
            q(&last),
            q(&format!("{dir}/augmented"))
        ));
        last = format!("{dir}/augmented");
    }
    let mut training = config.dpo.as_train();
    if let Some(losses) = &arm.loss {
        training.loss = losses.clone();
    }
    text.push_str(&train_stage(
        &last,
        &format!("{dir}/policy"),
        &sft_model,
        &training,
        mixdpo,
        seed,
        None,
    ));
    text.push_str(&sample_stage(
        &format!("{shared}/heldout-prompts"),
        &format!("{dir}/eval"),
        &format!("{dir}/policy/model"),
        &eval_draw(config, seed),
    ));
    text.push_str(&task_reward_stage(
        &format!("{dir}/eval"),
        &format!("{dir}/eval-rated"),
        seed,
        &config.reward,
        config.reward.scale,
        0,
        0.0,
    ));
    text
}

/// What `prefsmith experiment` did.
#[derive(Debug)]
pub struct ExperimentOutcome {
    /// The summary stage's output (its report page beside it).
    pub summary: String,
    /// Jobs run.
    pub jobs: usize,
    /// Stages run (not up to date).
    pub stages_run: usize,
    /// Wall time.
    pub seconds: f64,
    /// Stage outputs of the first run that show what the data looks like (the rated
    /// responses and the pairs), for the report page.
    pub examples: Vec<String>,
}

/// Runs every (arm, seed) job of `config`, then the summary stage.
pub async fn run(
    config: &ExperimentConfig,
    registry: &StageRegistry,
    options: &RunOptions,
    force: bool,
) -> Result<ExperimentOutcome> {
    let started = std::time::Instant::now();
    let runs = config.arm_runs();
    let total = runs.len() * config.seeds.len();
    let mut stages_run = 0;
    let mut done = 0;
    let mut arms = Vec::new();
    for run in &runs {
        let mut entries = Vec::new();
        for &seed in &config.seeds {
            let dir = PathBuf::from(format!("{}/{}/seed-{seed}", config.output, run.slug));
            std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
            let path = dir.join("job.toml");
            let text = job_text(config, run, seed);
            std::fs::write(&path, &text).map_err(Error::io(&path))?;
            let job = Job::parse(&text, &path.display().to_string(), registry)?;
            let outcome = job::run(&job, options, force).await?;
            stages_run += outcome.iter().filter(|s| !s.up_to_date).count();
            done += 1;
            let elapsed = started.elapsed().as_secs_f64();
            info!(
                experiment = %config.name,
                arm = %run.label,
                seed,
                done,
                total,
                eta_s = format!("{:.0}", elapsed / done as f64 * (total - done) as f64),
                "experiment: run finished"
            );
            entries.push(summary::RunEntry {
                seed,
                eval: format!("{}/eval-rated", dir.display()),
                baseline: format!("{}/sft-eval-rated", seed_dir(config, seed)),
            });
        }
        arms.push(summary::ArmEntry {
            name: run.label.clone(),
            series: run
                .arm
                .series
                .clone()
                .unwrap_or_else(|| run.arm.name.clone()),
            x: run.x,
            runs: entries,
        });
    }
    let summary_output = format!("{}/summary", config.output);
    let summary = summary::SummaryConfig {
        output: Some(summary_output.clone()),
        name: config.name.clone(),
        claim: config.claim.clone(),
        x_label: config.plot.x.clone(),
        arms,
    };
    let key = format!("{}: experiment-summary", config.name);
    job::run_stage(&summary, None, options, true, &key).await?;
    stages_run += 1;
    let first = &runs[0];
    let example = format!("{}/{}/seed-{}", config.output, first.slug, config.seeds[0]);
    Ok(ExperimentOutcome {
        examples: vec![format!("{example}/rated"), format!("{example}/pairs")],
        summary: summary_output,
        jobs: total,
        stages_run,
        seconds: started.elapsed().as_secs_f64(),
    })
}
