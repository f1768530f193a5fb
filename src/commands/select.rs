//! `prefsmith select`.

use std::path::PathBuf;

use prefsmith_pipeline::formats::InputFormat;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::stage::Overrides;
use prefsmith_pipeline::stages::select::config::Strategy;

/// Arguments of `prefsmith select`; flags override `--config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input: a Parquet file, a directory of shards or a stage output, or a glob.
    #[arg(long)]
    input: Option<String>,
    /// Output directory (part files + _manifest.json).
    #[arg(long)]
    output: Option<String>,
    /// sweet-spot (default), max-min, scalable or positions.
    #[arg(long)]
    strategy: Option<String>,
    /// positions: where the chosen response sits (a number, +inf, -inf, max, min).
    #[arg(long, allow_hyphen_values = true)]
    chosen_k: Option<String>,
    /// positions: where the rejected response sits.
    #[arg(long, allow_hyphen_values = true)]
    rejected_k: Option<String>,
    /// Seed of the scalable strategy.
    #[arg(long)]
    seed: Option<u64>,
    /// Delta degrees of freedom of σ (0 population, 1 sample).
    #[arg(long)]
    ddof: Option<u32>,
    /// Rows per output part.
    #[arg(long)]
    max_rows_per_file: Option<usize>,
    /// Partition the output Hive-style by a column (`strategy=sweet-spot/part-00000.parquet`).
    #[arg(long)]
    partition_by: Option<String>,
    /// Declare whether the long-layout input is sorted by prompt id (`--input-sorted` alone
    /// means true; verified while running). Default: read from the files' metadata.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    input_sorted: Option<bool>,
    /// The reward column: `reward` of the long layout or the score list of the wide one
    /// (e.g. `clean_score` / `clean_scores` after `prefsmith clean`).
    #[arg(long)]
    reward_column: Option<String>,
    /// The input's layout: auto (default), wide or long.
    #[arg(long)]
    input_format: Option<String>,
    /// A TOML file with select settings (the keys of a `select` stage).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    // Parsed here first so that a bad flag is named as the flag's own parser names it.
    if let Some(s) = &args.strategy {
        Strategy::parse(s)?;
    }
    if let Some(format) = &args.input_format {
        InputFormat::parse(format)?;
    }
    let mut overrides = Overrides::from_file(args.config.as_deref())?;
    overrides
        .set("input", args.input)
        .set("output", args.output)
        .set("strategy", args.strategy)
        .set("chosen-k", args.chosen_k)
        .set("rejected-k", args.rejected_k)
        .number("seed", args.seed)
        .number("ddof", args.ddof)
        .number("max-rows-per-file", args.max_rows_per_file)
        .set("partition-by", args.partition_by)
        .set("input-sorted", args.input_sorted)
        .set("input-format", args.input_format)
        .set("columns.reward", args.reward_column.clone())
        .set("columns.scores", args.reward_column);
    let stage = super::build_stage(overrides, "select")?;
    let run = super::run_stage(stage.as_ref(), threads).await?;
    print_summary(&run.output, &run.manifest);
    Ok(())
}

/// Prints what a `select` stage wrote: pairs, skips by reason, mean scores.
pub fn print_summary(output: &str, manifest: &Manifest) {
    let stat = |key: &str| manifest.stats.get(key).cloned().unwrap_or_default();
    let number = |key: &str| {
        stat(key)
            .as_f64()
            .map_or("-".to_string(), |v| format!("{v:.3}"))
    };
    println!(
        "select: {} pairs written to {output} ({} part{}), strategy {}",
        manifest.rows,
        manifest.parts.len(),
        if manifest.parts.len() == 1 { "" } else { "s" },
        stat("strategy").as_str().unwrap_or("?"),
    );
    let skipped = stat("skipped");
    let reasons = skipped
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    println!(
        "  prompts {} | skipped: {reasons} | invalid rewards {}",
        stat("prompts"),
        stat("invalid_rewards")
    );
    println!(
        "  mean score: chosen {}, rejected {}, gap {}",
        number("mean_score_chosen"),
        number("mean_score_rejected"),
        number("mean_rating_gap")
    );
}
