//! The `select` stage: one preference pair per prompt, by the rules of `docs/ALGORITHMS.md` §2, from the
//! wide or the long layout, written as a pair table sorted by `prompt_id`.
//!
//! Plans (wide and hash are DataFusion SQL over the functions of `prefsmith-udfs`; streaming
//! runs the same kernel directly):
//! * **wide** (one row per prompt): `select_pair_list` per row, texts picked with
//!   `array_element` — no unnesting.
//! * **long, streaming**: when the input is sorted by prompt id (declared with `input-sorted`
//!   or stated by the files' Parquet metadata), each file is read in order and cut into runs of
//!   equal prompt ids ([`streaming`]): the same selection kernel per run, no hashing,
//!   texts gathered by reference, files in parallel, memory bounded by the open runs. The claim
//!   is verified on the way (prompt ids must rise strictly); if it fails, the stage falls back to:
//! * **long, hash**: one hash aggregation with `select_pair_with_text` over all files, then a
//!   sort by prompt id.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{displayable, execute_stream};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use serde_json::json;
use tracing::{debug, info, warn};

pub mod config;
mod sink;
pub mod streaming;

use crate::error::{Error, Result};
use crate::input::{self, Layout, ValidatedInput};
use crate::manifest::{InputInfo, Manifest};
use crate::reader::{OrderedParquet, ROW_INDEX_COLUMN};
use crate::session::{ident, literal, new_context, register_parquet};
use crate::stages::{config_hash, input_listing, now_unix};
pub use config::{KValue, ResolvedRule, SelectConfig, Strategy};
pub use sink::pair_table_schema;
use sink::{PairSink, SinkError};
use streaming::{RunColumns, RunError, RunRule, select_runs};

pub use crate::stage::RunOptions;

impl crate::stage::Stage for SelectConfig {
    fn kind(&self) -> &'static str {
        "select"
    }

    fn input(&self) -> Option<&str> {
        self.input.as_deref()
    }

    fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }

    fn settings<'a>(
        &'a self,
        _: &'a crate::stage::StageContext<'a>,
    ) -> futures::future::BoxFuture<'a, Result<serde_json::Value>> {
        crate::stage::config_settings(self)
    }

    fn run<'a>(
        &'a self,
        ctx: &'a crate::stage::StageContext<'a>,
    ) -> futures::future::BoxFuture<'a, Result<Manifest>> {
        Box::pin(async move { run(self, ctx.input()?, ctx.output, ctx.options).await })
    }
}

/// Runs `select` from `input` into `output`.
pub async fn run(
    config: &SelectConfig,
    input: &str,
    output: &str,
    options: &RunOptions,
) -> Result<Manifest> {
    let output = &crate::storage::Location::parse(output)?;
    let started = Instant::now();
    let started_unix = now_unix();
    let rule = config.resolve()?;
    let validated = input::validate(
        input::resolve(input).await?,
        &config.columns,
        config.input_format.response_layout()?,
    )
    .await?;
    info!(
        input,
        files = validated.infos.len(),
        rows = validated.rows,
        layout = validated.layout.as_str(),
        strategy = %rule.label,
        "select: starting"
    );
    let hash = select_config_hash(config, &validated);
    let plan = Plan {
        config,
        rule: &rule,
        input: &validated,
        options,
    };
    let mut sink = PairSink::begin(
        output,
        config.max_rows_per_file,
        config.partition_by.as_deref(),
        &rule.label,
        validated.rows,
    )
    .await?;
    let mut path = "wide";
    match validated.layout {
        Layout::Wide => plan.run_wide(&mut sink).await?,
        Layout::Long => {
            let declared = config.input_sorted;
            let sorted = validated.has_prompt_id
                && declared
                    .unwrap_or_else(|| validated.metadata_says_sorted(&config.columns.prompt_id));
            let mut done = false;
            if sorted {
                path = "long-streaming";
                match plan.run_long_streaming(&mut sink).await {
                    Ok(()) => done = true,
                    Err(SinkError::OutOfOrder { previous, next }) => {
                        warn!(%previous, %next, "select: input is not sorted by prompt id after all; using the hash aggregation");
                        sink = PairSink::begin(
                            output,
                            config.max_rows_per_file,
                            config.partition_by.as_deref(),
                            &rule.label,
                            validated.rows,
                        )
                        .await?;
                    }
                    Err(e) => return Err(e.into_error()),
                }
            }
            if !done {
                path = "long-hash";
                plan.run_long_hash(&mut sink)
                    .await
                    .map_err(SinkError::into_error)?;
            }
        }
    }
    let inputs = validated.infos.iter().map(InputInfo::from).collect();
    let stats = sink.stats(&validated, path, config.seed);
    let manifest = Manifest::new("select", hash, config, inputs, stats, started_unix);
    let mut manifest = sink.commit(manifest).await?;
    manifest.timing.seconds = started.elapsed().as_secs_f64();
    info!(
        pairs = manifest.rows,
        seconds = format!("{:.2}", manifest.timing.seconds),
        output = %output,
        "select: done"
    );
    Ok(manifest)
}

/// The hash that decides whether an existing output is up to date: the resolved config and
/// the input files (paths, sizes, modification times).
pub fn select_config_hash(config: &SelectConfig, input: &ValidatedInput) -> String {
    config_hash(
        "select",
        &json!({"config": config, "inputs": input_listing(&input.infos)}),
    )
}

struct Plan<'a> {
    config: &'a SelectConfig,
    rule: &'a ResolvedRule,
    input: &'a ValidatedInput,
    options: &'a RunOptions,
}

impl Plan<'_> {
    fn prompt_id_expr(&self) -> String {
        let c = &self.config.columns;
        if self.input.has_prompt_id {
            // The bare column, so that a declared sort order on it carries to the GROUP BY.
            ident(&c.prompt_id)
        } else {
            format!("hf_prompt_id({})", ident(&c.prompt))
        }
    }

    fn ddof(&self) -> u32 {
        self.config.ddof
    }

    async fn run_wide(&self, sink: &mut PairSink) -> Result<()> {
        let ctx = new_context(self.options.threads)?;
        register_files(&ctx, self.input).await?;
        let c = &self.config.columns;
        let pid = self.prompt_id_expr();
        let scores = ident(&c.scores);
        let select = match &self.rule.k_sql {
            Some((kc, kr)) => format!("select_pair_list({scores}, {kc}, {kr}, {})", self.ddof()),
            None => format!(
                "select_pair_scalable_list({scores}, {pid}, {}, {})",
                self.config.seed,
                self.ddof()
            ),
        };
        let sql = format!(
            "SELECT prompt_id, prompt,
                    array_element(responses, p['chosen_index'] + 1) AS chosen,
                    array_element(responses, p['rejected_index'] + 1) AS rejected,
                    {fields},
                    CAST(coalesce(cardinality(responses), 0) AS BIGINT) AS list_responses,
                    CAST(coalesce(cardinality(scores), 0) AS BIGINT) AS list_scores
             FROM (SELECT {pid} AS prompt_id, {prompt} AS prompt, {select} AS p,
                          {responses} AS responses, {scores} AS scores FROM input)
             ORDER BY prompt_id",
            fields = struct_fields("p"),
            prompt = ident(&c.prompt),
            responses = ident(&c.responses),
        );
        let result = self.drain(&ctx, &sql, sink).await;
        match result {
            Err(SinkError::ListLengths {
                prompt_id,
                responses,
                scores,
            }) => Err(self
                .locate_length_mismatch(prompt_id, responses, scores)
                .await),
            Err(SinkError::OutOfOrder { previous, .. }) => Err(Error::InvalidData {
                context: format!("{}: column '{}'", self.input.files.spec, c.prompt_id),
                message: format!(
                    "prompt_id {previous} appears on more than one row of the wide layout"
                ),
            }),
            other => other.map_err(SinkError::into_error),
        }
    }

    /// Finds the file holding a wide row whose lists differ in length (error path only).
    async fn locate_length_mismatch(
        &self,
        prompt_id: String,
        responses: i64,
        scores: i64,
    ) -> Error {
        let c = &self.config.columns;
        let mut file = self.input.files.files[0].clone();
        for info in &self.input.infos {
            let Ok(ctx) = new_context(1) else { break };
            if info.location.register_with(&ctx).is_err() {
                continue;
            }
            let path = info.location.table_url();
            let Ok(df) = ctx.read_parquet(path, ParquetReadOptions::default()).await else {
                continue;
            };
            if ctx.register_table("f", df.into_view()).is_err() {
                continue;
            }
            let sql = format!(
                "SELECT count(*) FROM f WHERE {} = {}",
                self.prompt_id_expr(),
                literal(&prompt_id)
            );
            if let Ok(batches) = ctx.sql(&sql).await.map(|df| df.collect())
                && let Ok(batches) = batches.await
                && batches
                    .first()
                    .is_some_and(|b| b.column(0).as_primitive::<Int64Type>().value(0) > 0)
            {
                file = info.location.clone();
                break;
            }
        }
        Error::ListLengthMismatch {
            file: file.to_string(),
            prompt_id,
            responses_column: c.responses.clone(),
            responses,
            scores_column: c.scores.clone(),
            scores,
        }
    }

    /// The long-layout aggregation over the registered table `input`.
    fn long_sql(&self, index_column: &str) -> String {
        let c = &self.config.columns;
        let pid = self.prompt_id_expr();
        let (idx, reward, response) = (ident(index_column), ident(&c.reward), ident(&c.response));
        let select = match &self.rule.k_sql {
            Some((kc, kr)) => format!(
                "select_pair_with_text({idx}, {reward}, {response}, {kc}, {kr}, {})",
                self.ddof()
            ),
            None => format!(
                "select_pair_scalable_with_text({idx}, {reward}, {response}, {pid}, {}, {})",
                self.config.seed,
                self.ddof()
            ),
        };
        format!(
            "SELECT prompt_id, prompt, p['chosen'] AS chosen, p['rejected'] AS rejected, {fields}
             FROM (SELECT {pid} AS prompt_id, first_value({prompt}) AS prompt, {select} AS p
                   FROM input GROUP BY {pid})
             ORDER BY prompt_id",
            fields = struct_fields("p"),
            prompt = ident(&c.prompt),
        )
    }

    fn long_columns(&self) -> Vec<String> {
        let c = &self.config.columns;
        let mut columns = vec![c.prompt.clone(), c.response.clone(), c.reward.clone()];
        if self.input.has_prompt_id {
            columns.insert(0, c.prompt_id.clone());
        }
        if self.input.has_response_index {
            columns.push(c.response_index.clone());
        }
        columns
    }

    fn index_column(&self) -> &str {
        if self.input.has_response_index {
            &self.config.columns.response_index
        } else {
            ROW_INDEX_COLUMN
        }
    }

    async fn run_long_hash(&self, sink: &mut PairSink) -> Result<(), SinkError> {
        let ctx = new_context(self.options.threads)?;
        if self.input.has_response_index {
            register_files(&ctx, self.input).await?;
        } else {
            // Row order defines the index: read in order, number rows, then aggregate.
            let number_by = if self.input.has_prompt_id {
                self.config.columns.prompt_id.clone()
            } else {
                String::new()
            };
            let reader = self.ordered_reader(&self.input.files.files, number_by)?;
            ctx.register_table("input", Arc::new(reader.into_table(None)?))?;
        }
        self.drain(&ctx, &self.long_sql(self.index_column()), sink)
            .await
    }

    fn ordered_reader(
        &self,
        files: &[crate::storage::Location],
        number_by: String,
    ) -> Result<OrderedParquet> {
        let mut columns = self.long_columns();
        let number_by = if self.input.has_response_index {
            None
        } else if number_by.is_empty() {
            // No prompt id column: number rows by the prompt text, which defines the derived id.
            Some(self.config.columns.prompt.clone())
        } else {
            Some(number_by)
        };
        columns.dedup();
        OrderedParquet::new(
            files.to_vec(),
            &self.input.infos[0].schema,
            columns,
            number_by,
        )
    }

    /// One ordered aggregation per file, files in parallel, results consumed in file order.
    async fn run_long_streaming(&self, sink: &mut PairSink) -> Result<(), SinkError> {
        let prompt_id = self.config.columns.prompt_id.clone();
        let threads = if self.options.threads == 0 {
            num_cpus()
        } else {
            self.options.threads
        };
        let rule = match self.config.pair_rule()? {
            Some(rule) => RunRule::Fixed(rule),
            None => RunRule::Scalable(self.config.seed),
        };
        let ddof = self.ddof();
        let task_ctx = new_context(1)?.task_ctx();
        let files = &self.input.files.files;
        // At most `threads` files in flight; each hands its pairs over a small bounded channel
        // and they are consumed in file order, so memory stays a few batches per file.
        let start = |i: usize| -> Result<_, SinkError> {
            let reader = self.ordered_reader(std::slice::from_ref(&files[i]), prompt_id.clone())?;
            let schema = Arc::clone(reader.schema());
            let c = &self.config.columns;
            let columns = RunColumns {
                prompt_id: schema.index_of(&c.prompt_id)?,
                prompt: schema.index_of(&c.prompt)?,
                response: schema.index_of(&c.response)?,
                reward: schema.index_of(&c.reward)?,
                index: schema.index_of(self.index_column())?,
            };
            let stream = reader.execute(Arc::clone(&task_ctx));
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            let task = tokio::spawn(select_runs(stream, columns, rule, ddof, sender));
            Ok((receiver, task))
        };
        let mut active = std::collections::VecDeque::new();
        let mut next = 0;
        while next < files.len() && active.len() < threads.max(1) {
            active.push_back(start(next)?);
            next += 1;
        }
        while let Some((mut receiver, task)) = active.pop_front() {
            while let Some(batch) = receiver.recv().await {
                sink.consume(&batch).await?;
            }
            task.await
                .map_err(|e| {
                    SinkError::Stage(Error::InvalidData {
                        context: "select".into(),
                        message: e.to_string(),
                    })
                })?
                .map_err(|e| match e {
                    RunError::OutOfOrder { previous, next } => {
                        SinkError::OutOfOrder { previous, next }
                    }
                    RunError::Stage(e) => SinkError::Stage(e),
                })?;
            if next < files.len() {
                active.push_back(start(next)?);
                next += 1;
            }
        }
        Ok(())
    }

    async fn drain(
        &self,
        ctx: &SessionContext,
        sql: &str,
        sink: &mut PairSink,
    ) -> Result<(), SinkError> {
        let plan = ctx
            .sql(sql)
            .await
            .map_err(Error::from)?
            .create_physical_plan()
            .await
            .map_err(Error::from)?;
        debug!(plan = %displayable(plan.as_ref()).indent(true), "select: plan");
        let mut stream = execute_stream(plan, ctx.task_ctx()).map_err(Error::from)?;
        while let Some(batch) = stream.next().await {
            sink.consume(&batch.map_err(Error::from)?).await?;
        }
        Ok(())
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The selection struct's fields as output columns.
fn struct_fields(p: &str) -> String {
    format!(
        "{p}['score_chosen'] AS score_chosen, {p}['score_rejected'] AS score_rejected,
         {p}['score_chosen'] - {p}['score_rejected'] AS rating_gap,
         {p}['chosen_index'] AS chosen_index, {p}['rejected_index'] AS rejected_index,
         {p}['reward_mean'] AS reward_mean, {p}['reward_std'] AS reward_std,
         {p}['n_valid'] AS n_valid, {p}['n_responses'] AS n_responses, {p}['skip_reason'] AS skip_reason"
    )
}

/// Registers the input files as table `input` (parallel scan).
async fn register_files(ctx: &SessionContext, input: &ValidatedInput) -> Result<()> {
    register_parquet(ctx, "input", &input.files.files).await
}
