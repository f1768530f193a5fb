//! One section per stage: its state, its plots (each only when the stage's data has what it
//! needs) and the table of every figure its manifest records. A stage without an output, with
//! no rows, or whose data cannot be read gets a notice saying so instead of its plots.

mod experiment;
mod pairs;
mod responses;
mod training;

use datafusion::prelude::SessionContext;
use serde_json::Value;

use super::figures::{self, Histogram, flatten_stats, format_number};
use super::html::{badge, escape, table};
use super::plot::{self, Marker};
use super::query::{self, ident};
use super::{Section, StageEntry, StageState};
use crate::error::Result;
use crate::manifest::Manifest;
use crate::stage::RunOptions;
use crate::storage::Location;

/// Plots with captions, in order.
#[derive(Default)]
pub(super) struct Plots {
    html: String,
    notices: Vec<String>,
}

impl Plots {
    pub(super) fn add(&mut self, svg: String, caption: &str) {
        self.html.push_str(&format!(
            "<figure class=\"plot\">{svg}<figcaption>{}</figcaption></figure>",
            escape(caption)
        ));
    }

    pub(super) fn notice(&mut self, text: impl Into<String>) {
        self.notices.push(text.into());
    }
}

pub(super) fn notice(text: &str) -> String {
    format!("<p class=\"notice\">{}</p>", escape(text))
}

/// The section of stage `index`.
pub async fn section(index: usize, stage: &StageEntry, options: &RunOptions) -> Section {
    let mut html = format!(
        "<p>{} output <code>{}</code></p>",
        badge(&stage.state),
        escape(&stage.output)
    );
    if let StageState::Failed(error) = &stage.state {
        html.push_str(&notice(&format!("the stage failed: {error}")));
    }
    match &stage.manifest {
        None => html.push_str(&notice(
            "no manifest in this output: the stage has not completed, so there is nothing to show",
        )),
        Some(m) => {
            if stage.state == StageState::Stale {
                html.push_str(&notice(
                    "this output was written with other settings or inputs than the job now has; \
                     `prefsmith run` reruns the stage",
                ));
            }
            if m.rows == 0 && m.stage != "train" {
                html.push_str(&notice("the stage wrote no rows"));
            } else {
                let mut plots = Plots::default();
                if let Err(e) = stage_plots(stage, m, options, &mut plots).await {
                    plots.notice(format!(
                        "could not read this stage's data for its plots: {e}"
                    ));
                }
                for n in &plots.notices {
                    html.push_str(&notice(n));
                }
                if !plots.html.is_empty() {
                    html.push_str(&format!("<div class=\"plots\">{}</div>", plots.html));
                }
            }
            html.push_str(&manifest_tables(m));
        }
    }
    Section {
        id: format!("stage-{}-{}", index + 1, stage.kind),
        kind: stage.kind.clone(),
        title: format!("{}. {}", index + 1, stage.kind),
        state: stage.state.clone(),
        html,
    }
}

/// Every manifest figure, then the settings (folded).
fn manifest_tables(m: &Manifest) -> String {
    let mut rows = vec![
        ("rows".to_string(), m.rows.to_string()),
        ("parts".to_string(), m.parts.len().to_string()),
        ("seconds".to_string(), format_number(m.timing.seconds)),
    ];
    if let Some(rss) = m.timing.peak_rss_bytes {
        rows.push(("peak memory".to_string(), figures::mib(rss)));
    }
    rows.extend(flatten_stats(&m.stats));
    let config: std::collections::BTreeMap<String, Value> = match &m.config {
        Value::Object(map) => map.clone().into_iter().collect(),
        _ => Default::default(),
    };
    format!(
        "{}<details><summary>settings ({} keys, hash {})</summary>{}</details>",
        table("Every figure of the manifest", &rows),
        config.len(),
        escape(&m.config_hash[..m.config_hash.len().min(12)]),
        table("Settings", &flatten_stats(&config))
    )
}

pub(super) async fn context(output: &str, options: &RunOptions) -> Result<SessionContext> {
    crate::sql::context_with_tables(&[("t".to_string(), output.to_string())], options.threads).await
}

/// Registers the stage's input files (as its manifest lists them) as table `input`.
pub(super) async fn register_input(ctx: &SessionContext, m: &Manifest) -> Result<bool> {
    if m.inputs.is_empty() {
        return Ok(false);
    }
    let files = m
        .inputs
        .iter()
        .map(|f| Location::parse(&f.path))
        .collect::<Result<Vec<_>>>()?;
    crate::session::register_parquet(ctx, "input", &files).await?;
    Ok(true)
}

pub(super) async fn columns_of(ctx: &SessionContext, table: &str) -> Result<Vec<(String, bool)>> {
    let df = ctx.table(table).await?;
    Ok(df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let list = matches!(
                f.data_type(),
                datafusion::arrow::datatypes::DataType::List(_)
                    | datafusion::arrow::datatypes::DataType::LargeList(_)
                    | datafusion::arrow::datatypes::DataType::ListView(_)
            );
            (f.name().clone(), list)
        })
        .collect())
}

/// `name` as a per-response value expression: unnested when it is a list column.
pub(super) fn per_response(columns: &[(String, bool)], name: &str) -> Option<String> {
    columns.iter().find(|(n, _)| n == name).map(|(_, list)| {
        if *list {
            format!("unnest({})", ident(name))
        } else {
            ident(name)
        }
    })
}

pub(super) fn has(columns: &[(String, bool)], name: &str) -> bool {
    columns.iter().any(|(n, _)| n == name)
}

/// The manifest's configured column name for `key` (`columns.scores`), or `default`.
pub(super) fn column_setting(m: &Manifest, key: &str, default: &str) -> String {
    m.config
        .get("columns")
        .and_then(|c| c.get(key))
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

/// The prompt id of a row as SQL: the configured id column, or, as `select` does for a table
/// without one, the SHA-256 of the prompt (`hf_prompt_id`). `None` when neither column exists.
pub(super) fn prompt_id_sql(columns: &[(String, bool)], m: &Manifest) -> Option<String> {
    let prompt_id = column_setting(m, "prompt-id", "prompt_id");
    let prompt = column_setting(m, "prompt", "prompt");
    if has(columns, &prompt_id) {
        Some(format!("CAST({} AS VARCHAR)", ident(&prompt_id)))
    } else if has(columns, &prompt) {
        Some(format!("hf_prompt_id({})", ident(&prompt)))
    } else {
        None
    }
}

pub(super) fn stat(m: &Manifest, key: &str) -> Option<f64> {
    m.stats.get(key).and_then(Value::as_f64)
}

async fn stage_plots(
    stage: &StageEntry,
    m: &Manifest,
    options: &RunOptions,
    plots: &mut Plots,
) -> Result<()> {
    match m.stage.as_str() {
        "train" => return training::train_plots(&stage.output, plots).await,
        "experiment-summary" => return experiment::summary_plots(m, plots),
        "sample" | "reward" | "task-reward" | "synth" | "clean" | "select" | "select-margin"
        | "route" => {}
        _ => return Ok(()),
    }
    let ctx = context(&stage.output, options).await?;
    let columns = columns_of(&ctx, "t").await?;
    match m.stage.as_str() {
        "sample" => responses::sample_plots(&ctx, &columns, plots).await?,
        "reward" | "task-reward" | "synth" => {
            responses::reward_plots(&ctx, &columns, m, plots).await?
        }
        "clean" => responses::clean_plots(&ctx, &columns, m, plots).await?,
        "select" => pairs::select_plots(&ctx, m, options, plots).await?,
        "select-margin" => pairs::margin_plots(&ctx, m, plots).await?,
        "route" => pairs::route_plots(&ctx, m, plots).await?,
        _ => {}
    }
    Ok(())
}

pub(super) async fn add_histogram(
    ctx: &SessionContext,
    plots: &mut Plots,
    query: &str,
    title: &str,
    x_label: &str,
    caption: &str,
    markers: &[Marker],
) -> Result<Option<Histogram>> {
    let Some(h) = query::histogram(ctx, query).await? else {
        plots.notice(format!("{title}: no finite values to plot"));
        return Ok(None);
    };
    let caption = if h.non_finite > 0 {
        format!("{caption} ({} NaN/±inf values not shown)", h.non_finite)
    } else {
        caption.to_string()
    };
    plots.add(plot::histogram(title, x_label, &h, markers)?, &caption);
    Ok(Some(h))
}
