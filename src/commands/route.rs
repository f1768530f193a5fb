//! `prefsmith route`.

use std::path::PathBuf;

use prefsmith_pipeline::config::load_toml;
use prefsmith_pipeline::formats::InputFormat;
use prefsmith_pipeline::stages::route::{self, RouteConfig};

/// Arguments of `prefsmith route`; flags override `--config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input pair table (a stage output, file or glob).
    #[arg(long)]
    input: String,
    /// Output directory.
    #[arg(long)]
    output: String,
    /// Margin at or above which a pair goes to DPO (default 0.5).
    #[arg(long, allow_hyphen_values = true)]
    route_threshold: Option<f64>,
    /// Percentage of pairs, smallest margins first, that go to SFT instead.
    #[arg(long)]
    route_percentile: Option<f64>,
    /// The margin column (default rating_gap).
    #[arg(long)]
    margin_column: Option<String>,
    /// The input's layout: auto (default), plain or hf-binarized.
    #[arg(long)]
    input_format: Option<String>,
    /// A TOML file with route settings (the keys of a `route` stage).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config: RouteConfig = match &args.config {
        Some(path) => load_toml(path)?,
        None => RouteConfig::default(),
    };
    config.route_threshold = args.route_threshold.or(config.route_threshold);
    config.route_percentile = args.route_percentile.or(config.route_percentile);
    if let Some(column) = args.margin_column {
        config.margin_column = column;
    }
    if let Some(format) = &args.input_format {
        config.input_format = InputFormat::parse(format)?;
    }
    let manifest = route::run(&config, &args.input, &args.output).await?;
    print_summary(&args.output.clone(), &manifest);
    Ok(())
}

/// Prints what a `route` stage wrote.
pub fn print_summary(output: &str, manifest: &prefsmith_pipeline::manifest::Manifest) {
    let stat = |key: &str| manifest.stats.get(key).cloned().unwrap_or_default();
    println!(
        "route: {} pairs written to {output}: dpo {}, sft {} ({}, margin column {})",
        manifest.rows,
        stat("dpo"),
        stat("sft"),
        stat("split").as_str().unwrap_or("?"),
        stat("margin_column").as_str().unwrap_or("?"),
    );
}
