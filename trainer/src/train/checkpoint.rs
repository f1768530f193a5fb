//! Checkpoints that resume exactly: `checkpoints/step-00000010/` holds the model
//! (`model.safetensors` in Hugging Face names, `config.json`), the optimizer
//! (`optimizer.safetensors`: AdamW's moments by parameter path) and `trainer_state.json` (the
//! step, the schedule's length, the data cursor — stage, epoch, position and the epoch's order
//! — the shuffling RNG's state, and the hashes of the config and the data it was made with).
//!
//! A checkpoint is written into `.step-….partial/` and renamed into place, so a directory named
//! `step-…` is always complete; a job killed while writing leaves only a `.partial` directory,
//! which the next write replaces and `--resume` ignores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prefsmith_model::llama::Llama;
use prefsmith_model::weight_set::WeightSet;
use prefsmith_model::weights::hf_config_json;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::optim::{AdamW, OptimSettings};

/// Where training stands after an optimizer step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub global_step: usize,
    /// Optimizer steps the schedule spans.
    pub total_steps: usize,
    /// Index of the training phase (MixDPO: 0 = dpo, 1 = sft); `stage` in checkpoints.
    pub stage: usize,
    /// Epoch within the phase.
    pub epoch: usize,
    /// Pairs of `order` already consumed.
    pub position: usize,
    /// The current epoch's pair order (indices into the training pairs); empty between epochs.
    pub order: Vec<usize>,
    /// The shuffling generator's state.
    pub rng_state: [u64; 4],
    /// [`crate::train::config::TrainConfig::trajectory_hash`] of the run.
    pub config_hash: String,
    /// The data hash of the run.
    pub data_hash: String,
}

const STATE_FILE: &str = "trainer_state.json";

/// The directory name of the checkpoint after `step`.
pub fn name(step: usize) -> String {
    format!("step-{step:08}")
}

/// Writes a checkpoint under `dir` and keeps only the newest `keep`.
pub fn save(
    dir: &Path,
    state: &TrainerState,
    model: &Llama,
    optimizer: &AdamW,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let final_dir = dir.join(name(state.global_step));
    let partial = dir.join(format!(".{}.partial", name(state.global_step)));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(Error::io(&partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(Error::io(&partial))?;
    model
        .to_weights()?
        .save_safetensors(&partial.join("model.safetensors"), None)?;
    let write = |file: &str, text: String| {
        let path = partial.join(file);
        std::fs::write(&path, text).map_err(Error::io(&path))
    };
    write(
        "config.json",
        serde_json::to_string_pretty(&hf_config_json(model.config())).unwrap_or_default(),
    )?;
    let (steps, tensors) = optimizer.export()?;
    let mut moments = WeightSet::default();
    for (name, values) in tensors {
        let len = values.len();
        moments.insert(&name, vec![len], values);
    }
    let metadata = [("optimizer_steps".to_string(), steps.to_string())].into();
    moments.save_safetensors(&partial.join("optimizer.safetensors"), Some(metadata))?;
    write(
        STATE_FILE,
        serde_json::to_string_pretty(state).unwrap_or_default(),
    )?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(Error::io(&final_dir))?;
    }
    std::fs::rename(&partial, &final_dir).map_err(Error::io(&final_dir))?;
    let all = list(dir)?;
    for (_, old) in all.iter().rev().skip(keep) {
        std::fs::remove_dir_all(old).map_err(Error::io(old))?;
    }
    Ok(final_dir)
}

/// Complete checkpoints under `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let path = entry.map_err(Error::io(dir))?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(step) = step
            && path.join(STATE_FILE).is_file()
        {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// A checkpoint read back.
pub struct Loaded {
    /// The cursor and hashes.
    pub state: TrainerState,
    /// The model's weights (Hugging Face names).
    pub weights: WeightSet,
    /// The optimizer.
    pub optimizer: AdamW,
}

/// Reads the checkpoint in `path`.
pub fn load(path: &Path, settings: OptimSettings, device: &burn::tensor::Device) -> Result<Loaded> {
    let state_path = path.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(Error::io(&state_path))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| {
        Error::Input(format!(
            "{}: not a trainer state: {e}",
            state_path.display()
        ))
    })?;
    let weights = WeightSet::load_safetensors(&path.join("model.safetensors"))?;
    let optimizer_path = path.join("optimizer.safetensors");
    let (moments, metadata) = WeightSet::load_safetensors_with_metadata(&optimizer_path)?;
    let steps = metadata
        .get("optimizer_steps")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            Error::Input(format!(
                "{}: the optimizer step count is missing",
                optimizer_path.display()
            ))
        })?;
    let tensors: BTreeMap<String, Vec<f32>> = moments
        .into_tensors()
        .into_iter()
        .map(|(name, (_, values))| (name, values))
        .collect();
    let optimizer = AdamW::import(settings, steps, tensors, device)?;
    Ok(Loaded {
        state,
        weights,
        optimizer,
    })
}
