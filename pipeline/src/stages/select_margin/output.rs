//! Pass 2 of `select-margin`: the input read again, the selected rows kept with the
//! selection's columns, and written sorted by `prompt_id`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::config::SelectMarginConfig;
use crate::error::{Error, Result};
use crate::formats::{PairInput, PairSchema, sorted_by_prompt_id};
use crate::manifest::StageWriter;
use crate::reader::{map_columns_in_order, string_at};
use crate::stages::Progress;

/// The columns the selection adds; an input that has one was selected before.
pub(super) fn refuse_output_columns(schema: &PairSchema) -> Result<()> {
    for column in [
        "margin_external",
        "margin_implicit",
        "preference_logit",
        "preference_probability",
        "selected_rank",
    ] {
        schema.refuse_existing(column, "selected by margin twice?")?;
    }
    Ok(())
}

/// The output schema: the canonical input columns plus the selection's.
fn output_schema(input: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("margin_external", DataType::Float64, true));
    fields.push(Field::new("margin_implicit", DataType::Float64, true));
    fields.push(Field::new("preference_logit", DataType::Float64, false));
    fields.push(Field::new(
        "preference_probability",
        DataType::Float64,
        false,
    ));
    fields.push(Field::new("selected_rank", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// What pass 2 needs per input row.
pub(super) struct RowFacts {
    /// Rank (1-based) when selected, else 0.
    pub(super) ranks: Vec<u32>,
    /// The fused logit (NaN when not eligible).
    pub(super) logits: Vec<f64>,
    /// The external margin (NaN where not finite; empty when not read).
    pub(super) external: Vec<f64>,
    /// The implicit margin (NaN where not finite; empty when not read).
    pub(super) implicit: Vec<f64>,
}
/// Pass 2: reads the input again (files in parallel), keeps the selected rows with their new
/// columns, and writes them sorted by `prompt_id` (already so for a pair table; a Hugging Face
/// file may not be).
pub(super) async fn write_selected(
    pairs: &PairInput,
    facts: Arc<RowFacts>,
    config: &SelectMarginConfig,
    output: &crate::storage::Location,
) -> Result<StageWriter> {
    let canonical = Arc::clone(pairs.schema.canonical());
    let out_schema = output_schema(&canonical);
    let file_starts: Vec<u64> = pairs
        .infos
        .iter()
        .scan(0u64, |start, info| {
            let this = *start;
            *start += info.rows;
            Some(this)
        })
        .collect();
    let total: u64 = pairs.infos.iter().map(|i| i.rows).sum();
    if total != facts.ranks.len() as u64 {
        return Err(Error::InvalidData {
            context: pairs.files.spec.clone(),
            message: format!(
                "the input changed while it was read ({} rows, then {total})",
                facts.ranks.len()
            ),
        });
    }
    let columns: Vec<String> = pairs
        .schema
        .source()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let schema = pairs.schema.clone();
    let batch_schema = Arc::clone(&out_schema);
    let progress = Arc::new(std::sync::Mutex::new(Progress::new("select-margin", total)));
    let counter = Arc::clone(&progress);
    let kept = map_columns_in_order(&pairs.files.files, &columns, move |file, first, batch| {
        let n = batch.num_rows();
        let offset = (file_starts[file] + first) as usize;
        if let Ok(mut p) = counter.lock() {
            p.advance(n as u64);
        }
        selected_rows(&schema, &facts, &batch_schema, offset, &batch)
    })
    .await?;
    if let Ok(p) = progress.lock() {
        p.finish();
    }
    let kept: Vec<RecordBatch> = kept.into_iter().flatten().collect();
    let all = concat_batches(&out_schema, &kept)?;
    let ids = all.column(out_schema.index_of("prompt_id")?);
    let sorted = (1..all.num_rows()).all(|i| string_at(ids, i - 1) <= string_at(ids, i));
    let all = if sorted {
        all
    } else {
        sorted_by_prompt_id(&out_schema, &[all])?
    };
    let mut writer = StageWriter::begin(
        output,
        Arc::clone(&out_schema),
        config.max_rows_per_file,
        Some("prompt_id"),
    )
    .await?;
    writer.write(&all).await?;
    Ok(writer)
}

/// The selected rows of one input batch (rows `offset..` of the input), in canonical columns
/// plus the selection's; `None` when the batch has none.
fn selected_rows(
    schema: &PairSchema,
    facts: &RowFacts,
    batch_schema: &SchemaRef,
    offset: usize,
    batch: &RecordBatch,
) -> Result<Option<RecordBatch>> {
    let n = batch.num_rows();
    let rows: Vec<usize> = (offset..offset + n)
        .filter(|&r| facts.ranks[r] > 0)
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let local = UInt32Array::from_iter_values(rows.iter().map(|&r| (r - offset) as u32));
    let picked = schema.to_canonical(&take_record_batch(batch, &local)?)?;
    let margin = |values: &[f64]| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|&r| values.get(r).copied().filter(|m| m.is_finite()))
                .collect::<Float64Array>(),
        )
    };
    let mut columns = picked.columns().to_vec();
    columns.push(margin(&facts.external));
    columns.push(margin(&facts.implicit));
    columns.push(Arc::new(
        rows.iter()
            .map(|&r| facts.logits[r])
            .collect::<Float64Array>(),
    ));
    columns.push(Arc::new(
        rows.iter()
            .map(|&r| 1.0 / (1.0 + (-facts.logits[r]).exp()))
            .collect::<Float64Array>(),
    ));
    columns.push(Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|&r| i64::from(facts.ranks[r])),
    )));
    Ok(Some(RecordBatch::try_new(
        Arc::clone(batch_schema),
        columns,
    )?))
}
