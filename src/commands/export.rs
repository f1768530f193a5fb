//! `prefsmith export`.

use prefsmith_pipeline::formats::InputFormat;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::stages::export::{ExportConfig, ExportFormat};

/// Arguments of `prefsmith export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input pair table (a stage output, file or glob).
    #[arg(long)]
    input: String,
    /// Output directory.
    #[arg(long)]
    output: String,
    /// The layout written: trl-standard (default), trl-conversational, openrlhf or nemo.
    #[arg(long, default_value = "trl-standard")]
    format: String,
    /// The input's layout: auto (default), plain or hf-binarized.
    #[arg(long)]
    input_format: Option<String>,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let config = ExportConfig {
        input: Some(args.input.clone()),
        output: Some(args.output.clone()),
        format: ExportFormat::parse(&args.format)?,
        input_format: match &args.input_format {
            Some(f) => InputFormat::parse(f)?,
            None => InputFormat::Auto,
        },
        ..ExportConfig::default()
    };
    let run = super::run_stage(&config, threads).await?;
    print_summary(&run.output, &run.manifest);
    Ok(())
}

/// Prints what an `export` stage wrote.
pub fn print_summary(output: &str, manifest: &Manifest) {
    let stat = |key: &str| manifest.stats.get(key).cloned().unwrap_or_default();
    println!(
        "export: {} pairs written to {output} as {}",
        manifest.rows,
        stat("format").as_str().unwrap_or("?"),
    );
}
