//! Window functions: one value per row, computed over the row's partition.

pub mod reward_zscore;
