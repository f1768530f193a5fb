//! Scalar functions: one value per row.

pub mod hf_prompt_id;
pub mod select_pair_list;
