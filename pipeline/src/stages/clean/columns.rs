//! Arrow helpers of the `clean` stage: input columns read as numbers, and the cleaning's
//! columns appended to the input rows.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};

use crate::error::{Error, Result};

/// A column as f64 (null where null).
pub(super) fn floats(column: &ArrayRef) -> Result<Float64Array> {
    Ok(cast(column, &DataType::Float64)?
        .as_primitive::<Float64Type>()
        .clone())
}

/// A column as i64.
pub(super) fn ints(column: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(column, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// `batch` with the `extra` columns appended; an input that already has one of them was
/// cleaned before, which is refused.
pub(super) fn with_columns(
    batch: &RecordBatch,
    extra: Vec<(Field, ArrayRef)>,
) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns = batch.columns().to_vec();
    for (field, column) in extra {
        if batch.schema().index_of(field.name()).is_ok() {
            return Err(Error::InvalidData {
                context: "clean".into(),
                message: format!(
                    "the input already has a '{}' column (cleaned twice?)",
                    field.name()
                ),
            });
        }
        fields.push(field);
        columns.push(column);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}
