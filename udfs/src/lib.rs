//! DataFusion functions for preference-data curation: pair selection, reward statistics and
//! helpers, usable from SQL and from the pipeline's plans. Nothing here does I/O.
//!
//! | function | kind | what it computes |
//! |---|---|---|
//! | `select_pair(response_index, reward, k_chosen, k_rejected [, ddof])` | aggregate | one pair per group by position (`μ + kσ`; `'+inf'`/`'-inf'` = max/min) |
//! | `select_pair_scalable(response_index, reward, prompt_id [, run_seed [, ddof]])` | aggregate | max of all vs min of a seeded random 5-subset |
//! | `select_pair_with_text(response_index, reward, response, k_chosen, k_rejected [, ddof])` | aggregate | `select_pair` plus the `chosen`/`rejected` texts |
//! | `select_pair_scalable_with_text(response_index, reward, response, prompt_id [, run_seed [, ddof]])` | aggregate | `select_pair_scalable` plus the texts |
//! | `select_pair_list(scores, k_chosen, k_rejected [, ddof])` | scalar | the same for the wide layout (a list of scores per row) |
//! | `select_pair_scalable_list(scores, prompt_id [, run_seed [, ddof]])` | scalar | scalable, wide layout |
//! | `reward_stats(reward [, ddof])` | aggregate | `{n, n_valid, mean, std}` |
//! | `reward_zscore(reward) OVER (PARTITION BY …)` | window | `(r − μ)/σ` per row |
//! | `hf_prompt_id(prompt)` | scalar | sha256 hex of the prompt |
//! | `implicit_reward(policy_logp, ref_logp, beta)` | scalar | β·(lp_θ − lp_ref) |
//! | `reward_margin(chosen, rejected)` | scalar | chosen − rejected |
//! | `margin_probability(m, m1, m2)` | scalar | (clip(m, m1, m2) − m1)/(m2 − m1) |
//! | `fuse_preference(p1, p2, …)` | scalar | Σ logit(clip(p, ε, 1 − ε)) |
//! | `margin_upper_bound(margin [, divisor [, m1]])` | aggregate | M2 by the tail-sparsity search |
//! | `goal_prompt(score)` | scalar | the reward-augmented system prompt |
//! | `clean_scores(response_index, score [, temperature])` | aggregate | robust-PCA cleaned Borda scores, ranks, flags from scores |
//! | `clean_comparisons(i, j, outcome)` | aggregate | the same from pairwise judgments (missing pairs masked) |
//!
//! The selection rules live in [`selection`], shared by every form; the robust PCA solver in
//! [`rpca`]. To add a function: write
//! it in its own file under `scalar/`, `aggregate/` or `window/` (docs with a SQL example,
//! struct, trait impl, kernel, tests), add it to the matching list below, and cover it in
//! `tests/sql/`.

pub mod aggregate;
mod args;

pub use args::string_at;
pub mod pair_struct;
pub mod rpca;
pub mod scalar;
pub mod selection;
pub mod window;

use std::sync::Arc;

use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};

/// Every scalar function of this crate.
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(
            scalar::select_pair_list::SelectPairList::positions(),
        )),
        Arc::new(ScalarUDF::from(
            scalar::select_pair_list::SelectPairList::scalable(),
        )),
        Arc::new(ScalarUDF::from(scalar::hf_prompt_id::HfPromptId::default())),
        Arc::new(ScalarUDF::from(
            scalar::margin_math::MarginMath::implicit_reward(),
        )),
        Arc::new(ScalarUDF::from(
            scalar::margin_math::MarginMath::reward_margin(),
        )),
        Arc::new(ScalarUDF::from(
            scalar::margin_math::MarginMath::margin_probability(),
        )),
        Arc::new(ScalarUDF::from(
            scalar::margin_math::MarginMath::fuse_preference(),
        )),
        Arc::new(ScalarUDF::from(scalar::goal_prompt::GoalPrompt::default())),
    ]
}

/// Every aggregate function of this crate.
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    vec![
        Arc::new(AggregateUDF::from(aggregate::clean::Clean::scores())),
        Arc::new(AggregateUDF::from(aggregate::clean::Clean::comparisons())),
        Arc::new(AggregateUDF::from(
            aggregate::select_pair::SelectPair::positions(),
        )),
        Arc::new(AggregateUDF::from(
            aggregate::select_pair::SelectPair::scalable(),
        )),
        Arc::new(AggregateUDF::from(
            aggregate::select_pair::SelectPair::positions_with_text(),
        )),
        Arc::new(AggregateUDF::from(
            aggregate::select_pair::SelectPair::scalable_with_text(),
        )),
        Arc::new(AggregateUDF::from(
            aggregate::reward_stats::RewardStatsUdaf::default(),
        )),
        Arc::new(AggregateUDF::from(
            aggregate::margin_upper_bound::MarginUpperBound::default(),
        )),
    ]
}

/// Every window function of this crate.
pub fn window_functions() -> Vec<Arc<WindowUDF>> {
    vec![Arc::new(WindowUDF::from(
        window::reward_zscore::RewardZscore::default(),
    ))]
}

/// Registers every function of this crate (e.g. on a `SessionContext`), replacing any
/// function of the same name.
pub fn register_all(registry: &mut dyn FunctionRegistry) -> datafusion::common::Result<()> {
    for f in scalar_functions() {
        registry.register_udf(f)?;
    }
    for f in aggregate_functions() {
        registry.register_udaf(f)?;
    }
    for f in window_functions() {
        registry.register_udwf(f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names = HashSet::new();
        let all = scalar_functions()
            .iter()
            .map(|f| f.name().to_string())
            .chain(aggregate_functions().iter().map(|f| f.name().to_string()))
            .chain(window_functions().iter().map(|f| f.name().to_string()))
            .collect::<Vec<_>>();
        for name in &all {
            assert!(names.insert(name.clone()), "duplicate function name {name}");
        }
        assert_eq!(all.len(), 17);
    }
}
