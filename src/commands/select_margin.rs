//! `prefsmith select-margin`.

use std::path::PathBuf;

use prefsmith_pipeline::formats::InputFormat;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::stage::Overrides;
use prefsmith_pipeline::stages::select_margin::MarginSource;

/// Arguments of `prefsmith select-margin`; flags override `--config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input pair table with scores and/or log-probs (a stage output, file or glob).
    #[arg(long)]
    input: String,
    /// Output directory.
    #[arg(long)]
    output: String,
    /// Keep this many pairs.
    #[arg(long)]
    top_k: Option<u64>,
    /// Keep this fraction of the eligible pairs (rounded up).
    #[arg(long)]
    fraction: Option<f64>,
    /// Margin sources to fuse: external, implicit or both (default: those the input has).
    #[arg(long)]
    sources: Option<String>,
    /// Divisor of the external source's M2 search (default 1.5).
    #[arg(long)]
    external_divisor: Option<f64>,
    /// Divisor of the implicit source's M2 search (default 2).
    #[arg(long)]
    implicit_divisor: Option<f64>,
    /// The unit of the margins: auto (default; a source whose 90th-percentile |margin| is
    /// below 4 is measured in units of that quantile / 4) or paper (whole reward units).
    #[arg(long)]
    margin_scale: Option<String>,
    /// The input's layout: auto (default), plain or hf-binarized.
    #[arg(long)]
    input_format: Option<String>,
    /// A TOML file with select-margin settings (the keys of a `select-margin` stage).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    if let Some(format) = &args.input_format {
        InputFormat::parse(format)?;
    }
    let sources = match &args.sources {
        Some(text) => {
            let sources = MarginSource::parse_list(text)?;
            Some(sources.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        }
        None => None,
    };
    let mut overrides = Overrides::from_file(args.config.as_deref())?;
    // The two sizes exclude each other: a flag for either replaces both of the file's.
    if args.top_k.is_some() || args.fraction.is_some() {
        overrides.remove("top-k").remove("fraction");
    }
    overrides
        .set("input", Some(args.input))
        .set("output", Some(args.output))
        .number("top-k", args.top_k)
        .set("fraction", args.fraction)
        .set("sources", sources)
        .set("external-divisor", args.external_divisor)
        .set("implicit-divisor", args.implicit_divisor)
        .set("margin-scale", args.margin_scale)
        .set("input-format", args.input_format);
    let stage = super::build_stage(overrides, "select-margin")?;
    let run = super::run_stage(stage.as_ref(), threads).await?;
    print_summary(&run.output, &run.manifest);
    Ok(())
}

/// Prints what a `select-margin` stage wrote.
pub fn print_summary(output: &str, manifest: &Manifest) {
    let stat = |key: &str| manifest.stats.get(key).cloned().unwrap_or_default();
    let shortfall = stat("shortfall").as_u64().unwrap_or(0);
    println!(
        "select-margin: {} of {} pairs written to {output} (eligible {}, dropped for non-finite margins {}); sources {}, M2 {} (margin units {}){}",
        manifest.rows,
        stat("pairs"),
        stat("eligible"),
        stat("dropped_non_finite"),
        stat("sources"),
        stat("m2"),
        stat("margin_units"),
        if shortfall > 0 {
            format!("; shortfall {shortfall} (fewer eligible pairs than asked for)")
        } else {
            String::new()
        }
    );
}
