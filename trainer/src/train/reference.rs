//! Reference log-probs for the pairs the table carries none for: scored once with the
//! reference model (the policy's starting weights unless `model.reference` names another),
//! through the score cache, so a rerun or a resume does not recompute them.

use burn::tensor::Device;
use prefsmith_model::LanguageModel;
use prefsmith_model::scoring::{Precision, ScoreOptions, score_sequences};
use prefsmith_model::sequence::ScoreItem;
use tracing::info;

use crate::error::{Error, Result};
use crate::stages::score_cache::{cache_file, read_cache, write_cache};
use crate::train::config::TrainConfig;
use crate::train::data::TrainPair;

/// Fills in reference log-probs the table did not carry, with the reference model, once
/// (through the score cache, so a rerun or a resume does not recompute them).
pub(super) fn compute_reference(
    config: &TrainConfig,
    policy: &LanguageModel,
    pairs: &mut [&mut TrainPair],
    device: &Device,
) -> Result<()> {
    let missing: Vec<usize> = (0..pairs.len())
        .filter(|&i| pairs[i].ref_logps.is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let spec = config
        .model
        .reference
        .as_deref()
        .unwrap_or(&config.model.model);
    let resolved = config.model.settings(spec).resolved_model()?;
    let reference = LanguageModel::load(&resolved, device)?;
    if reference.tokenizer.vocab_size() != policy.tokenizer.vocab_size() {
        return Err(Error::Config(format!(
            "model.reference '{resolved}' has a vocabulary of {} tokens, the policy {}: the \
             log-ratios need one tokenizer",
            reference.tokenizer.vocab_size(),
            policy.tokenizer.vocab_size()
        )));
    }
    let mut items = Vec::with_capacity(missing.len() * 2);
    for &i in &missing {
        let p = &pairs[i];
        items.push(ScoreItem {
            prompt: p.prompt.clone(),
            response: p.chosen.clone(),
        });
        items.push(ScoreItem {
            prompt: p.prompt.clone(),
            response: p.rejected.clone(),
        });
    }
    let cache = cache_file(&reference, &items, Precision::F32);
    let scores = match read_cache(&cache, items.len()) {
        Some(scores) => {
            info!(cache = %cache.display(), "train: reference log-probs from the cache");
            scores
        }
        None => {
            let mut progress = prefsmith_pipeline::stages::Progress::new(
                "reference log-probs",
                items.len() as u64,
            );
            let options = ScoreOptions {
                max_batch_tokens: config.model.max_batch_tokens,
                ..Default::default()
            };
            let scores =
                score_sequences(&reference, &items, options, |n| progress.advance(n as u64))?;
            progress.finish();
            write_cache(&cache, &scores)?;
            scores
        }
    };
    for (k, &i) in missing.iter().enumerate() {
        let (c, r) = (scores[2 * k].logp, scores[2 * k + 1].logp);
        if !(c.is_finite() && r.is_finite()) {
            return Err(Error::Input(format!(
                "{}: row {} (prompt_id {}): the reference model gave a non-finite log-prob",
                config.data.pairs, pairs[i].row, pairs[i].prompt_id
            )));
        }
        pairs[i].ref_logps = Some((c, r));
    }
    Ok(())
}
