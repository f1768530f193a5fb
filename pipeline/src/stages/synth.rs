//! The `synth` stage: deterministic synthetic prompts and scored responses, in the long or
//! the wide layout, for tests and benchmarks.
//!
//! Per prompt `p`: μ_p ~ N(0, 1), σ_p ~ U(0.5, 1.5), reward = μ_p + σ_p·z with z ~ N(0, 1);
//! a configurable fraction of responses are degenerate low outliers (μ_p − 6σ_p) and a fraction
//! of rewards are null. Every prompt draws from its own generator (seeded from the run seed
//! and its number), so the data does not depend on the shard count. Prompt ids (`p0000000042`)
//! sort in prompt order and the files say so in their Parquet metadata, so `select` can use its
//! streaming plan on them.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::future::BoxFuture;
use prefsmith_udfs::selection::SplitMix64;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::manifest::{Manifest, StageWriter};
use crate::metrics::now_unix;
use crate::progress::Progress;
use crate::stage::{Stage, StageContext, config_settings, stage_hash};

/// Settings of the `synth` stage: deterministic synthetic responses with rewards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SynthConfig {
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// Number of prompts (default 1000).
    #[serde(default = "default_prompts")]
    pub prompts: u64,
    /// Responses per prompt (default 16).
    #[serde(default = "default_responses")]
    pub responses: u32,
    /// Number of part files (default 1).
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// `long` (default: one row per response) or `wide` (one row per prompt, lists).
    #[serde(default)]
    pub layout: SynthLayout,
    /// Bytes of each response text (default 64).
    #[serde(default = "default_response_bytes")]
    pub response_bytes: usize,
    /// Bytes of each prompt text (default 48).
    #[serde(default = "default_prompt_bytes")]
    pub prompt_bytes: usize,
    /// Fraction of responses that are degenerate low outliers, μ − 6σ (default 0.02).
    #[serde(default = "default_outliers")]
    pub outlier_fraction: f64,
    /// Fraction of rewards written as null (default 0).
    #[serde(default)]
    pub null_fraction: f64,
    /// Seed (default 0).
    #[serde(default)]
    pub seed: u64,
}

/// Layout of synthetic data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SynthLayout {
    /// One row per response.
    #[default]
    Long,
    /// One row per prompt.
    Wide,
}

fn default_prompts() -> u64 {
    1000
}
fn default_responses() -> u32 {
    16
}
fn default_shards() -> u32 {
    1
}
fn default_response_bytes() -> usize {
    64
}
fn default_prompt_bytes() -> usize {
    48
}
fn default_outliers() -> f64 {
    0.02
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            output: None,
            prompts: default_prompts(),
            responses: default_responses(),
            shards: 1,
            layout: SynthLayout::Long,
            response_bytes: default_response_bytes(),
            prompt_bytes: default_prompt_bytes(),
            outlier_fraction: default_outliers(),
            null_fraction: 0.0,
            seed: 0,
        }
    }
}

impl Stage for SynthConfig {
    fn kind(&self) -> &'static str {
        "synth"
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
    fn settings<'a>(&'a self, _: &'a StageContext<'a>) -> BoxFuture<'a, Result<serde_json::Value>> {
        config_settings(self)
    }
    fn run<'a>(&'a self, ctx: &'a StageContext<'a>) -> BoxFuture<'a, Result<Manifest>> {
        Box::pin(run(self, ctx.output))
    }
}

/// Prompts per generated batch.
const PROMPTS_PER_BATCH: u64 = 4096;

/// Runs `synth` into `output`.
pub async fn run(config: &SynthConfig, output: &str) -> Result<Manifest> {
    let output = &crate::storage::Location::parse(output)?;
    let started = Instant::now();
    let started_unix = now_unix();
    validate(config)?;
    let schema = schema(config.layout);
    let mut writer =
        StageWriter::begin(output, Arc::clone(&schema), usize::MAX, Some("prompt_id")).await?;
    let total = config.prompts;
    let mut progress = Progress::new("synth", total * u64::from(config.responses));
    for shard in 0..u64::from(config.shards) {
        let (first, end) = (
            shard * total / u64::from(config.shards),
            (shard + 1) * total / u64::from(config.shards),
        );
        let mut start = first;
        while start < end {
            let stop = (start + PROMPTS_PER_BATCH).min(end);
            let batch = generate(config, &schema, start..stop)?;
            writer.write(&batch).await?;
            progress.advance((stop - start) * u64::from(config.responses));
            start = stop;
        }
        writer.finish_part().await?;
    }
    progress.finish();
    let stats = [
        (
            "layout",
            json!(match config.layout {
                SynthLayout::Long => "long",
                SynthLayout::Wide => "wide",
            }),
        ),
        ("prompts", json!(config.prompts)),
        (
            "responses",
            json!(config.prompts * u64::from(config.responses)),
        ),
        ("seed", json!(config.seed)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let manifest = Manifest::new(
        "synth",
        synth_config_hash(config),
        config,
        Vec::new(),
        stats,
        started_unix,
    );
    let mut manifest = writer.commit(manifest).await?;
    manifest.timing.seconds = started.elapsed().as_secs_f64();
    info!(rows = manifest.rows, parts = manifest.parts.len(), output = %output, "synth: done");
    Ok(manifest)
}

/// The hash deciding whether an existing `synth` output is up to date.
pub fn synth_config_hash(config: &SynthConfig) -> String {
    stage_hash("synth", &json!(config), &[])
}

fn validate(config: &SynthConfig) -> Result<()> {
    if config.prompts == 0 {
        return Err(Error::config("prompts", "must be at least 1"));
    }
    if config.responses == 0 {
        return Err(Error::config("responses", "must be at least 1"));
    }
    if config.shards == 0 || u64::from(config.shards) > config.prompts {
        return Err(Error::config(
            "shards",
            format!(
                "must be between 1 and the number of prompts ({})",
                config.prompts
            ),
        ));
    }
    for (key, value) in [
        ("outlier-fraction", config.outlier_fraction),
        ("null-fraction", config.null_fraction),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(Error::config(
                key,
                format!("must be in [0, 1], got {value}"),
            ));
        }
    }
    Ok(())
}

fn schema(layout: SynthLayout) -> SchemaRef {
    let fields = match layout {
        SynthLayout::Long => vec![
            Field::new("prompt_id", DataType::Utf8, false),
            Field::new("prompt", DataType::Utf8, false),
            Field::new("response_index", DataType::Int64, false),
            Field::new("response", DataType::Utf8, false),
            Field::new("reward", DataType::Float64, true),
        ],
        SynthLayout::Wide => vec![
            Field::new("prompt_id", DataType::Utf8, false),
            Field::new("prompt", DataType::Utf8, false),
            Field::new(
                "all_generated_responses",
                DataType::new_list(DataType::Utf8, true),
                true,
            ),
            Field::new(
                "all_rm_scores",
                DataType::new_list(DataType::Float64, true),
                true,
            ),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// Letters, digits and spaces: readable text of exact byte length.
const ALPHABET: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789";

struct PromptRng(SplitMix64);

impl PromptRng {
    fn new(seed: u64, prompt: u64) -> Self {
        // Decorrelate neighbouring prompts: mix the prompt number through one SplitMix step.
        let mut mixer = SplitMix64::new(seed ^ prompt.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self(SplitMix64::new(mixer.next_u64()))
    }

    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        // Box–Muller; 1 − u keeps the logarithm finite.
        let (u, v) = (1.0 - self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn text(&mut self, len: usize, out: &mut String) {
        out.clear();
        while out.len() < len {
            let word = self.0.next_u64();
            for k in 0..8.min(len - out.len()) {
                out.push(ALPHABET[((word >> (k * 8)) & 63) as usize] as char);
            }
        }
    }
}

fn generate(
    config: &SynthConfig,
    schema: &SchemaRef,
    prompts: std::ops::Range<u64>,
) -> Result<RecordBatch> {
    let n = (prompts.end - prompts.start) as usize;
    let k = config.responses as usize;
    let mut ids = StringBuilder::with_capacity(n * k, n * k * 11);
    let mut texts = StringBuilder::with_capacity(n * k, n * k * config.prompt_bytes);
    let mut index = Int64Builder::with_capacity(n * k);
    let mut responses = StringBuilder::with_capacity(n * k, n * k * config.response_bytes);
    let mut rewards = Float64Builder::with_capacity(n * k);
    let mut response_lists = ListBuilder::new(StringBuilder::new());
    let mut score_lists = ListBuilder::new(Float64Builder::new());
    let (mut prompt_text, mut response_text) = (String::new(), String::new());
    for p in prompts {
        let mut rng = PromptRng::new(config.seed, p);
        let id = format!("p{p:010}");
        rng.text(config.prompt_bytes, &mut prompt_text);
        let (mu, sigma) = (rng.normal(), 0.5 + rng.uniform());
        let rows = match config.layout {
            SynthLayout::Long => k,
            SynthLayout::Wide => 1,
        };
        for _ in 0..rows {
            ids.append_value(&id);
            texts.append_value(&prompt_text);
        }
        for r in 0..k {
            rng.text(config.response_bytes, &mut response_text);
            let z = rng.normal();
            let (outlier, missing) = (
                rng.uniform() < config.outlier_fraction,
                rng.uniform() < config.null_fraction,
            );
            let reward = if missing {
                None
            } else if outlier {
                Some(mu - 6.0 * sigma)
            } else {
                Some(mu + sigma * z)
            };
            match config.layout {
                SynthLayout::Long => {
                    index.append_value(r as i64);
                    responses.append_value(&response_text);
                    rewards.append_option(reward);
                }
                SynthLayout::Wide => {
                    response_lists.values().append_value(&response_text);
                    score_lists.values().append_option(reward);
                }
            }
        }
        if config.layout == SynthLayout::Wide {
            response_lists.append(true);
            score_lists.append(true);
        }
    }
    let columns: Vec<ArrayRef> = match config.layout {
        SynthLayout::Long => vec![
            Arc::new(ids.finish()),
            Arc::new(texts.finish()),
            Arc::new(index.finish()),
            Arc::new(responses.finish()),
            Arc::new(rewards.finish()),
        ],
        SynthLayout::Wide => vec![
            Arc::new(ids.finish()),
            Arc::new(texts.finish()),
            Arc::new(response_lists.finish()),
            Arc::new(score_lists.finish()),
        ],
    };
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
