//! `prefsmith reward`.

use prefsmith_trainer::stages::reward::{RewardConfig, RewardMode};

use super::model_args::ModelArgs;

/// Arguments of `prefsmith reward`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Responses: wide layout (`all_generated_responses`) or long layout (`response`).
    #[arg(long)]
    input: String,
    /// Output directory: the input plus the reward column.
    #[arg(long)]
    output: String,
    #[command(flatten)]
    model: ModelArgs,
    /// auto (classifier if the model has a score head, else judge), judge or classifier.
    #[arg(long, default_value = "auto")]
    mode: String,
    /// Output column (default all_rm_scores for wide, reward for long).
    #[arg(long)]
    column: Option<String>,
    /// The judge's arithmetic: f32 (default) or int8 (CPU only, several times faster).
    #[arg(long, default_value = "f32")]
    precision: String,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let config = RewardConfig {
        input: Some(args.input.clone()),
        output: Some(args.output.clone()),
        model: args.model.settings(),
        mode: RewardMode::parse(&args.mode)?,
        column: args.column,
        model_hash: None,
        precision: args.precision.parse()?,
    };
    let manifest = super::run_stage(&config, threads).await?.manifest;
    let stat = |k: &str| manifest.stats.get(k).cloned().unwrap_or_default();
    println!(
        "reward: {} responses scored by {} ({}) into {}",
        stat("responses"),
        stat("model").as_str().unwrap_or("?"),
        stat("mode").as_str().unwrap_or("?"),
        args.output,
    );
    Ok(())
}
