//! Aggregate functions: one row per group (prompt).

pub mod clean;
pub mod margin_upper_bound;
pub mod reward_stats;
pub mod select_pair;
