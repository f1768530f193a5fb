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

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::silu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
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

    /// Builds a model with random weights (normal, std 0.02; norms at 1), seeded.
    pub fn init_random(&self, seed: u64, device: &Device) -> Result<Llama> {
        self.validate()?;
        let mut rng = crate::rng::Rng::new(seed);
        let mut normal = |rows: usize, cols: usize| -> Vec<f32> {
            (0..rows * cols)
                .map(|_| rng.normal() as f32 * 0.02)
                .collect()
        };
        let mut weights = crate::weights::WeightSet::default();
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let (q, kv) = (
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        );
        weights.insert(
            "model.embed_tokens.weight",
            vec![self.vocab_size, h],
            normal(self.vocab_size, h),
        );
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            for (name, out, inp) in [
                ("self_attn.q_proj", q, h),
                ("self_attn.k_proj", kv, h),
                ("self_attn.v_proj", kv, h),
                ("self_attn.o_proj", h, q),
                ("mlp.gate_proj", i, h),
                ("mlp.up_proj", i, h),
                ("mlp.down_proj", h, i),
            ] {
                weights.insert(
                    &format!("{p}.{name}.weight"),
                    vec![out, inp],
                    normal(out, inp),
                );
            }
            if self.attention_bias {
                for (name, out) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                    weights.insert(
                        &format!("{p}.self_attn.{name}.bias"),
                        vec![out],
                        vec![0.0; out],
                    );
                }
            }
            weights.insert(
                &format!("{p}.input_layernorm.weight"),
                vec![h],
                vec![1.0; h],
            );
            weights.insert(
                &format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                vec![1.0; h],
            );
        }
        weights.insert("model.norm.weight", vec![h], vec![1.0; h]);
        if !self.tie_word_embeddings {
            weights.insert(
                "lm_head.weight",
                vec![self.vocab_size, h],
                normal(self.vocab_size, h),
            );
        }
        if let Some(labels) = self.num_labels {
            weights.insert("score.weight", vec![labels, h], normal(labels, h));
        }
        Llama::from_weights(self, &mut weights, device)
    }
}

/// RMSNorm: `x / sqrt(mean(x²) + eps) * weight`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// The per-channel gain.
    pub weight: Param<Tensor<1>>,
    #[module(skip)]
    eps: f64,
}

impl RmsNorm {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let rms = x
            .clone()
            .powi_scalar(2)
            .mean_dim(2)
            .add_scalar(self.eps)
            .sqrt()
            .recip();
        x * rms * self.weight.val().unsqueeze::<3>()
    }
}

/// `x · W (+ b)` for `x` of shape `[batch, time, in]`, as one 2-D matrix product (faster than
/// a broadcast batched product on the CPU backend).
fn linear(layer: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let out = x.reshape([b * t, d]).matmul(layer.weight.val());
    let out = match &layer.bias {
        Some(bias) => out + bias.val().unsqueeze::<2>(),
        None => out,
    };
    let width = out.dims()[1];
    out.reshape([b, t, width])
}

/// `cos` and `sin` of the rotary angle `position · θ^(−2i / head_dim)`, computed in f64, as
/// `[context_limit, head_dim / 2]` tables (shared by this model and the int8 engine).
pub(crate) fn rotary_tables(config: &LlamaConfig) -> (Vec<f32>, Vec<f32>) {
    let (dim, max) = (config.head_dim, config.context_limit());
    let half = dim / 2;
    let mut cos = Vec::with_capacity(max * half);
    let mut sin = Vec::with_capacity(max * half);
    for pos in 0..max {
        for i in 0..half {
            let angle = pos as f64 * config.rope_theta.powf(-(2.0 * i as f64) / dim as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// Rotary tables for positions `0..max_position`: `cos` and `sin` of shape `[positions,
/// head_dim]`, each frequency repeated for both halves of a head (`rotate_half` layout).
#[derive(Module, Debug)]
pub struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    fn new(config: &LlamaConfig, device: &Device) -> Self {
        let (dim, max) = (config.head_dim, config.context_limit());
        let (half_cos, half_sin) = rotary_tables(config);
        let mut cos = Vec::with_capacity(max * dim);
        let mut sin = Vec::with_capacity(max * dim);
        for (c, s) in half_cos
            .chunks_exact(dim / 2)
            .zip(half_sin.chunks_exact(dim / 2))
        {
            for _ in 0..2 {
                cos.extend_from_slice(c);
                sin.extend_from_slice(s);
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [max, dim]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max, dim]), device),
        }
    }

    /// Rotates `x` of shape `[batch, heads, time, head_dim]` at the given positions.
    fn apply(&self, x: Tensor<4>, positions: &Positions) -> Tensor<4> {
        let [b, _, t, d] = x.dims();
        let (cos, sin) = match positions {
            Positions::Contiguous(start) => (
                self.cos.clone().narrow(0, *start, t).reshape([1, 1, t, d]),
                self.sin.clone().narrow(0, *start, t).reshape([1, 1, t, d]),
            ),
            Positions::PerRow(ids) => {
                let flat = ids.clone().reshape([b * t]);
                (
                    self.cos
                        .clone()
                        .select(0, flat.clone())
                        .reshape([b, 1, t, d]),
                    self.sin.clone().select(0, flat).reshape([b, 1, t, d]),
                )
            }
        };
        let half = d / 2;
        let first = x.clone().narrow(3, 0, half);
        let second = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        x * cos + rotated * sin
    }
}

/// Which positions the tokens of a forward pass sit at.
#[derive(Debug, Clone)]
pub enum Positions {
    /// Every row starts at the same position (no padding in front, or a cache offset).
    Contiguous(usize),
    /// Per-row positions `[batch, time]` (left padding).
    PerRow(Box<Tensor<2, Int>>),
}

/// What each query may attend to.
#[derive(Debug, Clone)]
pub enum AttentionMask {
    /// Causal within the new tokens, everything in the cache (no padding).
    Causal,
    /// An explicit mask `[batch, 1, query, key]`, `true` where attention is forbidden.
    Explicit(Box<Tensor<4, Bool>>),
}

/// Keys and values of the positions already processed, per layer, for generation.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    /// How many positions the cache holds.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dims()[2])
    }

    /// True when nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the given rows, in that order: repeats copy a row (`[0; n]` gives one prompt's
    /// cache to `n` samples), and finished sequences leave the batch.
    pub fn keep_rows(&mut self, rows: &Tensor<1, Int>) {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.clone().select(0, rows.clone());
            *v = v.clone().select(0, rows.clone());
        }
    }
}

/// Grouped-query self-attention with rotary embeddings.
#[derive(Module, Debug)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    kv_heads: usize,
    #[module(skip)]
    head_dim: usize,
}

impl Attention {
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        positions: &Positions,
        mask: &AttentionMask,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let split =
            |y: Tensor<3>, heads: usize| y.reshape([b, t, heads, self.head_dim]).swap_dims(1, 2);
        let q = rope.apply(
            split(linear(&self.q_proj, x.clone()), self.heads),
            positions,
        );
        let mut k = rope.apply(
            split(linear(&self.k_proj, x.clone()), self.kv_heads),
            positions,
        );
        let mut v = split(linear(&self.v_proj, x), self.kv_heads);
        let mut cached = 0;
        if let Some(slot) = cache {
            if let Some((old_k, old_v)) = slot.take() {
                cached = old_k.dims()[2];
                k = Tensor::cat(vec![old_k, k], 2);
                v = Tensor::cat(vec![old_v, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let keys = k.dims()[2];
        let group = self.heads / self.kv_heads;
        let widen = |y: Tensor<4>| {
            if group == 1 {
                return y;
            }
            y.unsqueeze_dim::<5>(2)
                .expand([b, self.kv_heads, group, keys, self.head_dim])
                .reshape([b, self.heads, keys, self.head_dim])
        };
        let (k, v) = (widen(k), widen(v));
        let (mask, is_causal) = match mask {
            // With a cache, new queries see all cached keys; a single new token needs no mask.
            AttentionMask::Causal if cached == 0 => (None, true),
            AttentionMask::Causal if t == 1 => (None, false),
            AttentionMask::Causal => (Some(causal_mask(1, t, cached, &q.device())), false),
            AttentionMask::Explicit(m) => (Some((**m).clone()), false),
        };
        let mask = mask.map(|m| {
            let [mb, _, mq, mk] = m.dims();
            m.expand([mb, self.heads, mq, mk])
        });
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal,
        };
        let out = attention(q, k, v, mask, None, options);
        let out = out
            .swap_dims(1, 2)
            .reshape([b, t, self.heads * self.head_dim]);
        linear(&self.o_proj, out)
    }
}

/// `[rows, 1, t, cached + t]`, `true` where query `i` (at position `cached + i`) would see a
/// later key.
fn causal_mask(rows: usize, t: usize, cached: usize, device: &Device) -> Tensor<4, Bool> {
    let keys = cached + t;
    let data: Vec<bool> = (0..t)
        .flat_map(|i| (0..keys).map(move |j| j > cached + i))
        .collect();
    Tensor::<4, Bool>::from_data(TensorData::new(data, [1, 1, t, keys]), device)
        .expand([rows, 1, t, keys])
}

/// The SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(linear(&self.gate_proj, x.clone()));
        linear(&self.down_proj, gate * linear(&self.up_proj, x))
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

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
}

impl Llama {
    /// Builds the model from a weight set in Hugging Face names and layouts, taking the
    /// tensors out of it; a missing tensor or a wrong shape is an error naming it.
    pub fn from_weights(
        config: &LlamaConfig,
        weights: &mut crate::weights::WeightSet,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let q = config.num_attention_heads * config.head_dim;
        let kv = config.num_key_value_heads * config.head_dim;
        let mut linear = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
            let weight = weights.linear(&format!("{name}.weight"), out, inp, device)?;
            let bias = if bias {
                Some(Param::from_tensor(weights.vector(
                    &format!("{name}.bias"),
                    out,
                    device,
                )?))
            } else {
                None
            };
            Ok(Linear {
                weight: Param::from_tensor(weight),
                bias,
            })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let bias = config.attention_bias;
            let self_attn = Attention {
                q_proj: linear(&format!("{p}.self_attn.q_proj"), q, h, bias)?,
                k_proj: linear(&format!("{p}.self_attn.k_proj"), kv, h, bias)?,
                v_proj: linear(&format!("{p}.self_attn.v_proj"), kv, h, bias)?,
                o_proj: linear(&format!("{p}.self_attn.o_proj"), h, q, false)?,
                heads: config.num_attention_heads,
                kv_heads: config.num_key_value_heads,
                head_dim: config.head_dim,
            };
            let mlp = Mlp {
                gate_proj: linear(&format!("{p}.mlp.gate_proj"), i, h, false)?,
                up_proj: linear(&format!("{p}.mlp.up_proj"), i, h, false)?,
                down_proj: linear(&format!("{p}.mlp.down_proj"), h, i, false)?,
            };
            layers.push((p, self_attn, mlp));
        }
        let lm_head = if config.tie_word_embeddings || config.num_labels.is_some() {
            None
        } else {
            Some(linear("lm_head", config.vocab_size, h, false)?)
        };
        let score = match config.num_labels {
            Some(labels) => Some(linear("score", labels, h, false)?),
            None => None,
        };
        let mut norm = |name: &str| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: Param::from_tensor(weights.vector(name, h, device)?),
                eps: config.rms_norm_eps,
            })
        };
        let layers = layers
            .into_iter()
            .map(|(p, self_attn, mlp)| {
                Ok(DecoderLayer {
                    input_layernorm: norm(&format!("{p}.input_layernorm.weight"))?,
                    self_attn,
                    post_attention_layernorm: norm(&format!(
                        "{p}.post_attention_layernorm.weight"
                    ))?,
                    mlp,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = norm("model.norm.weight")?;
        let embedding =
            weights.matrix("model.embed_tokens.weight", config.vocab_size, h, device)?;
        Ok(Self {
            embed_tokens: Embedding {
                weight: Param::from_tensor(embedding),
            },
            layers,
            norm: final_norm,
            lm_head,
            score,
            rope: Rope::new(config, device),
            inference_head: None,
            config: config.clone(),
        })
    }

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

    /// The weights under their Hugging Face names and PyTorch layouts (`[out, in]` for linear
    /// layers), the inverse of [`Llama::from_weights`]: saving them and loading them back gives
    /// the same model bit for bit.
    pub fn to_weights(&self) -> Result<crate::weights::WeightSet> {
        let mut set = crate::weights::WeightSet::default();
        let host = |t: Tensor<2>| -> Result<(Vec<usize>, Vec<f32>)> {
            let dims = t.dims();
            let values = t
                .into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| Error::Config(format!("reading weights back: {e:?}")))?;
            Ok((dims.to_vec(), values))
        };
        let linear = |set: &mut crate::weights::WeightSet, name: &str, layer: &Linear| {
            // burn keeps [in, out]; Hugging Face expects [out, in].
            let (dims, values) = host(layer.weight.val().transpose())?;
            set.insert(&format!("{name}.weight"), dims, values);
            if let Some(bias) = &layer.bias {
                let (dims, values) = host(bias.val().unsqueeze::<2>())?;
                set.insert(&format!("{name}.bias"), vec![dims[1]], values);
            }
            Ok::<(), Error>(())
        };
        let vector = |set: &mut crate::weights::WeightSet, name: &str, v: &Param<Tensor<1>>| {
            let (dims, values) = host(v.val().unsqueeze::<2>())?;
            set.insert(name, vec![dims[1]], values);
            Ok::<(), Error>(())
        };
        let (dims, values) = host(self.embed_tokens.weight.val())?;
        set.insert("model.embed_tokens.weight", dims, values);
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let a = &layer.self_attn;
            linear(&mut set, &format!("{p}.self_attn.q_proj"), &a.q_proj)?;
            linear(&mut set, &format!("{p}.self_attn.k_proj"), &a.k_proj)?;
            linear(&mut set, &format!("{p}.self_attn.v_proj"), &a.v_proj)?;
            linear(&mut set, &format!("{p}.self_attn.o_proj"), &a.o_proj)?;
            linear(
                &mut set,
                &format!("{p}.mlp.gate_proj"),
                &layer.mlp.gate_proj,
            )?;
            linear(&mut set, &format!("{p}.mlp.up_proj"), &layer.mlp.up_proj)?;
            linear(
                &mut set,
                &format!("{p}.mlp.down_proj"),
                &layer.mlp.down_proj,
            )?;
            vector(
                &mut set,
                &format!("{p}.input_layernorm.weight"),
                &layer.input_layernorm.weight,
            )?;
            vector(
                &mut set,
                &format!("{p}.post_attention_layernorm.weight"),
                &layer.post_attention_layernorm.weight,
            )?;
        }
        vector(&mut set, "model.norm.weight", &self.norm.weight)?;
        if let Some(head) = &self.lm_head {
            linear(&mut set, "lm_head", head)?;
        }
        if let Some(score) = &self.score {
            linear(&mut set, "score", score)?;
        }
        Ok(set)
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
            );
            x = x + attended;
            x = x.clone() + layer.mlp.forward(layer.post_attention_layernorm.forward(x));
        }
        self.norm.forward(x)
    }

    /// Next-token logits `[rows, vocab]` for hidden states `[rows, hidden]`.
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        match (&self.lm_head, &self.inference_head) {
            (Some(head), _) => hidden.matmul(head.weight.val()),
            (None, Some(transposed)) => hidden.matmul(transposed.clone()),
            (None, None) => hidden.matmul(self.embed_tokens.weight.val().transpose()),
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
