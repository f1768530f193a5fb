//! The `sql` stage: one query, with every prefsmith function registered, over the stage's
//! input (the table `input`) and any other named tables, written as a stage output (parts,
//! then `_manifest.json`) that the next stage reads like any other. It is what `prefsmith sql
//! --output` does ad hoc, inside a job: a filter, a join with metadata, a custom pair rule in
//! SQL between two stages.
//!
//! The stage is up to date when the query, the settings and the files of every table it reads
//! are unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::input::{self, FileInfo};
use crate::manifest::{InputInfo, Manifest, StageWriter};
use crate::metrics::now_unix;
use crate::stage::{Stage, StageContext, input_listing};
use crate::storage::Location;

/// The name the stage's input has in its query.
pub const INPUT_TABLE: &str = "input";

/// Settings of the `sql` stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SqlConfig {
    /// The input, queried as the table `input`; in a job, the previous stage's output.
    #[serde(default)]
    pub input: Option<String>,
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// The query.
    pub query: String,
    /// More tables the query reads, by name: `tables = { meta = "data/meta.parquet" }`.
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    /// Rows per output part.
    #[serde(default = "default_max_rows_per_file")]
    pub max_rows_per_file: usize,
}

fn default_max_rows_per_file() -> usize {
    1_000_000
}

impl SqlConfig {
    fn validate(&self, key: &str) -> Result<()> {
        if self.query.trim().is_empty() {
            return Err(Error::config(format!("{key}: query"), "the query is empty"));
        }
        if self.tables.contains_key(INPUT_TABLE) {
            return Err(Error::config(
                format!("{key}: tables.{INPUT_TABLE}"),
                "'input' names the stage's input; give the table another name",
            ));
        }
        if self.max_rows_per_file == 0 {
            return Err(Error::config(
                format!("{key}: max-rows-per-file"),
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The files of every extra table, by name (the input's are listed by the runner).
    async fn table_files(&self) -> Result<BTreeMap<&str, Vec<FileInfo>>> {
        let mut files = BTreeMap::new();
        for (name, spec) in &self.tables {
            files.insert(name.as_str(), input::resolve(spec).await?.infos().await?);
        }
        Ok(files)
    }
}

impl Stage for SqlConfig {
    fn kind(&self) -> &'static str {
        "sql"
    }

    fn input(&self) -> Option<&str> {
        self.input.as_deref()
    }

    fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }

    /// The settings and the files of the extra tables: a rewritten table reruns the query.
    fn settings<'a>(
        &'a self,
        ctx: &'a StageContext<'a>,
    ) -> BoxFuture<'a, Result<serde_json::Value>> {
        Box::pin(async move {
            self.validate(ctx.key)?;
            let tables: BTreeMap<&str, serde_json::Value> = self
                .table_files()
                .await?
                .into_iter()
                .map(|(name, infos)| (name, input_listing(&infos)))
                .collect();
            Ok(json!({"config": self, "tables": tables}))
        })
    }

    fn run<'a>(&'a self, ctx: &'a StageContext<'a>) -> BoxFuture<'a, Result<Manifest>> {
        Box::pin(run(self, ctx))
    }
}

/// Runs the query and writes its rows as the stage output.
async fn run(config: &SqlConfig, ctx: &StageContext<'_>) -> Result<Manifest> {
    let started = Instant::now();
    let started_unix = now_unix();
    config.validate(ctx.key)?;
    let mut tables = vec![(INPUT_TABLE.to_string(), ctx.input()?.to_string())];
    tables.extend(config.tables.iter().map(|(n, s)| (n.clone(), s.clone())));
    let session = crate::sql::context_with_tables(&tables, ctx.options.threads).await?;
    let frame = session
        .sql(&config.query)
        .await
        .map_err(|e| Error::config(format!("{}: query", ctx.key), e.to_string()))?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let mut stream = frame.execute_stream().await?;
    let output = Location::parse(ctx.output)?;
    let mut writer = StageWriter::begin(&output, schema, config.max_rows_per_file, None).await?;
    while let Some(batch) = stream.next().await {
        writer.write(&batch?).await?;
    }
    let mut inputs: Vec<InputInfo> = ctx.inputs.iter().map(InputInfo::from).collect();
    for infos in config.table_files().await?.values() {
        inputs.extend(infos.iter().map(InputInfo::from));
    }
    let stats = [
        ("query", json!(config.query)),
        (
            "tables",
            json!(tables.iter().map(|(n, _)| n).collect::<Vec<_>>()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let manifest = Manifest::new(
        "sql",
        ctx.hash.to_string(),
        config,
        inputs,
        stats,
        started_unix,
    );
    let mut manifest = writer.commit(manifest).await?;
    manifest.timing.seconds = started.elapsed().as_secs_f64();
    info!(rows = manifest.rows, output = %output, "sql: done");
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use crate::job::{Job, run};
    use crate::stage::RunOptions;

    fn job(dir: &std::path::Path, query: &str) -> Job {
        let text = format!(
            "[[stages]]\nkind = \"synth\"\noutput = \"{0}/synth\"\nprompts = 40\nresponses = 4\n\n\
             [[stages]]\nkind = \"sql\"\noutput = \"{0}/best\"\nquery = \"{query}\"\n",
            dir.display()
        );
        Job::parse(&text, "job.toml", &crate::stages::pipeline_stages()).expect("a job")
    }

    #[tokio::test]
    async fn a_query_between_stages_is_a_stage_output_and_is_skipped_when_up_to_date() {
        let dir = tempfile::tempdir().expect("tempdir");
        let query = "SELECT prompt_id, max(reward) AS best FROM input GROUP BY prompt_id";
        let options = RunOptions { threads: 1 };
        let runs = run(&job(dir.path(), query), &options, false)
            .await
            .expect("runs");
        assert_eq!(runs[1].kind, "sql");
        assert_eq!(runs[1].manifest.rows, 40);
        assert!(!runs[1].up_to_date);
        let again = run(&job(dir.path(), query), &options, false)
            .await
            .expect("runs");
        assert!(again.iter().all(|r| r.up_to_date));
        // Another query is another result.
        let other = "SELECT prompt_id FROM input WHERE response_index = 0";
        let changed = run(&job(dir.path(), other), &options, false)
            .await
            .expect("runs");
        assert!(changed[0].up_to_date && !changed[1].up_to_date);
        assert_eq!(changed[1].manifest.rows, 40);
    }

    #[tokio::test]
    async fn a_bad_query_names_the_stage_and_leaves_no_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = run(
            &job(dir.path(), "SELECT nope FROM input"),
            &RunOptions { threads: 1 },
            false,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("stages[1] (sql): query") && err.contains("nope"),
            "{err}"
        );
        assert!(!dir.path().join("best/_manifest.json").exists());
    }
}
