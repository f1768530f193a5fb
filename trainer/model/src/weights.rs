//! Checkpoints in: a GGUF file or a Hugging Face directory (`config.json` + `*.safetensors`)
//! read into a [`WeightSet`] and turned into a [`Llama`] by [`Llama::from_weights`].
//!
//! GGUF specifics handled here: tensor names (`blk.N.attn_q.weight` → HF names), and the row
//! permutation llama.cpp's converter applies to q/k of the `llama` architecture (it interleaves
//! the two rotary halves of each head; we undo it so one rotary convention serves both).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::llama::{Llama, LlamaConfig};
use crate::weight_set::WeightSet;

/// A Hugging Face `config.json` for `config` (`LlamaForCausalLM`, or `Qwen2ForCausalLM` when
/// the projections have biases), readable by [`hf_config`] and by `transformers`.
pub fn hf_config_json(config: &LlamaConfig) -> Json {
    let (model_type, architecture) = match (config.attention_bias, config.num_labels) {
        (true, None) => ("qwen2", "Qwen2ForCausalLM"),
        (true, Some(_)) => ("qwen2", "Qwen2ForSequenceClassification"),
        (false, None) => ("llama", "LlamaForCausalLM"),
        (false, Some(_)) => ("llama", "LlamaForSequenceClassification"),
    };
    let mut json = serde_json::json!({
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": config.attention_bias,
        "torch_dtype": "float32",
    });
    if let Some(labels) = config.num_labels {
        json["num_labels"] = labels.into();
    }
    if let Some(bos) = config.bos_token_id {
        json["bos_token_id"] = bos.into();
    }
    match config.eos_token_ids.as_slice() {
        [] => {}
        [one] => json["eos_token_id"] = (*one).into(),
        many => json["eos_token_id"] = many.to_vec().into(),
    }
    if let Some(pad) = config.pad_token_id {
        json["pad_token_id"] = pad.into();
    }
    json
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFormat {
    /// A single `.gguf` file.
    Gguf,
    /// A Hugging Face directory with `config.json` and safetensors.
    HuggingFace,
}

/// Decides the format of `path`, or says why it is not a model.
pub fn detect(path: &Path) -> Result<ModelFormat> {
    let bad = |message: &str| Error::Model {
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    if path.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(ModelFormat::HuggingFace);
        }
        return Err(bad(
            "a directory without config.json is not a Hugging Face checkpoint",
        ));
    }
    if path.is_file() {
        return Ok(ModelFormat::Gguf);
    }
    Err(bad("no such file or directory"))
}

/// Reads the configuration of a GGUF file (architecture `llama` or `qwen2`).
pub fn gguf_config(file: &GgufFile) -> Result<LlamaConfig> {
    let arch = file.require_str("general.architecture")?.to_string();
    if arch != "llama" && arch != "qwen2" {
        return Err(Error::Model {
            path: file.path().to_path_buf(),
            message: format!("architecture '{arch}' is not supported (llama-family: llama, qwen2)"),
        });
    }
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = file.require_u64(&key("embedding_length"))? as usize;
    let heads = file.require_u64(&key("attention.head_count"))? as usize;
    let kv_heads = file
        .metadata
        .get(&key("attention.head_count_kv"))
        .and_then(|v| v.as_u64())
        .map_or(heads, |v| v as usize);
    let head_dim = file
        .metadata
        .get(&key("attention.key_length"))
        .and_then(|v| v.as_u64())
        .map_or(hidden / heads.max(1), |v| v as usize);
    let vocab = match file
        .metadata
        .get(&key("vocab_size"))
        .and_then(|v| v.as_u64())
    {
        Some(v) => v as usize,
        None => file.string_array("tokenizer.ggml.tokens")?.len(),
    };
    let token = |k: &str| {
        file.metadata
            .get(&format!("tokenizer.ggml.{k}"))
            .and_then(|v| v.as_u64())
            .map(|v| v as u32)
    };
    let mut eos: Vec<u32> = [token("eos_token_id"), token("eot_token_id")]
        .into_iter()
        .flatten()
        .collect();
    eos.dedup();
    let float = |k: &str, default: f64| {
        file.metadata
            .get(&key(k))
            .and_then(|v| v.as_f64())
            .unwrap_or(default)
    };
    Ok(LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: file.require_u64(&key("feed_forward_length"))? as usize,
        num_hidden_layers: file.require_u64(&key("block_count"))? as usize,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: float("rope.freq_base", 10_000.0),
        max_position_embeddings: file.require_u64(&key("context_length"))? as usize,
        tie_word_embeddings: file.info("output.weight").is_none(),
        attention_bias: file.info("blk.0.attn_q.bias").is_some(),
        num_labels: None,
        bos_token_id: token("bos_token_id"),
        eos_token_ids: eos,
        pad_token_id: token("padding_token_id"),
    })
}

/// Every tensor of a GGUF file under its Hugging Face name, dequantized, q/k un-permuted.
pub fn gguf_weights(file: &GgufFile, config: &LlamaConfig) -> Result<WeightSet> {
    let interleaved_rope = file.require_str("general.architecture")? == "llama";
    let mut set = WeightSet::from_source(file.path());
    for info in &file.tensors {
        let Some(name) = hf_name(&info.name) else {
            continue;
        };
        let mut values = file.dequantize(&info.name)?;
        let mut shape = info.shape();
        if interleaved_rope {
            if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
                values = unpermute_rows(&values, config.num_attention_heads, config.head_dim);
            } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
                values = unpermute_rows(&values, config.num_key_value_heads, config.head_dim);
            }
        }
        if shape.len() == 2 && shape[0] == 1 && !name.ends_with(".weight") {
            shape.remove(0);
        }
        set.insert(&name, shape, values);
    }
    Ok(set)
}

/// Undoes llama.cpp's q/k permutation: within each head, stored row `2i + s` is Hugging Face
/// row `s * head_dim / 2 + i`.
fn unpermute_rows(values: &[f32], heads: usize, head_dim: usize) -> Vec<f32> {
    let row = values.len() / (heads * head_dim);
    let half = head_dim / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for s in 0..2 {
                let from = (h * head_dim + 2 * i + s) * row;
                let to = (h * head_dim + s * half + i) * row;
                out[to..to + row].copy_from_slice(&values[from..from + row]);
            }
        }
    }
    out
}

/// The Hugging Face name of a GGUF tensor (`None` for tensors the model does not use, such as
/// precomputed rotary tables).
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, kind) = rest.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Reads a Hugging Face `config.json` of a llama-family model.
pub fn hf_config(dir: &Path) -> Result<LlamaConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    let json: Json = serde_json::from_str(&text).map_err(|e| Error::Model {
        path: path.clone(),
        message: format!("invalid JSON: {e}"),
    })?;
    let bad = |message: String| Error::Model {
        path: path.clone(),
        message,
    };
    let model_type = json["model_type"].as_str().unwrap_or("");
    if !matches!(model_type, "llama" | "qwen2" | "mistral") {
        return Err(bad(format!(
            "model_type '{model_type}' is not supported (llama-family: llama, qwen2, mistral)"
        )));
    }
    if !json["rope_scaling"].is_null() {
        return Err(bad(format!(
            "rope_scaling {} is not supported yet",
            json["rope_scaling"]
        )));
    }
    let usize_of = |k: &str| -> Result<usize> {
        json[k]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("key {k} is missing or not an integer")))
    };
    let heads = usize_of("num_attention_heads")?;
    let hidden = usize_of("hidden_size")?;
    let token_ids = |k: &str| -> Vec<u32> {
        match &json[k] {
            Json::Number(n) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            Json::Array(a) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
            _ => vec![],
        }
    };
    let classifier = json["architectures"].as_array().is_some_and(|a| {
        a.iter().any(|v| {
            v.as_str()
                .is_some_and(|s| s.ends_with("ForSequenceClassification"))
        })
    });
    let num_labels = classifier.then(|| {
        json["num_labels"]
            .as_u64()
            .map(|v| v as usize)
            .or_else(|| json["id2label"].as_object().map(|m| m.len()))
            .unwrap_or(1)
    });
    Ok(LlamaConfig {
        vocab_size: usize_of("vocab_size")?,
        hidden_size: hidden,
        intermediate_size: usize_of("intermediate_size")?,
        num_hidden_layers: usize_of("num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: json["num_key_value_heads"]
            .as_u64()
            .map_or(heads, |v| v as usize),
        head_dim: json["head_dim"]
            .as_u64()
            .map_or(hidden / heads.max(1), |v| v as usize),
        rms_norm_eps: json["rms_norm_eps"].as_f64().unwrap_or(1e-6),
        rope_theta: json["rope_theta"].as_f64().unwrap_or(10_000.0),
        max_position_embeddings: usize_of("max_position_embeddings")?,
        tie_word_embeddings: json["tie_word_embeddings"].as_bool().unwrap_or(false),
        attention_bias: json["attention_bias"]
            .as_bool()
            .unwrap_or(model_type == "qwen2"),
        num_labels,
        bos_token_id: token_ids("bos_token_id").first().copied(),
        eos_token_ids: token_ids("eos_token_id"),
        pad_token_id: token_ids("pad_token_id").first().copied(),
    })
}

/// Every tensor of the `*.safetensors` files in `dir`, as f32.
pub fn hf_weights(dir: &Path) -> Result<WeightSet> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Model {
            path: dir.to_path_buf(),
            message: "no *.safetensors file".into(),
        });
    }
    let mut set = WeightSet::from_source(dir);
    for file in files {
        set.read_file(&file)?;
    }
    Ok(set)
}

/// Loads a model from a GGUF file or a Hugging Face directory.
pub fn load_model(path: &Path, device: &Device) -> Result<(Llama, Option<GgufFile>)> {
    match detect(path)? {
        ModelFormat::Gguf => {
            let file = GgufFile::open(path)?;
            let config = gguf_config(&file)?;
            let mut weights = gguf_weights(&file, &config)?;
            let model = Llama::from_weights(&config, &mut weights, device)?;
            Ok((model, Some(file)))
        }
        ModelFormat::HuggingFace => {
            let config = hf_config(path)?;
            let mut weights = hf_weights(path)?;
            let model = Llama::from_weights(&config, &mut weights, device)?;
            Ok((model, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_and_unpermute_inverts_llama_cpp_permute() {
        assert_eq!(
            hf_name("blk.3.attn_k.weight").as_deref(),
            Some("model.layers.3.self_attn.k_proj.weight")
        );
        assert_eq!(hf_name("rope_freqs.weight"), None);
        // llama.cpp's permute of 2 heads of width 4, one value per row: HF rows
        // [a0 a1 b0 b1 | c0 c1 d0 d1] become [a0 b0 a1 b1 | c0 d0 c1 d1].
        let stored = [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0];
        assert_eq!(
            unpermute_rows(&stored, 2, 4),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        );
    }
}
