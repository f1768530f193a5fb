//! What a run reports: the TRL metrics of a step or an evaluation, the lines of
//! `metrics.jsonl`, and the throughput of the loop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value as Json, json};

use crate::error::{Error, Result};
use crate::train::data::TrainPair;
use crate::train::step::PhaseSeconds;

/// Sums of the TRL metrics over the pairs of a step (or an evaluation).
#[derive(Debug, Default)]
pub(super) struct MetricSums {
    pub(super) pairs: usize,
    pub(super) tokens: usize,
    pub(super) loss: f64,
    reward_chosen: f64,
    reward_rejected: f64,
    correct: f64,
    logp_chosen: f64,
    logp_rejected: f64,
    preference: bool,
}

impl MetricSums {
    /// Adds the pairs of a micro-batch given the policy's summed log-probs.
    pub(super) fn add(
        &mut self,
        pairs: &[&TrainPair],
        chosen: &[f64],
        rejected: Option<&[f64]>,
        beta: f64,
    ) {
        self.pairs += pairs.len();
        for (i, p) in pairs.iter().enumerate() {
            self.logp_chosen += chosen[i];
            if let (Some(rejected), Some((rc, rr))) = (rejected, p.ref_logps) {
                self.preference = true;
                let (wc, wr) = (beta * (chosen[i] - rc), beta * (rejected[i] - rr));
                self.logp_rejected += rejected[i];
                self.reward_chosen += wc;
                self.reward_rejected += wr;
                self.correct += if wc > wr { 1.0 } else { 0.0 };
            }
        }
    }

    /// The metrics as TRL names them, with `prefix` (`""` or `"eval_"`).
    pub(super) fn to_json(&self, prefix: &str) -> serde_json::Map<String, Json> {
        let n = self.pairs.max(1) as f64;
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: f64| {
            m.insert(format!("{prefix}{k}"), json!(v));
        };
        put("loss", self.loss);
        put("logps/chosen", self.logp_chosen / n);
        if self.preference {
            put("logps/rejected", self.logp_rejected / n);
            put("rewards/chosen", self.reward_chosen / n);
            put("rewards/rejected", self.reward_rejected / n);
            put(
                "rewards/margins",
                (self.reward_chosen - self.reward_rejected) / n,
            );
            put("rewards/accuracies", self.correct / n);
        }
        m
    }
}

/// Keeps the lines of `metrics.jsonl` up to `step` (a resumed run rewrites what follows).
pub(super) fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<Json>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).map_err(Error::io(path))
}

/// `metrics.jsonl`, opened for appending.
pub(super) struct MetricsLog {
    file: std::fs::File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens `path` (which exists) for appending.
    pub(super) fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(Error::io(path))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends one line.
    pub(super) fn write(&mut self, line: &Json) -> Result<()> {
        writeln!(self.file, "{line}").map_err(Error::io(&self.path))
    }
}

/// Pairs, tokens and step times of the steps this process ran.
pub(super) struct Throughput {
    /// When the loop started.
    pub(super) started: Instant,
    /// Training pairs run.
    pub(super) pairs: usize,
    /// Tokens run (prompt + response, no padding).
    pub(super) tokens: usize,
    /// Seconds of each step.
    pub(super) step_seconds: Vec<f64>,
    /// Each step's seconds by phase.
    pub(super) phase_seconds: Vec<PhaseSeconds>,
}

impl Throughput {
    /// Starts counting now.
    pub(super) fn start() -> Self {
        Self {
            started: Instant::now(),
            pairs: 0,
            tokens: 0,
            step_seconds: Vec::new(),
            phase_seconds: Vec::new(),
        }
    }

    /// Seconds since the loop started (never zero, so rates stay finite).
    pub(super) fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64().max(1e-9)
    }
}
