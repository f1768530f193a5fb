//! The margin arithmetic of BeeS (Deng et al., `docs/ALGORITHMS.md` §3–§4), as scalar functions:
//!
//! ```text
//! SELECT implicit_reward(policy_logp, ref_logp, 0.1);          -- β·(lp_θ − lp_ref)
//! SELECT reward_margin(score_chosen, score_rejected);           -- chosen − rejected
//! SELECT margin_probability(margin, -2, 7);                     -- (clip(m, M1, M2) − M1)/(M2 − M1)
//! SELECT fuse_preference(p_external, p_implicit);               -- Σ logit(clip(p, ε, 1 − ε))
//! ```
//!
//! `margin_probability` is null for a non-finite margin (such a pair is not eligible for
//! selection). `fuse_preference` returns the fused *logit*: ranking by it keeps the order that
//! P itself loses when it rounds to 1.0; clipping at f64's machine epsilon makes p = 0 and p = 1
//! from two sources cancel to exactly 0 (P = 0.5).

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::documentation::MARGINS;

/// Which formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Formula {
    ImplicitReward,
    RewardMargin,
    MarginProbability,
    FusePreference,
}

/// One of the margin-arithmetic scalar functions.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MarginMath {
    formula: Formula,
    signature: Signature,
}

impl MarginMath {
    fn new(formula: Formula) -> Self {
        Self {
            formula,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// `implicit_reward(policy_logp, ref_logp, beta)` = β·(lp_θ − lp_ref) (`docs/ALGORITHMS.md` §4).
    pub fn implicit_reward() -> Self {
        Self::new(Formula::ImplicitReward)
    }

    /// `reward_margin(chosen, rejected)` = chosen − rejected.
    pub fn reward_margin() -> Self {
        Self::new(Formula::RewardMargin)
    }

    /// `margin_probability(m, m1, m2)` = (clip(m, m1, m2) − m1)/(m2 − m1); null for non-finite m.
    pub fn margin_probability() -> Self {
        Self::new(Formula::MarginProbability)
    }

    /// `fuse_preference(p1, p2, …)` = Σ logit(clip(p_k, ε, 1 − ε)).
    pub fn fuse_preference() -> Self {
        Self::new(Formula::FusePreference)
    }
}

/// logit(p) after clipping p to [ε, 1 − ε]. Written as ln p − ln(1 − p) so that logit(ε) and
/// logit(1 − ε) are exact negatives.
pub fn clipped_logit(p: f64) -> f64 {
    let p = p.clamp(f64::EPSILON, 1.0 - f64::EPSILON);
    p.ln() - (1.0 - p).ln()
}

/// The clip-to-probability map of one margin source; `None` for a non-finite margin.
pub fn margin_probability(m: f64, m1: f64, m2: f64) -> Option<f64> {
    m.is_finite().then(|| (m.clamp(m1, m2) - m1) / (m2 - m1))
}

impl ScalarUDFImpl for MarginMath {
    fn name(&self) -> &str {
        match self.formula {
            Formula::ImplicitReward => "implicit_reward",
            Formula::RewardMargin => "reward_margin",
            Formula::MarginProbability => "margin_probability",
            Formula::FusePreference => "fuse_preference",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        let arity_ok = match self.formula {
            Formula::ImplicitReward | Formula::MarginProbability => arg_types.len() == 3,
            Formula::RewardMargin => arg_types.len() == 2,
            Formula::FusePreference => !arg_types.is_empty(),
        };
        if !arity_ok {
            return plan_err!("{name}: wrong number of arguments ({})", arg_types.len());
        }
        arg_types
            .iter()
            .map(|t| {
                if t.is_numeric() || t.is_null() {
                    Ok(DataType::Float64)
                } else {
                    plan_err!("{name}: arguments must be numeric, got {t}")
                }
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let scalar_only = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let columns: Vec<&Float64Array> = arrays
            .iter()
            .map(|a| a.as_primitive::<Float64Type>())
            .collect();
        let row_values = |i: usize| -> Option<Vec<f64>> {
            columns
                .iter()
                .map(|c| c.is_valid(i).then(|| c.value(i)))
                .collect()
        };
        let mut out = Vec::with_capacity(rows);
        let len = arrays.first().map_or(rows, |a| a.len());
        for i in 0..len {
            let value = match row_values(i) {
                None => None,
                Some(v) => match self.formula {
                    Formula::ImplicitReward => Some(v[2] * (v[0] - v[1])),
                    Formula::RewardMargin => Some(v[0] - v[1]),
                    Formula::MarginProbability => {
                        // NaN bounds fail this too.
                        if v[2].partial_cmp(&v[1]) != Some(std::cmp::Ordering::Greater) {
                            return exec_err!(
                                "margin_probability: need m2 > m1, got m1 = {}, m2 = {}",
                                v[1],
                                v[2]
                            );
                        }
                        margin_probability(v[0], v[1], v[2])
                    }
                    Formula::FusePreference => Some(v.iter().map(|&p| clipped_logit(p)).sum()),
                },
            };
            out.push(value);
        }
        let array: ArrayRef = Arc::new(Float64Array::from(out));
        Ok(if scalar_only {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&array, 0)?)
        } else {
            ColumnarValue::Array(array)
        })
    }

    fn documentation(&self) -> Option<&Documentation> {
        static IMPLICIT_REWARD: LazyLock<Documentation> =
            LazyLock::new(implicit_reward_documentation);
        static REWARD_MARGIN: LazyLock<Documentation> = LazyLock::new(reward_margin_documentation);
        static MARGIN_PROBABILITY: LazyLock<Documentation> =
            LazyLock::new(margin_probability_documentation);
        static FUSE_PREFERENCE: LazyLock<Documentation> =
            LazyLock::new(fuse_preference_documentation);
        Some(match self.formula {
            Formula::ImplicitReward => &IMPLICIT_REWARD,
            Formula::RewardMargin => &REWARD_MARGIN,
            Formula::MarginProbability => &MARGIN_PROBABILITY,
            Formula::FusePreference => &FUSE_PREFERENCE,
        })
    }
}

/// Every formula is null when one of its arguments is.
const NULL_IN_NULL_OUT: &str = "Null when any argument is null.";

fn implicit_reward_documentation() -> Documentation {
    Documentation::builder(
        MARGINS,
        format!(
            "The implicit reward of DPO, `beta·(policy_logp − ref_logp)`: how much more likely \
             the policy makes a response than the reference model does, scaled by β. \
             {NULL_IN_NULL_OUT}"
        ),
        "implicit_reward(policy_logp, ref_logp, beta)",
    )
    .with_argument(
        "policy_logp",
        "Numeric summed log-probability of the response under the policy.",
    )
    .with_argument(
        "ref_logp",
        "Numeric summed log-probability of the response under the reference model.",
    )
    .with_argument("beta", "Numeric β, the DPO temperature.")
    .with_sql_example(
        r#"```sql
> SELECT implicit_reward(-10.0, -12.5, 0.1) AS reward;
+--------+
| reward |
+--------+
| 0.25   |
+--------+
```"#,
    )
    .with_related_udf("reward_margin")
    .build()
}

fn reward_margin_documentation() -> Documentation {
    Documentation::builder(
        MARGINS,
        format!("The margin of a pair, `chosen − rejected`. {NULL_IN_NULL_OUT}"),
        "reward_margin(chosen, rejected)",
    )
    .with_argument("chosen", "Numeric score of the chosen response.")
    .with_argument("rejected", "Numeric score of the rejected response.")
    .with_sql_example(
        r#"```sql
> SELECT reward_margin(8.5, 6.0) AS margin;
+--------+
| margin |
+--------+
| 2.5    |
+--------+
```"#,
    )
    .with_related_udf("margin_probability")
    .build()
}

fn margin_probability_documentation() -> Documentation {
    Documentation::builder(
        MARGINS,
        format!(
            "A margin mapped to a probability by clipping: `(clip(margin, m1, m2) − m1)/(m2 − \
             m1)`, 0 at or below `m1`, 1 at or above `m2`. Null for a NaN or ±inf margin (such \
             a pair is not eligible for selection); an error unless `m2 > m1`. \
             {NULL_IN_NULL_OUT}"
        ),
        "margin_probability(margin, m1, m2)",
    )
    .with_argument("margin", "Numeric margin of a pair.")
    .with_argument("m1", "Numeric lower clip M1.")
    .with_argument(
        "m2",
        "Numeric upper clip M2, above `m1` (see `margin_upper_bound`).",
    )
    .with_sql_example(
        r#"```sql
> SELECT margin_probability(2.5, -2, 7) AS p;
+-----+
| p   |
+-----+
| 0.5 |
+-----+
```"#,
    )
    .with_related_udf("fuse_preference")
    .build()
}

fn fuse_preference_documentation() -> Documentation {
    Documentation::builder(
        MARGINS,
        format!(
            "Fuses probabilities from several margin sources into one logit, \
             `Σ logit(clip(p, ε, 1 − ε))` with ε the f64 machine epsilon. It returns the logit, \
             not the probability: ranking by it keeps the order that the probability loses \
             when it rounds to 1.0, and certainties that disagree (0 and 1) cancel to exactly \
             0. {NULL_IN_NULL_OUT}"
        ),
        "fuse_preference(p1 [, p2, ...])",
    )
    .with_argument("p1", "Numeric probability from the first source.")
    .with_argument("p2", "Numeric probability from each further source.")
    .with_sql_example(
        r#"```sql
> SELECT fuse_preference(0.75, 0.5) AS fused, fuse_preference(0.0, 1.0) AS cancelled;
+--------------------+-----------+
| fused              | cancelled |
+--------------------+-----------+
| 1.0986122886681096 | 0.0       |
+--------------------+-----------+
```"#,
    )
    .with_related_udf("margin_probability")
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opposite_certainties_cancel_exactly() {
        assert_eq!(clipped_logit(0.0) + clipped_logit(1.0), 0.0);
        assert_eq!(clipped_logit(0.5), 0.0);
    }

    #[test]
    fn probability_clips() {
        assert_eq!(margin_probability(-5.0, -2.0, 2.0), Some(0.0));
        assert_eq!(margin_probability(5.0, -2.0, 2.0), Some(1.0));
        assert_eq!(margin_probability(0.0, -2.0, 2.0), Some(0.5));
        assert_eq!(margin_probability(f64::NAN, -2.0, 2.0), None);
        assert_eq!(margin_probability(f64::INFINITY, -2.0, 2.0), None);
    }
}
