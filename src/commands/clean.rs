//! `prefsmith clean`.

use std::path::PathBuf;

use prefsmith_pipeline::formats::InputFormat;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::stage::Overrides;

/// Arguments of `prefsmith clean`; flags override `--config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input: responses (wide or long layout) or comparisons (prompt_id, i, j, outcome).
    #[arg(long)]
    input: String,
    /// Output directory.
    #[arg(long)]
    output: String,
    /// Cleaning method: bt-trim (default on comparisons), bt-mle, borda, pcp (default on
    /// scores) or stable-pcp.
    #[arg(long)]
    method: Option<String>,
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

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    if let Some(format) = &args.input_format {
        InputFormat::parse(format)?;
    }
    let mut overrides = Overrides::from_file(args.config.as_deref())?;
    overrides
        .set("input", Some(args.input))
        .set("output", Some(args.output))
        .set("method", args.method)
        .set("temperature", args.temperature)
        .set("input-format", args.input_format);
    let stage = super::build_stage(overrides, "clean")?;
    let run = super::run_stage(stage.as_ref(), threads).await?;
    print_summary(&run.output, &run.manifest);
    Ok(())
}

/// Prints what a `clean` stage wrote.
pub fn print_summary(output: &str, manifest: &Manifest) {
    let stat = |key: &str| manifest.stats.get(key).cloned().unwrap_or_default();
    println!(
        "clean: {} rows written to {output} ({} layout, method {}): prompts {}, cleaned {}, passed through {} (degenerate {}), not converged {}, flagged comparisons {}, mean iterations {:.1}",
        manifest.rows,
        stat("layout").as_str().unwrap_or("?"),
        stat("method").as_str().unwrap_or("?"),
        stat("prompts"),
        stat("solved"),
        stat("passed_through"),
        stat("degenerate"),
        stat("non_converged"),
        stat("flagged_comparisons"),
        stat("mean_iterations").as_f64().unwrap_or(0.0),
    );
    if stat("layout").as_str() != Some("comparisons")
        && let Some(note) = stat("note").as_str()
    {
        println!("clean: note: {note}");
    }
}
