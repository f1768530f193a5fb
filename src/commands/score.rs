//! `prefsmith score`.

use prefsmith_pipeline::formats::InputFormat;
use prefsmith_trainer::stages::pairs::Truncation;
use prefsmith_trainer::stages::score::{Role, ScoreConfig};

use super::model_args::ModelArgs;

/// Arguments of `prefsmith score`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pair table (prompt, chosen, rejected) or a responses table (wide or long layout).
    #[arg(long)]
    input: String,
    /// Output directory: the input plus log-prob and token-count columns.
    #[arg(long)]
    output: String,
    /// policy (columns policy_logp_*) or reference (columns ref_logp_*).
    #[arg(long)]
    role: String,
    #[command(flatten)]
    model: ModelArgs,
    /// The pair input's layout: auto (default), plain or hf-binarized.
    #[arg(long)]
    input_format: Option<String>,
    /// Do not read or write the (model, data) score cache.
    #[arg(long)]
    no_cache: bool,
    /// Cut prompt + response to this many tokens, as `prefsmith train` does (data.max-length).
    #[arg(long)]
    max_length: Option<usize>,
    /// Cut prompts to this many tokens first (data.max-prompt-length).
    #[arg(long)]
    max_prompt_length: Option<usize>,
    /// Which end of a cut prompt is kept: keep-end (default) or keep-start.
    #[arg(long, default_value = "keep-end")]
    truncation: String,
    /// Arithmetic: f32 (default, the trainer's) or int8 (CPU only; several times faster with AVX-512
    /// VNNI, log-probs within a few hundredths of a nat per token).
    #[arg(long, default_value = "f32")]
    precision: String,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let config = ScoreConfig {
        input: Some(args.input.clone()),
        output: Some(args.output.clone()),
        model: args.model.settings(),
        role: Role::parse(&args.role)?,
        input_format: match &args.input_format {
            Some(f) => InputFormat::parse(f)?,
            None => InputFormat::Auto,
        },
        cache: !args.no_cache,
        model_hash: None,
        max_length: args.max_length,
        max_prompt_length: args.max_prompt_length,
        truncation: match args.truncation.as_str() {
            "keep-end" => Truncation::KeepEnd,
            "keep-start" => Truncation::KeepStart,
            other => anyhow::bail!("--truncation {other}: use keep-end or keep-start"),
        },
        precision: args.precision.parse()?,
    };
    let manifest = super::run_stage(&config, threads).await?.manifest;
    let stat = |k: &str| manifest.stats.get(k).cloned().unwrap_or_default();
    println!(
        "score: {} sequences ({} tokens) scored as {} by {}{} into {}",
        stat("sequences"),
        stat("tokens"),
        stat("role").as_str().unwrap_or("?"),
        stat("model").as_str().unwrap_or("?"),
        if stat("from_cache").as_bool() == Some(true) {
            " (from cache)"
        } else {
            ""
        },
        args.output,
    );
    Ok(())
}
