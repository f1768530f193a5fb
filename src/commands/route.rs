//! `prefsmith route`.

use std::path::PathBuf;

use prefsmith_pipeline::formats::InputFormat;
use prefsmith_pipeline::stage::Overrides;

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

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    if let Some(format) = &args.input_format {
        InputFormat::parse(format)?;
    }
    let mut overrides = Overrides::from_file(args.config.as_deref())?;
    overrides
        .set("input", Some(args.input))
        .set("output", Some(args.output))
        .set("route-threshold", args.route_threshold)
        .set("route-percentile", args.route_percentile)
        .set("margin-column", args.margin_column)
        .set("input-format", args.input_format);
    let stage = super::build_stage(overrides, "route")?;
    let run = super::run_stage(stage.as_ref(), threads).await?;
    print_summary(&run.output, &run.manifest);
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
