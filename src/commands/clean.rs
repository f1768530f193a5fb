//! `prefsmith clean`.

use std::path::PathBuf;

use prefsmith_pipeline::config::load_toml;
use prefsmith_pipeline::formats::InputFormat;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::stages::clean::{self, CleanConfig};

/// Arguments of `prefsmith clean`; flags override `--config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input: responses (wide or long layout) or comparisons (prompt_id, i, j, outcome).
    #[arg(long)]
    input: String,
    /// Output directory.
    #[arg(long)]
    output: String,
    /// Temperature T of the score matrix X_ij = (s_i − s_j)/T (default 1).
    #[arg(long)]
    temperature: Option<f64>,
    /// The input's layout: auto (default), wide, long or comparisons.
    #[arg(long)]
    input_format: Option<String>,
    /// A TOML file with clean settings (the keys of a `clean` stage).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config: CleanConfig = match &args.config {
        Some(path) => load_toml(path)?,
        None => CleanConfig::default(),
    };
    if let Some(t) = args.temperature {
        config.temperature = t;
    }
    if let Some(format) = &args.input_format {
        config.input_format = InputFormat::parse(format)?;
    }
    let manifest = clean::run(&config, &args.input, &args.output).await?;
    print_summary(&args.output.clone(), &manifest);
    Ok(())
}

/// Prints what a `clean` stage wrote.
pub fn print_summary(output: &str, manifest: &Manifest) {
    let stat = |key: &str| manifest.stats.get(key).cloned().unwrap_or_default();
    println!(
        "clean: {} rows written to {output} ({} layout): prompts {}, cleaned {}, passed through {} (degenerate {}), not converged {}, flagged comparisons {}, mean iterations {:.1}",
        manifest.rows,
        stat("layout").as_str().unwrap_or("?"),
        stat("prompts"),
        stat("solved"),
        stat("passed_through"),
        stat("degenerate"),
        stat("non_converged"),
        stat("flagged_comparisons"),
        stat("mean_iterations").as_f64().unwrap_or(0.0),
    );
}
