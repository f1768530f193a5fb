//! `prefsmith sql`.

use anyhow::Context;
use datafusion::arrow::util::pretty::pretty_format_batches;
use prefsmith_pipeline::sql::{self, OutputFormat};

/// Arguments of `prefsmith sql`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The query.
    query: String,
    /// A table to register, as NAME=PATH (a Parquet file, directory, stage output or glob).
    #[arg(long = "table", value_parser = parse_table)]
    tables: Vec<(String, String)>,
    /// Write the result to this file instead of printing it (.csv → CSV, else Parquet).
    #[arg(long)]
    output: Option<String>,
}

fn parse_table(text: &str) -> Result<(String, String), String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not NAME=PATH"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!("'{text}' is not NAME=PATH"));
    }
    Ok((name.to_string(), path.to_string()))
}

pub async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let ctx = sql::context_with_tables(&args.tables, threads).await?;
    match &args.output {
        Some(path) => {
            let rows = sql::write(&ctx, &args.query, path, OutputFormat::for_path(path)).await?;
            println!("{rows} rows written to {path}");
        }
        None => {
            let batches = sql::collect(&ctx, &args.query).await?;
            println!(
                "{}",
                pretty_format_batches(&batches).context("formatting the result")?
            );
        }
    }
    Ok(())
}
