//! The buffers behind `select_pair`: every group's responses in flat vectors, sorted into
//! groups by one counting sort when groups are emitted, then handed to the selection kernel.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, ListArray, StringArray,
    UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};

use super::form::{Form, RuleSpec};
use super::texts::ResponseTexts;
use crate::arguments;
use crate::selection::{PairRule, select, sort_and_check};
use crate::selection_struct::SelectionStructBuilder;

/// One buffered response, as sorted into its group.
#[derive(Debug, Clone, Copy)]
struct BufferedResponse {
    index: i64,
    reward: f64,
    /// Position in the flat buffers (to find the text).
    slot: u32,
}

/// Buffers of every group's responses, flat.
#[derive(Debug, Clone)]
pub(super) struct SelectPairGroups {
    form: Form,
    rule: RuleSpec,
    ddof: u32,
    num_groups: usize,
    group: Vec<u32>,
    index: Vec<i64>,
    reward: Vec<f64>,
    texts: Option<ResponseTexts>,
    /// Per group, the prompt id seeding `scalable` (empty for other rules).
    prompt_ids: Vec<Option<String>>,
}

/// The entries of the emitted groups, grouped: group `g` is `entries[offsets[g]..offsets[g+1]]`.
struct TakenGroups {
    offsets: Vec<usize>,
    entries: Vec<BufferedResponse>,
    texts: Option<ResponseTexts>,
    prompt_ids: Vec<Option<String>>,
}

impl SelectPairGroups {
    pub(super) fn new(form: Form, rule: RuleSpec, ddof: u32) -> Self {
        Self {
            form,
            rule,
            ddof,
            num_groups: 0,
            group: Vec::new(),
            index: Vec::new(),
            reward: Vec::new(),
            texts: form.with_text.then(ResponseTexts::default),
            prompt_ids: Vec::new(),
        }
    }

    fn name(&self) -> &'static str {
        self.form.name()
    }

    fn grow(&mut self, total_num_groups: usize) {
        self.num_groups = self.num_groups.max(total_num_groups);
        if self.form.scalable && self.prompt_ids.len() < self.num_groups {
            self.prompt_ids.resize(self.num_groups, None);
        }
    }

    fn push(
        &mut self,
        group: usize,
        index: Option<i64>,
        reward: Option<f64>,
        text: Option<(u32, usize)>,
    ) -> Result<()> {
        let Some(index) = index else {
            return exec_err!("{}: response_index must not be null", self.name());
        };
        self.group.push(group as u32);
        self.index.push(index);
        // Null rewards are kept (as NaN) so that they still count as responses.
        self.reward.push(reward.unwrap_or(f64::NAN));
        if let (Some(texts), Some((array, row))) = (&mut self.texts, text) {
            texts.push(array, row);
        }
        Ok(())
    }

    fn note_prompt_id(&mut self, group: usize, prompt_id: Option<&str>) {
        if let Some(id) = prompt_id
            && self.prompt_ids[group].is_none()
        {
            self.prompt_ids[group] = Some(id.to_string());
        }
    }

    /// Takes the entries of groups `0..n` out (sorted into groups by a counting sort), keeping
    /// the rest renumbered from 0.
    fn take_groups(&mut self, n: usize) -> TakenGroups {
        let mut offsets = vec![0usize; n + 1];
        for &g in &self.group {
            if (g as usize) < n {
                offsets[g as usize + 1] += 1;
            }
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut entries = vec![
            BufferedResponse {
                index: 0,
                reward: 0.0,
                slot: 0
            };
            offsets[n]
        ];
        let mut cursor = offsets.clone();
        let mut kept = Vec::new();
        for (slot, &g) in self.group.iter().enumerate() {
            let g = g as usize;
            if g < n {
                entries[cursor[g]] = BufferedResponse {
                    index: self.index[slot],
                    reward: self.reward[slot],
                    slot: slot as u32,
                };
                cursor[g] += 1;
            } else {
                kept.push(slot);
            }
        }
        let texts = self.texts.take();
        if kept.is_empty() {
            self.group.clear();
            self.index.clear();
            self.reward.clear();
            self.texts = texts.as_ref().map(|_| ResponseTexts::default());
        } else {
            self.group = kept.iter().map(|&s| self.group[s] - n as u32).collect();
            self.index = kept.iter().map(|&s| self.index[s]).collect();
            self.reward = kept.iter().map(|&s| self.reward[s]).collect();
            self.texts = texts.as_ref().map(|t| t.retain(&kept));
        }
        self.num_groups -= n;
        let prompt_ids = if self.form.scalable {
            self.prompt_ids.drain(..n).collect()
        } else {
            Vec::new()
        };
        TakenGroups {
            offsets,
            entries,
            texts,
            prompt_ids,
        }
    }

    fn emit_count(&self, emit_to: EmitTo) -> usize {
        match emit_to {
            EmitTo::All => self.num_groups,
            EmitTo::First(n) => n.min(self.num_groups),
        }
    }

    /// Runs the selection kernel over every taken group.
    fn finish(&self, taken: TakenGroups) -> Result<ArrayRef> {
        let TakenGroups {
            offsets,
            mut entries,
            texts,
            prompt_ids,
        } = taken;
        let groups = offsets.len() - 1;
        let mut out = SelectionStructBuilder::new(groups, self.form.with_text);
        let mut responses: Vec<(i64, f64)> = Vec::new();
        for g in 0..groups {
            let group = &mut entries[offsets[g]..offsets[g + 1]];
            if !group.is_sorted_by_key(|e| e.index) {
                group.sort_by_key(|e| e.index);
            }
            responses.clear();
            responses.extend(group.iter().map(|e| (e.index, e.reward)));
            if let Err(e) = sort_and_check(&mut responses) {
                return exec_err!("{}: {e}", self.name());
            }
            let selection = if responses.is_empty() {
                // A group with no entries only exists when every row was filtered out.
                select(&responses, PairRule::Scalable { seed: 0 }, self.ddof)
            } else {
                select(
                    &responses,
                    self.rule
                        .for_prompt(self.name(), prompt_ids.get(g).and_then(Option::as_deref))?,
                    self.ddof,
                )
            };
            match (&texts, selection.pair) {
                (Some(texts), Ok(pair)) => {
                    let text_of = |index: i64| {
                        group
                            .iter()
                            .find(|e| e.index == index)
                            .and_then(|e| texts.get(e.slot as usize))
                    };
                    out.append_with_texts(
                        &selection,
                        text_of(pair.chosen_index),
                        text_of(pair.rejected_index),
                    );
                }
                (Some(_), Err(_)) => out.append_with_texts(&selection, None, None),
                (None, _) => out.append(&selection),
            }
        }
        Ok(out.finish())
    }

    /// The buffered state of the taken groups, as lists (one row per group).
    fn state_of(&self, taken: TakenGroups) -> Result<Vec<ArrayRef>> {
        let TakenGroups {
            offsets,
            entries,
            texts,
            prompt_ids,
        } = taken;
        let idx: Int64Array = entries.iter().map(|e| Some(e.index)).collect();
        let rew: Float64Array = entries
            .iter()
            .map(|e| (!e.reward.is_nan()).then_some(e.reward))
            .collect();
        let mut state = vec![
            list_array(&offsets, Arc::new(idx), DataType::Int64)?,
            list_array(&offsets, Arc::new(rew), DataType::Float64)?,
        ];
        if let Some(texts) = &texts {
            let text: StringArray = entries.iter().map(|e| texts.get(e.slot as usize)).collect();
            state.push(list_array(&offsets, Arc::new(text), DataType::Utf8)?);
        }
        if self.form.scalable {
            state.push(Arc::new(
                prompt_ids
                    .iter()
                    .map(Option::as_deref)
                    .collect::<StringArray>(),
            ));
        }
        Ok(state)
    }

    fn merge_lists(&mut self, values: &[ArrayRef], group_indices: &[usize]) -> Result<()> {
        let indices = values[0].as_list::<i32>();
        let rewards = values[1].as_list::<i32>();
        let texts = self.form.with_text.then(|| values[2].as_list::<i32>());
        // The whole batch's texts as one array, referenced by absolute position: slicing one
        // array per group would cost an allocation per group.
        let text_values = match (texts, &mut self.texts) {
            (Some(lists), Some(store)) => {
                Some((store.add_array(lists.values()), lists.value_offsets()))
            }
            _ => None,
        };
        let prompt_id_col = self.form.first_rule_argument();
        for (row, &g) in group_indices.iter().enumerate() {
            if indices.is_null(row) {
                continue;
            }
            let idx = indices.value(row);
            let rew = rewards.value(row);
            let idx = idx.as_primitive::<Int64Type>();
            let rew = rew.as_primitive::<Float64Type>();
            let first_text = text_values.map(|(array, offsets)| (array, offsets[row] as usize));
            for k in 0..idx.len() {
                let reward = rew.is_valid(k).then(|| rew.value(k));
                let text = first_text.map(|(array, first)| (array, first + k));
                self.push(g, idx.is_valid(k).then(|| idx.value(k)), reward, text)?;
            }
            if self.form.scalable {
                self.note_prompt_id(g, arguments::string_at(&values[prompt_id_col], row));
            }
        }
        Ok(())
    }
}

/// Builds a list array from per-row lists given as offsets into flat values.
fn list_array(offsets: &[usize], values: ArrayRef, item: DataType) -> Result<ArrayRef> {
    let offsets = OffsetBuffer::from_lengths(offsets.windows(2).map(|w| w[1] - w[0]));
    Ok(Arc::new(ListArray::try_new(
        Arc::new(Field::new_list_field(item, true)),
        offsets,
        values,
        None,
    )?))
}

impl GroupsAccumulator for SelectPairGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let index = values[0].as_primitive::<Int64Type>();
        let reward = values[1].as_primitive::<Float64Type>();
        let prompt_id_col = self.form.first_rule_argument();
        self.group.reserve(group_indices.len());
        self.index.reserve(group_indices.len());
        self.reward.reserve(group_indices.len());
        let text_array = self.texts.as_mut().map(|t| t.add_array(&values[2]));
        for (row, &g) in group_indices.iter().enumerate() {
            if let Some(filter) = opt_filter
                && !(filter.is_valid(row) && filter.value(row))
            {
                continue;
            }
            let i = index.is_valid(row).then(|| index.value(row));
            let r = reward.is_valid(row).then(|| reward.value(row));
            self.push(g, i, r, text_array.map(|a| (a, row)))?;
            if self.form.scalable {
                self.note_prompt_id(g, arguments::string_at(&values[prompt_id_col], row));
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let n = self.emit_count(emit_to);
        let taken = self.take_groups(n);
        self.finish(taken)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let n = self.emit_count(emit_to);
        let taken = self.take_groups(n);
        self.state_of(taken)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        self.merge_lists(values, group_indices)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let rows = values[0].len();
        let keep = |row: usize| opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0usize);
        let mut kept = Vec::with_capacity(rows);
        for row in 0..rows {
            if keep(row) {
                kept.push(row as u32);
            }
            offsets.push(kept.len());
        }
        let take = UInt32Array::from(kept);
        let taken = |i: usize, t: DataType| -> Result<ArrayRef> {
            let column = datafusion::arrow::compute::take(&values[i], &take, None)?;
            let column = datafusion::arrow::compute::cast(&column, &t)?;
            list_array(&offsets, column, t)
        };
        let mut state = vec![taken(0, DataType::Int64)?, taken(1, DataType::Float64)?];
        if self.form.with_text {
            state.push(taken(2, DataType::Utf8)?);
        }
        if self.form.scalable {
            let column = &values[self.form.first_rule_argument()];
            let ids: StringArray = (0..rows)
                .map(|row| arguments::string_at(column, row))
                .collect();
            state.push(Arc::new(ids));
        }
        Ok(state)
    }

    fn size(&self) -> usize {
        self.group.capacity() * 4
            + self.index.capacity() * 8
            + self.reward.capacity() * 8
            + self.texts.as_ref().map_or(0, ResponseTexts::size)
            + self
                .prompt_ids
                .iter()
                .map(|p| p.as_ref().map_or(0, String::capacity) + 24)
                .sum::<usize>()
    }
}

/// The row accumulator (no GROUP BY, or window use): a groups accumulator with one group.
#[derive(Debug)]
pub(super) struct SelectPairAccumulator {
    pub(super) groups: SelectPairGroups,
}

impl Accumulator for SelectPairAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let zeros = vec![0usize; values[0].len()];
        self.groups.update_batch(values, &zeros, None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        // Evaluate a copy: a window frame may ask again after more rows.
        let mut copy = self.groups.clone();
        copy.grow(1);
        ScalarValue::try_from_array(&copy.evaluate(EmitTo::All)?, 0)
    }

    fn size(&self) -> usize {
        self.groups.size() + size_of::<Self>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let mut copy = self.groups.clone();
        copy.grow(1);
        copy.state(EmitTo::All)?
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.groups.grow(1);
        let zeros = vec![0usize; states[0].len()];
        self.groups.merge_lists(states, &zeros)
    }
}
