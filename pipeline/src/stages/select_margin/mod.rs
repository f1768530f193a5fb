//! The `select-margin` stage: BeeS / DM-MUL selection by fused margins (Deng et al.,
//! `docs/ALGORITHMS.md` §3).
//!
//! Per pair, the external margin `m_ex = score_chosen − score_rejected` and the implicit margin
//! `m_im = (policy_logp_chosen − ref_logp_chosen) − (policy_logp_rejected − ref_logp_rejected)`.
//! Per source, M2 comes from the tail-sparsity search over that source's finite margins
//! (`margin_upper_bound`), `p = (clip(m, M1, M2) − M1)/(M2 − M1)` with M1 = −2, and the fused
//! `logit P = Σ logit(clip(p, ε, 1 − ε))`. A pair is eligible when every used margin is finite.
//! Eligible pairs are ranked by logit P descending, ties by `Σ m_k/M2_k` descending, then by
//! input row order; the top k (`top-k`, or `ceil(fraction × eligible)`) are written, in input
//! order (prompt_id order for a pair table), with `selected_rank` from 1.
//!
//! The tie-break divides by M2 as the spec proposes; when some M2 ≤ 0 (every margin of a source
//! tiny or negative) dividing by it would reverse or blow up that source's order, so the clip
//! width `M2 − M1` is used for every source instead. The scales used are in the manifest.
//!
//! Two passes over the input: the first reads only the score and log-prob columns (files
//! decoded in parallel) and ranks; the second streams every column and keeps the selected rows.

mod config;
mod margins;
mod output;
mod ranking;
mod source;

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tracing::info;

use crate::error::{Error, Result};
use crate::formats::PairInput;
use crate::manifest::{InputInfo, Manifest};
use crate::stages::now_unix;
pub use config::SelectMarginConfig;
use margins::read_margins;
use output::{RowFacts, refuse_output_columns, write_selected};
use ranking::{bound_stats, no_eligible_pair, rank, source_bounds};
pub use source::MarginSource;
use source::resolve_sources;

crate::stage::config_stage!(SelectMarginConfig, "select-margin", run);

/// Runs `select-margin` from `input` into `output`.
pub async fn run(config: &SelectMarginConfig, input: &str, output: &str) -> Result<Manifest> {
    let output = &crate::storage::Location::parse(output)?;
    let started = Instant::now();
    let started_unix = now_unix();
    let keep = config.keep()?;
    if !config.m1.is_finite() {
        return Err(Error::config(
            "m1",
            format!("must be finite, got {}", config.m1),
        ));
    }
    let pairs = PairInput::open(input, config.input_format).await?;
    let sources = resolve_sources(config.sources.as_deref(), &pairs.schema)?;
    refuse_output_columns(&pairs.schema)?;
    let margins = read_margins(&pairs).await?;
    let rows = margins.of(sources[0]).len();
    info!(
        rows,
        seconds = started.elapsed().as_secs_f64(),
        "select-margin: margins read"
    );
    if rows == 0 {
        return Err(Error::EmptyInput { path: input.into() });
    }
    let (bounds, dropped) = source_bounds(&margins, &sources, config, input)?;
    let ranking = rank(&bounds, rows, config.m1, keep);
    info!(
        eligible = ranking.eligible,
        seconds = started.elapsed().as_secs_f64(),
        "select-margin: ranked"
    );
    if ranking.eligible == 0 {
        return Err(no_eligible_pair(&sources, input));
    }
    let dropped_pairs = rows as u64 - ranking.eligible;
    let shortfall = ranking.wanted.saturating_sub(ranking.eligible);
    if shortfall > 0 {
        tracing::warn!(
            wanted = ranking.wanted,
            eligible = ranking.eligible,
            "fewer eligible pairs than asked for; all of them are kept"
        );
    }
    let bound_figures = bound_stats(&bounds);
    drop(bounds);
    let (eligible, wanted, selected_count) = (ranking.eligible, ranking.wanted, ranking.selected);
    let facts = Arc::new(RowFacts {
        ranks: ranking.ranks,
        logits: ranking.logits,
        external: margins.external,
        implicit: margins.implicit,
    });
    let selected = write_selected(&pairs, facts, config, output).await?;
    let stats = [
        ("pairs", json!(rows)),
        (
            "sources",
            json!(sources.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
        ),
        ("m1", json!(config.m1)),
        ("margin_scale", json!(config.margin_scale)),
        ("margin_units", json!(bound_figures.units)),
        ("m2", json!(bound_figures.m2)),
        ("tie_break_scales", json!(bound_figures.scales)),
        ("eligible", json!(eligible)),
        ("dropped_non_finite", json!(dropped_pairs)),
        ("dropped_non_finite_by_source", json!(dropped)),
        ("wanted", json!(wanted)),
        ("selected", json!(selected_count)),
        ("shortfall", json!(shortfall)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let manifest = Manifest::new(
        "select-margin",
        config.hash(&pairs.infos),
        config,
        pairs.infos.iter().map(InputInfo::from).collect(),
        stats,
        started_unix,
    );
    let mut manifest = selected.commit(manifest).await?;
    manifest.timing.seconds = started.elapsed().as_secs_f64();
    info!(
        pairs = rows,
        eligible,
        selected = selected_count,
        shortfall,
        output = %output,
        "select-margin: done"
    );
    Ok(manifest)
}
