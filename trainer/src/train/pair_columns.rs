//! The columns of a pair table the trainer reads besides the texts: `prompt_id`, MixDPO's
//! `route` and `curriculum_rank`, the rating gap (or the two scores it is the difference of),
//! and reference log-probs with the token counts `prefsmith score` recorded for them. Each is
//! checked once when the table is opened; rows are then read through [`PairColumns`].

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use prefsmith_pipeline::reader::string_at;

use crate::error::{Error, Result};
use crate::train::config::MixDpo;

/// The float values of `name` (cast from any numeric type), if the column exists.
fn float_column(batch: &RecordBatch, name: &str, input: &str) -> Result<Option<ArrayRef>> {
    let Some(column) = batch.column_by_name(name) else {
        return Ok(None);
    };
    if !column.data_type().is_numeric() {
        return Err(Error::Input(format!(
            "{input}: column '{name}' has type {}, expected a number",
            column.data_type()
        )));
    }
    Ok(Some(cast(column, &DataType::Float64)?))
}

fn value_at(column: &ArrayRef, row: usize) -> Option<f64> {
    let values = column.as_primitive::<Float64Type>();
    (!values.is_null(row)).then(|| values.value(row))
}

/// A row's reference log-probs as the table holds them.
pub(super) enum TableReference {
    /// The table has no reference columns.
    Absent,
    /// Null, NaN or infinite in this row.
    Invalid,
    /// Finite log-probs (chosen, rejected), with the token counts (prompt, chosen, rejected)
    /// they were scored on when the table records them.
    Valid {
        /// Summed log-probs of the chosen and the rejected response.
        logps: (f64, f64),
        /// `ref_prompt_tokens`, `ref_tokens_chosen`, `ref_tokens_rejected` of the row.
        scored_tokens: Option<(Option<f64>, Option<f64>, Option<f64>)>,
    },
}

/// The optional columns of a `prompt_id`-sorted pair table.
pub(super) struct PairColumns<'a> {
    ids: &'a ArrayRef,
    route: Option<&'a ArrayRef>,
    curriculum: Option<ArrayRef>,
    gap: Option<ArrayRef>,
    scores: (Option<ArrayRef>, Option<ArrayRef>),
    reference: Option<(ArrayRef, ArrayRef)>,
    reference_tokens: (Option<ArrayRef>, Option<ArrayRef>, Option<ArrayRef>),
    /// Whether MixDPO routing is on (`data.mixdpo` and a `route` column).
    pub(super) mixdpo: bool,
}

impl<'a> PairColumns<'a> {
    /// Finds and checks the columns of `batch` (read from `input`) under `mixdpo`.
    pub(super) fn of(batch: &'a RecordBatch, mixdpo: MixDpo, input: &str) -> Result<Self> {
        let ids = batch
            .column_by_name("prompt_id")
            .ok_or_else(|| Error::Input(format!("{input}: no prompt_id column")))?;
        let route = batch.column_by_name("route");
        let mixdpo = match (mixdpo, route) {
            (MixDpo::Off, _) | (MixDpo::Auto, None) => false,
            (MixDpo::Auto | MixDpo::On, Some(_)) => true,
            (MixDpo::On, None) => {
                return Err(Error::Input(format!(
                    "{input}: data.mixdpo = \"on\" needs a 'route' column (run `prefsmith route` first)"
                )));
            }
        };
        let curriculum = if mixdpo {
            let column = batch.column_by_name("curriculum_rank").ok_or_else(|| {
                Error::Input(format!(
                    "{input}: a 'route' column without 'curriculum_rank' (MixDPO orders by it)"
                ))
            })?;
            Some(cast(column, &DataType::Int64)?)
        } else {
            None
        };
        let gap = float_column(batch, "rating_gap", input)?;
        let scores = (
            float_column(batch, "score_chosen", input)?,
            float_column(batch, "score_rejected", input)?,
        );
        let reference = match (
            float_column(batch, "ref_logp_chosen", input)?,
            float_column(batch, "ref_logp_rejected", input)?,
        ) {
            (Some(c), Some(r)) => Some((c, r)),
            (None, None) => None,
            _ => {
                return Err(Error::Input(format!(
                    "{input}: only one of ref_logp_chosen / ref_logp_rejected is present"
                )));
            }
        };
        let reference_tokens = (
            float_column(batch, "ref_prompt_tokens", input)?,
            float_column(batch, "ref_tokens_chosen", input)?,
            float_column(batch, "ref_tokens_rejected", input)?,
        );
        Ok(Self {
            ids,
            route,
            curriculum,
            gap,
            scores,
            reference,
            reference_tokens,
            mixdpo,
        })
    }

    /// The `prompt_id` of `row`.
    pub(super) fn prompt_id(&self, row: usize) -> String {
        string_at(self.ids, row).unwrap_or_default().to_string()
    }

    /// Whether the table carries reference log-probs.
    pub(super) fn has_reference(&self) -> bool {
        self.reference.is_some()
    }

    /// The rating gap of `row` before normalisation: `rating_gap`, else
    /// `score_chosen − score_rejected`; `None` when unrated.
    pub(super) fn raw_gap(&self, row: usize) -> Option<f64> {
        if let Some(c) = &self.gap {
            return value_at(c, row);
        }
        match &self.scores {
            (Some(c), Some(r)) => Some(value_at(c, row)? - value_at(r, row)?),
            _ => None,
        }
    }

    /// MixDPO's route of `row` (`true` for SFT) and its curriculum rank; `(false, None)`
    /// without routing. `where_` names the row in errors.
    pub(super) fn route(
        &self,
        row: usize,
        where_: impl Fn() -> String,
    ) -> Result<(bool, Option<i64>)> {
        let (Some(ranks), Some(routes)) = (&self.curriculum, self.route) else {
            return Ok((false, None));
        };
        let sft = match string_at(routes, row) {
            Some("sft") => true,
            Some("dpo") => false,
            other => {
                return Err(Error::Input(format!(
                    "{}: route {other:?}, expected \"dpo\" or \"sft\"",
                    where_()
                )));
            }
        };
        let ranks = ranks.as_primitive::<Int64Type>();
        if ranks.is_null(row) {
            return Err(Error::Input(format!(
                "{}: curriculum_rank is null",
                where_()
            )));
        }
        Ok((sft, Some(ranks.value(row))))
    }

    /// The reference log-probs the table holds for `row`.
    pub(super) fn reference(&self, row: usize) -> TableReference {
        let Some((c, r)) = &self.reference else {
            return TableReference::Absent;
        };
        match (value_at(c, row), value_at(r, row)) {
            (Some(c), Some(r)) if c.is_finite() && r.is_finite() => {
                let scored_tokens = match &self.reference_tokens {
                    (Some(tp), Some(tc), Some(tr)) => {
                        Some((value_at(tp, row), value_at(tc, row), value_at(tr, row)))
                    }
                    _ => None,
                };
                TableReference::Valid {
                    logps: (c, r),
                    scored_tokens,
                }
            }
            _ => TableReference::Invalid,
        }
    }
}
