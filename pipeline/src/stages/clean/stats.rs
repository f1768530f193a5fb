//! The totals the `clean` manifest records, gathered prompt by prompt and chunk by chunk.

use std::collections::BTreeMap;

use prefsmith_udfs::cleaning::{CleanMethod, Cleaned};
use serde_json::json;

/// What cleaning can and cannot find on scores (`docs/ALGORITHMS.md` §5.2).
pub(super) const SCORES_NOTE: &str = "scores give a rank-2 matrix X_ij = s_i - s_j, which every score vector explains exactly: cleaning can flag only a whole response whose score disagrees with the bulk (an outlier such as a degenerate response scored far above or below the rest, all of its comparisons flagged, its score shrunk towards the rest but not reversed, so drop flagged responses to remove it); it cannot find a single wrong comparison, a reward shifted for every response, or a wrong order among responses scored close together";

/// Totals for the manifest.
#[derive(Default)]
pub(super) struct Totals {
    pub(super) prompts: u64,
    solved: u64,
    passed_through: u64,
    degenerate: u64,
    pub(super) non_converged: Vec<String>,
    iterations: u64,
    max_iterations: u32,
    max_residual: f64,
    pub(super) flagged: u64,
}

impl Totals {
    pub(super) fn add(&mut self, prompt: &str, c: &Cleaned) {
        self.prompts += 1;
        if c.solved {
            self.solved += 1;
        } else if c.converged {
            self.passed_through += 1;
        }
        if c.degenerate {
            self.degenerate += 1;
        }
        if !c.converged {
            self.non_converged.push(prompt.to_string());
        }
        self.iterations += u64::from(c.iterations);
        self.max_iterations = self.max_iterations.max(c.iterations);
        if c.residual.is_finite() {
            self.max_residual = self.max_residual.max(c.residual);
        }
        self.flagged += c.flagged.len() as u64;
    }

    /// Adds the totals of another chunk.
    pub(super) fn merge(&mut self, other: Totals) {
        self.prompts += other.prompts;
        self.solved += other.solved;
        self.passed_through += other.passed_through;
        self.degenerate += other.degenerate;
        self.non_converged.extend(other.non_converged);
        self.iterations += other.iterations;
        self.max_iterations = self.max_iterations.max(other.max_iterations);
        self.max_residual = self.max_residual.max(other.max_residual);
        self.flagged += other.flagged;
    }

    /// The manifest's `stats`: these totals and how the input was read. `self.non_converged`
    /// is expected sorted.
    pub(super) fn manifest_stats(
        &self,
        layout: &str,
        streaming: bool,
        method: CleanMethod,
        comparisons: bool,
        excluded: u64,
        temperature: f64,
    ) -> BTreeMap<String, serde_json::Value> {
        [
            ("layout", json!(layout)),
            ("method", json!(method.name())),
            // "streaming": chunk by chunk in bounded memory (wide, or long or comparisons in
            // prompt order);
            // "whole": the input read whole (long or comparisons out of prompt order).
            ("plan", json!(if streaming { "streaming" } else { "whole" })),
            ("prompts", json!(self.prompts)),
            ("solved", json!(self.solved)),
            ("passed_through", json!(self.passed_through)),
            ("degenerate", json!(self.degenerate)),
            ("non_converged", json!(self.non_converged.len())),
            (
                "non_converged_prompts",
                json!(self.non_converged.iter().take(100).collect::<Vec<_>>()),
            ),
            (
                "mean_iterations",
                json!(self.iterations as f64 / self.prompts.max(1) as f64),
            ),
            ("max_iterations", json!(self.max_iterations)),
            ("max_residual", json!(self.max_residual)),
            ("flagged_comparisons", json!(self.flagged)),
            ("excluded_non_finite_scores", json!(excluded)),
            ("temperature", json!(temperature)),
            (
                "note",
                json!(if comparisons {
                    "pairwise judgments: flags point at individual corrupted comparisons"
                } else {
                    SCORES_NOTE
                }),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}
