//! Label cleaning aggregates (CURATRON / RORATRON, `docs/ALGORITHMS.md` §5), one result per prompt:
//!
//! * `clean_scores(response_index, score [, temperature] [, method])`: X_ij = (s_i − s_j)/T
//!   (T = 1), fully observed; null, NaN and ±inf scores are left out. Rank 2 by construction,
//!   so cleaning can only flag whole responses whose score disagrees with the rest. Methods
//!   `'pcp'` (default) and `'borda'`.
//! * `clean_comparisons(i, j, outcome [, method])`: one row per judgment, `outcome` ∈ [0, 1] the
//!   probability (or 0/1 indicator) that response i beats j. Methods (§5.8): `'bt-trim'`
//!   (default), `'bt-mle'`, `'borda'`, `'pcp'`, `'stable-pcp'`.
//!
//! Both return a struct: `response_index`, `clean_score` (the method's score),
//! `clean_rank` (1 = best), `flagged_comparisons` (per response) as lists in response-index
//! order, `flagged_pairs` (list of {i, j}), `iterations`, `residual`, `converged` and `solved`
//! (false when passed through: n ≤ 2, all-equal scores, no convergence, or a degenerate result
//! where the solver explains everything as corruption — then the scores are the uncleaned Borda
//! scores and `converged` says which).
//!
//! ```text
//! SELECT prompt_id, clean_scores(response_index, reward) AS c FROM responses GROUP BY prompt_id;
//! SELECT prompt_id, clean_comparisons(i, j, outcome, 'bt-mle') AS c FROM judgments GROUP BY prompt_id;
//! ```

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder,
    ListBuilder, StructArray, StructBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, Signature, Volatility,
};

use crate::arguments;
use crate::cleaning::{CleanError, CleanMethod, Cleaned, clean_indexed_scores, clean_judgments};
use crate::documentation::LABEL_CLEANING;

/// Which input the aggregate reads: one score per response, or pairwise judgments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CleaningInput {
    Scores,
    Comparisons,
}

/// The label-cleaning aggregates: `clean_scores` or `clean_comparisons`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CleanLabels {
    source: CleaningInput,
    signature: Signature,
}

impl CleanLabels {
    /// `clean_scores(response_index, score [, temperature])`.
    pub fn scores() -> Self {
        Self {
            source: CleaningInput::Scores,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// `clean_comparisons(i, j, outcome)`.
    pub fn comparisons() -> Self {
        Self {
            source: CleaningInput::Comparisons,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// A list of `item` with nullable items.
fn list_type(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

/// The fields of one flagged comparison `{i, j}`.
fn flagged_pair_fields() -> Fields {
    vec![
        Field::new("i", DataType::Int64, false),
        Field::new("j", DataType::Int64, false),
    ]
    .into()
}

/// The fields of the result struct.
pub fn result_fields() -> Fields {
    vec![
        Field::new("response_index", list_type(DataType::Int64), false),
        Field::new("clean_score", list_type(DataType::Float64), false),
        Field::new("clean_rank", list_type(DataType::Int64), false),
        Field::new("flagged_comparisons", list_type(DataType::Int64), false),
        Field::new(
            "flagged_pairs",
            list_type(DataType::Struct(flagged_pair_fields())),
            false,
        ),
        Field::new("iterations", DataType::Int64, false),
        Field::new("residual", DataType::Float64, false),
        Field::new("converged", DataType::Boolean, false),
        Field::new("solved", DataType::Boolean, false),
    ]
    .into()
}

/// Appends one list to list field `k` of `b`, its items written by `fill` into the values
/// builder (of type `T`).
fn append_list<T: ArrayBuilder>(b: &mut StructBuilder, k: usize, fill: impl FnOnce(&mut T)) {
    let list = b
        .field_builder::<ListBuilder<Box<dyn ArrayBuilder>>>(k)
        .expect("a list field");
    fill(
        list.values()
            .as_any_mut()
            .downcast_mut::<T>()
            .expect("the field's item builder"),
    );
    list.append(true);
}

/// One result per (response indices, cleaning) as a struct array.
pub fn result_array(results: &[(Vec<i64>, Cleaned)]) -> StructArray {
    let fields = result_fields();
    let mut b = StructBuilder::from_fields(fields, results.len());
    for (indices, c) in results {
        append_list::<Int64Builder>(&mut b, 0, |v| v.append_slice(indices));
        append_list::<Float64Builder>(&mut b, 1, |v| v.append_slice(&c.scores));
        append_list::<Int64Builder>(&mut b, 2, |v| v.append_slice(&c.ranks));
        append_list::<Int64Builder>(&mut b, 3, |v| v.append_slice(&c.flagged_per_response));
        append_list::<StructBuilder>(&mut b, 4, |s| {
            for &(i, j) in &c.flagged {
                s.field_builder::<Int64Builder>(0)
                    .expect("i")
                    .append_value(indices[i]);
                s.field_builder::<Int64Builder>(1)
                    .expect("j")
                    .append_value(indices[j]);
                s.append(true);
            }
        });
        b.field_builder::<Int64Builder>(5)
            .expect("iterations")
            .append_value(i64::from(c.iterations));
        b.field_builder::<Float64Builder>(6)
            .expect("residual")
            .append_value(c.residual);
        b.field_builder::<BooleanBuilder>(7)
            .expect("converged")
            .append_value(c.converged);
        b.field_builder::<BooleanBuilder>(8)
            .expect("solved")
            .append_value(c.solved);
        b.append(true);
    }
    b.finish()
}

impl AggregateUDFImpl for CleanLabels {
    fn name(&self) -> &str {
        match self.source {
            CleaningInput::Scores => "clean_scores",
            CleaningInput::Comparisons => "clean_comparisons",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        let method = |t: &DataType| arguments::coerce_string(name, "method", t);
        match (self.source, arg_types) {
            (CleaningInput::Scores, [index, score]) => Ok(vec![
                arguments::coerce_index(name, index)?,
                arguments::coerce_reward(name, score)?,
            ]),
            (CleaningInput::Scores, [index, score, third]) => Ok(vec![
                arguments::coerce_index(name, index)?,
                arguments::coerce_reward(name, score)?,
                if arguments::is_string(third) {
                    method(third)?
                } else {
                    arguments::coerce_reward(name, third)?
                },
            ]),
            (CleaningInput::Scores, [index, score, t, m]) => Ok(vec![
                arguments::coerce_index(name, index)?,
                arguments::coerce_reward(name, score)?,
                arguments::coerce_reward(name, t)?,
                method(m)?,
            ]),
            (CleaningInput::Comparisons, [i, j, outcome]) => Ok(vec![
                arguments::coerce_index(name, i)?,
                arguments::coerce_index(name, j)?,
                arguments::coerce_reward(name, outcome)?,
            ]),
            (CleaningInput::Comparisons, [i, j, outcome, m]) => Ok(vec![
                arguments::coerce_index(name, i)?,
                arguments::coerce_index(name, j)?,
                arguments::coerce_reward(name, outcome)?,
                method(m)?,
            ]),
            (CleaningInput::Scores, _) => plan_err!(
                "clean_scores takes (response_index, score [, temperature] [, method]), got {} arguments",
                arg_types.len()
            ),
            (CleaningInput::Comparisons, _) => plan_err!(
                "clean_comparisons takes (i, j, outcome [, method]), got {} arguments",
                arg_types.len()
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(result_fields()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let names: &[(&str, DataType)] = match self.source {
            CleaningInput::Scores => &[("index", DataType::Int64), ("score", DataType::Float64)],
            CleaningInput::Comparisons => &[
                ("i", DataType::Int64),
                ("j", DataType::Int64),
                ("outcome", DataType::Float64),
            ],
        };
        Ok(names
            .iter()
            .map(|(n, t)| {
                Arc::new(Field::new(
                    format_state_name(args.name, n),
                    list_type(t.clone()),
                    true,
                ))
            })
            .collect())
    }

    fn accumulator(&self, acc: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let name = self.name();
        let mut temperature = 1.0;
        let mut method = match self.source {
            CleaningInput::Scores => CleanMethod::default_for_scores(),
            CleaningInput::Comparisons => CleanMethod::default_for_judgments(),
        };
        let fixed = match self.source {
            CleaningInput::Scores => 2,
            CleaningInput::Comparisons => 3,
        };
        for expr in &acc.exprs[fixed..] {
            let value =
                arguments::aggregate_constant(name, "method or temperature", expr.as_ref())?;
            match (value.try_as_str(), &value) {
                (Some(Some(text)), _) => {
                    method = CleanMethod::parse(text).or_else(|e| exec_err!("{name}: {e}"))?;
                }
                (_, ScalarValue::Float64(Some(t))) if *t > 0.0 && t.is_finite() => {
                    temperature = *t;
                }
                (_, other) => {
                    return exec_err!(
                        "{name}: temperature must be a positive constant, got {other}"
                    );
                }
            }
        }
        if self.source == CleaningInput::Scores && !method.reads_scores() {
            return exec_err!("{name}: {}", CleanError::NeedsJudgments(method));
        }
        Ok(Box::new(CleanAccumulator {
            source: self.source,
            method,
            temperature,
            first_indices: Vec::new(),
            second_indices: Vec::new(),
            values: Vec::new(),
        }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static SCORES: LazyLock<Documentation> = LazyLock::new(scores_documentation);
        static COMPARISONS: LazyLock<Documentation> = LazyLock::new(comparisons_documentation);
        Some(match self.source {
            CleaningInput::Scores => &SCORES,
            CleaningInput::Comparisons => &COMPARISONS,
        })
    }
}

const RESULT_DOC: &str = "Returns a struct: `response_index`, `clean_score` (the method's \
    score), `clean_rank` (1 = best) and `flagged_comparisons` (per response) as \
    lists in response-index order, `flagged_pairs` (a list of `{i, j}`), `iterations`, \
    `residual`, `converged` and `solved`. `solved` is false when the input is passed through \
    (2 responses or fewer, all scores equal, no convergence, or a result that explains the \
    whole matrix as corruption): the scores are then the uncleaned Borda scores, nothing is \
    flagged, and `converged` says whether the solver converged.";

fn scores_documentation() -> Documentation {
    Documentation::builder(
        LABEL_CLEANING,
        format!(
            "Cleans one group's (prompt's) scores by robust PCA: the matrix \
             `X_ij = (s_i − s_j)/temperature` is split into a low-rank and a sparse part, and \
             the comparisons the sparse part carries are flagged as corrupted. Null, NaN and \
             ±inf scores are left out. {RESULT_DOC}"
        ),
        "clean_scores(response_index, score [, temperature] [, method])",
    )
    .with_argument(
        "response_index",
        "Integer index of the response within its prompt: not null, not repeated in a group.",
    )
    .with_argument("score", "Numeric score of the response.")
    .with_argument(
        "temperature",
        "Optional positive constant dividing the score differences (default 1).",
    )
    .with_argument(
        "method",
        "Optional constant string: 'pcp' (default; the only method that can flag anything on \
         scores) or 'borda' (the row means of X, nothing flagged).",
    )
    .with_sql_example(
        r#"```sql
> SELECT c['clean_rank'] AS ranks, c['flagged_comparisons'] AS flagged, c['solved'] AS solved
  FROM (SELECT clean_scores(response_index, score) AS c
        FROM (VALUES (0, 0.0), (1, 0.5), (2, 1.0), (3, 1.5), (4, 2.0), (5, 2.5), (6, -4.0),
                     (7, 3.5)) AS responses(response_index, score));
+--------------------------+--------------------------+--------+
| ranks                    | flagged                  | solved |
+--------------------------+--------------------------+--------+
| [7, 6, 5, 4, 3, 2, 8, 1] | [1, 1, 1, 1, 1, 1, 7, 1] | true   |
+--------------------------+--------------------------+--------+
```"#,
    )
    .with_related_udf("clean_comparisons")
    .build()
}

fn comparisons_documentation() -> Documentation {
    Documentation::builder(
        LABEL_CLEANING,
        format!(
            "Cleans one group's (prompt's) pairwise judgments and ranks its responses. A \
             judgment of (j, i) counts as 1 − outcome for (i, j); pairs never judged carry no \
             information. The default, 'bt-trim', fits Bradley–Terry scores, drops the pairs \
             whose judgments contradict the fit far beyond chance (a judge wrong about that pair \
             every time), refits, and flags the dropped pairs. Rows with a null outcome are left \
             out; i = j, a negative index or an outcome outside [0, 1] is an error. {RESULT_DOC}"
        ),
        "clean_comparisons(i, j, outcome [, method])",
    )
    .with_argument(
        "i",
        "Integer index of the first response of the judged pair, not null.",
    )
    .with_argument(
        "j",
        "Integer index of the second response of the judged pair, not null.",
    )
    .with_argument(
        "outcome",
        "Numeric probability in [0, 1] (or 0/1 indicator) that response i beats response j.",
    )
    .with_argument(
        "method",
        "Optional constant string: 'bt-trim' (default: Bradley–Terry with a prior, pairs whose \
         own judgments contradict the fit beyond p < 0.001 dropped, refitted, and flagged), \
         'bt-mle' (Bradley–Terry maximum a posteriori), 'borda' (win rate), 'pcp' (principal \
         component pursuit of the logit matrix) or 'stable-pcp' (PCP with a weighted \
         least-squares term for dense judge noise).",
    )
    .with_sql_example(
        r#"```sql
> SELECT c['response_index'] AS responses, c['clean_rank'] AS ranks, c['solved'] AS solved
  FROM (SELECT clean_comparisons(i, j, outcome) AS c
        FROM (VALUES (0, 1, 1.0), (0, 2, 1.0), (1, 2, 1.0), (0, 3, 1.0), (1, 3, 0.9),
                     (2, 3, 0.8)) AS judgments(i, j, outcome));
+--------------+--------------+--------+
| responses    | ranks        | solved |
+--------------+--------------+--------+
| [0, 1, 2, 3] | [1, 2, 3, 4] | true   |
+--------------+--------------+--------+
```"#,
    )
    .with_related_udf("clean_scores")
    .build()
}

/// Buffers the group's rows until evaluation.
#[derive(Debug)]
struct CleanAccumulator {
    source: CleaningInput,
    method: CleanMethod,
    temperature: f64,
    /// Response index (scores) or i (comparisons).
    first_indices: Vec<i64>,
    /// j (comparisons only).
    second_indices: Vec<i64>,
    /// Score or outcome.
    values: Vec<f64>,
}

impl CleanAccumulator {
    fn push(&mut self, columns: &[&dyn Array]) -> Result<()> {
        let a = columns[0].as_primitive::<Int64Type>();
        match self.source {
            CleaningInput::Scores => {
                let s = columns[1].as_primitive::<Float64Type>();
                for r in 0..a.len() {
                    if a.is_null(r) {
                        return exec_err!("clean_scores: response_index must not be null");
                    }
                    // Null, NaN and ±inf scores are left out of the matrix.
                    if s.is_valid(r) && s.value(r).is_finite() {
                        self.first_indices.push(a.value(r));
                        self.values.push(s.value(r));
                    }
                }
            }
            CleaningInput::Comparisons => {
                let b = columns[1].as_primitive::<Int64Type>();
                let o = columns[2].as_primitive::<Float64Type>();
                for r in 0..a.len() {
                    if a.is_null(r) || b.is_null(r) {
                        return exec_err!("clean_comparisons: i and j must not be null");
                    }
                    let (i, j) = (a.value(r), b.value(r));
                    if i < 0 || j < 0 {
                        return exec_err!(
                            "clean_comparisons: response indices are 0-based, got ({i}, {j})"
                        );
                    }
                    if i == j {
                        return exec_err!(
                            "clean_comparisons: i = j = {i}: a response judged against itself"
                        );
                    }
                    if o.is_null(r) {
                        continue;
                    }
                    let outcome = o.value(r);
                    if !(0.0..=1.0).contains(&outcome) {
                        return exec_err!(
                            "clean_comparisons: outcome must be in [0, 1], got {outcome} for ({}, {})",
                            a.value(r),
                            b.value(r)
                        );
                    }
                    self.first_indices.push(a.value(r));
                    self.second_indices.push(b.value(r));
                    self.values.push(outcome);
                }
            }
        }
        Ok(())
    }

    /// The group's cleaning: (response indices, result).
    fn clean(&self) -> Result<(Vec<i64>, Cleaned)> {
        match self.source {
            CleaningInput::Scores => clean_indexed_scores(
                &self.first_indices,
                &self.values,
                self.temperature,
                self.method,
            )
            .or_else(|e| exec_err!("clean_scores: {e}")),
            CleaningInput::Comparisons => {
                let judgments: Vec<(i64, i64, f64)> = self
                    .first_indices
                    .iter()
                    .zip(&self.second_indices)
                    .zip(&self.values)
                    .map(|((&i, &j), &o)| (i, j, o))
                    .collect();
                Ok(clean_judgments(&judgments, self.method))
            }
        }
    }
}

impl Accumulator for CleanAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let columns: Vec<&dyn Array> = values.iter().map(|v| v.as_ref()).collect();
        self.push(&columns)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let result = self.clean()?;
        Ok(ScalarValue::Struct(Arc::new(result_array(&[result]))))
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + (self.first_indices.capacity()
                + self.second_indices.capacity()
                + self.values.capacity())
                * 8
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let ints = |v: &[i64]| {
            ScalarValue::List(ScalarValue::new_list_nullable(
                &v.iter()
                    .map(|&x| ScalarValue::Int64(Some(x)))
                    .collect::<Vec<_>>(),
                &DataType::Int64,
            ))
        };
        let floats = ScalarValue::List(ScalarValue::new_list_nullable(
            &self
                .values
                .iter()
                .map(|&x| ScalarValue::Float64(Some(x)))
                .collect::<Vec<_>>(),
            &DataType::Float64,
        ));
        Ok(match self.source {
            CleaningInput::Scores => vec![ints(&self.first_indices), floats],
            CleaningInput::Comparisons => vec![
                ints(&self.first_indices),
                ints(&self.second_indices),
                floats,
            ],
        })
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists: Vec<_> = states.iter().map(|s| s.as_list::<i32>()).collect();
        for row in 0..lists[0].len() {
            if lists[0].is_null(row) {
                continue;
            }
            let a = lists[0].value(row);
            let a = a.as_primitive::<Int64Type>();
            let last = lists[lists.len() - 1].value(row);
            let values = last.as_primitive::<Float64Type>();
            self.first_indices.extend(a.values().iter());
            self.values.extend(values.values().iter());
            if self.source == CleaningInput::Comparisons {
                let b = lists[1].value(row);
                self.second_indices
                    .extend(b.as_primitive::<Int64Type>().values().iter());
            }
        }
        Ok(())
    }
}
