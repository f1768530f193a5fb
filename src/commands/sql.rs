//! `prefsmith sql`.

use anyhow::Context;
use datafusion::arrow::util::pretty::pretty_format_batches;
use prefsmith_pipeline::sql::{self, OutputFormat};

/// Arguments of `prefsmith sql`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The query.
    #[arg(required_unless_present = "functions")]
    query: Option<String>,
    /// Print every prefsmith function (kind, description, syntax, arguments, example) and exit.
    #[arg(long, conflicts_with_all = ["query", "tables", "output"])]
    functions: bool,
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
    if args.functions {
        print!("{}", sql::function_reference());
        return Ok(());
    }
    // clap requires the query unless --functions is given.
    let query = args.query.as_deref().context("a query is required")?;
    let ctx = sql::context_with_tables(&args.tables, threads).await?;
    match &args.output {
        Some(path) => {
            let rows = sql::write(&ctx, query, path, OutputFormat::for_path(path)).await?;
            println!("{rows} rows written to {path}");
        }
        None => {
            let batches = sql::collect(&ctx, query).await?;
            println!(
                "{}",
                pretty_format_batches(&batches).context("formatting the result")?
            );
        }
    }
    Ok(())
}
