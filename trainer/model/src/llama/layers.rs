//! The building blocks of a decoder layer: RMSNorm, rotary embeddings, grouped-query
//! attention with its key/value cache, and the SwiGLU MLP.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::gemm::{self, MatmulPrecision};
use crate::llama::config::LlamaConfig;

/// RMSNorm: `x / sqrt(mean(x²) + eps) * weight`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// The per-channel gain.
    pub weight: Param<Tensor<1>>,
    #[module(skip)]
    pub(super) eps: f64,
}

impl RmsNorm {
    pub(super) fn forward(&self, x: Tensor<3>) -> Tensor<3> {
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
/// a broadcast batched product on the CPU backend), on prefsmith's CPU kernel where it runs.
fn linear(layer: &Linear, x: Tensor<3>, precision: MatmulPrecision) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let out = gemm::burn_ops::matmul(x.reshape([b * t, d]), layer.weight.val(), precision);
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
    pub(super) fn new(config: &LlamaConfig, device: &Device) -> Self {
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
    pub(super) layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
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
    pub(super) q_proj: Linear,
    pub(super) k_proj: Linear,
    pub(super) v_proj: Linear,
    pub(super) o_proj: Linear,
    #[module(skip)]
    pub(super) heads: usize,
    #[module(skip)]
    pub(super) kv_heads: usize,
    #[module(skip)]
    pub(super) head_dim: usize,
}

impl Attention {
    pub(super) fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        positions: &Positions,
        mask: &AttentionMask,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
        precision: MatmulPrecision,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let split =
            |y: Tensor<3>, heads: usize| y.reshape([b, t, heads, self.head_dim]).swap_dims(1, 2);
        let q = rope.apply(
            split(linear(&self.q_proj, x.clone(), precision), self.heads),
            positions,
        );
        let mut k = rope.apply(
            split(linear(&self.k_proj, x.clone(), precision), self.kv_heads),
            positions,
        );
        let mut v = split(linear(&self.v_proj, x, precision), self.kv_heads);
        let mut cached = 0;
        if let Some(slot) = cache {
            if let Some((old_k, old_v)) = slot.take() {
                cached = old_k.dims()[2];
                k = Tensor::cat(vec![old_k, k], 2);
                v = Tensor::cat(vec![old_v, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        if matches!(mask, AttentionMask::Causal)
            && let Some(out) = gemm::burn_ops::attention(&q, &k, &v, true, precision)
        {
            return linear(&self.o_proj, out, precision);
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
        linear(&self.o_proj, out, precision)
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
    pub(super) gate_proj: Linear,
    pub(super) up_proj: Linear,
    pub(super) down_proj: Linear,
}

impl Mlp {
    pub(super) fn forward(&self, x: Tensor<3>, precision: MatmulPrecision) -> Tensor<3> {
        let gate = silu(linear(&self.gate_proj, x.clone(), precision));
        linear(
            &self.down_proj,
            gate * linear(&self.up_proj, x, precision),
            precision,
        )
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub(super) input_layernorm: RmsNorm,
    pub(super) self_attn: Attention,
    pub(super) post_attention_layernorm: RmsNorm,
    pub(super) mlp: Mlp,
}
