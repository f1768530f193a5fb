//! `reward_stats(reward [, ddof])`: count, valid count, mean and standard deviation of a
//! group's rewards, as one struct.
//!
//! ```text
//! SELECT prompt_id, reward_stats(reward) AS s FROM responses GROUP BY prompt_id;
//! -- {n: 16, n_valid: 15, mean: 0.42, std: 1.03}
//! ```
//!
//! Null, NaN and ±inf rewards count in `n` but not in `n_valid`, `mean` or `std`. The
//! state merges with Chan's parallel update, so the last bits of `mean`/`std` can differ from
//! `select_pair`'s (which sums in response-index order); `std` is 0 when every valid reward is
//! equal and null when undefined.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, UInt64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, Signature, Volatility,
};

use crate::arguments::{self, DDOF_ARGUMENT_DOC};
use crate::documentation::REWARD_STATISTICS;

/// The `reward_stats` aggregate.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RewardStatsUdaf {
    signature: Signature,
}

impl Default for RewardStatsUdaf {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn stats_fields() -> Fields {
    Fields::from(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("n_valid", DataType::Int64, false),
        Field::new("mean", DataType::Float64, true),
        Field::new("std", DataType::Float64, true),
    ])
}

impl AggregateUDFImpl for RewardStatsUdaf {
    fn name(&self) -> &str {
        "reward_stats"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [r] => Ok(vec![arguments::coerce_reward("reward_stats", r)?]),
            [r, d] => Ok(vec![
                arguments::coerce_reward("reward_stats", r)?,
                arguments::coerce_integer("reward_stats", "ddof", d)?,
            ]),
            _ => plan_err!(
                "reward_stats takes 1 or 2 arguments, got {}",
                arg_types.len()
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(stats_fields()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "n"),
                DataType::UInt64,
                false,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "n_valid"),
                DataType::UInt64,
                false,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "mean"),
                DataType::Float64,
                false,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "m2"),
                DataType::Float64,
                false,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "min"),
                DataType::Float64,
                false,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "max"),
                DataType::Float64,
                false,
            )),
        ])
    }

    fn accumulator(&self, acc: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let ddof = if acc.exprs.len() > 1 {
            arguments::parse_ddof(
                "reward_stats",
                &arguments::aggregate_constant("reward_stats", "ddof", acc.exprs[1].as_ref())?,
            )?
        } else {
            0
        };
        Ok(Box::new(RewardStatsAccumulator {
            ddof,
            ..Default::default()
        }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                REWARD_STATISTICS,
                "The statistics of a group's rewards as a struct `{n, n_valid, mean, std}`: `n` \
                 counts every row, `n_valid` the finite rewards (null, NaN and ±inf are left \
                 out), `mean` and `std` are over the finite rewards. `std` is 0 when they are \
                 all equal, null when there are no more of them than `ddof`; `mean` is null \
                 when none is finite.",
                "reward_stats(reward [, ddof])",
            )
            .with_argument("reward", "Numeric reward of one response.")
            .with_argument("ddof", DDOF_ARGUMENT_DOC)
            .with_sql_example(
                r#"```sql
> SELECT reward_stats(reward) AS s
  FROM (VALUES (1.0), (2.0), (3.0), (NULL), ('NaN'::double)) AS responses(reward);
+-------------------------------------------------------+
| s                                                     |
+-------------------------------------------------------+
| {n: 5, n_valid: 3, mean: 2.0, std: 0.816496580927726} |
+-------------------------------------------------------+
```"#,
            )
            .with_related_udf("select_pair")
            .build()
        });
        Some(&DOCUMENTATION)
    }
}

/// Welford/Chan running moments plus min/max (to detect constant groups exactly).
#[derive(Debug)]
struct RewardStatsAccumulator {
    ddof: u32,
    n: u64,
    n_valid: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Default for RewardStatsAccumulator {
    fn default() -> Self {
        Self {
            ddof: 0,
            n: 0,
            n_valid: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl RewardStatsAccumulator {
    fn merge(&mut self, n: u64, n_valid: u64, mean: f64, m2: f64, min: f64, max: f64) {
        self.n += n;
        if n_valid == 0 {
            return;
        }
        let total = self.n_valid + n_valid;
        let delta = mean - self.mean;
        self.mean += delta * n_valid as f64 / total as f64;
        self.m2 += m2 + delta * delta * self.n_valid as f64 * n_valid as f64 / total as f64;
        self.n_valid = total;
        self.min = self.min.min(min);
        self.max = self.max.max(max);
    }
}

impl Accumulator for RewardStatsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rewards = values[0].as_primitive::<Float64Type>();
        for i in 0..rewards.len() {
            let r = if rewards.is_valid(i) {
                rewards.value(i)
            } else {
                f64::NAN
            };
            if r.is_finite() {
                self.merge(1, 1, r, 0.0, r, r);
            } else {
                self.n += 1;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mean = (self.n_valid > 0).then_some(self.mean);
        let std = if self.n_valid == 0 || self.n_valid <= u64::from(self.ddof) {
            None
        } else if self.min == self.max {
            Some(0.0)
        } else {
            Some((self.m2 / (self.n_valid - u64::from(self.ddof)) as f64).sqrt())
        };
        let arrays: Vec<ArrayRef> = vec![
            ScalarValue::Int64(Some(self.n as i64)).to_array()?,
            ScalarValue::Int64(Some(self.n_valid as i64)).to_array()?,
            ScalarValue::Float64(mean).to_array()?,
            ScalarValue::Float64(std).to_array()?,
        ];
        let array = datafusion::arrow::array::StructArray::new(stats_fields(), arrays, None);
        ScalarValue::try_from_array(&array, 0)
    }

    fn size(&self) -> usize {
        size_of::<Self>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::UInt64(Some(self.n)),
            ScalarValue::UInt64(Some(self.n_valid)),
            ScalarValue::Float64(Some(self.mean)),
            ScalarValue::Float64(Some(self.m2)),
            ScalarValue::Float64(Some(self.min)),
            ScalarValue::Float64(Some(self.max)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let n = states[0].as_primitive::<UInt64Type>();
        let n_valid = states[1].as_primitive::<UInt64Type>();
        let [mean, m2, min, max] = [2, 3, 4, 5].map(|i| states[i].as_primitive::<Float64Type>());
        for i in 0..n.len() {
            self.merge(
                n.value(i),
                n_valid.value(i),
                mean.value(i),
                m2.value(i),
                min.value(i),
                max.value(i),
            );
        }
        Ok(())
    }
}
