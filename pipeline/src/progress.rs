//! Periodic progress lines with rate and ETA, for long stages.

use std::time::Instant;

use tracing::info;

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
