//! Pair sides as the model sees them, shared by the `score` stage and training so that a
//! reference scored by `prefsmith score --max-length` is the one the trainer needs: the
//! conversation and response of each side of a pair row, and the one truncation rule that
//! cuts the tokenized sequences to a length budget.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use prefsmith_model::tokenizer::ChatMessage;
use prefsmith_pipeline::formats::{last_assistant, messages_at};
use prefsmith_pipeline::reader::string_at;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stages::{chat_message, prompt_messages};

/// Which end of an over-long prompt survives truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Truncation {
    /// Keep the first tokens.
    KeepStart,
    /// Keep the last tokens (the end of the conversation, next to the response). Default.
    #[default]
    KeepEnd,
}

/// The prompt and the response of a pair side. `side` is a string or a message list holding
/// the conversation (Hugging Face `ultrafeedback_binarized`) or only the reply (TRL).
pub fn pair_side(
    batch: &RecordBatch,
    side: &str,
    row: usize,
) -> Result<(Vec<ChatMessage>, String)> {
    let column = batch
        .column_by_name(side)
        .ok_or_else(|| Error::Input(format!("the pair table has no '{side}' column")))?;
    let prompt = batch
        .column_by_name("prompt")
        .ok_or_else(|| Error::Input("the pair table has no 'prompt' column".into()))?;
    let null = || Error::Input(format!("column '{side}', row {row}: null"));
    if matches!(
        column.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        let response = string_at(column, row).ok_or_else(null)?.to_string();
        return Ok((prompt_messages(prompt, "prompt", row)?, response));
    }
    let messages = messages_at(column, side, row)?.ok_or_else(null)?;
    let response = last_assistant(&messages)
        .ok_or_else(|| Error::Input(format!("column '{side}', row {row}: no assistant message")))?
        .to_string();
    let last = messages
        .iter()
        .rposition(|m| m.role == "assistant")
        .unwrap_or(0);
    let request = if last > 0 {
        messages[..last].iter().map(chat_message).collect()
    } else {
        prompt_messages(prompt, "prompt", row)?
    };
    Ok((request, response))
}

/// Cuts `prompt` to `max_prompt` tokens from the chosen end.
fn truncate_prompt(prompt: &mut Vec<u32>, max_prompt: Option<usize>, mode: Truncation) -> bool {
    let Some(limit) = max_prompt else {
        return false;
    };
    if prompt.len() <= limit {
        return false;
    }
    match mode {
        Truncation::KeepStart => prompt.truncate(limit),
        Truncation::KeepEnd => {
            prompt.drain(..prompt.len() - limit);
        }
    }
    true
}

/// What [`truncate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Everything fits.
    None,
    /// The prompt or a response was shortened.
    Truncated,
    /// The prompt alone fills `max_length`: the row cannot be used.
    PromptTooLong,
}

/// The one truncation rule, shared by the trainer and by `prefsmith score --max-length` (so
/// that reference log-probs precomputed by `score` match the sequences the trainer sees):
/// the prompt is cut to `max_prompt` tokens keeping the end `mode` names; if it then fills
/// `max_length` the row is unusable; otherwise each response is cut to what is left, keeping
/// its start.
pub fn truncate(
    prompt: &mut Vec<u32>,
    responses: &mut [&mut Vec<u32>],
    max_length: usize,
    max_prompt: Option<usize>,
    mode: Truncation,
) -> Cut {
    let mut cut = truncate_prompt(prompt, max_prompt, mode);
    if prompt.len() >= max_length {
        return Cut::PromptTooLong;
    }
    let room = max_length - prompt.len();
    for response in responses.iter_mut() {
        if response.len() > room {
            response.truncate(room);
            cut = true;
        }
    }
    if cut { Cut::Truncated } else { Cut::None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_keep_the_configured_end() {
        let mut p = vec![1, 2, 3, 4, 5];
        assert!(truncate_prompt(&mut p, Some(3), Truncation::KeepEnd));
        assert_eq!(p, vec![3, 4, 5]);
        let mut p = vec![1, 2, 3, 4, 5];
        assert!(truncate_prompt(&mut p, Some(3), Truncation::KeepStart));
        assert_eq!(p, vec![1, 2, 3]);
        let mut p = vec![1, 2];
        assert!(!truncate_prompt(&mut p, Some(3), Truncation::KeepEnd));
        assert!(!truncate_prompt(&mut p, None, Truncation::KeepEnd));
    }
}
