//! `prefsmith select`.

use std::path::PathBuf;

use anyhow::Context;
use prefsmith_pipeline::config::{KValue, SelectConfig, Strategy, load_toml};
use prefsmith_pipeline::formats::InputFormat;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::stages::select::{self, RunOptions};

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
    let mut config: SelectConfig = match &args.config {
        Some(path) => load_toml(path)?,
        None => SelectConfig::default(),
    };
    if let Some(s) = &args.strategy {
        config.strategy = Strategy::parse(s)?;
    }
    if let Some(k) = args.chosen_k {
        config.chosen_k = Some(KValue::Text(k));
    }
    if let Some(k) = args.rejected_k {
        config.rejected_k = Some(KValue::Text(k));
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(ddof) = args.ddof {
        config.ddof = ddof;
    }
    if let Some(rows) = args.max_rows_per_file {
        config.max_rows_per_file = rows;
    }
    if let Some(column) = &args.partition_by {
        config.partition_by = Some(column.clone());
    }
    if let Some(format) = &args.input_format {
        config.input_format = InputFormat::parse(format)?;
    }
    if let Some(column) = &args.reward_column {
        config.columns.reward = column.clone();
        config.columns.scores = column.clone();
    }
    if args.input_sorted.is_some() {
        config.input_sorted = args.input_sorted;
    }
    if let Some(input) = args.input {
        config.input = Some(input);
    }
    if let Some(output) = &args.output {
        config.output = Some(output.clone());
    }
    let input = config
        .input
        .clone()
        .context("missing --input (or `input` in --config)")?;
    let output = config
        .output
        .clone()
        .context("missing --output (or `output` in --config)")?;
    let manifest = select::run(&config, &input, &output, &RunOptions { threads }).await?;
    print_summary(&output, &manifest);
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
