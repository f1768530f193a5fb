//! The totals the `clean` manifest records, gathered prompt by prompt and chunk by chunk.

use std::collections::BTreeMap;

use prefsmith_udfs::rpca::Cleaned;
use serde_json::json;

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
        comparisons: bool,
        excluded: u64,
        temperature: f64,
    ) -> BTreeMap<String, serde_json::Value> {
        [
            ("layout", json!(layout)),
            // "streaming": chunk by chunk in bounded memory (wide, or long in prompt order);
            // "whole": the input read whole (comparisons, or long out of order).
            ("plan", json!(if streaming { "streaming" } else { "whole" })),
            ("prompts", json!(self.prompts)),
            ("solved", json!(self.solved)),
            ("passed_through", json!(self.passed_through)),
            ("degenerate", json!(self.degenerate)),
            ("non_converged", json!(self.non_converged.len())),
            ("non_converged_prompts", json!(self.non_converged.iter().take(100).collect::<Vec<_>>())),
            ("mean_iterations", json!(self.iterations as f64 / self.prompts.max(1) as f64)),
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
                    "score-derived matrices are rank 2 by construction: flags can only point at whole responses whose score disagrees with the rest"
                }),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}
