//! Pipeline stages. Each reads its input, writes a stage output directory under the contract
//! of [`crate::manifest`], and returns the manifest it wrote.

pub mod augment;
pub mod clean;
pub mod export;
pub mod route;
pub mod runs;
pub mod select;
pub mod select_margin;
pub mod synth;

use std::time::Instant;

use sha2::{Digest, Sha256};
use tracing::info;

/// Hash of a stage's name and resolved settings (canonical JSON).
pub fn config_hash(stage: &str, value: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(stage.as_bytes());
    hasher.update(b"\0");
    hasher.update(value.to_string().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash deciding whether a stage's existing output is up to date: its settings and its
/// input files (paths, sizes, modification times).
pub fn stage_hash(
    stage: &str,
    config: &impl serde::Serialize,
    infos: &[crate::input::FileInfo],
) -> String {
    config_hash(
        stage,
        &serde_json::json!({"config": config, "inputs": input_listing(infos)}),
    )
}

/// The input files as they enter a config hash: path, size, version tag and modification
/// time, so that a rewritten input makes the stage rerun.
pub fn input_listing(infos: &[crate::input::FileInfo]) -> serde_json::Value {
    infos
        .iter()
        .map(|i| serde_json::json!([i.location.to_string(), i.bytes, i.etag, i.modified_nanos]))
        .collect()
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), for manifests and summaries.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A rate for progress lines: whole units when large, two decimals when slow (model stages
/// process a prompt every few seconds).
fn rate_text(rate: f64) -> String {
    if rate >= 10.0 {
        format!("{rate:.0}/s")
    } else {
        format!("{rate:.2}/s")
    }
}

/// Periodic progress lines (every 2 s) with rate and ETA, through `tracing`.
#[derive(Debug)]
pub struct Progress {
    stage: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// Progress over `total` units (rows).
    pub fn new(stage: &'static str, total: u64) -> Self {
        let now = Instant::now();
        Self {
            stage,
            total,
            done: 0,
            started: now,
            last: now,
        }
    }

    /// Records `n` more units done, logging at most every two seconds.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed().as_secs_f64() >= 2.0 {
            self.last = Instant::now();
            let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
            let rate = self.done as f64 / elapsed;
            let eta = if rate > 0.0 {
                self.total.saturating_sub(self.done) as f64 / rate
            } else {
                f64::NAN
            };
            info!(
                stage = self.stage,
                done = self.done,
                total = self.total,
                rate = rate_text(rate),
                eta = format!("{eta:.0}s"),
                "progress"
            );
        }
    }

    /// Logs the final rate.
    pub fn finish(&self) {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        info!(
            stage = self.stage,
            done = self.done,
            rate = rate_text(self.done as f64 / elapsed),
            "finished"
        );
    }
}
