//! `prefsmith synth`.

use prefsmith_pipeline::stages::synth::{SynthConfig, SynthLayout};

/// Arguments of `prefsmith synth`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of prompts.
    #[arg(long, default_value_t = 1000)]
    prompts: u64,
    /// Responses per prompt.
    #[arg(long, default_value_t = 16)]
    responses: u32,
    /// Output directory.
    #[arg(long)]
    output: String,
    /// Number of part files.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// long (one row per response) or wide (lists per prompt).
    #[arg(long, default_value = "long")]
    layout: String,
    /// Bytes per response text.
    #[arg(long, default_value_t = 64)]
    response_bytes: usize,
    /// Bytes per prompt text.
    #[arg(long, default_value_t = 48)]
    prompt_bytes: usize,
    /// Fraction of degenerate low outliers (μ − 6σ).
    #[arg(long, default_value_t = 0.02)]
    outlier_fraction: f64,
    /// Fraction of null rewards.
    #[arg(long, default_value_t = 0.0)]
    null_fraction: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let layout = match args.layout.as_str() {
        "long" => SynthLayout::Long,
        "wide" => SynthLayout::Wide,
        other => anyhow::bail!("--layout must be long or wide, got '{other}'"),
    };
    let config = SynthConfig {
        output: Some(args.output.clone()),
        prompts: args.prompts,
        responses: args.responses,
        shards: args.shards,
        layout,
        response_bytes: args.response_bytes,
        prompt_bytes: args.prompt_bytes,
        outlier_fraction: args.outlier_fraction,
        null_fraction: args.null_fraction,
        seed: args.seed,
    };
    let manifest = super::run_stage(&config, threads).await?.manifest;
    println!(
        "synth: {} rows in {} parts written to {}",
        manifest.rows,
        manifest.parts.len(),
        args.output
    );
    Ok(())
}
