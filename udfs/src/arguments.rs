//! Argument handling shared by the UDFs: type coercion rules and constant-argument parsing.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;

use crate::selection::Position;

/// How the function reference describes a position argument (`k_chosen`, `k_rejected`).
pub const POSITION_ARGUMENT_DOC: &str = "Constant position `k` of the response in its prompt's \
    reward distribution, `μ + k·σ`: a number, or `'+inf'` / `'max'` for the maximum and \
    `'-inf'` / `'min'` for the minimum.";

/// How the function reference describes `ddof`.
pub const DDOF_ARGUMENT_DOC: &str = "Optional integer constant, the delta degrees of freedom \
    of σ: 0 (population, the default) or 1 (sample).";

/// How the function reference describes `run_seed`.
pub const RUN_SEED_ARGUMENT_DOC: &str = "Optional non-negative integer constant mixed into \
    every prompt's seed (default 0): the same seed gives the same pairs.";

/// How the function reference describes the `prompt_id` of the scalable rule.
pub const PROMPT_ID_ARGUMENT_DOC: &str = "String prompt id, never null: the subset is seeded \
    by the first 8 bytes of SHA-256(`'{run_seed}:{prompt_id}'`).";

/// Coerces a response-index argument: any integer (or null) becomes Int64.
pub fn coerce_index(func: &str, t: &DataType) -> Result<DataType> {
    if t.is_integer() || t.is_null() {
        Ok(DataType::Int64)
    } else {
        plan_err!("{func}: response_index must be an integer, got {t}")
    }
}

/// Coerces a reward argument: any numeric (or null) becomes Float64.
pub fn coerce_reward(func: &str, t: &DataType) -> Result<DataType> {
    if t.is_numeric() || t.is_null() {
        Ok(DataType::Float64)
    } else {
        plan_err!("{func}: reward must be numeric, got {t}")
    }
}

/// Coerces a position multiplier `k`: numbers become Float64, strings (`'max'`, `'-inf'`) stay.
pub fn coerce_position(func: &str, t: &DataType) -> Result<DataType> {
    if t.is_numeric() {
        Ok(DataType::Float64)
    } else if is_string(t) {
        Ok(t.clone())
    } else {
        plan_err!("{func}: a position k must be a number or a string such as '+inf', got {t}")
    }
}

/// Coerces an integer option (`ddof`, `seed`) to Int64.
pub fn coerce_integer(func: &str, what: &str, t: &DataType) -> Result<DataType> {
    if t.is_integer() {
        Ok(DataType::Int64)
    } else {
        plan_err!("{func}: {what} must be an integer constant, got {t}")
    }
}

/// Whether `t` is one of Arrow's string types.
pub fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Coerces a string argument: string types are kept as they are.
pub fn coerce_string(func: &str, what: &str, t: &DataType) -> Result<DataType> {
    if is_string(t) {
        Ok(t.clone())
    } else {
        plan_err!("{func}: {what} must be a string, got {t}")
    }
}

/// The value of a constant argument of an aggregate (a literal after constant folding).
pub fn aggregate_constant(func: &str, what: &str, expr: &dyn PhysicalExpr) -> Result<ScalarValue> {
    match expr.downcast_ref::<Literal>() {
        Some(lit) if !lit.value().is_null() => Ok(lit.value().clone()),
        Some(_) => exec_err!("{func}: {what} must not be null"),
        None => exec_err!("{func}: {what} must be a constant, not a column"),
    }
}

/// The value of a constant argument of a scalar function.
pub fn scalar_constant(func: &str, what: &str, value: &ColumnarValue) -> Result<ScalarValue> {
    match value {
        ColumnarValue::Scalar(s) if !s.is_null() => Ok(s.clone()),
        ColumnarValue::Scalar(_) => exec_err!("{func}: {what} must not be null"),
        ColumnarValue::Array(_) => exec_err!("{func}: {what} must be a constant, not a column"),
    }
}

/// Parses a position multiplier from a constant.
pub fn parse_position(func: &str, what: &str, value: &ScalarValue) -> Result<Position> {
    let parsed = match value {
        ScalarValue::Float64(Some(k)) => Position::from_k(*k),
        ScalarValue::Int64(Some(k)) => Position::from_k(*k as f64),
        other => match other.try_as_str() {
            Some(Some(text)) => Position::parse(text),
            _ => return exec_err!("{func}: {what} must be a number or a string, got {other}"),
        },
    };
    parsed.or_else(|e| exec_err!("{func}: {what}: {e}"))
}

/// Parses a non-negative integer constant.
pub fn parse_non_negative(func: &str, what: &str, value: &ScalarValue) -> Result<u64> {
    match value {
        ScalarValue::Int64(Some(v)) if *v >= 0 => Ok(*v as u64),
        other => exec_err!("{func}: {what} must be a non-negative integer, got {other}"),
    }
}

/// Parses `ddof`, which must be 0 (population) or 1 (sample).
pub fn parse_ddof(func: &str, value: &ScalarValue) -> Result<u32> {
    match parse_non_negative(func, "ddof", value)? {
        d @ (0 | 1) => Ok(d as u32),
        other => exec_err!("{func}: ddof must be 0 or 1, got {other}"),
    }
}

/// Reads row `i` of any string array.
pub fn string_at(array: &ArrayRef, i: usize) -> Option<&str> {
    if array.is_null(i) {
        return None;
    }
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(i)),
        DataType::Utf8View => Some(array.as_string_view().value(i)),
        _ => None,
    }
}
