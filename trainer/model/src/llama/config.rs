//! The architecture's hyper-parameters and the checks that they fit together.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The architecture's hyper-parameters, named as in Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary base frequency.
    pub rope_theta: f64,
    /// Longest sequence the model accepts (prompt plus response).
    pub max_position_embeddings: usize,
    /// Whether the language-model head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v projections have biases (Qwen2-style).
    pub attention_bias: bool,
    /// Outputs of the classification head, for sequence-classification (reward) models.
    pub num_labels: Option<usize>,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (generation stops at any of them).
    pub eos_token_ids: Vec<u32>,
    /// Padding token.
    pub pad_token_id: Option<u32>,
}

/// Rotary tables are built for at most this many positions; longer inputs are refused with an
/// error rather than run past the table (16k positions cost 16 MB for 128-wide heads).
pub const MAX_TABLE_POSITIONS: usize = 16_384;

impl LlamaConfig {
    /// The longest sequence this model accepts.
    pub fn context_limit(&self) -> usize {
        self.max_position_embeddings.min(MAX_TABLE_POSITIONS)
    }

    /// A tiny random-weight configuration for fast tests (vocabulary of `vocab_size`).
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 512,
            tie_word_embeddings: true,
            attention_bias: false,
            num_labels: None,
            bos_token_id: None,
            eos_token_ids: vec![],
            pad_token_id: None,
        }
    }

    /// Checks the shapes fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 {
            return bad("head counts must be positive".into());
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "{} query heads are not a multiple of {} key/value heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even for rotary embeddings",
                self.head_dim
            ));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size, hidden_size and num_hidden_layers must be positive".into());
        }
        Ok(())
    }
}
