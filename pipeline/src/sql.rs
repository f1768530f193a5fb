//! `prefsmith sql`: ad-hoc SQL over Parquet (files, shard directories, stage outputs, globs)
//! with every prefsmith function registered; results printed or written atomically to Parquet
//! or CSV.

use std::fs::File;
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::input;
use crate::session::{new_context, register_parquet};

/// A session with the given `name=path` tables registered.
pub async fn context_with_tables(
    tables: &[(String, String)],
    threads: usize,
) -> Result<SessionContext> {
    let ctx = new_context(threads)?;
    for (name, path) in tables {
        let files = input::resolve(path).await?;
        for file in &files.files {
            input::FileInfo::read(file).await?;
        }
        register_parquet(&ctx, name, &files.files).await?;
    }
    Ok(ctx)
}

/// Runs `query` and collects the result.
pub async fn collect(ctx: &SessionContext, query: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(query).await?.collect().await?)
}

/// Output formats of `prefsmith sql --output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Parquet (snappy).
    Parquet,
    /// CSV with a header.
    Csv,
}

impl OutputFormat {
    /// The format a file name asks for (`.csv` → CSV, anything else → Parquet).
    pub fn for_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => Self::Csv,
            _ => Self::Parquet,
        }
    }
}

/// Runs `query` and streams the result into `output` (written to a temporary name, renamed
/// when complete). Returns the number of rows.
pub async fn write(
    ctx: &SessionContext,
    query: &str,
    output: &Path,
    format: OutputFormat,
) -> Result<u64> {
    let df = ctx.sql(query).await?;
    let schema = df.schema().as_arrow().clone();
    let mut stream = df.execute_stream().await?;
    let file_name = output
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("output");
    let temp = output.with_file_name(format!(".{file_name}.inprogress"));
    let file = File::create(&temp).map_err(Error::io(&temp))?;
    let io_err = |e: &dyn std::fmt::Display| Error::Io {
        path: temp.clone(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut rows = 0u64;
    let result: Result<()> = async {
        match format {
            OutputFormat::Parquet => {
                let mut writer = ArrowWriter::try_new(file, std::sync::Arc::new(schema), None)
                    .map_err(|e| io_err(&e))?;
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    rows += batch.num_rows() as u64;
                    writer.write(&batch).map_err(|e| io_err(&e))?;
                }
                writer.close().map_err(|e| io_err(&e))?;
            }
            OutputFormat::Csv => {
                let mut writer = csv::WriterBuilder::new().with_header(true).build(file);
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    rows += batch.num_rows() as u64;
                    writer.write(&batch).map_err(|e| io_err(&e))?;
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    std::fs::rename(&temp, output).map_err(Error::io(output))?;
    Ok(rows)
}
