//! `margin_upper_bound(margin [, divisor [, m1]])`: M2, the upper clip of one margin source in
//! BeeS (`docs/ALGORITHMS.md` §3.3), found by the tail-sparsity search over the finite margins:
//!
//! `M2 ← max(trunc(max / d), M1 + 1)`; while `M2 + 1 ≤ max` and `tail(M2 + 1) ≥ 30` and
//! `tail(M2 + 1) ≥ max − (M2 + 1)`: `M2 ← M2 + 1`; then `M2 ← min(M2, max)`, and `M1 + 1` if
//! that is ≤ M1. `tail(t)` counts margins ≥ t. Defaults: d = 1.5 (external; use 2 for the
//! implicit source), M1 = −2. Null when no margin is finite.
//!
//! ```text
//! SELECT margin_upper_bound(score_chosen - score_rejected) AS m2_external,
//!        margin_upper_bound(margin_implicit, 2) AS m2_implicit
//! FROM pairs;
//! ```

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, Signature, Volatility,
};

use crate::arguments;
use crate::documentation::MARGINS;

/// The lower clip M1 of every source (`docs/ALGORITHMS.md` §3).
pub const DEFAULT_M1: f64 = -2.0;
/// The divisor of the external source.
pub const DEFAULT_DIVISOR: f64 = 1.5;
/// The minimum tail count of the search.
const MIN_TAIL: usize = 30;

/// The tail-sparsity search over `margins` (non-finite values are ignored).
pub fn upper_bound(margins: &[f64], divisor: f64, m1: f64) -> Option<f64> {
    let max = margins
        .iter()
        .copied()
        .filter(|m| m.is_finite())
        .reduce(f64::max)?;
    let start = (max / divisor).trunc().max(m1 + 1.0);
    // The search only counts margins ≥ start + 1: sort just those (usually a thin tail).
    let mut tail_values: Vec<f64> = margins
        .iter()
        .copied()
        .filter(|m| m.is_finite() && *m >= start + 1.0)
        .collect();
    tail_values.sort_unstable_by(f64::total_cmp);
    let tail = |t: f64| tail_values.len() - tail_values.partition_point(|&m| m < t);
    let mut m2 = start;
    while m2 + 1.0 <= max && tail(m2 + 1.0) >= MIN_TAIL && tail(m2 + 1.0) as f64 >= max - (m2 + 1.0)
    {
        m2 += 1.0;
    }
    m2 = m2.min(max);
    if m2 <= m1 {
        m2 = m1 + 1.0;
    }
    Some(m2)
}

/// The `margin_upper_bound` aggregate.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MarginUpperBound {
    signature: Signature,
}

impl Default for MarginUpperBound {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// Constant argument `i` as a finite number, or `default` when the call leaves it out.
fn finite_constant_or(args: &AccumulatorArgs, i: usize, what: &str, default: f64) -> Result<f64> {
    if args.exprs.len() <= i {
        return Ok(default);
    }
    match arguments::aggregate_constant("margin_upper_bound", what, args.exprs[i].as_ref())? {
        ScalarValue::Float64(Some(v)) if v.is_finite() => Ok(v),
        other => exec_err!("margin_upper_bound: {what} must be a finite number, got {other}"),
    }
}

impl AggregateUDFImpl for MarginUpperBound {
    fn name(&self) -> &str {
        "margin_upper_bound"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.is_empty() || arg_types.len() > 3 {
            return plan_err!(
                "margin_upper_bound takes 1 to 3 arguments, got {}",
                arg_types.len()
            );
        }
        arg_types
            .iter()
            .map(|t| arguments::coerce_reward("margin_upper_bound", t))
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = Arc::new(Field::new_list_field(DataType::Float64, true));
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "margins"),
            DataType::List(item),
            true,
        ))])
    }

    fn accumulator(&self, acc: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let divisor = finite_constant_or(&acc, 1, "divisor", DEFAULT_DIVISOR)?;
        if divisor <= 0.0 {
            return exec_err!("margin_upper_bound: divisor must be positive, got {divisor}");
        }
        let m1 = finite_constant_or(&acc, 2, "m1", DEFAULT_M1)?;
        Ok(Box::new(UpperBoundAccumulator {
            divisor,
            m1,
            margins: Vec::new(),
        }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                MARGINS,
                "M2, the upper clip of one margin source, by the tail-sparsity search over the \
                 group's finite margins: start at `max(trunc(max / divisor), m1 + 1)` and raise \
                 M2 by 1 while `M2 + 1 ≤ max` and at least 30 margins, and at least \
                 `max − (M2 + 1)`, are ≥ `M2 + 1`; the result is at most `max` and above `m1` \
                 (`m1 + 1` otherwise). Null, NaN and ±inf margins are left out; null when no \
                 margin is finite.",
                "margin_upper_bound(margin [, divisor [, m1]])",
            )
            .with_argument("margin", "Numeric margin of one pair.")
            .with_argument(
                "divisor",
                "Optional positive finite constant dividing the largest margin for the start of \
                 the search: 1.5 (the default) for an external source, 2 for the implicit one.",
            )
            .with_argument(
                "m1",
                "Optional finite constant, the source's lower clip M1 (default -2).",
            )
            .with_sql_example(
                r#"```sql
> SELECT margin_upper_bound(margin) AS m2_external, margin_upper_bound(margin, 2) AS m2_implicit
  FROM (SELECT CAST(value AS DOUBLE) AS margin FROM generate_series(0, 99));
+-------------+-------------+
| m2_external | m2_implicit |
+-------------+-------------+
| 70.0        | 70.0        |
+-------------+-------------+
```"#,
            )
            .build()
        });
        Some(&DOCUMENTATION)
    }
}

/// Buffers the finite margins (8 bytes each) until evaluation.
#[derive(Debug)]
struct UpperBoundAccumulator {
    divisor: f64,
    m1: f64,
    margins: Vec<f64>,
}

impl UpperBoundAccumulator {
    fn extend(&mut self, values: &Float64Array) {
        self.margins
            .extend(values.iter().flatten().filter(|m| m.is_finite()));
    }
}

impl Accumulator for UpperBoundAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.extend(values[0].as_primitive::<Float64Type>());
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(upper_bound(
            &self.margins,
            self.divisor,
            self.m1,
        )))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.margins.capacity() * 8
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = ScalarValue::new_list_nullable(
            &self
                .margins
                .iter()
                .map(|&m| ScalarValue::Float64(Some(m)))
                .collect::<Vec<_>>(),
            &DataType::Float64,
        );
        Ok(vec![ScalarValue::List(list)])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for i in 0..lists.len() {
            if lists.is_valid(i) {
                self.extend(lists.value(i).as_primitive::<Float64Type>());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_searches() {
        let ramp: Vec<f64> = (0..100).map(f64::from).collect();
        // d = 1.5: start 66; tails at 67, 68, 69, 70 are 33, 32, 31, 30 (≥ 30 and ≥ 99 − t); 71 has 29.
        assert_eq!(upper_bound(&ramp, 1.5, -2.0), Some(70.0));
        assert_eq!(upper_bound(&ramp, 2.0, -2.0), Some(70.0));
        // Too few margins in the tail: the start value stands.
        assert_eq!(upper_bound(&[0.5, 1.0, 1.2], 1.5, -2.0), Some(0.0));
        // All margins below M1 + 1: M2 = min(−1, −3) = −3 ≤ M1 → M1 + 1.
        assert_eq!(upper_bound(&[-5.0, -3.0], 1.5, -2.0), Some(-1.0));
        assert_eq!(upper_bound(&[f64::NAN, f64::INFINITY], 1.5, -2.0), None);
    }
}
