//! `select_pair_list` and `select_pair_scalable_list`: the pair selection for the wide layout
//! (one row per prompt, the scores as a list), without unnesting.
//!
//! ```text
//! SELECT prompt, select_pair_list(all_rm_scores, '+inf', -2) AS p FROM arena;
//! SELECT select_pair_scalable_list(all_rm_scores, prompt_id, 0) AS p FROM prompts;
//! ```
//!
//! The response index is the position in the list (0-based); null entries count as responses
//! with no valid reward, exactly as a null reward row does in the long layout.

use std::sync::LazyLock;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::arguments::{
    self, DDOF_ARGUMENT_DOC, POSITION_ARGUMENT_DOC, PROMPT_ID_ARGUMENT_DOC, RUN_SEED_ARGUMENT_DOC,
};
use crate::documentation::PAIR_SELECTION;
use crate::selection::{PairRule, scalable_seed, select};
use crate::selection_struct::{SELECTION_STRUCT_DOC, SelectionStructBuilder, selection_type};

/// The list forms of the pair selection.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SelectPairList {
    scalable: bool,
    signature: Signature,
}

impl SelectPairList {
    /// `select_pair_list(scores, k_chosen, k_rejected [, ddof])`.
    pub fn positions() -> Self {
        Self {
            scalable: false,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// `select_pair_scalable_list(scores, prompt_id [, run_seed [, ddof]])`.
    pub fn scalable() -> Self {
        Self {
            scalable: true,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn coerce_scores(func: &str, t: &DataType) -> Result<DataType> {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
            if f.data_type().is_numeric() || f.data_type().is_null() =>
        {
            Ok(DataType::List(std::sync::Arc::new(Field::new_list_field(
                DataType::Float64,
                true,
            ))))
        }
        other => plan_err!("{func}: scores must be a list of numbers, got {other}"),
    }
}

impl ScalarUDFImpl for SelectPairList {
    fn name(&self) -> &str {
        if self.scalable {
            "select_pair_scalable_list"
        } else {
            "select_pair_list"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        let (min, max) = if self.scalable { (2, 4) } else { (3, 4) };
        if arg_types.len() < min || arg_types.len() > max {
            return plan_err!(
                "{name} takes {min} to {max} arguments, got {}",
                arg_types.len()
            );
        }
        arg_types
            .iter()
            .enumerate()
            .map(|(i, t)| match (self.scalable, i) {
                (_, 0) => coerce_scores(name, t),
                (false, 1 | 2) => arguments::coerce_position(name, t),
                (false, _) => arguments::coerce_integer(name, "ddof", t),
                (true, 1) => arguments::coerce_string(name, "prompt_id", t),
                (true, 2) => arguments::coerce_integer(name, "run_seed", t),
                (true, _) => arguments::coerce_integer(name, "ddof", t),
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(selection_type(false))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name();
        let constant = |i: usize, what: &str| arguments::scalar_constant(name, what, &args.args[i]);
        // ddof is the fourth argument of both forms.
        let ddof = if args.args.len() > 3 {
            arguments::parse_ddof(name, &constant(3, "ddof")?)?
        } else {
            0
        };
        let rows = args.number_rows;
        let scores = args.args[0].to_array(rows)?;
        let scores = scores.as_list::<i32>();
        let mut out = SelectionStructBuilder::with_capacity(rows);
        let mut entries: Vec<(i64, f64)> = Vec::new();
        if self.scalable {
            let run_seed = if args.args.len() > 2 {
                arguments::parse_non_negative(name, "run_seed", &constant(2, "run_seed")?)?
            } else {
                0
            };
            let ids = args.args[1].to_array(rows)?;
            for row in 0..rows {
                load_scores_row(scores, row, &mut entries);
                let Some(id) = arguments::string_at(&ids, row) else {
                    return exec_err!("{name}: prompt_id must not be null (row {row})");
                };
                out.append(&select(
                    &entries,
                    PairRule::Scalable {
                        seed: scalable_seed(run_seed, id),
                    },
                    ddof,
                ));
            }
        } else {
            let chosen = arguments::parse_position(name, "k_chosen", &constant(1, "k_chosen")?)?;
            let rejected =
                arguments::parse_position(name, "k_rejected", &constant(2, "k_rejected")?)?;
            let rule = PairRule::Positions { chosen, rejected };
            for row in 0..rows {
                load_scores_row(scores, row, &mut entries);
                out.append(&select(&entries, rule, ddof));
            }
        }
        let array = out.finish();
        Ok(
            if args
                .args
                .iter()
                .all(|a| matches!(a, ColumnarValue::Scalar(_)))
            {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
            } else {
                ColumnarValue::Array(array)
            },
        )
    }

    fn documentation(&self) -> Option<&Documentation> {
        static POSITIONS: LazyLock<Documentation> = LazyLock::new(positions_documentation);
        static SCALABLE: LazyLock<Documentation> = LazyLock::new(scalable_documentation);
        Some(if self.scalable { &SCALABLE } else { &POSITIONS })
    }
}

const SCORES_DOC: &str = "List of numeric rewards, one per response: the response index is \
    the position in the list (0-based), a null entry is a response without a valid reward, and \
    a null list a prompt without responses.";

const WIDE_LAYOUT: &str = "for the wide layout (one row per prompt, its rewards as a list), \
    without unnesting.";

fn positions_documentation() -> Documentation {
    Documentation::builder(
        PAIR_SELECTION,
        format!(
            "The pair selection of `select_pair` {WIDE_LAYOUT} The chosen response is the one \
             whose reward is nearest `μ + k_chosen·σ`, the rejected one the response nearest \
             `μ + k_rejected·σ` among the others, ties going to the lowest index. \
             {SELECTION_STRUCT_DOC}"
        ),
        "select_pair_list(scores, k_chosen, k_rejected [, ddof])",
    )
    .with_argument("scores", SCORES_DOC)
    .with_argument("k_chosen", POSITION_ARGUMENT_DOC)
    .with_argument("k_rejected", POSITION_ARGUMENT_DOC)
    .with_argument("ddof", DDOF_ARGUMENT_DOC)
    .with_sql_example(
        r#"```sql
> SELECT p['chosen_index'] AS chosen, p['rejected_index'] AS rejected,
         p['skip_reason'] AS skip_reason
  FROM (SELECT select_pair_list(scores, '+inf', -2) AS p
        FROM (VALUES (1, [1.0, 2.0, 3.0, 4.0, 5.0]), (2, [0.5, 0.5])) AS prompts(id, scores)
        ORDER BY id);
+--------+----------+-------------+
| chosen | rejected | skip_reason |
+--------+----------+-------------+
| 4      | 0        |             |
|        |          | zero-std    |
+--------+----------+-------------+
```"#,
    )
    .with_related_udf("select_pair_scalable_list")
    .build()
}

fn scalable_documentation() -> Documentation {
    Documentation::builder(
        PAIR_SELECTION,
        format!(
            "The pair selection of `select_pair_scalable` {WIDE_LAYOUT} The chosen response has \
             the largest reward, the rejected one the smallest, other than the chosen, in a \
             random subset of at most 5 valid responses seeded per prompt. \
             {SELECTION_STRUCT_DOC}"
        ),
        "select_pair_scalable_list(scores, prompt_id [, run_seed [, ddof]])",
    )
    .with_argument("scores", SCORES_DOC)
    .with_argument("prompt_id", PROMPT_ID_ARGUMENT_DOC)
    .with_argument("run_seed", RUN_SEED_ARGUMENT_DOC)
    .with_argument("ddof", DDOF_ARGUMENT_DOC)
    .with_sql_example(
        r#"```sql
> SELECT p['chosen_index'] AS chosen, p['rejected_index'] AS rejected
  FROM (SELECT select_pair_scalable_list([1.0, 2.0, 3.0, 4.0, 5.0, 0.0], 'a', 7) AS p);
+--------+----------+
| chosen | rejected |
+--------+----------+
| 4      | 5        |
+--------+----------+
```"#,
    )
    .with_related_udf("select_pair_list")
    .build()
}

/// Loads row `row` of a list of scores as `(index, reward)` entries; a null list is empty.
fn load_scores_row(
    scores: &datafusion::arrow::array::ListArray,
    row: usize,
    entries: &mut Vec<(i64, f64)>,
) {
    entries.clear();
    if scores.is_null(row) {
        return;
    }
    let start = scores.value_offsets()[row] as usize;
    let end = scores.value_offsets()[row + 1] as usize;
    let values = scores.values().as_primitive::<Float64Type>();
    for (position, k) in (start..end).enumerate() {
        let reward = if values.is_valid(k) {
            values.value(k)
        } else {
            f64::NAN
        };
        entries.push((position as i64, reward));
    }
}
