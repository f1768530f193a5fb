//! The task's two stages, registered beside the product's: `task-prompts` writes the
//! generated prompts (with their answers as a pair table's `chosen`, so the SFT start trains
//! on them through the ordinary `train` stage), and `task-reward` rates sampled responses —
//! the gold reward and the noisy external one as lists beside the wide layout, or the noisy
//! reward as pairwise judgments (`prompt_id, i, j, outcome`, the table `clean` reads).

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Float64Builder, ListBuilder, RecordBatch, StringArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::future::BoxFuture;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::reader::string_at;
use prefsmith_pipeline::stage::{Stage, StageContext};
use prefsmith_pipeline::stages::now_unix;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use super::task::{
    NoisyReward, TASK_VERSION, TaskShape, answer_of, gold_reward, looks_degenerate, pair_flipped,
};
use crate::error::{Error, Result};
use crate::job::to_pipeline;
use crate::stages::{StageOutput, Table, string_list};

/// The settings of a task stage: its config and [`TASK_VERSION`].
fn versioned<'a>(
    config: &impl Serialize,
) -> BoxFuture<'a, prefsmith_pipeline::Result<serde_json::Value>> {
    let value = json!([config, TASK_VERSION]);
    Box::pin(std::future::ready(Ok(value)))
}

/// Settings of `task-prompts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TaskPromptsConfig {
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// `train` or `heldout`: part of every prompt id, and of its random stream.
    pub split: String,
    /// How many prompts.
    pub prompts: usize,
    /// Seed of the prompts.
    #[serde(default)]
    pub seed: u64,
    /// Letters are drawn from the first this many lowercase letters. Default 12.
    #[serde(default = "default_alphabet")]
    pub alphabet: usize,
    /// Fewest letters per prompt. Default 4.
    #[serde(default = "default_min_letters")]
    pub min_letters: usize,
    /// Most letters per prompt. Default 8.
    #[serde(default = "default_max_letters")]
    pub max_letters: usize,
}

fn default_alphabet() -> usize {
    12
}
fn default_min_letters() -> usize {
    4
}
fn default_max_letters() -> usize {
    8
}

impl TaskPromptsConfig {
    /// The prompt shape.
    pub fn shape(&self) -> TaskShape {
        TaskShape {
            alphabet: self.alphabet,
            min_letters: self.min_letters,
            max_letters: self.max_letters,
        }
    }

    fn validate(&self) -> Result<()> {
        self.shape().validate().map_err(Error::Config)?;
        if self.prompts == 0 {
            return Err(Error::Config("prompts must be at least 1".into()));
        }
        if self.split.is_empty() || !self.split.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::Config(format!(
                "split '{}' must be a non-empty alphanumeric name (train, heldout)",
                self.split
            )));
        }
        Ok(())
    }
}

impl Stage for TaskPromptsConfig {
    fn kind(&self) -> &'static str {
        "task-prompts"
    }
    fn input(&self) -> Option<&str> {
        None
    }
    fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }
    fn reads_input(&self) -> bool {
        false
    }
    fn settings<'a>(
        &'a self,
        _: &'a StageContext<'a>,
    ) -> BoxFuture<'a, prefsmith_pipeline::Result<serde_json::Value>> {
        versioned(self)
    }
    fn run<'a>(
        &'a self,
        ctx: &'a StageContext<'a>,
    ) -> BoxFuture<'a, prefsmith_pipeline::Result<Manifest>> {
        Box::pin(async move {
            write_prompts(self, ctx.output, ctx.hash)
                .await
                .map_err(to_pipeline)
        })
    }
}

async fn write_prompts(config: &TaskPromptsConfig, output: &str, hash: &str) -> Result<Manifest> {
    let started = Instant::now();
    let started_unix = now_unix();
    config.validate()?;
    let shape = config.shape();
    let prompts: Vec<_> = (0..config.prompts)
        .map(|i| shape.prompt(&config.split, config.seed, i))
        .collect();
    let column = |f: &dyn Fn(&super::task::TaskPrompt) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(prompts.iter().map(f)))
    };
    let schema = Arc::new(Schema::new(
        ["prompt_id", "prompt", "chosen", "rejected"]
            .map(|name| Field::new(name, DataType::Utf8, false))
            .to_vec(),
    ));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            column(&|p| &p.prompt_id),
            column(&|p| &p.prompt),
            column(&|p| &p.answer),
            column(&|p| &p.letters),
        ],
    )?;
    let mean_letters =
        prompts.iter().map(|p| p.letters.len()).sum::<usize>() as f64 / prompts.len() as f64;
    let manifest = StageOutput {
        stage: "task-prompts",
        output,
        sorted_by: Some("prompt_id"),
        hash: hash.to_string(),
        config,
        infos: &[],
        stats: vec![
            ("prompts", json!(prompts.len())),
            ("split", json!(config.split)),
            ("mean_letters", json!(mean_letters)),
        ],
        started,
        started_unix,
    }
    .commit(&batch)
    .await?;
    info!(prompts = prompts.len(), output, "task-prompts: done");
    Ok(manifest)
}

/// Settings of `task-reward`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TaskRewardConfig {
    /// The input (default in a job: the previous stage's output): the wide layout of `sample`.
    #[serde(default)]
    pub input: Option<String>,
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// Seed of the noise and of the judge's wrong pairs.
    #[serde(default)]
    pub seed: u64,
    /// σ of the Gaussian noise on the gold reward. Default 0.1.
    #[serde(default = "default_noise")]
    pub noise: f64,
    /// Subtracted from the reward of text the model sees as degenerate. Default 1.
    #[serde(default = "default_penalty")]
    pub degenerate_penalty: f64,
    /// The external reward's scale (the gold reward is in [0, 1]). Default 1.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// 0 (default): add `all_gold_rewards` and `all_rm_scores` to the wide layout. k ≥ 1: write
    /// pairwise judgments instead, k per pair of responses, each from its own noisy rewards.
    #[serde(default)]
    pub judgments: usize,
    /// Fraction of pairs the judge gets wrong in every judgment (judgments only). Default 0.
    #[serde(default)]
    pub flip: f64,
}

fn default_noise() -> f64 {
    0.1
}
fn default_penalty() -> f64 {
    1.0
}
fn default_scale() -> f64 {
    1.0
}

impl TaskRewardConfig {
    fn validate(&self) -> Result<()> {
        if !(self.noise >= 0.0 && self.noise.is_finite()) {
            return Err(Error::Config(format!("noise {} must be ≥ 0", self.noise)));
        }
        if !self.degenerate_penalty.is_finite() {
            return Err(Error::Config("degenerate-penalty must be finite".into()));
        }
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(Error::Config(format!("scale {} must be > 0", self.scale)));
        }
        if !(0.0..=1.0).contains(&self.flip) {
            return Err(Error::Config(format!(
                "flip {} must be in [0, 1]",
                self.flip
            )));
        }
        if self.flip > 0.0 && self.judgments == 0 {
            return Err(Error::Config(
                "flip applies to pairwise judgments: set judgments ≥ 1".into(),
            ));
        }
        Ok(())
    }

    fn reward_model(&self) -> NoisyReward {
        NoisyReward {
            seed: self.seed,
            noise: self.noise,
            degenerate_penalty: self.degenerate_penalty,
            scale: self.scale,
        }
    }
}

impl Stage for TaskRewardConfig {
    fn kind(&self) -> &'static str {
        "task-reward"
    }
    fn input(&self) -> Option<&str> {
        self.input.as_deref()
    }
    fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }
    fn settings<'a>(
        &'a self,
        _: &'a StageContext<'a>,
    ) -> BoxFuture<'a, prefsmith_pipeline::Result<serde_json::Value>> {
        versioned(self)
    }
    fn run<'a>(
        &'a self,
        ctx: &'a StageContext<'a>,
    ) -> BoxFuture<'a, prefsmith_pipeline::Result<Manifest>> {
        Box::pin(async move {
            let run = async { rate(self, ctx.input()?, ctx.output, ctx.hash).await };
            run.await.map_err(to_pipeline)
        })
    }
}

/// One prompt of the input: id, answer and responses.
struct Rated {
    prompt_id: String,
    answer: String,
    responses: Vec<String>,
}

fn read_rows(table: &Table, input: &str) -> Result<Vec<Rated>> {
    let ids = table.column("prompt_id", "task-reward keys its noise by prompt")?;
    let prompts = table.column("prompt", "the gold reward is computed from the prompt")?;
    let lists = table.column(
        "all_generated_responses",
        "task-reward reads the wide layout",
    )?;
    (0..table.batch.num_rows())
        .map(|row| {
            let bad = |m: &str| Error::Input(format!("{input}: row {row}: {m}"));
            let prompt_id = string_at(ids, row).ok_or_else(|| bad("null prompt_id"))?;
            let prompt = string_at(prompts, row).ok_or_else(|| bad("null prompt"))?;
            let answer = answer_of(prompt).ok_or_else(|| {
                bad(&format!(
                    "prompt {prompt:?} is not a task prompt ('sort: ' and lowercase letters)"
                ))
            })?;
            Ok(Rated {
                prompt_id: prompt_id.to_string(),
                answer,
                responses: string_list(lists, "all_generated_responses", row)?,
            })
        })
        .collect()
}

async fn rate(
    config: &TaskRewardConfig,
    input: &str,
    output: &str,
    hash: &str,
) -> Result<Manifest> {
    let started = Instant::now();
    let started_unix = now_unix();
    config.validate()?;
    let table = Table::read(input).await?;
    let rows = read_rows(&table, input)?;
    let rm = config.reward_model();
    let responses: usize = rows.iter().map(|r| r.responses.len()).sum();
    let degenerate: usize = rows
        .iter()
        .map(|r| {
            r.responses
                .iter()
                .filter(|t| looks_degenerate(&r.answer, t))
                .count()
        })
        .sum();
    let mut stats = vec![
        ("responses", json!(responses)),
        ("degenerate_responses", json!(degenerate)),
    ];
    let (batch, sorted_by) = if config.judgments == 0 {
        table.refuse_existing("all_rm_scores")?;
        table.refuse_existing("all_gold_rewards")?;
        let mut gold = ListBuilder::new(Float64Builder::new());
        let mut external = ListBuilder::new(Float64Builder::new());
        let mut gold_sum = 0.0;
        for r in &rows {
            for (i, text) in r.responses.iter().enumerate() {
                let g = gold_reward(&r.answer, text);
                gold_sum += g;
                gold.values().append_value(g);
                external
                    .values()
                    .append_value(rm.reward(&r.prompt_id, i, 0, &r.answer, text));
            }
            gold.append(true);
            external.append(true);
        }
        stats.push(("gold_mean", json!(gold_sum / responses.max(1) as f64)));
        let mut fields = table.batch.schema().fields().to_vec();
        let mut columns = table.batch.columns().to_vec();
        for (name, mut builder) in [("all_gold_rewards", gold), ("all_rm_scores", external)] {
            let array: ArrayRef = Arc::new(builder.finish());
            fields.push(Arc::new(Field::new(name, array.data_type().clone(), true)));
            columns.push(array);
        }
        (
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?,
            None,
        )
    } else {
        let (mut ids, mut left, mut right, mut outcome) = (vec![], vec![], vec![], vec![]);
        let mut flipped_pairs = 0usize;
        let mut pairs = 0usize;
        for r in &rows {
            let n = r.responses.len();
            for i in 0..n {
                for j in i + 1..n {
                    pairs += 1;
                    let flip = pair_flipped(config.seed, &r.prompt_id, i, j, config.flip);
                    flipped_pairs += usize::from(flip);
                    for draw in 0..config.judgments {
                        let ri = rm.reward(&r.prompt_id, i, draw, &r.answer, &r.responses[i]);
                        let rj = rm.reward(&r.prompt_id, j, draw, &r.answer, &r.responses[j]);
                        // A tie is a draw; a wrong pair reverses every judgment of it.
                        let mut o = if ri > rj {
                            1.0
                        } else if ri < rj {
                            0.0
                        } else {
                            0.5
                        };
                        if flip {
                            o = 1.0 - o;
                        }
                        ids.push(r.prompt_id.as_str());
                        left.push(i as u32);
                        right.push(j as u32);
                        outcome.push(o);
                    }
                }
            }
        }
        stats.push(("pairs", json!(pairs)));
        stats.push(("flipped_pairs", json!(flipped_pairs)));
        stats.push(("judgments", json!(outcome.len())));
        let schema = Arc::new(Schema::new(vec![
            Field::new("prompt_id", DataType::Utf8, false),
            Field::new("i", DataType::UInt32, false),
            Field::new("j", DataType::UInt32, false),
            Field::new("outcome", DataType::Float64, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(UInt32Array::from(left)),
            Arc::new(UInt32Array::from(right)),
            Arc::new(Float64Array::from(outcome)),
        ];
        // Sorted when the prompts were (a stage output of `task-prompts` → `sample` is), so
        // `clean` can stream the judgments prompt by prompt.
        let sorted = rows.windows(2).all(|w| w[0].prompt_id <= w[1].prompt_id);
        (
            RecordBatch::try_new(schema, columns)?,
            sorted.then_some("prompt_id"),
        )
    };
    let manifest = StageOutput {
        stage: "task-reward",
        output,
        sorted_by,
        hash: hash.to_string(),
        config,
        infos: &table.infos,
        stats,
        started,
        started_unix,
    }
    .commit(&batch)
    .await?;
    info!(responses, output, "task-reward: done");
    Ok(manifest)
}
