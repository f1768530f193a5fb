//! `goal_prompt(score)`: the goal-conditioning system prompt of reward-augmented DPO (Zhang et
//! al., `docs/ALGORITHMS.md` §6.1), with the released template exactly; the score prints as an integer when
//! integral (`7`), else as is (`7.5`).
//!
//! ```text
//! SELECT goal_prompt(score_chosen) AS system_prompt FROM pairs;
//! ```

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::documentation::PROMPTS;

/// The template; `{score}` is replaced by the formatted score.
pub const GOAL_PROMPT_TEMPLATE: &str = "You are an assistant that generates responses for the instruction while implicitly achieving the following target scores (on a scale of 1-10, where 1 is lowest and 10 is highest):\nOverall score: {score}.";

/// The goal prompt for one score (`None` for a non-finite score).
pub fn goal_prompt(score: f64) -> Option<String> {
    // `{}` prints the shortest round-trip form: 7.0 → "7", 7.5 → "7.5".
    score
        .is_finite()
        .then(|| GOAL_PROMPT_TEMPLATE.replace("{score}", &format!("{score}")))
}

/// The `goal_prompt` scalar function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct GoalPrompt {
    signature: Signature,
}

impl Default for GoalPrompt {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for GoalPrompt {
    fn name(&self) -> &str {
        "goal_prompt"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t] if t.is_numeric() || t.is_null() => Ok(vec![DataType::Float64]),
            _ => plan_err!("goal_prompt takes one numeric score, got {arg_types:?}"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let ColumnarValue::Scalar(s) = &args.args[0] {
            let score = match s {
                ScalarValue::Float64(v) => *v,
                _ => None,
            };
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(
                score.and_then(goal_prompt),
            )));
        }
        let scores = args.args[0].to_array(args.number_rows)?;
        let scores = scores.as_primitive::<Float64Type>();
        let out: StringArray = (0..scores.len())
            .map(|i| {
                scores
                    .is_valid(i)
                    .then(|| goal_prompt(scores.value(i)))
                    .flatten()
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                PROMPTS,
                "The goal-conditioning system prompt of reward-augmented DPO, the released \
                 template with the score filled in: as an integer when it is integral (`7`), \
                 else in its shortest exact form (`7.5`). Null for a null, NaN or ±inf score.",
                "goal_prompt(score)",
            )
            .with_argument(
                "score",
                "Numeric target score, on the template's 1-10 scale.",
            )
            .with_sql_example(
                r#"```sql
> SELECT split_part(goal_prompt(7.5), chr(10), 2) AS last_line,
         goal_prompt(7) LIKE '%Overall score: 7.' AS integral;
+---------------------+----------+
| last_line           | integral |
+---------------------+----------+
| Overall score: 7.5. | true     |
+---------------------+----------+
```"#,
            )
            .build()
        });
        Some(&DOCUMENTATION)
    }
}
