//! `prefsmith report PATH`.

use prefsmith_pipeline::report;
use prefsmith_pipeline::stage::RunOptions;

/// Arguments of `prefsmith report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stage output, a job's output root, or a job config (.toml).
    path: String,
    /// Where to write the page (default: `report.html` in the job's output root, or
    /// `<stage output>.report.html` beside one stage's output). A path or s3:// URL.
    #[arg(long)]
    output: Option<String>,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let options = RunOptions { threads };
    let registry = prefsmith_trainer::job::stage_registry();
    let run = report::load(&args.path, &registry, &options).await?;
    let dest = report::write(&run, args.output.as_deref(), &options).await?;
    println!("report: {dest} ({} stages)", run.stages.len());
    Ok(())
}
