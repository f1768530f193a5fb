//! prefsmith's trainer (burn): the device choice and the DPO reward arithmetic that the
//! training loop builds on. The model, tokenizer, scoring, sampling and the training loop
//! arrive with the trainer issues; this crate already fixes two rules they follow:
//!
//! * the device is a runtime value parsed from configuration ([`DeviceSpec`]); no code here
//!   names a backend type, and GPU backends exist only behind the `cuda`/`wgpu` features;
//! * rewards and losses are computed from summed sequence log-probabilities (Decision 4 and
//!   §8 of `docs/ALGORITHMS.md`), see [`losses`].

pub mod device;
pub mod losses;

pub use device::DeviceSpec;
