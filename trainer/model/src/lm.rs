//! A language model ready to use: the network, its tokenizer, its chat template, a name and a
//! content hash (for caches and manifests), loaded from a GGUF file, a Hugging Face directory,
//! or built as the tiny random test model.

use std::io::Read;
use std::path::Path;

use burn::tensor::Device;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::error::{Error, Result};
use crate::llama::{Llama, LlamaConfig};
use crate::tokenizer::{ChatMessage, ChatTemplate, TextTokenizer};
use crate::weights::{self, ModelFormat};

/// The name under which the tiny random test model is selected (`--model tiny:SEED`).
pub const TINY_PREFIX: &str = "tiny:";

/// Network + tokenizer + template.
#[derive(Debug)]
pub struct LanguageModel {
    /// The network.
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// Its chat template.
    pub template: ChatTemplate,
    /// A short name for manifests (file or directory name).
    pub name: String,
    /// sha256 over the model's files (hex), or over the tiny config and seed.
    pub hash: String,
    /// The int8 copy of the network, quantized on first use ([`Self::int8`]).
    int8: std::sync::OnceLock<crate::int8::Int8Llama>,
}

impl LanguageModel {
    /// Loads `spec`: a `.gguf` file, a Hugging Face directory, or `tiny:SEED`, for inference.
    pub fn load(spec: &str, device: &Device) -> Result<Self> {
        Self::load_as(spec, device, true)
    }

    /// Loads `spec` for training: the head stays tied to the embedding it shares weights with,
    /// and `device` is normally an autodiff device.
    pub fn load_for_training(spec: &str, device: &Device) -> Result<Self> {
        Self::load_as(spec, device, false)
    }

    fn load_as(spec: &str, device: &Device, inference: bool) -> Result<Self> {
        if let Some(seed) = spec.strip_prefix(TINY_PREFIX) {
            let seed = seed.parse::<u64>().map_err(|_| {
                Error::Config(format!("model '{spec}': tiny models are named tiny:SEED"))
            })?;
            return Self::tiny(seed, device);
        }
        let path = Path::new(spec);
        let started = std::time::Instant::now();
        let (model, gguf) = weights::load_model(path, device)?;
        let model = if inference {
            model.for_inference()
        } else {
            model
        };
        let (tokenizer, template_text) = match weights::detect(path)? {
            ModelFormat::Gguf => {
                let file = gguf.as_ref().expect("GGUF models come with their file");
                let template = file
                    .metadata
                    .get("tokenizer.chat_template")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                (TextTokenizer::from_gguf(file)?, template)
            }
            ModelFormat::HuggingFace => {
                let json = path.join("tokenizer.json");
                if !json.is_file() {
                    return Err(Error::Model {
                        path: path.to_path_buf(),
                        message: "tokenizer.json is missing".into(),
                    });
                }
                (TextTokenizer::from_file(&json)?, hf_chat_template(path)?)
            }
        };
        let template = ChatTemplate::detect(template_text.as_deref())?;
        let hash = hash_model_files(path)?;
        let name = path
            .file_name()
            .map_or_else(|| spec.to_string(), |n| n.to_string_lossy().into_owned());
        info!(model = %name, seconds = started.elapsed().as_secs_f64(), template = template.name(), "model loaded");
        Ok(Self {
            model,
            tokenizer,
            template,
            name,
            hash,
            int8: Default::default(),
        })
    }

    /// The tiny random model: the byte-level tokenizer, ChatML without a default system
    /// message, [`LlamaConfig::tiny`] weights drawn from `seed`.
    pub fn tiny(seed: u64, device: &Device) -> Result<Self> {
        let tokenizer = TextTokenizer::byte_level()?;
        let mut config = LlamaConfig::tiny(tokenizer.vocab_size());
        config.eos_token_ids = vec![2];
        config.pad_token_id = Some(0);
        let model = config.init_random(seed, device)?;
        let hash = hex(&Sha256::digest(
            format!(
                "{TINY_PREFIX}{seed}:{}",
                serde_json::to_string(&config).unwrap_or_default()
            )
            .as_bytes(),
        ));
        Ok(Self {
            model,
            tokenizer,
            template: ChatTemplate::ChatMl {
                default_system: None,
            },
            name: format!("{TINY_PREFIX}{seed}"),
            hash,
            int8: Default::default(),
        })
    }

    /// Writes the model as a Hugging Face directory: `model.safetensors` (f32, Hugging Face
    /// names), `config.json`, `tokenizer.json` and `tokenizer_config.json` (with the chat
    /// template), loadable by [`LanguageModel::load`] and by `transformers`.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let weights = self.model.to_weights()?;
        let metadata = [("format".to_string(), "pt".to_string())].into();
        weights.save_safetensors(&dir.join("model.safetensors"), Some(metadata))?;
        let config = self.model.config();
        let write_json = |name: &str, value: &serde_json::Value| {
            let path = dir.join(name);
            let text = serde_json::to_string_pretty(value).unwrap_or_default();
            std::fs::write(&path, text).map_err(Error::io(&path))
        };
        write_json("config.json", &weights::hf_config_json(config))?;
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        let token = |id: Option<u32>| {
            id.and_then(|i| self.tokenizer.decode(&[i], false).ok())
                .map_or(serde_json::Value::Null, serde_json::Value::from)
        };
        let tokenizer_config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": self.template.jinja(),
            "bos_token": token(config.bos_token_id),
            "eos_token": token(config.eos_token_ids.first().copied()),
            "pad_token": token(Some(self.pad_id())),
            "model_max_length": config.max_position_embeddings,
        });
        write_json("tokenizer_config.json", &tokenizer_config)
    }

    /// The network quantized for the int8 CPU engine, built on first use and kept; an error
    /// when the model lives on another device (int8 is a CPU precision).
    pub fn int8(&self) -> Result<&crate::int8::Int8Llama> {
        if self.model.device() != Device::flex() {
            return Err(Error::Config(
                "precision int8 runs on the CPU only; use --device cpu, or precision f32".into(),
            ));
        }
        if let Some(model) = self.int8.get() {
            return Ok(model);
        }
        let started = std::time::Instant::now();
        let model = crate::int8::Int8Llama::from_model(&self.model)?;
        let (nibbles, matrices, bytes) = model.weight_summary();
        info!(
            model = %self.name,
            seconds = started.elapsed().as_secs_f64(),
            four_bit_matrices = nibbles,
            matrices,
            mib = bytes as f64 / (1 << 20) as f64,
            kernel = crate::int8::kernel::Kernel::configured().map_or("?", |k| k.name()),
            "weights packed for the int8 engine (4-bit where exactly on a Q4_1 grid, else 8-bit)"
        );
        Ok(self.int8.get_or_init(|| model))
    }

    /// Token ids of a prompt (template applied, assistant turn opened).
    pub fn prompt_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.tokenizer.encode(&self.template.prompt(messages))
    }

    /// Token ids of a response (with the end-of-turn marker).
    pub fn response_ids(&self, response: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(&self.template.response(response))
    }

    /// Tokens that end a generated response: the model's EOS tokens and the template's
    /// end-of-turn token.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids = self.model.config().eos_token_ids.clone();
        if let Some(id) = self
            .template
            .end_of_turn()
            .and_then(|t| self.tokenizer.token_id(t))
        {
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The id used to fill padding (never attended to, never scored).
    pub fn pad_id(&self) -> u32 {
        let config = self.model.config();
        config
            .pad_token_id
            .or(config.eos_token_ids.first().copied())
            .unwrap_or(0)
    }

    /// The longest sequence (prompt + response) the model accepts.
    pub fn context_length(&self) -> usize {
        self.model.config().context_limit()
    }
}

/// The `chat_template` of a Hugging Face directory (`tokenizer_config.json` or
/// `chat_template.jinja`), if it has one.
fn hf_chat_template(dir: &Path) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(Error::io(&jinja));
    }
    let config = dir.join("tokenizer_config.json");
    if !config.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&config).map_err(Error::io(&config))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Model {
        path: config.clone(),
        message: format!("invalid JSON: {e}"),
    })?;
    Ok(json["chat_template"].as_str().map(str::to_string))
}

/// sha256 over a model file, or over the files of a model directory in name order.
pub fn hash_model_files(path: &Path) -> Result<String> {
    let mut files = vec![];
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(Error::io(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        files.extend(entries);
    } else {
        files.push(path.to_path_buf());
    }
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for file in files {
        hasher.update(
            file.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        let mut f = std::fs::File::open(&file).map_err(Error::io(&file))?;
        loop {
            let n = f.read(&mut buffer).map_err(Error::io(&file))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
