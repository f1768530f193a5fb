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
//! | `clean_scores(response_index, score [, temperature] [, method])` | aggregate | robust-PCA cleaned scores, ranks, flags from scores |
//! | `clean_comparisons(i, j, outcome [, method])` | aggregate | cleaned scores, ranks, flags from pairwise judgments (default trimmed Bradley–Terry) |
//!
//! The selection rules live in [`selection`], shared by every form, with the struct they
//! return in [`selection_struct`]; label cleaning per prompt in [`cleaning`], on the robust PCA solvers of [`rpca`]; argument coercion and
//! constant parsing shared by the functions in `arguments`. Every function documents itself
//! (`documentation()`), and [`function_docs`] lists them for the reference.
//!
//! To add a function:
//! 1. write it in its own file under `scalar/`, `aggregate/` or `window/` (module docs with a
//!    SQL example, struct, trait impl with `documentation()`, kernel, tests);
//! 2. add it to the matching list below;
//! 3. cover it in `tests/sql/`.

pub mod aggregate;
mod arguments;
pub mod cleaning;
pub mod documentation;
pub mod rpca;
pub mod scalar;
pub mod selection;
pub mod selection_struct;
pub mod window;

pub use arguments::string_at;

use std::sync::Arc;

use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};

use documentation::{FunctionDoc, FunctionKind};

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
        Arc::new(AggregateUDF::from(aggregate::clean::CleanLabels::scores())),
        Arc::new(AggregateUDF::from(
            aggregate::clean::CleanLabels::comparisons(),
        )),
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

/// Every function of this crate with its kind and documentation, sorted by name (a function
/// without documentation would be left out; the crate's tests make sure there is none).
pub fn function_docs() -> Vec<FunctionDoc> {
    let entry =
        |name: &str, kind, documentation: Option<&datafusion::logical_expr::Documentation>| {
            documentation.map(|documentation| FunctionDoc {
                name: name.to_string(),
                kind,
                documentation: documentation.clone(),
            })
        };
    let mut docs: Vec<FunctionDoc> = scalar_functions()
        .iter()
        .filter_map(|f| entry(f.name(), FunctionKind::Scalar, f.documentation()))
        .chain(
            aggregate_functions()
                .iter()
                .filter_map(|f| entry(f.name(), FunctionKind::Aggregate, f.documentation())),
        )
        .chain(
            window_functions()
                .iter()
                .filter_map(|f| entry(f.name(), FunctionKind::Window, f.documentation())),
        )
        .collect();
    docs.sort_by(|a, b| a.name.cmp(&b.name));
    docs
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use datafusion::logical_expr::{Documentation, Signature};

    use super::*;
    use crate::documentation::syntax_arguments;

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

    /// Every registered function with its kind, signature and documentation, straight from
    /// the registration lists (not through `function_docs`, which leaves undocumented ones out).
    fn registered() -> Vec<(String, FunctionKind, Signature, Option<Documentation>)> {
        let scalar = scalar_functions().into_iter().map(|f| {
            let f = f.as_ref();
            (
                f.name().to_string(),
                FunctionKind::Scalar,
                f.signature().clone(),
                f.documentation().cloned(),
            )
        });
        let aggregate = aggregate_functions().into_iter().map(|f| {
            let f = f.as_ref();
            (
                f.name().to_string(),
                FunctionKind::Aggregate,
                f.signature().clone(),
                f.documentation().cloned(),
            )
        });
        let window = window_functions().into_iter().map(|f| {
            let f = f.as_ref();
            (
                f.name().to_string(),
                FunctionKind::Window,
                f.signature().clone(),
                f.documentation().cloned(),
            )
        });
        scalar.chain(aggregate).chain(window).collect()
    }

    #[test]
    fn every_function_is_documented() {
        let functions = registered();
        assert_eq!(functions.len(), 17);
        for (name, kind, signature, documentation) in functions {
            let doc = documentation.unwrap_or_else(|| panic!("{name} has no documentation"));
            assert!(
                !doc.description.trim().is_empty(),
                "{name}: empty description"
            );
            assert!(
                doc.syntax_example.starts_with(&format!("{name}(")),
                "{name}: syntax {:?} does not call the function",
                doc.syntax_example
            );
            let example = doc.sql_example.as_deref().unwrap_or_default();
            assert!(
                example.contains(&format!("{name}(")),
                "{name}: no SQL example calling it"
            );
            let documented: Vec<&str> = doc
                .arguments
                .iter()
                .flatten()
                .map(|(argument, text)| {
                    assert!(
                        !text.trim().is_empty(),
                        "{name}: argument {argument} is not described"
                    );
                    argument.as_str()
                })
                .collect();
            let mut named = syntax_arguments(&doc.syntax_example);
            assert!(!named.is_empty(), "{name}: the syntax shows no arguments");
            named.extend(
                signature
                    .parameter_names
                    .iter()
                    .flatten()
                    .map(String::as_str),
            );
            for argument in named {
                assert!(
                    documented.contains(&argument),
                    "{name} ({kind}): argument {argument} is not documented"
                );
            }
        }
    }

    #[test]
    fn function_docs_lists_every_function_sorted() {
        let docs = function_docs();
        let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        let mut registered: Vec<String> = registered().into_iter().map(|f| f.0).collect();
        registered.sort_unstable();
        assert_eq!(names, registered);
        let kind_of = |name: &str| docs.iter().find(|d| d.name == name).map(|d| d.kind);
        assert_eq!(kind_of("select_pair"), Some(FunctionKind::Aggregate));
        assert_eq!(kind_of("select_pair_list"), Some(FunctionKind::Scalar));
        assert_eq!(kind_of("reward_zscore"), Some(FunctionKind::Window));
    }
}
