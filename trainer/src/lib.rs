//! prefsmith's trainer (burn): llama-family language models with real pretrained weights, and
//! what the pipeline does with them: sample responses, score sequence log-probs, judge or
//! classify responses for an external reward, and train with rating-aware DPO.
//!
//! Two rules hold throughout:
//!
//! * the device is a runtime value parsed from configuration ([`DeviceSpec`]); no code here
//!   names a backend type, and GPU backends exist only behind the `cuda`/`wgpu` features;
//! * rewards and losses are computed from summed sequence log-probabilities (Decision 4 and
//!   §8 of `docs/ALGORITHMS.md`), see [`losses`] and [`scoring`].

pub mod device;
pub mod error;
pub mod gguf;
pub mod int8;
pub mod job;
pub mod lm;
pub mod losses;
pub mod model;
pub mod reward;
pub mod rng;
pub mod sampling;
pub mod scoring;
pub mod stages;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use lm::LanguageModel;
