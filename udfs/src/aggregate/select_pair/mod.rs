//! `select_pair`, `select_pair_scalable` and their `*_with_text` forms: one preference pair per
//! group (prompt), as an aggregate over the long layout (one row per response).
//!
//! ```text
//! SELECT prompt_id,
//!        select_pair(response_index, reward, '+inf', -2) AS p      -- sweet spot
//! FROM responses GROUP BY prompt_id;
//!
//! SELECT prompt_id, select_pair_scalable(response_index, reward, prompt_id, 7) AS p
//! FROM responses GROUP BY prompt_id;
//!
//! -- the same, also returning the chosen and rejected texts (no join back needed)
//! SELECT prompt_id, select_pair_with_text(response_index, reward, response, 'max', -2) AS p
//! FROM responses GROUP BY prompt_id;
//! ```
//!
//! The nearest-to-μ−2σ rule needs the group's statistics before any response can be picked,
//! so each group buffers its `(index, reward)` entries (16 bytes a response, plus the text for
//! the `*_with_text` forms) and the kernel in [`crate::selection`] runs when the group is
//! emitted. The [`GroupsAccumulator`] keeps all groups' entries in flat vectors (no allocation
//! per group) and sorts them into groups with one counting sort at emit time; under an ordered
//! (streaming) aggregation only the groups still open are buffered.

mod form;
mod groups;
mod texts;

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, GroupsAccumulator, Signature, Volatility,
};

use crate::arguments::{
    self, DDOF_ARGUMENT_DOC, POSITION_ARGUMENT_DOC, PROMPT_ID_ARGUMENT_DOC, RUN_SEED_ARGUMENT_DOC,
};
use crate::documentation::PAIR_SELECTION;
use crate::selection_struct::{SELECTION_STRUCT_DOC, selection_type};
use form::Form;
use groups::{SelectPairAccumulator, SelectPairGroups};

/// The `select_pair` family of aggregate functions.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SelectPair {
    form: Form,
    signature: Signature,
}

impl SelectPair {
    fn with_form(scalable: bool, with_text: bool) -> Self {
        Self {
            form: Form {
                scalable,
                with_text,
            },
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// `select_pair(response_index, reward, k_chosen, k_rejected [, ddof])`: chosen nearest
    /// `μ + k_chosen·σ`, rejected nearest `μ + k_rejected·σ` among the others (k = `'+inf'` /
    /// `'-inf'` for max / min; numbers or strings such as `'max'`).
    pub fn positions() -> Self {
        Self::with_form(false, false)
    }

    /// `select_pair_scalable(response_index, reward, prompt_id [, run_seed [, ddof]])`: chosen
    /// = max of all, rejected = min of a seeded random subset of 5 valid responses.
    pub fn scalable() -> Self {
        Self::with_form(true, false)
    }

    /// `select_pair_with_text(response_index, reward, response, k_chosen, k_rejected [, ddof])`:
    /// as `select_pair`, with the `chosen` and `rejected` texts in the result.
    pub fn positions_with_text() -> Self {
        Self::with_form(false, true)
    }

    /// `select_pair_scalable_with_text(response_index, reward, response, prompt_id [, run_seed
    /// [, ddof]])`: as `select_pair_scalable`, with the texts.
    pub fn scalable_with_text() -> Self {
        Self::with_form(true, true)
    }
}

impl AggregateUDFImpl for SelectPair {
    fn name(&self) -> &str {
        self.form.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.form.name();
        let rest = self.form.first_rule_argument();
        let (min, max) = if self.form.scalable {
            (rest + 1, rest + 3)
        } else {
            (rest + 2, rest + 3)
        };
        if arg_types.len() < min || arg_types.len() > max {
            return plan_err!(
                "{name} takes {min} to {max} arguments, got {}",
                arg_types.len()
            );
        }
        arg_types
            .iter()
            .enumerate()
            .map(|(i, t)| match i {
                0 => arguments::coerce_index(name, t),
                1 => arguments::coerce_reward(name, t),
                2 if self.form.with_text => arguments::coerce_string(name, "response", t),
                i => match (self.form.scalable, i - rest) {
                    (true, 0) => arguments::coerce_string(name, "prompt_id", t),
                    (true, 1) => arguments::coerce_integer(name, "run_seed", t),
                    (false, 0 | 1) => arguments::coerce_position(name, t),
                    _ => arguments::coerce_integer(name, "ddof", t),
                },
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(selection_type(self.form.with_text))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, true)));
        let mut fields = vec![
            Field::new(
                format_state_name(args.name, "indices"),
                list(DataType::Int64),
                true,
            ),
            Field::new(
                format_state_name(args.name, "rewards"),
                list(DataType::Float64),
                true,
            ),
        ];
        if self.form.with_text {
            fields.push(Field::new(
                format_state_name(args.name, "responses"),
                list(DataType::Utf8),
                true,
            ));
        }
        if self.form.scalable {
            fields.push(Field::new(
                format_state_name(args.name, "prompt_id"),
                DataType::Utf8,
                true,
            ));
        }
        Ok(fields.into_iter().map(Arc::new).collect())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let (rule, ddof) = self.form.parse_rule(&args)?;
        Ok(Box::new(SelectPairAccumulator {
            groups: SelectPairGroups::new(self.form, rule, ddof),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let (rule, ddof) = self.form.parse_rule(&args)?;
        Ok(Box::new(SelectPairGroups::new(self.form, rule, ddof)))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(documentation_of(self.form))
    }
}

const RESPONSE_INDEX_DOC: &str = "Integer index of the response within its prompt: not null, \
    not negative, and not repeated within a group.";
const REWARD_DOC: &str = "Numeric reward of the response; null, NaN and ±inf count as \
    responses without a valid reward.";
const RESPONSE_DOC: &str = "String text of the response, returned for the chosen and the \
    rejected response.";
const TEXTS_DOC: &str = "The struct also holds the texts of the two responses as `chosen` \
    and `rejected` (null when there is no pair), so no join back to the responses is needed.";

/// The documentation of each form.
fn documentation_of(form: Form) -> &'static Documentation {
    static POSITIONS: LazyLock<Documentation> = LazyLock::new(positions_documentation);
    static SCALABLE: LazyLock<Documentation> = LazyLock::new(scalable_documentation);
    static POSITIONS_WITH_TEXT: LazyLock<Documentation> =
        LazyLock::new(positions_with_text_documentation);
    static SCALABLE_WITH_TEXT: LazyLock<Documentation> =
        LazyLock::new(scalable_with_text_documentation);
    match (form.scalable, form.with_text) {
        (false, false) => &POSITIONS,
        (true, false) => &SCALABLE,
        (false, true) => &POSITIONS_WITH_TEXT,
        (true, true) => &SCALABLE_WITH_TEXT,
    }
}

const POSITIONS_DESCRIPTION: &str = "One preference pair per group (prompt) from the long \
    layout (one row per response): the chosen response is the one whose reward is nearest \
    `μ + k_chosen·σ`, the rejected one the response nearest `μ + k_rejected·σ` among the \
    others, ties going to the lowest response index; μ and σ are the mean and standard \
    deviation of the group's valid (finite) rewards. The sweet spot is `('+inf', -2)`, \
    max-min `('+inf', '-inf')`.";

const SCALABLE_DESCRIPTION: &str = "One preference pair per group (prompt) from the long \
    layout, by the scalable rule: the chosen response has the group's largest reward, the \
    rejected one the smallest, other than the chosen, in a random subset of at most 5 valid \
    responses seeded per prompt (ties going to the lowest response index).";

fn positions_documentation() -> Documentation {
    Documentation::builder(
        PAIR_SELECTION,
        format!("{POSITIONS_DESCRIPTION} {SELECTION_STRUCT_DOC}"),
        "select_pair(response_index, reward, k_chosen, k_rejected [, ddof])",
    )
    .with_argument("response_index", RESPONSE_INDEX_DOC)
    .with_argument("reward", REWARD_DOC)
    .with_argument("k_chosen", POSITION_ARGUMENT_DOC)
    .with_argument("k_rejected", POSITION_ARGUMENT_DOC)
    .with_argument("ddof", DDOF_ARGUMENT_DOC)
    .with_sql_example(
        r#"```sql
> SELECT prompt_id, p['chosen_index'] AS chosen, p['rejected_index'] AS rejected,
         p['skip_reason'] AS skip_reason
  FROM (SELECT prompt_id, select_pair(response_index, reward, '+inf', -2) AS p
        FROM (VALUES ('a', 0, 1.0), ('a', 1, 2.0), ('a', 2, 3.0), ('a', 3, 4.0),
                     ('a', 4, 5.0), ('b', 0, 0.5), ('b', 1, 0.5))
             AS responses(prompt_id, response_index, reward)
        GROUP BY prompt_id)
  ORDER BY prompt_id;
+-----------+--------+----------+-------------+
| prompt_id | chosen | rejected | skip_reason |
+-----------+--------+----------+-------------+
| a         | 4      | 0        |             |
| b         |        |          | zero-std    |
+-----------+--------+----------+-------------+
```"#,
    )
    .with_related_udf("select_pair_with_text")
    .with_related_udf("select_pair_scalable")
    .build()
}

fn scalable_documentation() -> Documentation {
    Documentation::builder(
        PAIR_SELECTION,
        format!("{SCALABLE_DESCRIPTION} {SELECTION_STRUCT_DOC}"),
        "select_pair_scalable(response_index, reward, prompt_id [, run_seed [, ddof]])",
    )
    .with_argument("response_index", RESPONSE_INDEX_DOC)
    .with_argument("reward", REWARD_DOC)
    .with_argument("prompt_id", PROMPT_ID_ARGUMENT_DOC)
    .with_argument("run_seed", RUN_SEED_ARGUMENT_DOC)
    .with_argument("ddof", DDOF_ARGUMENT_DOC)
    .with_sql_example(
        r#"```sql
> SELECT p['chosen_index'] AS chosen, p['rejected_index'] AS rejected
  FROM (SELECT select_pair_scalable(response_index, reward, prompt_id, 7) AS p
        FROM (VALUES ('a', 0, 1.0), ('a', 1, 2.0), ('a', 2, 3.0), ('a', 3, 4.0),
                     ('a', 4, 5.0), ('a', 5, 0.0))
             AS responses(prompt_id, response_index, reward)
        GROUP BY prompt_id);
+--------+----------+
| chosen | rejected |
+--------+----------+
| 4      | 5        |
+--------+----------+
```"#,
    )
    .with_related_udf("select_pair_scalable_with_text")
    .with_related_udf("select_pair")
    .build()
}

fn positions_with_text_documentation() -> Documentation {
    Documentation::builder(
        PAIR_SELECTION,
        format!("As `select_pair`. {POSITIONS_DESCRIPTION} {SELECTION_STRUCT_DOC} {TEXTS_DOC}"),
        "select_pair_with_text(response_index, reward, response, k_chosen, k_rejected [, ddof])",
    )
    .with_argument("response_index", RESPONSE_INDEX_DOC)
    .with_argument("reward", REWARD_DOC)
    .with_argument("response", RESPONSE_DOC)
    .with_argument("k_chosen", POSITION_ARGUMENT_DOC)
    .with_argument("k_rejected", POSITION_ARGUMENT_DOC)
    .with_argument("ddof", DDOF_ARGUMENT_DOC)
    .with_sql_example(
        r#"```sql
> SELECT p['chosen'] AS chosen, p['rejected'] AS rejected
  FROM (SELECT select_pair_with_text(response_index, reward, response, 'max', 'min') AS p
        FROM (VALUES ('a', 0, 1.0, 'one'), ('a', 1, 2.0, 'two'), ('a', 2, 3.0, 'three'))
             AS responses(prompt_id, response_index, reward, response)
        GROUP BY prompt_id);
+--------+----------+
| chosen | rejected |
+--------+----------+
| three  | one      |
+--------+----------+
```"#,
    )
    .with_related_udf("select_pair")
    .build()
}

fn scalable_with_text_documentation() -> Documentation {
    Documentation::builder(
        PAIR_SELECTION,
        format!(
            "As `select_pair_scalable`. {SCALABLE_DESCRIPTION} {SELECTION_STRUCT_DOC} {TEXTS_DOC}"
        ),
        "select_pair_scalable_with_text(response_index, reward, response, prompt_id \
         [, run_seed [, ddof]])",
    )
    .with_argument("response_index", RESPONSE_INDEX_DOC)
    .with_argument("reward", REWARD_DOC)
    .with_argument("response", RESPONSE_DOC)
    .with_argument("prompt_id", PROMPT_ID_ARGUMENT_DOC)
    .with_argument("run_seed", RUN_SEED_ARGUMENT_DOC)
    .with_argument("ddof", DDOF_ARGUMENT_DOC)
    .with_sql_example(
        r#"```sql
> SELECT p['chosen'] AS chosen, p['rejected'] AS rejected
  FROM (SELECT select_pair_scalable_with_text(response_index, reward, response, prompt_id) AS p
        FROM (VALUES ('a', 0, 1.0, 'one'), ('a', 1, 2.0, 'two'), ('a', 2, 3.0, 'three'))
             AS responses(prompt_id, response_index, reward, response)
        GROUP BY prompt_id);
+--------+----------+
| chosen | rejected |
+--------+----------+
| three  | one      |
+--------+----------+
```"#,
    )
    .with_related_udf("select_pair_scalable")
    .build()
}
