//! `prefsmith sql`: ad-hoc SQL over Parquet (files, shard directories, stage outputs, globs)
//! with every prefsmith function registered; results printed or written atomically to Parquet
//! or CSV. `prefsmith sql --functions` prints the reference of those functions instead.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;

use prefsmith_udfs::documentation::FunctionDoc;

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

/// Width the reference wraps its prose at.
const REFERENCE_WIDTH: usize = 96;

/// The reference of every prefsmith function as plain text, sorted by name: name, kind and
/// section, description, syntax, arguments and SQL example.
pub fn function_reference() -> String {
    let docs = prefsmith_udfs::function_docs();
    let mut text = format!(
        "{} prefsmith functions (sql --functions); usable in every query of `prefsmith sql`.\n",
        docs.len()
    );
    for doc in &docs {
        text.push('\n');
        text.push_str(&describe(doc));
    }
    text
}

/// One function's entry of the reference.
fn describe(doc: &FunctionDoc) -> String {
    let documentation = &doc.documentation;
    let mut text = format!(
        "{} ({}, {})\n",
        doc.name, doc.kind, documentation.doc_section.label
    );
    wrap_into(&mut text, &documentation.description, "    ", "    ");
    text.push_str("\n    Syntax\n        ");
    text.push_str(&documentation.syntax_example);
    text.push('\n');
    if let Some(arguments) = &documentation.arguments {
        text.push_str("\n    Arguments\n");
        for (name, description) in arguments {
            let first = format!("        {name}: ");
            wrap_into(&mut text, description, &first, "            ");
        }
    }
    if let Some(example) = &documentation.sql_example {
        text.push_str("\n    Example\n");
        // The example is markdown (a fenced block): the fences mean nothing in plain text.
        for line in example
            .lines()
            .filter(|l| !l.trim_start().starts_with("```"))
        {
            text.push_str("        ");
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// Appends `prose` wrapped at [`REFERENCE_WIDTH`], its first line after `first` and the others
/// after `rest`.
fn wrap_into(text: &mut String, prose: &str, first: &str, rest: &str) {
    let mut line = first.to_string();
    let mut empty = true;
    for word in prose.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > REFERENCE_WIDTH {
            text.push_str(&line);
            text.push('\n');
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    text.push_str(&line);
    text.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_lists_every_function_once_with_its_parts() {
        let text = function_reference();
        let docs = prefsmith_udfs::function_docs();
        assert!(text.starts_with(&format!("{} prefsmith functions", docs.len())));
        let mut previous = 0;
        for doc in &docs {
            let heading = format!("\n{} ({}, ", doc.name, doc.kind);
            let at = text
                .find(&heading)
                .unwrap_or_else(|| panic!("no entry for {}", doc.name));
            assert!(at >= previous, "{} is out of order", doc.name);
            assert_eq!(text.matches(&heading).count(), 1, "{}", doc.name);
            previous = at;
        }
        assert!(!text.contains("```"));
        assert!(
            text.lines()
                .all(|l| l.chars().count() <= REFERENCE_WIDTH || l.starts_with("        "))
        );
    }

    #[test]
    fn prose_wraps_at_the_width_with_its_indents() {
        let mut text = String::new();
        let words = vec!["word"; 40].join(" ");
        wrap_into(&mut text, &words, "  a: ", "     ");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 1);
        assert!(lines[0].starts_with("  a: word"));
        assert!(lines[1..].iter().all(|l| l.starts_with("     word")));
        assert!(lines.iter().all(|l| l.chars().count() <= REFERENCE_WIDTH));
        assert_eq!(text.split_whitespace().filter(|w| *w == "word").count(), 40);
    }
}
