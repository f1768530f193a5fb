//! prefsmith's model layer (burn): llama-family language models with real pretrained weights
//! (GGUF files and Hugging Face directories), their tokenizers and chat templates, and what the
//! model stages run on them: score sequence log-probs, sample responses, judge or classify
//! responses. An int8 CPU engine runs the same forward pass several times faster.
//!
//! This crate reads and writes no tables: the stages that do live in `prefsmith-trainer`.
//! The device is a runtime value parsed from configuration ([`DeviceSpec`]); no code here
//! names a backend type, and GPU backends exist only behind the `cuda`/`wgpu` features.

pub mod device;
pub mod error;
pub mod gemm;
pub mod gguf;
pub mod int8;
pub mod llama;
pub mod lm;
pub mod pretrained;
pub mod reward;
pub mod rng;
pub mod sampling;
pub mod scoring;
pub mod sequence;
pub mod settings;
pub mod tokenizer;
pub mod weight_set;
pub mod weights;

pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use lm::LanguageModel;
