//! The sections of the stages that write responses: `sample`, `reward` (and `synth`), `clean`.

use datafusion::prelude::SessionContext;
use serde_json::Value;

use super::super::figures::format_number;
use super::super::plot::{self, Marker};
use super::super::query::{self, FINITE, ident};
use super::{Plots, add_histogram, column_setting, has, per_response, prompt_id_sql, stat};
use crate::error::Result;
use crate::manifest::Manifest;

/// Token counts and finish reasons of the sampled responses.
pub(super) async fn sample_plots(
    ctx: &SessionContext,
    columns: &[(String, bool)],
    plots: &mut Plots,
) -> Result<()> {
    if let Some(tokens) = per_response(columns, "response_tokens") {
        let q = format!("SELECT CAST({tokens} AS DOUBLE) AS v FROM t");
        add_histogram(
            ctx,
            plots,
            &q,
            "Generated tokens per response",
            "tokens",
            "length of every sampled response, in tokens",
            &[],
        )
        .await?;
    }
    let reasons =
        per_response(columns, "finish_reasons").or_else(|| per_response(columns, "finish_reason"));
    if let Some(reasons) = reasons {
        let q = format!(
            "SELECT r, count(*) FROM (SELECT CAST({reasons} AS VARCHAR) AS r FROM t) GROUP BY r ORDER BY r"
        );
        let counts = query::labelled_counts(ctx, &q).await?;
        plots.add(
            plot::bars("Why generation stopped", "responses", &counts)?,
            "finish reason of every response (eos: the model ended it; length: max-new-tokens)",
        );
    }
    Ok(())
}

/// `SELECT p, v` over every response's reward, when the table has rewards.
fn rewards_query(columns: &[(String, bool)], m: &Manifest) -> Option<String> {
    let scores = column_setting(m, "scores", "all_rm_scores");
    let reward = column_setting(m, "reward", "reward");
    let value = per_response(columns, &scores).or_else(|| per_response(columns, &reward))?;
    let prompt_id = prompt_id_sql(columns, m)?;
    Some(format!(
        "SELECT {prompt_id} AS p, CAST({value} AS DOUBLE) AS v FROM t"
    ))
}

/// The reward of every response, the per-prompt spread and the invalid and degenerate counts.
pub(super) async fn reward_plots(
    ctx: &SessionContext,
    columns: &[(String, bool)],
    m: &Manifest,
    plots: &mut Plots,
) -> Result<()> {
    let Some(rewards) = rewards_query(columns, m) else {
        plots.notice("no reward column in this output (all_rm_scores or reward)");
        return Ok(());
    };
    let mean = query::one_row(
        ctx,
        &format!("SELECT avg(v) FILTER (WHERE {FINITE}) FROM ({rewards})"),
    )
    .await?;
    let markers: Vec<Marker> = mean
        .first()
        .filter(|v| v.is_finite())
        .map(|&v| Marker {
            value: v,
            label: format!("mean {}", format_number(v)),
            colour: 1,
        })
        .into_iter()
        .collect();
    add_histogram(
        ctx,
        plots,
        &rewards,
        "Reward of every response",
        "reward",
        "external reward over all responses",
        &markers,
    )
    .await?;
    let per_prompt = format!(
        "SELECT p, count(v) FILTER (WHERE {FINITE}) AS n, \
         stddev_pop(v) FILTER (WHERE {FINITE}) AS s FROM ({rewards}) GROUP BY p"
    );
    add_histogram(
        ctx,
        plots,
        &format!("SELECT s AS v FROM ({per_prompt}) WHERE n >= 2"),
        "Per-prompt reward spread",
        "σ of the prompt's rewards (ddof 0)",
        "standard deviation of each prompt's valid rewards (prompts with two or more)",
        &[],
    )
    .await?;
    let counts = query::one_row(
        ctx,
        &format!(
            "SELECT count(*) FILTER (WHERE NOT ({FINITE}) OR v IS NULL), count(*) FROM ({rewards})"
        ),
    )
    .await?;
    let prompts = query::one_row(
        ctx,
        &format!(
            "SELECT count(*) FILTER (WHERE n < 2), count(*) FILTER (WHERE n >= 2 AND s = 0), \
             count(*) FROM ({per_prompt})"
        ),
    )
    .await?;
    if let ([invalid, responses], [few, flat, total]) = (counts.as_slice(), prompts.as_slice()) {
        plots.add(
            plot::bars(
                "Invalid and degenerate",
                "count",
                &[
                    ("responses".into(), *responses),
                    ("invalid rewards".into(), *invalid),
                    ("prompts".into(), *total),
                    ("< 2 valid".into(), *few),
                    ("σ = 0".into(), *flat),
                ],
            )?,
            "invalid: null, NaN or ±inf rewards; prompts with fewer than two valid rewards or all \
             rewards equal give no pair",
        );
    }
    Ok(())
}

/// Flagged comparisons per prompt, rank changes, and the solver's outcome counts.
pub(super) async fn clean_plots(
    ctx: &SessionContext,
    columns: &[(String, bool)],
    m: &Manifest,
    plots: &mut Plots,
) -> Result<()> {
    let prompt_id = column_setting(m, "prompt-id", "prompt_id");
    if let Some(flags) = per_response(columns, "flagged_comparisons")
        && has(columns, &prompt_id)
    {
        let q = format!(
            "SELECT CAST(sum(f) AS DOUBLE) / 2.0 AS v FROM (SELECT {} AS p, {flags} AS f FROM t) GROUP BY p",
            ident(&prompt_id)
        );
        add_histogram(
            ctx,
            plots,
            &q,
            "Flagged comparisons per prompt",
            "comparisons flagged as corrupted",
            "per prompt, the comparisons the method flags as corrupted (bt-trim: the pairs it dropped; pcp: the sparse part)",
            &[],
        )
        .await?;
    }
    let scores = column_setting(m, "scores", "all_rm_scores");
    let reward = column_setting(m, "reward", "reward");
    let ranks = if has(columns, "clean_ranks") && has(columns, &scores) {
        Some(format!(
            "SELECT {p} AS p, unnest({s}) AS s, unnest(range(array_length({s}))) AS i, \
             unnest(clean_ranks) AS cr FROM t",
            p = ident(&prompt_id),
            s = ident(&scores)
        ))
    } else if has(columns, "clean_rank") && has(columns, &reward) {
        let index = column_setting(m, "response-index", "response_index");
        Some(format!(
            "SELECT {} AS p, {} AS s, {} AS i, clean_rank AS cr FROM t",
            ident(&prompt_id),
            ident(&reward),
            ident(&index)
        ))
    } else {
        plots.notice("rank changes: the output has no original scores to rank against");
        None
    };
    if let Some(ranks) = ranks {
        let q = format!(
            "SELECT CAST(abs(cr - row_number() OVER (PARTITION BY p ORDER BY s DESC, i)) AS DOUBLE) AS v \
             FROM ({ranks}) WHERE cr IS NOT NULL AND s > CAST('-inf' AS DOUBLE) AND s < CAST('inf' AS DOUBLE)"
        );
        add_histogram(
            ctx,
            plots,
            &q,
            "Rank changes",
            "|clean rank − rank by the original score|",
            "how far cleaning moved each response in its prompt's ranking (0: not moved)",
            &[],
        )
        .await?;
    }
    let outcome: Vec<(String, f64)> = ["solved", "passed_through", "degenerate", "non_converged"]
        .iter()
        .filter_map(|k| stat(m, k).map(|v| (k.replace('_', " "), v)))
        .collect();
    if !outcome.is_empty() {
        plots.add(
            plot::bars("Solver outcome per prompt", "prompts", &outcome)?,
            &format!(
                "method: {}; mean iterations {}, max residual {}",
                m.stats
                    .get("method")
                    .and_then(Value::as_str)
                    .unwrap_or("principal component pursuit"),
                stat(m, "mean_iterations")
                    .map(format_number)
                    .unwrap_or_default(),
                stat(m, "max_residual")
                    .map(format_number)
                    .unwrap_or_default()
            ),
        );
    }
    Ok(())
}
