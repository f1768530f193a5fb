//! `reward_zscore(reward) OVER (PARTITION BY prompt_id)`: each reward's distance from
//! its partition's mean in standard deviations, `(r − μ)/σ`, with μ and σ exactly as
//! `select_pair` computes them (valid rewards only, summed in row order of the partition).
//!
//! ```text
//! SELECT prompt_id, response_index,
//!        reward_zscore(reward) OVER (PARTITION BY prompt_id ORDER BY response_index) AS z
//! FROM responses;
//! ```
//!
//! Null when the reward is invalid (null, NaN, ±inf) or the partition has σ = 0 or fewer than
//! two valid rewards.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    Documentation, PartitionEvaluator, Signature, Volatility, WindowUDFImpl,
};

use crate::arguments;
use crate::documentation::REWARD_STATISTICS;
use crate::selection::reward_stats;

/// The `reward_zscore` window function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RewardZscore {
    signature: Signature,
}

impl Default for RewardZscore {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for RewardZscore {
    fn name(&self) -> &str {
        "reward_zscore"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [r] => Ok(vec![arguments::coerce_reward("reward_zscore", r)?]),
            _ => plan_err!("reward_zscore takes 1 argument, got {}", arg_types.len()),
        }
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(ZscoreEvaluator))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Float64,
            true,
        )))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                REWARD_STATISTICS,
                "Each reward's distance from its partition's mean in standard deviations, \
                 `(r − μ)/σ`, with μ and σ (population) over the partition's finite rewards \
                 exactly as `select_pair` computes them. Null for a null, NaN or ±inf reward, \
                 and for every row when the partition has σ = 0 or fewer than two finite \
                 rewards.",
                "reward_zscore(reward) OVER (PARTITION BY prompt_id)",
            )
            .with_argument("reward", "Numeric reward of the row's response.")
            .with_sql_example(
                r#"```sql
> SELECT prompt_id, reward,
         reward_zscore(reward) OVER (PARTITION BY prompt_id ORDER BY reward) AS z
  FROM (VALUES ('a', 1.0), ('a', 2.0), ('a', 3.0), ('b', 4.0)) AS responses(prompt_id, reward)
  ORDER BY prompt_id, reward;
+-----------+--------+--------------------+
| prompt_id | reward | z                  |
+-----------+--------+--------------------+
| a         | 1.0    | -1.224744871391589 |
| a         | 2.0    | 0.0                |
| a         | 3.0    | 1.224744871391589  |
| b         | 4.0    |                    |
+-----------+--------+--------------------+
```"#,
            )
            .build()
        });
        Some(&DOCUMENTATION)
    }
}

/// Evaluates a whole partition at once: μ and σ need every row before the first z-score.
#[derive(Debug)]
struct ZscoreEvaluator;

impl PartitionEvaluator for ZscoreEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let rewards = values[0].as_primitive::<Float64Type>();
        let entries: Vec<(i64, f64)> = (0..num_rows)
            .map(|i| {
                (
                    i as i64,
                    if rewards.is_valid(i) {
                        rewards.value(i)
                    } else {
                        f64::NAN
                    },
                )
            })
            .collect();
        let stats = reward_stats(&entries, 0);
        let usable = stats.n_valid >= 2 && stats.std.is_finite() && stats.std > 0.0;
        let z: Float64Array = entries
            .iter()
            .map(|&(_, r)| (usable && r.is_finite()).then(|| (r - stats.mean) / stats.std))
            .collect();
        Ok(Arc::new(z))
    }
}
