//! Between a [`Llama`] and a [`WeightSet`] in Hugging Face names and layouts: building the
//! model from checkpoint tensors (or seeded random ones) and reading its tensors back for
//! saving.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};
use crate::gemm::MatmulPrecision;
use crate::llama::Llama;
use crate::llama::config::LlamaConfig;
use crate::llama::layers::{Attention, DecoderLayer, Mlp, RmsNorm, Rope};
use crate::rng::Rng;
use crate::weight_set::WeightSet;

impl LlamaConfig {
    /// Builds a model with random weights (normal, std 0.02; norms at 1), seeded.
    pub fn init_random(&self, seed: u64, device: &Device) -> Result<Llama> {
        self.validate()?;
        let mut rng = Rng::new(seed);
        let mut normal = |rows: usize, cols: usize| -> Vec<f32> {
            (0..rows * cols)
                .map(|_| rng.normal() as f32 * 0.02)
                .collect()
        };
        let mut weights = WeightSet::default();
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

impl Llama {
    /// Builds the model from a weight set in Hugging Face names and layouts, taking the
    /// tensors out of it; a missing tensor or a wrong shape is an error naming it.
    pub fn from_weights(
        config: &LlamaConfig,
        weights: &mut WeightSet,
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
            matmul: MatmulPrecision::F32,
        })
    }

    /// The weights under their Hugging Face names and PyTorch layouts (`[out, in]` for linear
    /// layers), the inverse of [`Llama::from_weights`]: saving them and loading them back gives
    /// the same model bit for bit.
    pub fn to_weights(&self) -> Result<WeightSet> {
        let mut set = WeightSet::default();
        let host = |t: Tensor<2>| -> Result<(Vec<usize>, Vec<f32>)> {
            let dims = t.dims();
            let values = t
                .into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| Error::Config(format!("reading weights back: {e:?}")))?;
            Ok((dims.to_vec(), values))
        };
        let linear = |set: &mut WeightSet, name: &str, layer: &Linear| {
            // burn keeps [in, out]; Hugging Face expects [out, in].
            let (dims, values) = host(layer.weight.val().transpose())?;
            set.insert(&format!("{name}.weight"), dims, values);
            if let Some(bias) = &layer.bias {
                let (dims, values) = host(bias.val().unsqueeze::<2>())?;
                set.insert(&format!("{name}.bias"), vec![dims[1]], values);
            }
            Ok::<(), Error>(())
        };
        let vector = |set: &mut WeightSet, name: &str, v: &Param<Tensor<1>>| {
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
}
