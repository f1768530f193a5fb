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

#[cfg(test)]
mod tests {
    use burn::tensor::Device;
    use burn::tensor::activation::log_sigmoid;

    use super::*;
    use crate::gemm::supports;
    use crate::lm::LanguageModel;
    use crate::scoring::{PaddedBatch, PaddingSide, sum_per_row, token_logps};
    use crate::sequence::ScoreItem;

    /// The sigmoid DPO loss (β = 0.1) of two fixed pairs, with reference log-probs from the f32
    /// model, and the gradients of three weights: the tied embedding/head, an MLP projection
    /// and an attention projection.
    fn dpo_loss_and_gradients(precision: MatmulPrecision) -> (f32, Vec<Vec<f32>>) {
        let device = Device::flex().autodiff();
        let lm = LanguageModel::tiny(11, &device).unwrap();
        let policy = lm.model.clone().with_matmul_precision(precision);
        let text = |s: &str| s.bytes().map(u32::from).collect::<Vec<_>>();
        let pairs = [
            (
                "what is the capital of france?",
                "paris, on the seine.",
                "berlin, i think.",
            ),
            (
                "name a prime number above ten",
                "thirteen is prime.",
                "twelve, maybe?",
            ),
        ];
        let items: Vec<ScoreItem> = [1, 2]
            .iter()
            .flat_map(|&side| {
                pairs.iter().map(move |p| ScoreItem {
                    prompt: text(p.0),
                    response: text(if side == 1 { p.1 } else { p.2 }),
                })
            })
            .collect();
        let refs: Vec<&ScoreItem> = items.iter().collect();
        let batch = PaddedBatch::new(&refs, 0, PaddingSide::Right, &device);
        let logps = |model: &Llama| sum_per_row(token_logps(model, &batch), &batch.owner, 4);
        let reference = logps(&lm.model).detach();
        let ratios = logps(&policy) - reference;
        let (chosen, rejected) = (ratios.clone().narrow(0, 0, 2), ratios.narrow(0, 2, 2));
        let loss = log_sigmoid((chosen - rejected).mul_scalar(0.1))
            .neg()
            .mean();
        let value = loss.clone().into_scalar();
        let grads = loss.backward();
        let grad = |weight: &burn::module::Param<Tensor<2>>| -> Vec<f32> {
            weight
                .val()
                .grad(&grads)
                .expect("a tracked weight")
                .into_data()
                .try_to_vec()
                .unwrap()
        };
        let layer = &policy.layers[1];
        let gradients = vec![
            grad(&policy.embed_tokens.weight),
            grad(&layer.mlp.down_proj.weight),
            grad(&layer.self_attn.q_proj.weight),
        ];
        (value, gradients)
    }

    #[test]
    fn bf16_matmuls_move_the_dpo_loss_and_its_gradients_only_by_bf16_rounding() {
        if !supports(MatmulPrecision::Bf16) {
            eprintln!("skipped: no avx512bf16 on this CPU (the precision is refused there)");
            return;
        }
        let (loss_f32, grads_f32) = dpo_loss_and_gradients(MatmulPrecision::F32);
        let (loss_bf16, grads_bf16) = dpo_loss_and_gradients(MatmulPrecision::Bf16);
        // f32 against itself through the kernel: the policy equals the reference, ln 2 exactly
        // up to f32 rounding.
        assert!(
            (loss_f32 - std::f32::consts::LN_2).abs() < 1e-6,
            "{loss_f32}"
        );
        assert!(
            (loss_bf16 - loss_f32).abs() < 5e-4,
            "{loss_bf16} vs {loss_f32}"
        );
        for (g16, g32) in grads_bf16.iter().zip(&grads_f32) {
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let diff: Vec<f32> = g16.iter().zip(g32).map(|(a, b)| a - b).collect();
            let relative = norm(&diff) / norm(g32);
            assert!(norm(g32) > 0.0);
            assert!(relative < 1e-2, "relative gradient difference {relative}");
            eprintln!("loss {loss_bf16} vs {loss_f32}, gradient difference {relative:.2e}");
        }
    }
}
