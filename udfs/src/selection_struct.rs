//! The struct every `select_pair*` function returns, its description, and a builder for it.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields};

use crate::selection::Selection;

/// How the function reference describes the selection struct.
pub const SELECTION_STRUCT_DOC: &str = "Returns a struct `{chosen_index, rejected_index, \
    score_chosen, score_rejected, reward_mean, reward_std, n_valid, n_responses, skip_reason}`: \
    the pair's response indices and rewards, μ and σ of the valid (finite) rewards, their count \
    and the count of all responses. When the prompt yields no pair, the indices and scores are \
    null and `skip_reason` says why: `too-few-valid` (fewer than two finite rewards), \
    `zero-std` (all equal) or `no-margin` (the rejected reward is not below the chosen one).";

/// The fields of the selection struct: indices and scores are null when the prompt is skipped,
/// `skip_reason` is null when it is not. The `*_with_text` forms add `chosen` and `rejected`.
pub fn selection_fields(with_text: bool) -> Fields {
    let mut fields = vec![
        Field::new("chosen_index", DataType::Int64, true),
        Field::new("rejected_index", DataType::Int64, true),
        Field::new("score_chosen", DataType::Float64, true),
        Field::new("score_rejected", DataType::Float64, true),
        Field::new("reward_mean", DataType::Float64, true),
        Field::new("reward_std", DataType::Float64, true),
        Field::new("n_valid", DataType::Int64, false),
        Field::new("n_responses", DataType::Int64, false),
        Field::new("skip_reason", DataType::Utf8, true),
    ];
    if with_text {
        fields.push(Field::new("chosen", DataType::Utf8, true));
        fields.push(Field::new("rejected", DataType::Utf8, true));
    }
    Fields::from(fields)
}

/// The selection struct's data type.
pub fn selection_type(with_text: bool) -> DataType {
    DataType::Struct(selection_fields(with_text))
}

/// Collects [`Selection`]s into a struct array.
#[derive(Debug, Default)]
pub struct SelectionStructBuilder {
    chosen_index: Int64Builder,
    rejected_index: Int64Builder,
    score_chosen: Float64Builder,
    score_rejected: Float64Builder,
    reward_mean: Float64Builder,
    reward_std: Float64Builder,
    n_valid: Int64Builder,
    n_responses: Int64Builder,
    skip_reason: StringBuilder,
    /// Texts of the chosen and rejected responses, for the `*_with_text` forms.
    texts: Option<(StringBuilder, StringBuilder)>,
}

impl SelectionStructBuilder {
    /// A builder with room for `capacity` rows, with or without the text fields.
    pub fn new(capacity: usize, with_text: bool) -> Self {
        let mut builder = Self::with_capacity(capacity);
        if with_text {
            builder.texts = Some((StringBuilder::new(), StringBuilder::new()));
        }
        builder
    }

    /// A builder with room for `capacity` rows, without the text fields.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            chosen_index: Int64Builder::with_capacity(capacity),
            rejected_index: Int64Builder::with_capacity(capacity),
            score_chosen: Float64Builder::with_capacity(capacity),
            score_rejected: Float64Builder::with_capacity(capacity),
            reward_mean: Float64Builder::with_capacity(capacity),
            reward_std: Float64Builder::with_capacity(capacity),
            n_valid: Int64Builder::with_capacity(capacity),
            n_responses: Int64Builder::with_capacity(capacity),
            skip_reason: StringBuilder::with_capacity(capacity, capacity * 8),
            texts: None,
        }
    }

    /// Appends one prompt's outcome with the texts of its chosen and rejected responses (used
    /// only when the builder has text fields).
    pub fn append_with_texts(
        &mut self,
        selection: &Selection,
        chosen: Option<&str>,
        rejected: Option<&str>,
    ) {
        self.append(selection);
        if let Some((c, r)) = &mut self.texts {
            c.append_option(chosen);
            r.append_option(rejected);
        }
    }

    /// Appends one prompt's outcome.
    pub fn append(&mut self, selection: &Selection) {
        let stats = &selection.stats;
        match selection.pair {
            Ok(pair) => {
                self.chosen_index.append_value(pair.chosen_index);
                self.rejected_index.append_value(pair.rejected_index);
                self.score_chosen.append_value(pair.score_chosen);
                self.score_rejected.append_value(pair.score_rejected);
                self.skip_reason.append_null();
            }
            Err(reason) => {
                self.chosen_index.append_null();
                self.rejected_index.append_null();
                self.score_chosen.append_null();
                self.score_rejected.append_null();
                self.skip_reason.append_value(reason.as_str());
            }
        }
        self.reward_mean
            .append_option(stats.mean.is_finite().then_some(stats.mean));
        self.reward_std
            .append_option(stats.std.is_finite().then_some(stats.std));
        self.n_valid.append_value(stats.n_valid as i64);
        self.n_responses.append_value(stats.n as i64);
    }

    /// Finishes the struct array (never null at the struct level).
    pub fn finish(mut self) -> ArrayRef {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.chosen_index.finish()),
            Arc::new(self.rejected_index.finish()),
            Arc::new(self.score_chosen.finish()),
            Arc::new(self.score_rejected.finish()),
            Arc::new(self.reward_mean.finish()),
            Arc::new(self.reward_std.finish()),
            Arc::new(self.n_valid.finish()),
            Arc::new(self.n_responses.finish()),
            Arc::new(self.skip_reason.finish()),
        ];
        let with_text = self.texts.is_some();
        if let Some((mut c, mut r)) = self.texts.take() {
            columns.push(Arc::new(c.finish()));
            columns.push(Arc::new(r.finish()));
        }
        Arc::new(StructArray::new(selection_fields(with_text), columns, None))
    }
}
