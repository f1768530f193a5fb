//! `prefsmith train`.

use std::path::PathBuf;

use prefsmith_trainer::train::config::TrainConfig;
use prefsmith_trainer::train::{self, TrainOptions};

/// Arguments of `prefsmith train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The training config (TOML): [model], [data], [loss], [optim], [run].
    #[arg(long)]
    config: PathBuf,
    /// Continue from the newest checkpoint in run.output (starts fresh when there is none).
    #[arg(long)]
    resume: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = TrainConfig::load(&args.config)?;
    let report = train::train(
        &config,
        TrainOptions {
            resume: args.resume,
            stop_after_step: None,
        },
    )
    .await?;
    let metric = |m: &Option<serde_json::Value>, k: &str| {
        m.as_ref()
            .and_then(|m| m.get(k))
            .and_then(|v| v.as_f64())
            .map_or_else(|| "-".to_string(), |v| format!("{v:.4}"))
    };
    println!(
        "train: {} steps on {} pairs ({} held out, {} dropped as too long) into {}",
        report.steps,
        report.data.train_pairs,
        report.data.eval_pairs,
        report.data.dropped_prompt_too_long,
        config.run.output.display(),
    );
    println!(
        "  last step: loss {} | rewards/accuracies {} | rewards/margins {}",
        metric(&report.last_metrics, "loss"),
        metric(&report.last_metrics, "rewards/accuracies"),
        metric(&report.last_metrics, "rewards/margins"),
    );
    if report.eval_metrics.is_some() {
        println!(
            "  eval: loss {} | rewards/accuracies {} | rewards/margins {}",
            metric(&report.eval_metrics, "eval_loss"),
            metric(&report.eval_metrics, "eval_rewards/accuracies"),
            metric(&report.eval_metrics, "eval_rewards/margins"),
        );
    }
    println!(
        "  {:.2} pairs/s, {:.0} tokens/s; model saved to {}",
        report.pairs_per_second,
        report.tokens_per_second,
        report
            .model_dir
            .map_or_else(|| "-".into(), |d| d.display().to_string()),
    );
    Ok(())
}
