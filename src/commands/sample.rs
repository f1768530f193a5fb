//! `prefsmith sample`.

use prefsmith_model::sampling::SamplingConfig;
use prefsmith_trainer::stages::sample::SampleConfig;

use super::model_args::ModelArgs;

/// Arguments of `prefsmith sample`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Prompts: Parquet (file, glob or stage output) or JSONL, with `prompt` and optionally
    /// `prompt_id`.
    #[arg(long)]
    prompts: String,
    /// Output directory (wide layout).
    #[arg(long)]
    output: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Responses per prompt.
    #[arg(long, default_value_t = 4)]
    n: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Nucleus mass (1 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Longest response in tokens.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Seed: the same seed gives the same responses.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generate `max-new-tokens` tokens even past end-of-sequence (for benchmarks).
    #[arg(long)]
    ignore_eos: bool,
    /// Use only the first N prompts.
    #[arg(long)]
    limit: Option<usize>,
    /// Arithmetic: f32 (default) or int8 (CPU only, several times faster; a seed reproduces
    /// samples within one precision).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Fraction of responses replaced by degenerate output (empty, truncated, garbled), for
    /// experiments with a known gold reward.
    #[arg(long, default_value_t = 0.0)]
    degenerate_rate: f64,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let config = SampleConfig {
        input: Some(args.prompts.clone()),
        output: Some(args.output.clone()),
        model: args.model.settings(),
        sampling: SamplingConfig {
            n: args.n,
            temperature: args.temperature,
            top_p: args.top_p,
            max_new_tokens: args.max_new_tokens,
            seed: args.seed,
            ignore_eos: args.ignore_eos,
            precision: args.precision.parse()?,
        },
        limit: args.limit,
        degenerate_rate: args.degenerate_rate,
        model_hash: None,
    };
    let manifest = super::run_stage(&config, threads).await?.manifest;
    let stat = |k: &str| manifest.stats.get(k).cloned().unwrap_or_default();
    println!(
        "sample: {} prompts × {} responses written to {} ({} tokens, {:.1} tokens/s)",
        stat("prompts"),
        args.n,
        args.output,
        stat("generated_tokens"),
        stat("tokens_per_second").as_f64().unwrap_or(0.0),
    );
    Ok(())
}
