//! Which model runs on which device: the `[model]` settings the model stages share.

use serde::{Deserialize, Serialize};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::lm::LanguageModel;
use crate::pretrained::resolve_model_spec;

/// Which model runs where, shared by the model stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelSettings {
    /// A `.gguf` file, a Hugging Face directory, `smollm2`, or `tiny:SEED`.
    pub model: String,
    /// `cpu` (default), `cuda`, `cuda:N` or `wgpu`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Upper bound on padded tokens per forward pass.
    #[serde(default = "default_batch_tokens")]
    pub max_batch_tokens: usize,
}

/// The device a model runs on unless configured (`cpu`).
pub fn default_device() -> String {
    "cpu".into()
}

/// The default token budget per forward pass.
pub fn default_batch_tokens() -> usize {
    4096
}

impl ModelSettings {
    /// The model path or spec after resolving the `smollm2` alias.
    pub fn resolved_model(&self) -> Result<String> {
        resolve_model_spec(&self.model)
    }

    /// Loads the model onto the configured device.
    pub fn load(&self) -> Result<LanguageModel> {
        let spec: DeviceSpec = self.device.parse().map_err(Error::Config)?;
        let device = spec.device().map_err(Error::Config)?;
        LanguageModel::load(&self.resolved_model()?, &device)
    }
}
