//! `prefsmith sql`: ad-hoc SQL over Parquet (files, shard directories, stage outputs, globs)
//! with every prefsmith function registered; results printed or written atomically to Parquet
//! or CSV.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;

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
    /// The format a file name or URL asks for (`.csv` → CSV, anything else → Parquet).
    pub fn for_path(path: &str) -> Self {
        if path.to_ascii_lowercase().ends_with(".csv") {
            Self::Csv
        } else {
            Self::Parquet
        }
    }
}

/// Runs `query` and streams the result into `output`, a path or URL. The file appears only
/// when complete: a local file is written to a staging name and renamed, an S3 object is one
/// PUT or a multipart upload completed last (aborted on failure). Returns the number of rows.
pub async fn write(
    ctx: &SessionContext,
    query: &str,
    output: &str,
    format: OutputFormat,
) -> Result<u64> {
    let location = crate::storage::Location::parse(output)?;
    if let Some(parent) = location
        .local_path()
        .and_then(|p| p.parent().map(|p| p.to_path_buf()))
    {
        std::fs::create_dir_all(&parent).map_err(Error::io(&parent))?;
    }
    let df = ctx.sql(query).await?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let failed = |e: &dyn std::fmt::Display| Error::Storage {
        location: location.to_string(),
        message: format!("writing failed: {e}"),
    };
    let sink = BufWriter::with_capacity(
        std::sync::Arc::clone(location.store()),
        location.path().clone(),
        crate::storage::settings()?.multipart_threshold_bytes,
    );
    let mut rows = 0u64;
    match format {
        OutputFormat::Parquet => {
            let mut writer =
                AsyncArrowWriter::try_new(sink, schema, None).map_err(|e| failed(&e))?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).await.map_err(|e| failed(&e))?;
            }
            writer.close().await.map_err(|e| failed(&e))?;
        }
        OutputFormat::Csv => {
            let mut sink = sink;
            let mut first = true;
            let result: Result<()> = async {
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    rows += batch.num_rows() as u64;
                    sink.write_all(&csv_bytes(&batch, first)?)
                        .await
                        .map_err(|e| failed(&e))?;
                    first = false;
                }
                if first {
                    // No rows: still a header.
                    let empty = RecordBatch::new_empty(std::sync::Arc::clone(&schema));
                    sink.write_all(&csv_bytes(&empty, true)?)
                        .await
                        .map_err(|e| failed(&e))?;
                }
                sink.shutdown().await.map_err(|e| failed(&e))
            }
            .await;
            if let Err(e) = result {
                let _ = sink.abort().await;
                return Err(e);
            }
        }
    }
    Ok(rows)
}

/// One batch as CSV text (with the header when `header`).
fn csv_bytes(batch: &RecordBatch, header: bool) -> Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new()
        .with_header(header)
        .build(Vec::new());
    writer.write(batch)?;
    Ok(writer.into_inner())
}
