//! Aggregate functions: one row per group (prompt).

pub mod reward_stats;
pub mod select_pair;
