//! Int8 CPU inference for scoring: the same llama forward pass as [`crate::model::Llama`], with
//! every linear layer (and the language-model head) computed as an 8-bit integer product —
//! weights quantized once per output row and block of 64 inputs, activations per token and
//! block — the way llama.cpp runs quantized models on CPUs. Norms, rotary embeddings,
//! attention and the log-softmax stay in f32.
//!
//! This is an opt-in precision (`precision = "int8"` for `prefsmith score`), for when throughput
//! matters more than the last 0.01 nats: its log-probs differ from the f32 model's by the
//! rounding of activations to 8 bits, as llama.cpp's do (measured in BENCHMARKS.md and held by
//! a test). Policy and reference log-probs that are compared with each other should come from
//! the same precision.
//!
//! Sequences are packed one after another into one matrix of rows (no padding): the linear
//! layers see every token of a batch at once and attention runs per sequence, so a batch's
//! result is bit-identical to scoring each sequence alone.

pub mod kernel;
pub mod simd;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{Llama, LlamaConfig};
use crate::scoring::ScoreItem;
use kernel::PackedWeights;

/// One decoder layer, quantized.
#[derive(Debug)]
struct Layer {
    input_norm: Vec<f32>,
    /// q, k and v projections stacked: `[q + 2·kv, hidden]`.
    qkv: PackedWeights,
    qkv_bias: Option<Vec<f32>>,
    o: PackedWeights,
    post_norm: Vec<f32>,
    /// gate and up projections stacked: `[2·intermediate, hidden]`.
    gate_up: PackedWeights,
    down: PackedWeights,
}

/// A llama-family model prepared for int8 scoring on the CPU.
#[derive(Debug)]
pub struct Int8Llama {
    config: LlamaConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    head: PackedWeights,
    /// `cos` and `sin` of `position · θ_i`, `[positions, head_dim / 2]`.
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
}

impl Int8Llama {
    /// Quantizes `model`'s weights (read back from its device).
    pub fn from_model(model: &Llama) -> Result<Self> {
        let config = model.config().clone();
        let mut weights = model.to_weights()?;
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let q = config.num_attention_heads * config.head_dim;
        let kv = config.num_key_value_heads * config.head_dim;
        let mut take = |name: &str, shape: &[usize]| weights.take(name, shape);
        let embed = take("model.embed_tokens.weight", &[config.vocab_size, h])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut stacked = Vec::with_capacity((q + 2 * kv) * h);
            for (name, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                stacked.extend(take(&format!("{p}.self_attn.{name}.weight"), &[rows, h])?);
            }
            let qkv_bias = if config.attention_bias {
                let mut bias = Vec::with_capacity(q + 2 * kv);
                for (name, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                    bias.extend(take(&format!("{p}.self_attn.{name}.bias"), &[rows])?);
                }
                Some(bias)
            } else {
                None
            };
            let mut gate_up = take(&format!("{p}.mlp.gate_proj.weight"), &[i, h])?;
            gate_up.extend(take(&format!("{p}.mlp.up_proj.weight"), &[i, h])?);
            layers.push(Layer {
                input_norm: take(&format!("{p}.input_layernorm.weight"), &[h])?,
                qkv: PackedWeights::new(&stacked, q + 2 * kv, h),
                qkv_bias,
                o: PackedWeights::new(
                    &take(&format!("{p}.self_attn.o_proj.weight"), &[h, q])?,
                    h,
                    q,
                ),
                post_norm: take(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                gate_up: PackedWeights::new(&gate_up, 2 * i, h),
                down: PackedWeights::new(
                    &take(&format!("{p}.mlp.down_proj.weight"), &[h, i])?,
                    h,
                    i,
                ),
            });
        }
        let norm = take("model.norm.weight", &[h])?;
        let head = if config.tie_word_embeddings {
            PackedWeights::new(&embed, config.vocab_size, h)
        } else {
            PackedWeights::new(
                &take("lm_head.weight", &[config.vocab_size, h])?,
                config.vocab_size,
                h,
            )
        };
        let half = config.head_dim / 2;
        let positions = config.context_limit();
        let mut rope_cos = Vec::with_capacity(positions * half);
        let mut rope_sin = Vec::with_capacity(positions * half);
        for pos in 0..positions {
            for k in 0..half {
                // The same angles, in f64, as the f32 model's rotary table.
                let angle = pos as f64
                    * config
                        .rope_theta
                        .powf(-(2.0 * k as f64) / config.head_dim as f64);
                rope_cos.push(angle.cos() as f32);
                rope_sin.push(angle.sin() as f32);
            }
        }
        Ok(Self {
            config,
            embed,
            layers,
            norm,
            head,
            rope_cos,
            rope_sin,
        })
    }

    /// `log π(y_t | …)` of every response token of every item, item after item.
    pub fn response_token_logps(&self, items: &[&ScoreItem]) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let (h, d) = (c.hidden_size, c.head_dim);
        let mut starts = Vec::with_capacity(items.len() + 1);
        let mut ids = Vec::new();
        for item in items {
            if item.len() > c.context_limit() {
                return Err(Error::Input(format!(
                    "{} tokens, longer than the model's context of {}",
                    item.len(),
                    c.context_limit()
                )));
            }
            starts.push(ids.len());
            ids.extend(item.prompt.iter().chain(&item.response).copied());
        }
        starts.push(ids.len());
        let rows = ids.len();
        let mut x = Vec::with_capacity(rows * h);
        for &id in &ids {
            let id = id as usize;
            if id >= c.vocab_size {
                return Err(Error::Input(format!(
                    "token id {id} is outside the vocabulary of {}",
                    c.vocab_size
                )));
            }
            x.extend_from_slice(&self.embed[id * h..(id + 1) * h]);
        }
        let q_width = c.num_attention_heads * d;
        let kv_width = c.num_key_value_heads * d;
        let qkv_width = q_width + 2 * kv_width;
        let mut normed = vec![0.0f32; rows * h];
        let mut qkv = vec![0.0f32; rows * qkv_width];
        let mut attended = vec![0.0f32; rows * q_width];
        let mut projected = vec![0.0f32; rows * h];
        let mut gate_up = vec![0.0f32; rows * 2 * c.intermediate_size];
        let mut activated = vec![0.0f32; rows * c.intermediate_size];
        for layer in &self.layers {
            rms_norm(&x, &layer.input_norm, c.rms_norm_eps as f32, &mut normed);
            layer
                .qkv
                .matmul(&layer.qkv.quantize_input(&normed), &mut qkv);
            if let Some(bias) = &layer.qkv_bias {
                for row in qkv.chunks_exact_mut(qkv_width) {
                    row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
            }
            self.rotate(&mut qkv, &starts, qkv_width, q_width + kv_width);
            self.attention(&qkv, &starts, &mut attended);
            layer
                .o
                .matmul(&layer.o.quantize_input(&attended), &mut projected);
            x.iter_mut().zip(&projected).for_each(|(a, b)| *a += b);
            rms_norm(&x, &layer.post_norm, c.rms_norm_eps as f32, &mut normed);
            layer
                .gate_up
                .matmul(&layer.gate_up.quantize_input(&normed), &mut gate_up);
            simd::swiglu(&gate_up, c.intermediate_size, &mut activated);
            layer
                .down
                .matmul(&layer.down.quantize_input(&activated), &mut projected);
            x.iter_mut().zip(&projected).for_each(|(a, b)| *a += b);
        }
        // Only hidden states that predict a response token go through the head.
        let mut predicting = Vec::new();
        let mut targets = Vec::new();
        for (item, &start) in items.iter().zip(&starts) {
            for (k, &token) in item.response.iter().enumerate() {
                let p = start + item.prompt.len() + k - 1;
                predicting.extend_from_slice(&x[p * h..(p + 1) * h]);
                targets.push(token as usize);
            }
        }
        let scored = targets.len();
        let mut final_normed = vec![0.0f32; scored * h];
        rms_norm(
            &predicting,
            &self.norm,
            c.rms_norm_eps as f32,
            &mut final_normed,
        );
        let mut logps = Vec::with_capacity(scored);
        // The head in chunks of rows bounds the logits matrix (512 × 49152 floats is 100 MB).
        for (rows, targets) in final_normed.chunks(512 * h).zip(targets.chunks(512)) {
            let mut logits = vec![0.0f32; targets.len() * c.vocab_size];
            self.head
                .matmul(&self.head.quantize_input(rows), &mut logits);
            let chunk: Vec<f32> = logits
                .par_chunks_exact(c.vocab_size)
                .zip(targets)
                .map(|(row, &target)| row[target] - simd::log_sum_exp(row))
                .collect();
            logps.extend(chunk);
        }
        let mut out = Vec::with_capacity(items.len());
        let mut next = 0;
        for item in items {
            out.push(logps[next..next + item.response.len()].to_vec());
            next += item.response.len();
        }
        Ok(out)
    }

    /// Rotates the q and k heads (the first `width` values of each row) of every token by its
    /// position within its sequence (`rotate_half` layout).
    fn rotate(&self, qkv: &mut [f32], starts: &[usize], row_width: usize, width: usize) {
        let d = self.config.head_dim;
        let half = d / 2;
        for window in starts.windows(2) {
            for (pos, row) in (window[0]..window[1]).enumerate() {
                let cos = &self.rope_cos[pos * half..(pos + 1) * half];
                let sin = &self.rope_sin[pos * half..(pos + 1) * half];
                let row = &mut qkv[row * row_width..row * row_width + width];
                for head in row.chunks_exact_mut(d) {
                    let (first, second) = head.split_at_mut(half);
                    for k in 0..half {
                        let (a, b) = (first[k], second[k]);
                        first[k] = a * cos[k] + -b * sin[k];
                        second[k] = b * cos[k] + a * sin[k];
                    }
                }
            }
        }
    }

    /// Causal attention of every sequence and head; `qkv` rows hold `[q | k | v]`, `out` rows
    /// the heads' outputs side by side.
    fn attention(&self, qkv: &[f32], starts: &[usize], out: &mut [f32]) {
        let c = &self.config;
        let d = c.head_dim;
        let heads = c.num_attention_heads;
        let group = heads / c.num_key_value_heads;
        let q_width = heads * d;
        let kv_width = c.num_key_value_heads * d;
        let row_width = q_width + 2 * kv_width;
        let jobs: Vec<(usize, usize)> = starts
            .windows(2)
            .enumerate()
            .flat_map(|(s, _)| (0..heads).map(move |head| (s, head)))
            .collect();
        let results: Vec<Vec<f32>> = jobs
            .par_iter()
            .map(|&(s, head)| {
                let (start, end) = (starts[s], starts[s + 1]);
                let kv_head = head / group;
                let gather = |offset: usize| -> Vec<f32> {
                    (start..end)
                        .flat_map(|r| {
                            qkv[r * row_width + offset..r * row_width + offset + d]
                                .iter()
                                .copied()
                        })
                        .collect()
                };
                let q = gather(head * d);
                let k = gather(q_width + kv_head * d);
                let v = gather(q_width + kv_width + kv_head * d);
                simd::causal_attention_head(&q, &k, &v, d)
            })
            .collect();
        for (&(s, head), values) in jobs.iter().zip(&results) {
            for (t, row) in values.chunks_exact(d).enumerate() {
                let r = starts[s] + t;
                out[r * q_width + head * d..r * q_width + (head + 1) * d].copy_from_slice(row);
            }
        }
    }
}

/// `out = x / sqrt(mean(x²) + eps) · weight`, row by row.
fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    for (row, out_row) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, v), w) in out_row.iter_mut().zip(row).zip(weight) {
            *o = v * scale * w;
        }
    }
}
