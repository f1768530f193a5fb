//! `prefsmith select-margin`.

use std::path::PathBuf;

use prefsmith_pipeline::config::load_toml;
use prefsmith_pipeline::formats::InputFormat;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::stages::select_margin::{self, MarginSource, SelectMarginConfig};

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
    /// The input's layout: auto (default), plain or hf-binarized.
    #[arg(long)]
    input_format: Option<String>,
    /// A TOML file with select-margin settings (the keys of a `select-margin` stage).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config: SelectMarginConfig = match &args.config {
        Some(path) => load_toml(path)?,
        None => SelectMarginConfig::default(),
    };
    if args.top_k.is_some() || args.fraction.is_some() {
        config.top_k = args.top_k;
        config.fraction = args.fraction;
    }
    if let Some(sources) = &args.sources {
        config.sources = Some(MarginSource::parse_list(sources)?);
    }
    if let Some(d) = args.external_divisor {
        config.external_divisor = d;
    }
    if let Some(d) = args.implicit_divisor {
        config.implicit_divisor = d;
    }
    if let Some(format) = &args.input_format {
        config.input_format = InputFormat::parse(format)?;
    }
    let manifest = select_margin::run(&config, &args.input, &args.output).await?;
    print_summary(&args.output.clone(), &manifest);
    Ok(())
}

/// Prints what a `select-margin` stage wrote.
pub fn print_summary(output: &str, manifest: &Manifest) {
    let stat = |key: &str| manifest.stats.get(key).cloned().unwrap_or_default();
    let shortfall = stat("shortfall").as_u64().unwrap_or(0);
    println!(
        "select-margin: {} of {} pairs written to {output} (eligible {}, dropped for non-finite margins {}); sources {}, M2 {}{}",
        manifest.rows,
        stat("pairs"),
        stat("eligible"),
        stat("dropped_non_finite"),
        stat("sources"),
        stat("m2"),
        if shortfall > 0 {
            format!("; shortfall {shortfall} (fewer eligible pairs than asked for)")
        } else {
            String::new()
        }
    );
}
