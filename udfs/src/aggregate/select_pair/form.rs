//! The four forms of `select_pair` (positions or scalable, with or without texts): their
//! names, where their arguments sit, and the rule their constant arguments give.

use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::function::AccumulatorArgs;

use crate::arguments;
use crate::selection::{PairRule, scalable_seed};

/// One of the four forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Form {
    /// `select_pair_scalable*` (max of all vs min of a seeded subset) rather than positions.
    pub(super) scalable: bool,
    /// `*_with_text`: a `response` argument, and the texts in the result.
    pub(super) with_text: bool,
}

impl Form {
    pub(super) fn name(self) -> &'static str {
        match (self.scalable, self.with_text) {
            (false, false) => "select_pair",
            (false, true) => "select_pair_with_text",
            (true, false) => "select_pair_scalable",
            (true, true) => "select_pair_scalable_with_text",
        }
    }

    /// Position of the first argument after `(response_index, reward [, response])`.
    pub(super) fn first_rule_argument(self) -> usize {
        if self.with_text { 3 } else { 2 }
    }

    /// The rule and `ddof` given by the constant arguments after the columns.
    pub(super) fn parse_rule(self, args: &AccumulatorArgs) -> Result<(RuleSpec, u32)> {
        let name = self.name();
        let rest = self.first_rule_argument();
        let lit = |i: usize, what: &str| {
            arguments::aggregate_constant(name, what, args.exprs[rest + i].as_ref())
        };
        let optional = |i: usize| args.exprs.len() > rest + i;
        if self.scalable {
            // (prompt_id [, run_seed [, ddof]])
            let run_seed = if optional(1) {
                arguments::parse_non_negative(name, "run_seed", &lit(1, "run_seed")?)?
            } else {
                0
            };
            let ddof = if optional(2) {
                arguments::parse_ddof(name, &lit(2, "ddof")?)?
            } else {
                0
            };
            Ok((RuleSpec::Scalable { run_seed }, ddof))
        } else {
            // (k_chosen, k_rejected [, ddof])
            let chosen = arguments::parse_position(name, "k_chosen", &lit(0, "k_chosen")?)?;
            let rejected = arguments::parse_position(name, "k_rejected", &lit(1, "k_rejected")?)?;
            let ddof = if optional(2) {
                arguments::parse_ddof(name, &lit(2, "ddof")?)?
            } else {
                0
            };
            Ok((
                RuleSpec::Fixed(PairRule::Positions { chosen, rejected }),
                ddof,
            ))
        }
    }
}

/// The rule as parsed from the constant arguments; `scalable` needs each group's prompt id
/// before it becomes a [`PairRule`].
#[derive(Debug, Clone, Copy)]
pub(super) enum RuleSpec {
    Fixed(PairRule),
    Scalable { run_seed: u64 },
}

impl RuleSpec {
    /// The rule for the group of `prompt_id` (which only the scalable rule reads); `name` is
    /// the function's, for the error message.
    pub(super) fn for_prompt(self, name: &str, prompt_id: Option<&str>) -> Result<PairRule> {
        match self {
            Self::Fixed(rule) => Ok(rule),
            Self::Scalable { run_seed } => match prompt_id {
                Some(id) => Ok(PairRule::Scalable {
                    seed: scalable_seed(run_seed, id),
                }),
                None => exec_err!("{name}: prompt_id must not be null"),
            },
        }
    }
}
