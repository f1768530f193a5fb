//! Scalar functions: one value per row.

pub mod goal_prompt;
pub mod hf_prompt_id;
pub mod margin_math;
pub mod select_pair_list;
