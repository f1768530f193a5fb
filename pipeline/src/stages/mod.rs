//! Pipeline stages. Each reads its input, writes a stage output directory under the contract
//! of [`crate::manifest`], and returns the manifest it wrote.

pub mod augment;
pub mod clean;
pub mod export;
pub mod route;
pub mod runs;
pub mod select;
pub mod select_margin;
pub mod synth;

// Kept at their old paths so that callers read one module per concept.
pub use crate::metrics::{now_unix, peak_rss_bytes};
pub use crate::progress::Progress;
pub use crate::stage::{config_hash, input_listing};

/// The hash deciding whether a stage's existing output is up to date (see [`crate::stage::stage_hash`]).
pub fn stage_hash(stage: &str, config: &impl serde::Serialize, infos: &[crate::input::FileInfo]) -> String {
    crate::stage::stage_hash(stage, &serde_json::to_value(config).expect("stage configs serialize"), infos)
}


