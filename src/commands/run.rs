//! `prefsmith run JOB.toml`.

use std::path::PathBuf;

use prefsmith_pipeline::job::{self, Job};
use prefsmith_pipeline::report;
use prefsmith_pipeline::stage::RunOptions;

/// Arguments of `prefsmith run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job file.
    job: PathBuf,
    /// Run every stage even when its output is up to date.
    #[arg(long)]
    force: bool,
    /// Where to write the job's HTML report (default: `report.html` in its output root).
    #[arg(long)]
    report: Option<String>,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let job = Job::load(&args.job, &prefsmith_trainer::job::stage_registry())?;
    let options = RunOptions { threads };
    let outcome = job::run_reporting(&job, &options, args.force).await;
    // The report is written for a failed job too: it shows what ran and where it stopped. A
    // report that cannot be written is a warning; the job's own outcome decides the exit code.
    let report = report::write(
        &report::of_job_run(&job, &outcome),
        args.report.as_deref(),
        &options,
    )
    .await;
    let runs = match outcome {
        Ok(runs) => runs,
        Err(failure) => {
            if let Ok(dest) = &report {
                eprintln!("report: {dest}");
            }
            return Err(failure.error.into());
        }
    };
    print_runs(&runs);
    match report {
        Ok(dest) => println!("report: {dest}"),
        Err(e) => eprintln!("warning: the job's report was not written: {e}"),
    }
    Ok(())
}

fn print_runs(runs: &[job::StageRun]) {
    for stage in runs {
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
}
