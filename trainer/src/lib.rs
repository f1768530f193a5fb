//! prefsmith's trainer (burn): what the pipeline does with the language models of
//! [`prefsmith_model`]: the stages that sample responses, score sequence log-probs, and judge
//! or classify responses for an external reward on tables ([`stages`]), and training with
//! rating-aware DPO ([`train`]).
//!
//! Two rules hold throughout:
//!
//! * the device is a runtime value parsed from configuration ([`DeviceSpec`]); no code here
//!   names a backend type, and GPU backends exist only behind the `cuda`/`wgpu` features;
//! * rewards and losses are computed from summed sequence log-probabilities (`docs/ALGORITHMS.md` §4 and
//!   §9), see [`losses`] and [`scoring`].
//!
//! [`DeviceSpec`]: prefsmith_model::DeviceSpec
//! [`scoring`]: prefsmith_model::scoring

pub mod error;
pub mod experiment;
pub mod job;
pub mod losses;
pub mod stages;
pub mod train;

pub use error::{Error, Result};
