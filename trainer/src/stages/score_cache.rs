//! The cache of sequence scores, keyed by (model hash, data hash): the data hash covers every
//! token sequence scored, so scoring the same sequences with the same model again, in the
//! `score` stage or in training, reads the cache instead of running the model.

use std::path::{Path, PathBuf};

use prefsmith_model::LanguageModel;
use prefsmith_model::pretrained::models_dir;
use prefsmith_model::scoring::{Precision, SequenceScore};
use prefsmith_model::sequence::ScoreItem;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The directory of cached scores: beside the models directory.
pub fn cache_dir() -> PathBuf {
    models_dir().with_file_name("scores")
}

/// The cache file for scoring `items` with `lm` at `precision`.
pub fn cache_file(lm: &LanguageModel, items: &[ScoreItem], precision: Precision) -> PathBuf {
    let mut hasher = Sha256::new();
    hasher.update(lm.hash.as_bytes());
    // f32 keys stay as they were before int8 existed, so earlier caches remain valid.
    if precision != Precision::F32 {
        hasher.update(format!("precision={precision:?}").as_bytes());
    }
    for item in items {
        hasher.update((item.prompt.len() as u64).to_le_bytes());
        hasher.update((item.response.len() as u64).to_le_bytes());
        for t in item.prompt.iter().chain(&item.response) {
            hasher.update(t.to_le_bytes());
        }
    }
    let key: String = hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    cache_dir().join(format!("{key}.json"))
}

/// The scores cached in `path` for `n` sequences; `None` when there is no usable entry.
pub fn read_cache(path: &Path, n: usize) -> Option<Vec<SequenceScore>> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    // The values are read from their bit patterns: JSON's decimal form would not always parse
    // back to the same f64, and a cache hit must give exactly what a fresh run gives.
    let bits = value["logp_bits"].as_array()?;
    let tokens = value["tokens"].as_array()?;
    if bits.len() != n || tokens.len() != n {
        return None;
    }
    bits.iter()
        .zip(tokens)
        .map(|(b, t)| {
            Some(SequenceScore {
                logp: f64::from_bits(b.as_u64()?),
                tokens: t.as_u64()? as usize,
            })
        })
        .collect()
}

/// Caches `scores` in `path`.
pub fn write_cache(path: &Path, scores: &[SequenceScore]) -> Result<()> {
    let dir = path.parent().expect("cache files live in a directory");
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let body = json!({
        "logps": scores.iter().map(|s| s.logp).collect::<Vec<_>>(),
        "logp_bits": scores.iter().map(|s| s.logp.to_bits()).collect::<Vec<_>>(),
        "tokens": scores.iter().map(|s| s.tokens).collect::<Vec<_>>(),
    });
    // Written under a name of its own and renamed, so neither a crash nor a concurrent writer
    // of the same entry leaves a partial one.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.{}-{unique}.tmp", std::process::id()));
    std::fs::write(&tmp, body.to_string()).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}
