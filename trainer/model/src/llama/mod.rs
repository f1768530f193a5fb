//! The llama-family causal language model: token embedding, `L` decoder layers (RMSNorm →
//! grouped-query attention with rotary position embeddings → residual; RMSNorm → SwiGLU MLP →
//! residual), a final RMSNorm and the language-model head (tied to the embedding or not).
//! Optional q/k/v biases cover Qwen2-style checkpoints; a sequence-classification head
//! (`score`, Hugging Face's `LlamaForSequenceClassification`) covers reward models.
//!
//! Conventions follow Hugging Face's `modeling_llama.py` so checkpoints load without
//! re-arranging: linear weights are stored `[in, out]` (burn's layout, the transpose of
//! PyTorch's), rotary embeddings rotate the two halves of each head (`rotate_half`), and GGUF
//! files, whose q/k rows llama.cpp interleaves, are un-permuted when loaded ([`crate::weights`]).
//!
//! The forward pass takes a [`KvCache`] for generation: keys and values of earlier positions
//! are kept per layer, so each new token costs one row of attention instead of a full pass.

mod config;
mod convert;
mod layers;

use burn::module::Module;
use burn::nn::{Embedding, Linear};
use burn::tensor::{Device, Int, Tensor};

use crate::error::{Error, Result};
use crate::gemm::MatmulPrecision;
use crate::gemm::burn_ops::matmul;
pub use crate::llama::config::{LlamaConfig, MAX_TABLE_POSITIONS};
pub(crate) use crate::llama::layers::rotary_tables;
pub use crate::llama::layers::{
    Attention, AttentionMask, DecoderLayer, KvCache, Mlp, Positions, RmsNorm, Rope,
};

/// The whole model.
#[derive(Module, Debug)]
pub struct Llama {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
    score: Option<Linear>,
    rope: Rope,
    /// For inference with tied embeddings: the embedding transposed once into a contiguous
    /// `[hidden, vocab]` matrix, so the head does not transpose 28 M values per call. Left
    /// empty for training, where the head must stay tied to the trained embedding.
    inference_head: Option<Tensor<2>>,
    #[module(skip)]
    config: LlamaConfig,
    /// The arithmetic of the linear layers' and the head's products on the CPU.
    #[module(skip)]
    matmul: MatmulPrecision,
}

impl Llama {
    /// Prepares a model that will only run inference: with tied embeddings, the head's
    /// transposed matrix is materialised once (the embedding stays as it is).
    pub fn for_inference(mut self) -> Self {
        if self.lm_head.is_none() && self.score.is_none() {
            let weight = self.embed_tokens.weight.val();
            let device = weight.device();
            let transposed = weight.transpose().into_data();
            self.inference_head = Some(Tensor::from_data(transposed, &device));
        }
        self
    }

    /// The model with its linear layers' CPU products in `precision` ([`crate::gemm`]).
    pub fn with_matmul_precision(mut self, precision: MatmulPrecision) -> Self {
        self.matmul = precision;
        self
    }

    /// The arithmetic of the linear layers' CPU products.
    pub fn matmul_precision(&self) -> MatmulPrecision {
        self.matmul
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.embed_tokens.weight.val().device()
    }

    /// Final-norm hidden states `[batch, time, hidden]` of `ids` `[batch, time]`.
    pub fn hidden(
        &self,
        ids: Tensor<2, Int>,
        positions: &Positions,
        mask: &AttentionMask,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let mut x = self.embed_tokens.forward(ids);
        if let Some(cache) = cache.as_deref_mut()
            && cache.layers.len() != self.layers.len()
        {
            cache.layers = (0..self.layers.len()).map(|_| None).collect();
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[l]);
            let attended = layer.self_attn.forward(
                layer.input_layernorm.forward(x.clone()),
                &self.rope,
                positions,
                mask,
                slot,
                self.matmul,
            );
            x = x + attended;
            x = x.clone()
                + layer
                    .mlp
                    .forward(layer.post_attention_layernorm.forward(x), self.matmul);
        }
        self.norm.forward(x)
    }

    /// Next-token logits `[rows, vocab]` for hidden states `[rows, hidden]`.
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        match (&self.lm_head, &self.inference_head) {
            (Some(head), _) => matmul(hidden, head.weight.val(), self.matmul),
            (None, Some(transposed)) => matmul(hidden, transposed.clone(), self.matmul),
            (None, None) => matmul(
                hidden,
                self.embed_tokens.weight.val().transpose(),
                self.matmul,
            ),
        }
    }

    /// The classification head's outputs `[rows, labels]` for hidden states `[rows, hidden]`;
    /// an error for a model without one.
    pub fn classify(&self, hidden: Tensor<2>) -> Result<Tensor<2>> {
        match &self.score {
            Some(head) => Ok(hidden.matmul(head.weight.val())),
            None => Err(Error::Config(
                "this model has no sequence-classification head (score.weight)".into(),
            )),
        }
    }
}
