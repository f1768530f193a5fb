//! Pass 1 of `select-margin`: both margins of every pair, read from the score and log-prob
//! columns only (files decoded in parallel).

use datafusion::arrow::array::{Array, AsArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};

use super::source::MarginSource;
use crate::error::{Error, Result};
use crate::formats::PairInput;
use crate::reader::map_columns_in_order;

/// Per row, both margins (NaN where not computable or not finite).
pub(super) struct Margins {
    pub(super) external: Vec<f64>,
    pub(super) implicit: Vec<f64>,
}

impl Margins {
    /// The margins of `source`, one per row.
    pub(super) fn of(&self, source: MarginSource) -> &[f64] {
        match source {
            MarginSource::External => &self.external,
            MarginSource::Implicit => &self.implicit,
        }
    }
}

fn finite_or_nan(v: f64) -> f64 {
    if v.is_finite() { v } else { f64::NAN }
}

/// Pass 1: the margins of every row, from the score and log-prob columns only.
pub(super) async fn read_margins(pairs: &PairInput) -> Result<Margins> {
    let schema = &pairs.schema;
    let wanted: Vec<&'static str> = [MarginSource::External, MarginSource::Implicit]
        .iter()
        .filter(|s| s.columns().iter().all(|c| schema.has(c)))
        .flat_map(|s| s.columns().iter().copied())
        .collect();
    let mut margins = Margins {
        external: Vec::new(),
        implicit: Vec::new(),
    };
    if wanted.is_empty() {
        return Ok(margins);
    }
    let source_names: Vec<String> = wanted
        .iter()
        .map(|c| schema.source_name(c).expect("present").to_string())
        .collect();
    for (canonical, name) in wanted.iter().zip(&source_names) {
        let field = schema.source().field_with_name(name)?;
        if !field.data_type().is_numeric() {
            return Err(Error::WrongType {
                file: schema.file.clone(),
                column: name.clone(),
                found: field.data_type().to_string(),
                expected: format!("a number ({canonical})"),
            });
        }
    }
    // Per batch: (external, implicit) margins, computed as soon as the batch is decoded.
    let wanted_names: Vec<&'static str> = wanted.clone();
    let per_batch = map_columns_in_order(&pairs.files.files, &source_names, move |_, _, batch| {
        let column = |c: &str| -> Result<Option<Float64Array>> {
            match wanted_names.iter().position(|w| *w == c) {
                None => Ok(None),
                Some(i) => Ok(Some(
                    cast(batch.column(i), &DataType::Float64)?
                        .as_primitive::<Float64Type>()
                        .clone(),
                )),
            }
        };
        let value = |a: &Float64Array, i: usize| {
            if a.is_null(i) { f64::NAN } else { a.value(i) }
        };
        let rows = batch.num_rows();
        let external = match (column("score_chosen")?, column("score_rejected")?) {
            (Some(c), Some(r)) => (0..rows)
                .map(|i| finite_or_nan(value(&c, i) - value(&r, i)))
                .collect(),
            _ => Vec::new(),
        };
        let implicit = match (
            column("policy_logp_chosen")?,
            column("ref_logp_chosen")?,
            column("policy_logp_rejected")?,
            column("ref_logp_rejected")?,
        ) {
            (Some(pc), Some(rc), Some(pr), Some(rr)) => (0..rows)
                .map(|i| {
                    let chosen = value(&pc, i) - value(&rc, i);
                    let rejected = value(&pr, i) - value(&rr, i);
                    finite_or_nan(chosen - rejected)
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok((external, implicit))
    })
    .await?;
    for (external, implicit) in per_batch {
        margins.external.extend(external);
        margins.implicit.extend(implicit);
    }
    Ok(margins)
}
