//! The model options shared by `sample`, `reward` and `score`.

use prefsmith_model::settings::ModelSettings;

/// Which model, on which device.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// A `.gguf` file, a Hugging Face directory (config.json + safetensors + tokenizer.json),
    /// `smollm2` (fetched by scripts/fetch-smollm2) or `tiny:SEED` (random test model).
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// cpu (default), cuda, cuda:N or wgpu (the GPU ones need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Upper bound on padded tokens per forward pass (memory vs. speed).
    #[arg(long, default_value_t = 4096)]
    max_batch_tokens: usize,
}

impl ModelArgs {
    /// The library's settings.
    pub fn settings(&self) -> ModelSettings {
        ModelSettings {
            model: self.model.clone(),
            device: self.device.clone(),
            max_batch_tokens: self.max_batch_tokens,
        }
    }
}
