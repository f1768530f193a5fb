//! The section of an `experiment-summary` stage: the trained policy's held-out gold reward and
//! its win rate against the SFT start, mean and 95 % interval over seeds, per arm — against
//! the swept x (`n`, `flip`) with one line per series, or one numbered point per arm — with
//! the SFT start's own gold reward as a dashed line, and the numbers in a table.

use serde_json::Value;

use super::super::html::escape;
use super::super::plot::{self, IntervalPoint};
use super::Plots;
use crate::error::Result;
use crate::manifest::Manifest;

fn triple(v: &Value) -> Option<(f64, f64, f64)> {
    Some((v["mean"].as_f64()?, v["lo"].as_f64()?, v["hi"].as_f64()?))
}

pub(super) fn summary_plots(m: &Manifest, plots: &mut Plots) -> Result<()> {
    let arms = m.stats["arms"].as_array().cloned().unwrap_or_default();
    if arms.is_empty() {
        plots.notice("the summary lists no arms");
        return Ok(());
    }
    let x_label = m.stats["x_label"].as_str().map(str::to_string);
    let join = x_label.is_some();
    let x_axis = match x_label.as_deref() {
        Some("n") => "responses per prompt N",
        Some("flip") => "fraction of pairs the judge gets wrong",
        Some(other) => other,
        None => "arm (numbered as in the table)",
    };
    for (metric, y_label, reference) in [
        (
            "gold",
            "held-out gold reward",
            triple(&m.stats["sft_gold"]).map(|t| (t.0, "SFT start")),
        ),
        ("win_rate", "win rate vs the SFT start", Some((0.5, "even"))),
    ] {
        let mut series: Vec<(String, Vec<IntervalPoint>)> = Vec::new();
        for (i, arm) in arms.iter().enumerate() {
            let Some((mean, lo, hi)) = triple(&arm[metric]) else {
                continue;
            };
            let name = arm["series"].as_str().unwrap_or("?").to_string();
            let x = if join {
                arm["x"].as_f64().unwrap_or(i as f64)
            } else {
                (i + 1) as f64
            };
            match series.iter_mut().find(|s| s.0 == name) {
                Some(s) => s.1.push((x, mean, lo, hi)),
                None => series.push((name, vec![(x, mean, lo, hi)])),
            }
        }
        let title = format!("{y_label} (mean, 95 % CI over seeds)");
        let svg = plot::intervals(&title, x_axis, y_label, &series, reference, join)?;
        plots.add(
            svg,
            &format!(
                "{y_label} of the policy trained by each arm, sampled on the held-out prompts and \
                 scored by the gold reward; whiskers are 95 % t-intervals over the seeds"
            ),
        );
    }
    let mut rows = String::new();
    for (i, arm) in arms.iter().enumerate() {
        let cell = |k: &str| {
            triple(&arm[k]).map_or("–".to_string(), |(mean, lo, hi)| {
                format!("{mean:.3} [{lo:.3}, {hi:.3}]")
            })
        };
        rows.push_str(&format!(
            "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            i + 1,
            escape(arm["name"].as_str().unwrap_or("?")),
            arm["seeds"],
            cell("gold"),
            cell("win_rate")
        ));
    }
    let claim = m.stats["claim"].as_str().unwrap_or_default();
    plots.add(
        format!(
            "<table><caption>Claim: {}</caption><thead><tr><th>#</th><th>arm</th><th>seeds</th>\
             <th>gold reward [95 % CI]</th><th>win rate vs SFT [95 % CI]</th></tr></thead>\
             <tbody>{rows}</tbody></table>",
            escape(claim)
        ),
        "every arm's figures; the SFT start's gold reward is the dashed line",
    );
    Ok(())
}
