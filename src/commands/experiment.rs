//! `prefsmith experiment CONFIG.toml`: an experiment of `configs/experiments/` (the gold-reward
//! task, every arm under every seed, then the summary and its report page).

use std::path::PathBuf;

use prefsmith_pipeline::report;
use prefsmith_pipeline::stage::RunOptions;
use prefsmith_trainer::experiment::{self, ExperimentConfig};

/// Arguments of `prefsmith experiment`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The experiment file (`configs/experiments/*.toml`).
    config: PathBuf,
    /// The CI size: two seeds, 48 training and 16 held-out prompts, one epoch, into
    /// `<output>-reduced` (checks the pipeline runs, not what comes out).
    #[arg(long)]
    reduced: bool,
    /// Rerun every stage even when its output is up to date.
    #[arg(long)]
    force: bool,
    /// Write the outputs here instead of the file's `output`.
    #[arg(long)]
    output: Option<String>,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let mut config = ExperimentConfig::load(&args.config)?;
    if let Some(output) = args.output {
        config.output = output;
    }
    if args.reduced {
        config = config.reduced();
    }
    let options = RunOptions { threads };
    let registry = prefsmith_trainer::job::stage_registry();
    let outcome = experiment::run(&config, &registry, &options, args.force).await?;
    let page = format!("{}/report.html", config.output);
    // The summary's curves, then what the data looked like in the first run: the rewards of
    // the sampled responses (spread, skew, the degenerate tail) and the pairs picked from them.
    let mut run = report::load(&outcome.summary, &registry, &options).await?;
    run.title = format!("experiment {}", config.name);
    for example in &outcome.examples {
        let more = report::load(example, &registry, &options).await?;
        run.stages.extend(more.stages);
    }
    let page = report::write(&run, Some(&page), &options).await?;
    println!(
        "experiment {}: {} runs ({} stages run) in {:.0} s; summary in {}",
        config.name, outcome.jobs, outcome.stages_run, outcome.seconds, outcome.summary
    );
    for line in experiment::summary::table_lines(&outcome.summary).await? {
        println!("  {line}");
    }
    println!("report: {page}");
    Ok(())
}
