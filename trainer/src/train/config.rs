//! `prefsmith train --config FILE`: the TOML schema. Every table and key is checked; an unknown
//! key is an error naming it, before anything is loaded.
//!
//! ```toml
//! [model]
//! model = "tiny:0"            # .gguf, Hugging Face directory, smollm2, tiny:SEED
//! device = "cpu"
//!
//! [data]
//! pairs = "out/quickstart/pairs"
//! max-length = 512
//!
//! [loss]
//! types = ["sigmoid"]
//!
//! [optim]
//! learning-rate = 1e-3
//!
//! [run]
//! output = "out/train-tiny"
//! ```

use std::path::{Path, PathBuf};

use prefsmith_model::settings::ModelSettings;
use prefsmith_pipeline::formats::InputFormat;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use prefsmith_model::gemm::MatmulPrecision;

use crate::losses::{LossKind, LossMix, LossParams};
use crate::stages::pairs::Truncation;
use crate::train::optim::OptimSettings;

/// The whole training configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainConfig {
    /// The policy (and reference) model.
    pub model: ModelSection,
    /// The pair table and how it becomes token sequences.
    pub data: DataSection,
    /// Which losses, with which weights and hyper-parameters.
    #[serde(default)]
    pub loss: LossSection,
    /// AdamW and the learning-rate schedule.
    #[serde(default)]
    pub optim: OptimSettings,
    /// Batching, steps, evaluation, checkpoints, output.
    pub run: RunSection,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelSection {
    /// The model to train: a `.gguf` file, a Hugging Face directory, `smollm2`, `tiny:SEED`.
    pub model: String,
    /// The frozen reference for the log-ratios. Default: the policy's starting weights.
    #[serde(default)]
    pub reference: Option<String>,
    /// `cpu` (default), `cuda`, `cuda:N` or `wgpu`.
    #[serde(default = "prefsmith_model::settings::default_device")]
    pub device: String,
    /// Token budget per forward pass when computing reference log-probs. Default 4096.
    #[serde(default = "prefsmith_model::settings::default_batch_tokens")]
    pub max_batch_tokens: usize,
    /// The policy's matrix products on the CPU: `f32` (default) or `bf16` (inputs rounded to
    /// bf16, exact products, f32 sums; needs AVX512_BF16). Everything else stays f32.
    #[serde(default)]
    pub precision: MatmulPrecision,
}

impl ModelSection {
    /// The settings the model stages take, for `model` (the policy) or another spec.
    pub fn settings(&self, spec: &str) -> ModelSettings {
        ModelSettings {
            model: spec.to_string(),
            device: self.device.clone(),
            max_batch_tokens: self.max_batch_tokens,
        }
    }
}

/// Whether MixDPO routing is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixDpo {
    /// On when the table has a `route` column (from `prefsmith route`). Default.
    #[default]
    Auto,
    /// Required: an error without a `route` column.
    On,
    /// Ignore any `route` column: every pair is a preference pair, shuffled.
    Off,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DataSection {
    /// The pair table: a Parquet file, a directory of shards, a stage output, or a glob.
    pub pairs: String,
    /// The pair layout: `auto` (default), `plain` or `hf-binarized`.
    #[serde(default)]
    pub input_format: InputFormat,
    /// Longest prompt + response in tokens (longer responses are cut). Default 1024.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Longest prompt in tokens: longer prompts are cut first, keeping the end `truncation`
    /// names. Default: none (a prompt that alone fills `max-length` drops its row).
    #[serde(default)]
    pub max_prompt_length: Option<usize>,
    /// `keep-end` (default) or `keep-start`: which part of a long prompt is kept.
    #[serde(default)]
    pub truncation: Truncation,
    /// Fraction of pairs held out for evaluation (chosen by a seeded hash of `prompt_id`).
    /// Default 0.05.
    #[serde(default = "default_eval_fraction")]
    pub eval_fraction: f64,
    /// MixDPO routing from the `route` column: `auto` (default), `on`, `off`.
    #[serde(default)]
    pub mixdpo: MixDpo,
    /// Train on a seeded random subset of this many pairs (BeeS's seed model is DPO on 2,000
    /// random pairs): the pairs whose sha256 of `"subset:{seed}:{prompt_id}:{row}"` is
    /// smallest, kept in table order. Default: all pairs.
    #[serde(default)]
    pub subset: Option<usize>,
}

fn default_max_length() -> usize {
    1024
}

fn default_eval_fraction() -> f64 {
    0.05
}

/// `[loss]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LossSection {
    /// Loss names: sigmoid, cdpo, robust, ipo, hinge, sft, rdpo, ml-rdpo. Default `["sigmoid"]`.
    pub types: Vec<LossKind>,
    /// One weight per type. Default: all 1.
    pub weights: Option<Vec<f64>>,
    /// β (IPO's τ). Default 0.1.
    pub beta: f64,
    /// cDPO's label-smoothing ε. Default 0.1.
    pub cdpo_epsilon: f64,
    /// Robust DPO's flip rate ε, in [0, 0.5). Default 0.1.
    pub robust_epsilon: f64,
    /// RDPO's trust in ratings β₁. Default 1.0.
    pub rdpo_beta1: f64,
    /// ML-RDPO's penalty weight λ. Default 1.0.
    pub ml_rdpo_lambda: f64,
}

impl Default for LossSection {
    fn default() -> Self {
        let p = LossParams::default();
        Self {
            types: vec![LossKind::Sigmoid],
            weights: None,
            beta: p.beta,
            cdpo_epsilon: p.cdpo_epsilon,
            robust_epsilon: p.robust_epsilon,
            rdpo_beta1: p.rdpo_beta1,
            ml_rdpo_lambda: p.ml_rdpo_lambda,
        }
    }
}

impl LossSection {
    /// The hyper-parameters as the losses take them.
    pub fn params(&self) -> LossParams {
        LossParams {
            beta: self.beta,
            cdpo_epsilon: self.cdpo_epsilon,
            robust_epsilon: self.robust_epsilon,
            rdpo_beta1: self.rdpo_beta1,
            ml_rdpo_lambda: self.ml_rdpo_lambda,
        }
    }
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunSection {
    /// Output directory: `metrics.jsonl`, `checkpoints/`, `model/`, `summary.json`.
    pub output: PathBuf,
    /// Passes over the data (per MixDPO stage). Default 1.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Pairs per forward/backward pass. Default 2.
    #[serde(default = "default_micro_batch_size")]
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step. Default 1.
    #[serde(default = "default_gradient_accumulation_steps")]
    pub gradient_accumulation_steps: usize,
    /// Stop after this many optimizer steps (0 = run every epoch). Default 0.
    #[serde(default)]
    pub max_steps: usize,
    /// Seed of the shuffling and of the evaluation split. Default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Evaluate every this many steps (0 = only at the end). Default 0.
    #[serde(default)]
    pub eval_steps: usize,
    /// Write a checkpoint every this many steps (0 = only at the end). Default 0.
    #[serde(default)]
    pub save_steps: usize,
    /// Checkpoints kept (the newest). Default 2.
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
    /// Log a progress line every this many steps. Default 1.
    #[serde(default = "default_logging_steps")]
    pub logging_steps: usize,
}

fn default_epochs() -> usize {
    1
}

fn default_micro_batch_size() -> usize {
    2
}

fn default_gradient_accumulation_steps() -> usize {
    1
}

fn default_keep_checkpoints() -> usize {
    2
}

fn default_logging_steps() -> usize {
    1
}

fn default_seed() -> u64 {
    42
}

impl TrainConfig {
    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let config: Self = prefsmith_pipeline::config::load_toml(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and checks TOML text (`source` names it in errors).
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let config: Self = prefsmith_pipeline::config::parse_toml(text, source)?;
        config.validate()?;
        Ok(config)
    }

    /// The loss mix of the preference stage.
    pub fn loss_mix(&self) -> Result<LossMix> {
        LossMix::new(
            &self.loss.types,
            self.loss.weights.as_deref(),
            self.loss.params(),
        )
    }

    /// Checks every range, naming the key.
    pub fn validate(&self) -> Result<()> {
        self.loss_mix()?;
        self.optim.validate()?;
        let bad = |key: &str, why: &str| Err(Error::Config(format!("{key}: {why}")));
        let d = &self.data;
        if d.max_length < 2 {
            return bad("data.max-length", "must be at least 2");
        }
        if d.max_prompt_length
            .is_some_and(|m| m == 0 || m >= d.max_length)
        {
            return bad(
                "data.max-prompt-length",
                "must be positive and smaller than data.max-length",
            );
        }
        if !(0.0..1.0).contains(&d.eval_fraction) {
            return bad("data.eval-fraction", "must be in [0, 1)");
        }
        let r = &self.run;
        for (key, v) in [
            ("run.epochs", r.epochs),
            ("run.micro-batch-size", r.micro_batch_size),
            (
                "run.gradient-accumulation-steps",
                r.gradient_accumulation_steps,
            ),
            ("run.keep-checkpoints", r.keep_checkpoints),
            ("run.logging-steps", r.logging_steps),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if self.model.max_batch_tokens == 0 {
            return bad("model.max-batch-tokens", "must be at least 1");
        }
        let device = self
            .model
            .device
            .parse::<prefsmith_model::DeviceSpec>()
            .map_err(|e| Error::Config(format!("model.device: {e}")))?;
        if self.model.precision == MatmulPrecision::Bf16 {
            if device != prefsmith_model::DeviceSpec::Cpu {
                let why = format!(
                    "\"bf16\" is the CPU kernel's precision; on model.device = \"{device}\" \
                     use \"f32\""
                );
                return bad("model.precision", &why);
            }
            if !prefsmith_model::gemm::supports(MatmulPrecision::Bf16) {
                return bad(
                    "model.precision",
                    "\"bf16\" needs a CPU with AVX512_BF16, which this one lacks; use \"f32\"",
                );
            }
        }
        Ok(())
    }

    /// A hash of everything that determines the training trajectory (not the output path, not
    /// how often it logs), so `--resume` refuses a checkpoint made under another config.
    pub fn trajectory_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut copy = self.clone();
        copy.run.output = PathBuf::new();
        copy.run.logging_steps = 1;
        copy.run.keep_checkpoints = 1;
        let text = serde_json::to_string(&copy).unwrap_or_default();
        Sha256::digest(text.as_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [model]
        model = "tiny:0"
        [data]
        pairs = "pairs.parquet"
        [run]
        output = "out"
    "#;

    #[test]
    fn defaults_fill_a_minimal_config() {
        let c = TrainConfig::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(c.loss.types, vec![LossKind::Sigmoid]);
        assert_eq!(c.loss.beta, 0.1);
        assert_eq!(c.data.max_length, 1024);
        assert_eq!(c.run.micro_batch_size, 2);
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = MINIMAL.replace("[run]", "[run]\nlearning_rate = 1.0");
        let e = TrainConfig::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("learning_rate") && e.contains("t.toml"), "{e}");
        let text = MINIMAL.replace("[data]", "[data]\nmax-lenght = 3");
        let e = TrainConfig::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("max-lenght"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let text = MINIMAL.replace("[data]", "[data]\nmax-prompt-length = 2000");
        let e = TrainConfig::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("data.max-prompt-length"), "{e}");
        let text = format!("{MINIMAL}\n[loss]\ntypes = [\"dpoo\"]");
        let e = TrainConfig::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("dpoo"), "{e}");
    }

    #[test]
    fn the_matmul_precision_is_checked_against_the_device_and_the_cpu() {
        let with = |line: &str| MINIMAL.replace("[data]", &format!("{line}\n[data]"));
        let c = TrainConfig::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(c.model.precision, MatmulPrecision::F32);
        let e = TrainConfig::parse(&with("precision = \"fp8\""), "t.toml").unwrap_err();
        assert!(e.to_string().contains("fp8"), "{e}");
        let text = with("precision = \"bf16\"\ndevice = \"cuda\"");
        let e = TrainConfig::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("model.precision") && e.contains("cuda"), "{e}");
        let bf16 = TrainConfig::parse(&with("precision = \"bf16\""), "t.toml");
        if prefsmith_model::gemm::supports(MatmulPrecision::Bf16) {
            assert_eq!(bf16.unwrap().model.precision, MatmulPrecision::Bf16);
        } else {
            let e = bf16.unwrap_err().to_string();
            assert!(e.contains("AVX512_BF16"), "{e}");
        }
    }
}
