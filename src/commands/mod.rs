//! One module per subcommand; each parses nothing itself and calls into the libraries.

mod augment;
mod clean;
mod experiment;
mod export;
mod inspect;
mod model_args;
mod report;
mod reward;
mod route;
mod run;
mod sample;
mod score;
mod select;
mod select_margin;
mod sql;
mod synth;
mod train;

use clap::{Parser, Subcommand};
use prefsmith_pipeline::job::{self, StageRun};
use prefsmith_pipeline::stage::{Overrides, RunOptions, Stage};

/// Build DPO preference data the way the research says, and train on it.
#[derive(Debug, Parser)]
#[command(name = "prefsmith", version, about)]
pub struct Cli {
    /// Worker threads for queries (0 = one per core).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sample N responses per prompt from a language model (wide layout).
    Sample(sample::Args),
    /// Score responses with an LLM judge or a reward model (adds the reward column).
    Reward(reward::Args),
    /// Add summed response log-probs under a policy or reference model.
    Score(score::Args),
    /// Train with rating-aware DPO (all losses, MixDPO, exact resume) from a TOML config.
    Train(train::Args),
    /// Run a job: the stages of a TOML file, in order, skipping those already up to date.
    Run(run::Args),
    /// Select one preference pair per prompt (sweet spot by default).
    Select(select::Args),
    /// Clean labels by robust PCA over per-prompt comparison matrices (CURATRON).
    Clean(clean::Args),
    /// Keep the pairs with the largest fused external and implicit margins (BeeS).
    SelectMargin(select_margin::Args),
    /// Two goal-conditioned copies per pair, roles swapped in the second (reward-augmented DPO).
    Augment(augment::Args),
    /// Rank pairs by margin (curriculum) and route small margins to SFT (MixDPO).
    Route(route::Args),
    /// Write a pair table in a trainer's layout (TRL, OpenRLHF, NeMo), scores kept.
    Export(export::Args),
    /// Run SQL over Parquet with every prefsmith function registered.
    Sql(sql::Args),
    /// Generate deterministic synthetic scored responses.
    Synth(synth::Args),
    /// Summarise a dataset: layout, prompts, responses per prompt, invalid rewards, quantiles.
    Inspect(inspect::Args),
    /// Test the article's claims on the gold-reward task: every arm × seed through the stages.
    Experiment(experiment::Args),
    /// Write one self-contained HTML page of a run: its stages, plots and every figure.
    Report(report::Args),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sample(args) => sample::run(args, cli.threads).await,
        Command::Reward(args) => reward::run(args, cli.threads).await,
        Command::Score(args) => score::run(args, cli.threads).await,
        Command::Train(args) => train::run(args).await,
        Command::Run(args) => run::run(args, cli.threads).await,
        Command::Select(args) => select::run(args, cli.threads).await,
        Command::Clean(args) => clean::run(args, cli.threads).await,
        Command::SelectMargin(args) => select_margin::run(args, cli.threads).await,
        Command::Augment(args) => augment::run(args, cli.threads).await,
        Command::Export(args) => export::run(args, cli.threads).await,
        Command::Route(args) => route::run(args, cli.threads).await,
        Command::Sql(args) => sql::run(args, cli.threads).await,
        Command::Synth(args) => synth::run(args, cli.threads).await,
        Command::Inspect(args) => inspect::run(args).await,
        Command::Report(args) => report::run(args, cli.threads).await,
        Command::Experiment(args) => experiment::run(args, cli.threads).await,
    }
}

/// Runs the one stage of a subcommand through the job runner, always (a subcommand is asked
/// for explicitly, so it is never skipped as up to date).
async fn run_stage(stage: &dyn Stage, threads: usize) -> anyhow::Result<StageRun> {
    let key = format!("prefsmith {}", stage.kind());
    let options = RunOptions { threads };
    Ok(job::run_stage(stage, stage.input(), &options, true, &key).await?)
}

/// Builds stage `kind` as a job would: the keys of `--config FILE` (if given) with the
/// flags in `overrides` applied over them.
fn build_stage(overrides: Overrides, kind: &str) -> anyhow::Result<Box<dyn Stage>> {
    let registry = prefsmith_trainer::job::stage_registry();
    Ok(overrides.build(&registry, kind, &format!("prefsmith {kind}"))?)
}
