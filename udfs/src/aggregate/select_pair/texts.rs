//! The response texts the `*_with_text` forms buffer, held as references into their input
//! arrays.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};

use crate::arguments;

/// Response texts of the buffered entries, for the `*_with_text` forms, by reference: entry
/// `e`'s text is row `refs[e].1` of `arrays[refs[e].0]`. Holding the input arrays (cheap `Arc`
/// clones) instead of copying every string matters: only two texts per group are ever output.
#[derive(Debug, Clone, Default)]
pub(super) struct ResponseTexts {
    arrays: Vec<ArrayRef>,
    refs: Vec<(u32, u32)>,
}

impl ResponseTexts {
    /// Holds `array` and returns its id for [`Self::push`].
    pub(super) fn add_array(&mut self, array: &ArrayRef) -> u32 {
        self.arrays.push(Arc::clone(array));
        (self.arrays.len() - 1) as u32
    }

    /// Appends the text of the next entry: row `row` of the array with id `array`.
    pub(super) fn push(&mut self, array: u32, row: usize) {
        self.refs.push((array, row as u32));
    }

    /// The text of entry `entry` (None for a null text).
    pub(super) fn get(&self, entry: usize) -> Option<&str> {
        let (array, row) = self.refs[entry];
        arguments::string_at(&self.arrays[array as usize], row as usize)
    }

    /// The texts of entries `kept`, in that order, holding only the arrays they need.
    pub(super) fn retain(&self, kept: &[usize]) -> Self {
        let mut rest = Self::default();
        let mut remap: Vec<Option<u32>> = vec![None; self.arrays.len()];
        for &entry in kept {
            let (array, row) = self.refs[entry];
            let id = *remap[array as usize]
                .get_or_insert_with(|| rest.add_array(&self.arrays[array as usize]));
            rest.refs.push((id, row));
        }
        rest
    }

    /// Memory held, in bytes (the arrays whole, as they are shared).
    pub(super) fn size(&self) -> usize {
        self.arrays
            .iter()
            .map(|a| a.get_array_memory_size())
            .sum::<usize>()
            + self.refs.capacity() * 8
    }
}
