//! The sections of the stages that write pairs: `select`, `select-margin`, `route`.

use datafusion::prelude::SessionContext;
use serde_json::Value;

use super::super::figures::format_number;
use super::super::plot::{self, Marker};
use super::super::query::{self, ident, literal};
use super::{
    Plots, add_histogram, column_setting, columns_of, has, per_response, prompt_id_sql,
    register_input, stat,
};
use crate::error::Result;
use crate::manifest::Manifest;
use crate::stage::RunOptions;

/// Picks with their rewards, skip reasons, chosen/rejected scores and rating gaps.
pub(super) async fn select_plots(
    ctx: &SessionContext,
    m: &Manifest,
    options: &RunOptions,
    plots: &mut Plots,
) -> Result<()> {
    if let Some(Value::Object(skipped)) = m.stats.get("skipped") {
        let bars: Vec<(String, f64)> = skipped
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
            .collect();
        plots.add(
            plot::bars("Prompts skipped, by reason", "prompts", &bars)?,
            &format!(
                "{} pairs written from {} prompts",
                stat(m, "pairs_written")
                    .map(format_number)
                    .unwrap_or_default(),
                stat(m, "prompts").map(format_number).unwrap_or_default()
            ),
        );
    }
    for (column, title) in [
        ("score_chosen", "Chosen score"),
        ("score_rejected", "Rejected score"),
        ("rating_gap", "Rating gap"),
    ] {
        add_histogram(
            ctx,
            plots,
            &format!("SELECT CAST({column} AS DOUBLE) AS v FROM t"),
            title,
            column,
            &format!("{column} of every pair"),
            &[],
        )
        .await?;
    }
    pick_plots(ctx, m, options, plots).await
}

/// For the picked prompts, the sorted rewards with μ, μ − 2σ and the chosen/rejected marked.
async fn pick_plots(
    ctx: &SessionContext,
    m: &Manifest,
    options: &RunOptions,
    plots: &mut Plots,
) -> Result<()> {
    let seed = m.config.get("seed").and_then(Value::as_u64).unwrap_or(0);
    let picks = query::picks(ctx, "SELECT prompt_id, reward_std FROM t", seed).await?;
    if picks.is_empty() {
        return Ok(());
    }
    let input = crate::session::new_context(options.threads)?;
    if !register_input(&input, m).await? {
        plots.notice("per-prompt plots: the manifest lists no input files");
        return Ok(());
    }
    let columns = columns_of(&input, "input").await?;
    let scores = column_setting(m, "scores", "all_rm_scores");
    let reward = column_setting(m, "reward", "reward");
    let value = per_response(&columns, &scores).or_else(|| per_response(&columns, &reward));
    let (Some(value), Some(prompt_id)) = (value, prompt_id_sql(&columns, m)) else {
        plots.notice(format!(
            "per-prompt plots: the input has no prompt id (or prompt) with '{scores}' or '{reward}' columns"
        ));
        return Ok(());
    };
    let ids: Vec<String> = picks.iter().map(|(id, _)| literal(id)).collect();
    let rewards = format!(
        "SELECT p, v FROM (SELECT {prompt_id} AS p, CAST({value} AS DOUBLE) AS v FROM input) \
         WHERE p IN ({})",
        ids.join(", ")
    );
    let mut by_prompt: std::collections::HashMap<String, Vec<f64>> = Default::default();
    for batch in input.sql(&rewards).await?.collect().await? {
        let p = query::strings(batch.column(0))?;
        let v = query::floats(batch.column(1))?;
        for (p, v) in p.into_iter().zip(v) {
            by_prompt.entry(p).or_default().push(v);
        }
    }
    let pairs = format!(
        "SELECT CAST(prompt_id AS VARCHAR), reward_mean, reward_std, score_chosen, score_rejected \
         FROM t WHERE CAST(prompt_id AS VARCHAR) IN ({})",
        ids.join(", ")
    );
    let mut facts: std::collections::HashMap<String, Vec<f64>> = Default::default();
    for batch in ctx.sql(&pairs).await?.collect().await? {
        let p = query::strings(batch.column(0))?;
        let cols: Vec<Vec<f64>> = (1..5)
            .map(|i| query::floats(batch.column(i)))
            .collect::<Result<_>>()?;
        for (row, p) in p.into_iter().enumerate() {
            facts.insert(p, cols.iter().map(|c| c[row]).collect());
        }
    }
    for (id, reason) in picks {
        let (Some(values), Some(f)) = (by_prompt.get(&id), facts.get(&id)) else {
            plots.notice(format!("prompt {id}: not found in the stage's input"));
            continue;
        };
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let (mean, std) = (f[0], f[1]);
        let levels = [
            Marker {
                value: mean,
                label: "μ".into(),
                colour: 0,
            },
            Marker {
                value: mean - 2.0 * std,
                label: "μ − 2σ".into(),
                colour: 3,
            },
        ];
        let short: String = id.chars().take(24).collect();
        plots.add(
            plot::sorted_rewards(
                &format!("prompt {short} ({})", reason.describe()),
                &sorted,
                &levels,
                Some(f[2]),
                Some(f[3]),
            )?,
            &format!(
                "{} valid rewards, μ = {}, σ = {}, chosen {}, rejected {}",
                sorted.len(),
                format_number(mean),
                format_number(std),
                format_number(f[2]),
                format_number(f[3])
            ),
        );
    }
    Ok(())
}

/// Each margin's histogram with its M2, the fused score and where the top-k cut fell.
pub(super) async fn margin_plots(
    ctx: &SessionContext,
    m: &Manifest,
    plots: &mut Plots,
) -> Result<()> {
    let m1 = stat(m, "m1").unwrap_or(-2.0);
    let m2 = |source: &str| {
        m.stats
            .get("m2")
            .and_then(|v| v.get(source))
            .and_then(Value::as_f64)
    };
    let sources: Vec<String> = match m.stats.get("sources") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    let input = crate::session::new_context(1)?;
    let all_pairs = input_has_margins(&input, m, &sources).await;
    if !all_pairs {
        plots.notice(
            "the input's margins could not be recomputed (its layout is not a plain pair table); \
             the plots show the selected pairs only",
        );
    }
    let mut probabilities = Vec::new();
    for source in &sources {
        let Some(expr) = margin_expression(source) else {
            continue;
        };
        let mut markers = vec![Marker {
            value: m1,
            label: format!("M1 = {}", format_number(m1)),
            colour: 3,
        }];
        if let Some(bound) = m2(source) {
            markers.push(Marker {
                value: bound,
                label: format!("M2 = {}", format_number(bound)),
                colour: 1,
            });
            if bound > m1 {
                probabilities.push(format!("margin_probability({expr}, {m1:e}, {bound:e})"));
            }
        }
        let (ctx_used, q, what) = if all_pairs {
            (
                &input,
                format!("SELECT {expr} AS v FROM input"),
                "every input pair",
            )
        } else {
            (
                ctx,
                format!("SELECT CAST(margin_{source} AS DOUBLE) AS v FROM t"),
                "the selected pairs",
            )
        };
        add_histogram(
            ctx_used,
            plots,
            &q,
            &format!("{source} margin"),
            &format!("{source} margin"),
            &format!(
                "{source} margin of {what}; M2 from the tail-sparsity search, clipped below at M1"
            ),
            &markers,
        )
        .await?;
    }
    let fused = (all_pairs && probabilities.len() == sources.len() && !sources.is_empty())
        .then(|| format!("fuse_preference({})", probabilities.join(", ")));
    fused_plot(ctx, &input, fused, m, plots).await
}

/// The margin of a source, in SQL over a plain pair table.
fn margin_expression(source: &str) -> Option<&'static str> {
    match source {
        "external" => Some("CAST(score_chosen AS DOUBLE) - CAST(score_rejected AS DOUBLE)"),
        "implicit" => Some(
            "(CAST(policy_logp_chosen AS DOUBLE) - CAST(ref_logp_chosen AS DOUBLE)) - \
             (CAST(policy_logp_rejected AS DOUBLE) - CAST(ref_logp_rejected AS DOUBLE))",
        ),
        _ => None,
    }
}

/// Whether the stage's input is registered as `input` with the columns every source's margin
/// needs (a plain pair table), so the plots can show every pair, not only the selected ones.
async fn input_has_margins(input: &SessionContext, m: &Manifest, sources: &[String]) -> bool {
    if !register_input(input, m).await.is_ok_and(|ok| ok) {
        return false;
    }
    let columns = columns_of(input, "input").await.unwrap_or_default();
    let implicit = [
        "policy_logp_chosen",
        "ref_logp_chosen",
        "policy_logp_rejected",
        "ref_logp_rejected",
    ];
    ["score_chosen", "score_rejected"]
        .iter()
        .all(|c| has(&columns, c))
        && (!sources.iter().any(|s| s == "implicit") || implicit.iter().all(|c| has(&columns, c)))
}

/// The fused score with the top-k cut: of every input pair when `fused` (its SQL over `input`)
/// is given, else of the selected pairs.
async fn fused_plot(
    ctx: &SessionContext,
    input: &SessionContext,
    fused: Option<String>,
    m: &Manifest,
    plots: &mut Plots,
) -> Result<()> {
    let cut = query::one_row(ctx, "SELECT CAST(min(preference_logit) AS DOUBLE) FROM t").await?;
    let cut_marker: Vec<Marker> = cut
        .first()
        .filter(|v| v.is_finite())
        .map(|&v| Marker {
            value: v,
            label: format!("top-k cut {}", format_number(v)),
            colour: 1,
        })
        .into_iter()
        .collect();
    let (source, q, what) = match fused {
        Some(expr) => (
            input,
            format!("SELECT {expr} AS v FROM input"),
            "every input pair",
        ),
        None => (
            ctx,
            "SELECT CAST(preference_logit AS DOUBLE) AS v FROM t".to_string(),
            "the selected pairs",
        ),
    };
    add_histogram(
        source,
        plots,
        &q,
        "Fused preference (logit)",
        "Σ logit p over the sources",
        &format!(
            "fused score of {what}; pairs at or right of the cut are kept ({} of {} eligible)",
            stat(m, "selected").map(format_number).unwrap_or_default(),
            stat(m, "eligible").map(format_number).unwrap_or_default()
        ),
        &cut_marker,
    )
    .await?;
    Ok(())
}

/// DPO and SFT counts, and the margin column with the threshold between them.
pub(super) async fn route_plots(
    ctx: &SessionContext,
    m: &Manifest,
    plots: &mut Plots,
) -> Result<()> {
    let counts = query::labelled_counts(
        ctx,
        "SELECT route, count(*) FROM t GROUP BY route ORDER BY route",
    )
    .await?;
    plots.add(
        plot::bars("Pairs by route", "pairs", &counts)?,
        &format!(
            "split: {}",
            m.stats.get("split").and_then(Value::as_str).unwrap_or("?")
        ),
    );
    let column = m
        .stats
        .get("margin_column")
        .and_then(Value::as_str)
        .unwrap_or("rating_gap")
        .to_string();
    let markers: Vec<Marker> = stat(m, "min_dpo_margin")
        .map(|v| Marker {
            value: v,
            label: format!("smallest DPO margin {}", format_number(v)),
            colour: 1,
        })
        .into_iter()
        .collect();
    add_histogram(
        ctx,
        plots,
        &format!("SELECT CAST({} AS DOUBLE) AS v FROM t", ident(&column)),
        &format!("Routing margin ({column})"),
        &column,
        "pairs below the threshold go to SFT on the chosen response, the rest to DPO",
        &markers,
    )
    .await?;
    Ok(())
}
