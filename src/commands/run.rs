//! `prefsmith run JOB.toml`.

use std::path::PathBuf;

use prefsmith_pipeline::config::{JobConfig, load_toml};
use prefsmith_pipeline::job;
use prefsmith_pipeline::stages::select::RunOptions;

/// Arguments of `prefsmith run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file.
    job: PathBuf,
    /// Run every stage even when its output is up to date.
    #[arg(long)]
    force: bool,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let config: JobConfig = load_toml(&args.job)?;
    let source = args.job.display().to_string();
    let models = prefsmith_trainer::job::TrainerStages;
    let runs = job::run(
        &config,
        &source,
        &RunOptions { threads },
        args.force,
        Some(&models),
    )
    .await?;
    for stage in &runs {
        let output = stage.output.clone();
        match stage.kind {
            "select" => super::select::print_summary(&output, &stage.manifest),
            "clean" => super::clean::print_summary(&output, &stage.manifest),
            "select-margin" => super::select_margin::print_summary(&output, &stage.manifest),
            "augment" => super::augment::print_summary(&output, &stage.manifest),
            "route" => super::route::print_summary(&output, &stage.manifest),
            "export" => super::export::print_summary(&output, &stage.manifest),
            "train" => {
                let steps = stage
                    .manifest
                    .stats
                    .get("steps")
                    .cloned()
                    .unwrap_or_default();
                println!("train: {steps} steps; model in {output}/model");
            }
            kind => {
                let state = if stage.up_to_date {
                    " (up to date, not rerun)"
                } else {
                    ""
                };
                println!("{kind}: {} rows in {output}{state}", stage.manifest.rows);
                continue;
            }
        }
        if stage.up_to_date {
            println!("  up to date (same settings and inputs), not rerun");
        }
    }
    Ok(())
}
