//! The `experiment-summary` stage: every (arm, seed) evaluation of an experiment in one table
//! and one manifest, which `prefsmith report` draws as the experiment's curves.
//!
//! Per run, from the gold rewards of the held-out samples (`task-reward` on `sample` of the
//! trained policy): the mean gold reward over prompts and samples, and the win rate against
//! the SFT start's samples of the same prompts — sample k of the policy against sample k of
//! the start, a tie counting one half. Per arm, over the seeds: the mean and the 95 %
//! interval mean ± t₀.₉₇₅,ₛ₋₁ · sd / √s (Student's t, s seeds; no interval from one seed).

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::future::BoxFuture;
use prefsmith_pipeline::manifest::Manifest;
use prefsmith_pipeline::reader::string_at;
use prefsmith_pipeline::stage::{Stage, StageContext};
use prefsmith_pipeline::stages::now_unix;
use prefsmith_pipeline::storage::Location;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::job::to_pipeline;
use crate::stages::{StageOutput, Table};

/// Settings of `experiment-summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SummaryConfig {
    /// Output directory.
    #[serde(default)]
    pub output: Option<String>,
    /// The experiment's name.
    pub name: String,
    /// Its claim.
    #[serde(default)]
    pub claim: String,
    /// The x axis (`n`), or none: one point per arm.
    #[serde(default)]
    pub x_label: Option<String>,
    /// The arms.
    pub arms: Vec<ArmEntry>,
}

/// One arm and its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ArmEntry {
    /// Its name.
    pub name: String,
    /// Its plot series.
    pub series: String,
    /// Its x value.
    #[serde(default)]
    pub x: Option<f64>,
    /// One per seed.
    pub runs: Vec<RunEntry>,
}

/// One seed's evaluation of an arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunEntry {
    /// The seed.
    pub seed: u64,
    /// The policy's rated held-out samples.
    pub eval: String,
    /// The SFT start's rated held-out samples.
    pub baseline: String,
}

/// Mean and 95 % interval over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// The mean.
    pub mean: f64,
    /// Lower end (the mean itself for one seed).
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

/// Student's t quantile t₀.₉₇₅ for `df` degrees of freedom (exact to 3 decimals up to 30,
/// then the normal 1.96).
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => 1.96,
    }
}

/// The mean of `values` with its 95 % t-interval.
pub fn interval(values: &[f64]) -> Interval {
    let s = values.len();
    let mean = values.iter().sum::<f64>() / s.max(1) as f64;
    if s < 2 {
        return Interval {
            mean,
            lo: mean,
            hi: mean,
        };
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (s - 1) as f64;
    let half = t975(s - 1) * (var / s as f64).sqrt();
    Interval {
        mean,
        lo: mean - half,
        hi: mean + half,
    }
}

/// Gold rewards per prompt id, from a rated table.
async fn gold_by_prompt(spec: &str) -> Result<Vec<(String, Vec<f64>)>> {
    let table = Table::read(spec).await?;
    let ids = table.column("prompt_id", "the evaluation pairs prompts by id")?;
    let gold = table.column("all_gold_rewards", "the evaluation reads the gold reward")?;
    let lists = gold
        .as_any()
        .downcast_ref::<datafusion::arrow::array::ListArray>()
        .ok_or_else(|| Error::Input(format!("{spec}: all_gold_rewards is not a list")))?;
    (0..table.batch.num_rows())
        .map(|row| {
            let id = string_at(ids, row)
                .ok_or_else(|| Error::Input(format!("{spec}: row {row}: null prompt_id")))?;
            let values = lists.value(row);
            let values = values
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| Error::Input(format!("{spec}: gold rewards are not float64")))?;
            let gold: Vec<f64> = values.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
            if gold.iter().any(|g| !g.is_finite()) {
                return Err(Error::Input(format!(
                    "{spec}: row {row}: a gold reward is null or not finite"
                )));
            }
            Ok((id.to_string(), gold))
        })
        .collect()
}

/// Gold rewards by prompt id.
type GoldTable = std::collections::HashMap<String, Vec<f64>>;

/// One run's figures: mean gold reward, win rate against the baseline, the baseline's mean.
/// `start` is the baseline table `baseline` names, read once per seed by the caller.
fn evaluate(
    eval: &str,
    policy: &[(String, Vec<f64>)],
    baseline: &str,
    start: &GoldTable,
) -> Result<(f64, f64, f64)> {
    let (mut gold, mut base, mut wins, mut count) = (0.0, 0.0, 0.0, 0usize);
    for (id, samples) in policy {
        let reference = start.get(id).ok_or_else(|| {
            Error::Input(format!(
                "{eval}: prompt {id} is not in the baseline {baseline}"
            ))
        })?;
        if reference.len() != samples.len() {
            return Err(Error::Input(format!(
                "{eval}: prompt {id} has {} samples, the baseline {}",
                samples.len(),
                reference.len()
            )));
        }
        for (p, b) in samples.iter().zip(reference) {
            gold += p;
            base += b;
            wins += if p > b {
                1.0
            } else if p == b {
                0.5
            } else {
                0.0
            };
            count += 1;
        }
    }
    if count == 0 {
        return Err(Error::Input(format!("{eval}: no held-out samples")));
    }
    let n = count as f64;
    Ok((gold / n, wins / n, base / n))
}

impl Stage for SummaryConfig {
    fn kind(&self) -> &'static str {
        "experiment-summary"
    }
    fn input(&self) -> Option<&str> {
        None
    }
    fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }
    fn reads_input(&self) -> bool {
        false
    }
    /// The config and the config hash of every evaluation it reads.
    fn settings<'a>(
        &'a self,
        _: &'a StageContext<'a>,
    ) -> BoxFuture<'a, prefsmith_pipeline::Result<serde_json::Value>> {
        Box::pin(async move {
            let mut hashes = Vec::new();
            for run in self.arms.iter().flat_map(|a| &a.runs) {
                for spec in [&run.eval, &run.baseline] {
                    let manifest = Manifest::read_dir(&Location::parse(spec)?).await?;
                    hashes.push(manifest.map(|m| m.config_hash));
                }
            }
            Ok(json!([self, hashes]))
        })
    }
    fn run<'a>(
        &'a self,
        ctx: &'a StageContext<'a>,
    ) -> BoxFuture<'a, prefsmith_pipeline::Result<Manifest>> {
        Box::pin(async move {
            summarise(self, ctx.output, ctx.hash)
                .await
                .map_err(to_pipeline)
        })
    }
}

async fn summarise(config: &SummaryConfig, output: &str, hash: &str) -> Result<Manifest> {
    let started = Instant::now();
    let started_unix = now_unix();
    let (mut arm_col, mut series_col, mut x_col, mut seed_col) = (vec![], vec![], vec![], vec![]);
    let (mut gold_col, mut win_col, mut base_col) = (vec![], vec![], vec![]);
    let mut arms = Vec::new();
    let mut baselines: std::collections::BTreeMap<u64, f64> = Default::default();
    // Every arm of a seed shares its baseline: each baseline table is read once.
    let mut starts: std::collections::HashMap<String, GoldTable> = Default::default();
    for arm in &config.arms {
        let (mut golds, mut winrates) = (vec![], vec![]);
        for run in &arm.runs {
            if !starts.contains_key(&run.baseline) {
                let table = gold_by_prompt(&run.baseline).await?.into_iter().collect();
                starts.insert(run.baseline.clone(), table);
            }
            let policy = gold_by_prompt(&run.eval).await?;
            let (gold, win, base) =
                evaluate(&run.eval, &policy, &run.baseline, &starts[&run.baseline])?;
            baselines.insert(run.seed, base);
            arm_col.push(arm.name.clone());
            series_col.push(arm.series.clone());
            x_col.push(arm.x);
            seed_col.push(run.seed);
            gold_col.push(gold);
            win_col.push(win);
            base_col.push(base);
            golds.push(gold);
            winrates.push(win);
        }
        arms.push(json!({
            "name": arm.name,
            "series": arm.series,
            "x": arm.x,
            "seeds": arm.runs.len(),
            "gold": interval(&golds),
            "win_rate": interval(&winrates),
        }));
    }
    let base: Vec<f64> = baselines.values().copied().collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("arm", DataType::Utf8, false),
        Field::new("series", DataType::Utf8, false),
        Field::new("x", DataType::Float64, true),
        Field::new("seed", DataType::UInt64, false),
        Field::new("gold_mean", DataType::Float64, false),
        Field::new("win_rate", DataType::Float64, false),
        Field::new("sft_gold_mean", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(arm_col)),
        Arc::new(StringArray::from(series_col)),
        Arc::new(Float64Array::from(x_col)),
        Arc::new(UInt64Array::from(seed_col)),
        Arc::new(Float64Array::from(gold_col)),
        Arc::new(Float64Array::from(win_col)),
        Arc::new(Float64Array::from(base_col)),
    ];
    let batch = RecordBatch::try_new(schema, columns)?;
    let manifest = StageOutput {
        stage: "experiment-summary",
        output,
        sorted_by: None,
        hash: hash.to_string(),
        config,
        infos: &[],
        stats: vec![
            ("experiment", json!(config.name)),
            ("claim", json!(config.claim)),
            ("x_label", json!(config.x_label)),
            ("sft_gold", json!(interval(&base))),
            ("arms", json!(arms)),
        ],
        started,
        started_unix,
    }
    .commit(&batch)
    .await?;
    Ok(manifest)
}

/// The summary as Markdown table lines: one row per arm (mean gold reward and win rate with
/// their 95 % intervals), the SFT start last.
pub async fn table_lines(summary: &str) -> Result<Vec<String>> {
    let manifest = Manifest::read_dir(&Location::parse(summary)?)
        .await?
        .ok_or_else(|| Error::Input(format!("{summary}: no summary manifest")))?;
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let cell = |i: &serde_json::Value| {
        format!("{:.3} [{:.3}, {:.3}]", f(i, "mean"), f(i, "lo"), f(i, "hi"))
    };
    let mut lines = vec![
        "| arm | seeds | held-out gold reward (95 % CI) | win rate vs SFT (95 % CI) |".to_string(),
        "|---|---:|---:|---:|".to_string(),
    ];
    for arm in manifest.stats["arms"].as_array().into_iter().flatten() {
        lines.push(format!(
            "| {} | {} | {} | {} |",
            arm["name"].as_str().unwrap_or("?"),
            arm["seeds"],
            cell(&arm["gold"]),
            cell(&arm["win_rate"])
        ));
    }
    lines.push(format!(
        "| SFT start | {} | {} | 0.500 |",
        manifest.stats["arms"][0]["seeds"],
        cell(&manifest.stats["sft_gold"])
    ));
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_by_hand() {
        // Mean 2, sd 1, three seeds: 2 ± 4.303 / √3.
        let i = interval(&[1.0, 2.0, 3.0]);
        assert_eq!(i.mean, 2.0);
        assert!((i.hi - (2.0 + 4.303 / 3f64.sqrt())).abs() < 1e-12);
        assert!((i.lo - (2.0 - 4.303 / 3f64.sqrt())).abs() < 1e-12);
        let one = interval(&[0.5]);
        assert_eq!((one.lo, one.mean, one.hi), (0.5, 0.5, 0.5));
        assert_eq!(t975(2), 4.303);
        assert_eq!(t975(100), 1.96);
    }
}
