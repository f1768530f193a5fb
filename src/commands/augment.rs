//! `prefsmith augment`.

use prefsmith_pipeline::formats::InputFormat;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::stages::augment::AugmentConfig;

/// Arguments of `prefsmith augment`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input pair table with scores (a stage output, file or glob; the Hugging Face
    /// ultrafeedback_binarized layout is read too).
    #[arg(long)]
    input: String,
    /// Output directory.
    #[arg(long)]
    output: String,
    /// Prepend the goal to the first user message instead of adding a system message (chat
    /// templates without a system role).
    #[arg(long)]
    no_system_role: bool,
    /// The input's layout: auto (default), plain or hf-binarized.
    #[arg(long)]
    input_format: Option<String>,
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let config = AugmentConfig {
        input: Some(args.input.clone()),
        output: Some(args.output.clone()),
        no_system_role: args.no_system_role,
        input_format: match &args.input_format {
            Some(f) => InputFormat::parse(f)?,
            None => InputFormat::Auto,
        },
    };
    let run = super::run_stage(&config, threads).await?;
    print_summary(&run.output, &run.manifest);
    Ok(())
}

/// Prints what an `augment` stage wrote.
pub fn print_summary(output: &str, manifest: &Manifest) {
    let stat = |key: &str| manifest.stats.get(key).cloned().unwrap_or_default();
    println!(
        "augment: {} rows written to {output} from {} pairs ({} dropped for equal scores; goal as {})",
        manifest.rows,
        stat("pairs"),
        stat("dropped_equal_scores"),
        stat("placement").as_str().unwrap_or("?"),
    );
}
