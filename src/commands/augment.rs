//! `prefsmith augment`.

use std::path::PathBuf;

use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::stages::augment::{self, AugmentConfig};

/// Arguments of `prefsmith augment`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input pair table with scores (a stage output, file or glob; the Hugging Face
    /// ultrafeedback_binarized layout is read too).
    #[arg(long)]
    input: String,
    /// Output directory.
    #[arg(long)]
    output: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = AugmentConfig {
        input: Some(args.input.clone()),
        output: Some(args.output.display().to_string()),
    };
    let manifest = augment::run(&config, &args.input, &args.output).await?;
    print_summary(&args.output.display().to_string(), &manifest);
    Ok(())
}

/// Prints what an `augment` stage wrote.
pub fn print_summary(output: &str, manifest: &Manifest) {
    let stat = |key: &str| manifest.stats.get(key).cloned().unwrap_or_default();
    println!(
        "augment: {} rows written to {output} from {} pairs ({} dropped for equal scores)",
        manifest.rows,
        stat("pairs"),
        stat("dropped_equal_scores"),
    );
}
