//! Tokenizers and chat templates.
//!
//! A [`TextTokenizer`] wraps Hugging Face's `tokenizers` crate, built from a `tokenizer.json`,
//! from a GGUF file's byte-level BPE vocabulary and merges (the `gpt2` tokenizer model, with the
//! pre-tokenizer named by `tokenizer.ggml.pre`), or as a plain byte-level tokenizer for tiny
//! test models. Special tokens written in the text (`<|im_start|>`) are always parsed as
//! special tokens, as llama.cpp does with `parse_special`; nothing (no BOS) is added
//! implicitly, because the chat template decides the whole token sequence.
//!
//! A [`ChatTemplate`] renders a conversation to the prompt text and a response to its text
//! including the end-of-turn marker. Scoring, sampling, judging and training all go through
//! [`ChatTemplate::prompt`] / [`ChatTemplate::response`], so the four always see the same tokens.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// ggml's token type for control (special) tokens.
const TOKEN_TYPE_CONTROL: u64 = 3;
/// ggml's token type for user-defined added tokens.
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// A tokenizer plus the ids generation and padding need.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Where it came from, for messages and hashes.
    pub source: String,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("source", &self.source)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Reads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self {
            inner,
            source: path.display().to_string(),
        })
    }

    /// Builds the tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.model = gpt2`:
    /// byte-level BPE).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let bad = |message: String| Error::Model {
            path: file.path().to_path_buf(),
            message,
        };
        let model = file.require_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer model '{model}' is not supported (byte-level BPE, 'gpt2', is)"
            )));
        }
        let tokens = file.string_array("tokenizer.ggml.tokens")?;
        let merges = file.string_array("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match file.metadata.get("tokenizer.ggml.token_type") {
            Some(crate::gguf::Value::Array(v)) => {
                v.iter().map(|t| t.as_u64().unwrap_or(1)).collect()
            }
            _ => vec![1; tokens.len()],
        };
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| ((*t).to_string(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(format!("merge '{m}' is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tok_err)?;
        let mut inner = Tokenizer::new(bpe);
        let pre = file
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        inner.with_pre_tokenizer(Some(pre_tokenizer(pre).map_err(bad)?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let mut special = Vec::new();
        let mut added = Vec::new();
        for (i, (token, kind)) in tokens.iter().zip(&types).enumerate() {
            match *kind {
                TOKEN_TYPE_CONTROL => special.push((i, AddedToken::from(*token, true))),
                TOKEN_TYPE_USER_DEFINED => added.push((i, AddedToken::from(*token, false))),
                _ => {}
            }
        }
        inner.add_special_tokens(&special.into_iter().map(|(_, t)| t).collect::<Vec<_>>());
        inner.add_tokens(&added.into_iter().map(|(_, t)| t).collect::<Vec<_>>());
        Ok(Self {
            inner,
            source: format!("{} (GGUF tokenizer)", file.path().display()),
        })
    }

    /// A byte-level tokenizer for tiny test models: ids 0–2 are `<|endoftext|>`,
    /// `<|im_start|>`, `<|im_end|>`, then one token per byte (vocabulary of 259).
    pub fn byte_level() -> Result<Self> {
        let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
        let bytes = ByteLevel::alphabet();
        let mut alphabet: Vec<char> = bytes.into_iter().collect();
        alphabet.sort_unstable();
        let vocab: Vocab = specials
            .iter()
            .map(|s| s.to_string())
            .chain(alphabet.iter().map(|c| c.to_string()))
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .build()
            .map_err(tok_err)?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, false, false)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.add_special_tokens(
            &specials
                .iter()
                .map(|s| AddedToken::from(*s, true))
                .collect::<Vec<_>>(),
        );
        Ok(Self {
            inner,
            source: "byte-level".into(),
        })
    }

    /// Token ids of `text`; special-token strings in the text become their ids, nothing is
    /// added around the text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(tok_err)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens skipped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Writes the tokenizer as a Hugging Face `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(tok_err)
    }
}

/// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` name, as a `tokenizers`
/// pre-tokenizer: the GPT-2 split, preceded by single-digit isolation for the families that
/// use it.
fn pre_tokenizer(name: &str) -> std::result::Result<Sequence, String> {
    let gpt2 = ByteLevel::new(false, true, true);
    let digits_single = || -> std::result::Result<Split, String> {
        Split::new(
            SplitPattern::Regex(r"\p{N}".into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| e.to_string())
    };
    Ok(match name {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            Sequence::new(vec![digits_single()?.into(), gpt2.into()])
        }
        "gpt-2" | "gpt2" | "default" | "phi-2" | "jina-es" | "jina-de" | "mpt" | "olmo" => {
            Sequence::new(vec![gpt2.into()])
        }
        "digits" => Sequence::new(vec![Digits::new(true).into(), gpt2.into()]),
        other => {
            return Err(format!(
                "pre-tokenizer '{other}' is not supported; give the model's tokenizer.json instead"
            ));
        }
    })
}

/// How a conversation becomes text.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\ncontent<|im_end|>\n` turns (SmolLM2, Qwen2), with the system message
    /// the model's template inserts when the conversation has none.
    ChatMl {
        /// The default system message, if the template has one.
        default_system: Option<String>,
    },
    /// Llama 3: `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`.
    Llama3,
    /// No template: the prompt and response texts are concatenated as given (base models,
    /// tiny test models without special tokens).
    Raw,
}

/// One chat message, as a chat template renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, …
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

impl ChatTemplate {
    /// Recognises a Jinja chat template by its markers (ChatML or Llama 3); `None` gives
    /// [`ChatTemplate::Raw`].
    pub fn detect(template: Option<&str>) -> Result<Self> {
        let Some(t) = template else {
            return Ok(Self::Raw);
        };
        if t.contains("<|im_start|>") {
            // The default system text is the literal following the first system header.
            let default_system = t
                .split("<|im_start|>system\n")
                .nth(1)
                .and_then(|rest| rest.split("<|im_end|>").next())
                .filter(|s| !s.contains("{{") && !s.contains("{%") && !s.contains('\''))
                .map(str::to_string);
            return Ok(Self::ChatMl { default_system });
        }
        if t.contains("<|start_header_id|>") {
            return Ok(Self::Llama3);
        }
        Err(Error::Tokenizer(
            "the model's chat template is neither ChatML nor Llama 3; only those are supported"
                .into(),
        ))
    }

    /// The prompt text: the conversation followed by the opening of an assistant turn.
    pub fn prompt(&self, messages: &[ChatMessage]) -> String {
        let mut out = String::new();
        match self {
            Self::ChatMl { default_system } => {
                if let Some(system) = default_system
                    && messages.first().is_none_or(|m| m.role != "system")
                {
                    out.push_str(&format!("<|im_start|>system\n{system}<|im_end|>\n"));
                }
                for m in messages {
                    out.push_str(&format!(
                        "<|im_start|>{}\n{}<|im_end|>\n",
                        m.role, m.content
                    ));
                }
                out.push_str("<|im_start|>assistant\n");
            }
            Self::Llama3 => {
                out.push_str("<|begin_of_text|>");
                for m in messages {
                    out.push_str(&format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
                        m.role,
                        m.content.trim()
                    ));
                }
                out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            }
            Self::Raw => {
                for m in messages {
                    out.push_str(&m.content);
                }
            }
        }
        out
    }

    /// The response text including the end-of-turn marker.
    pub fn response(&self, response: &str) -> String {
        match self {
            Self::ChatMl { .. } => format!("{response}<|im_end|>"),
            Self::Llama3 => format!("{response}<|eot_id|>"),
            Self::Raw => response.to_string(),
        }
    }

    /// The end-of-turn token string, where the template has one.
    pub fn end_of_turn(&self) -> Option<&'static str> {
        match self {
            Self::ChatMl { .. } => Some("<|im_end|>"),
            Self::Llama3 => Some("<|eot_id|>"),
            Self::Raw => None,
        }
    }

    /// A Jinja chat template (Hugging Face `chat_template`) that renders exactly what
    /// [`ChatTemplate::prompt`] and [`ChatTemplate::response`] render and that
    /// [`ChatTemplate::detect`] maps back to this template; `None` for [`ChatTemplate::Raw`].
    pub fn jinja(&self) -> Option<String> {
        match self {
            Self::ChatMl { default_system } => {
                let system = match default_system {
                    Some(text) => format!(
                        "{{% if loop.first and messages[0]['role'] != 'system' %}}\
                         {{{{ '<|im_start|>system\n{}<|im_end|>\n' }}}}{{% endif %}}",
                        text.replace('\\', "\\\\").replace('\'', "\\'")
                    ),
                    None => String::new(),
                };
                Some(format!(
                    "{{% for message in messages %}}{system}\
                     {{{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + \
                     '<|im_end|>' + '\n' }}}}{{% endfor %}}\
                     {{% if add_generation_prompt %}}{{{{ '<|im_start|>assistant\n' }}}}{{% endif %}}"
                ))
            }
            Self::Llama3 => Some(
                "{{ '<|begin_of_text|>' }}{% for message in messages %}\
                 {{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + \
                 message['content'] | trim + '<|eot_id|>' }}{% endfor %}\
                 {% if add_generation_prompt %}\
                 {{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
                    .to_string(),
            ),
            Self::Raw => None,
        }
    }

    /// A short name for manifests.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ChatMl { .. } => "chatml",
            Self::Llama3 => "llama3",
            Self::Raw => "raw",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_round_trips_and_parses_specials() {
        let tok = TextTokenizer::byte_level().unwrap();
        assert_eq!(tok.vocab_size(), 259);
        let ids = tok.encode("<|im_start|>hé<|im_end|>").unwrap();
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&2));
        assert_eq!(ids.len(), 2 + 3, "h + two UTF-8 bytes of é");
        assert_eq!(tok.decode(&ids, true).unwrap(), "hé");
    }

    #[test]
    fn generated_jinja_is_detected_as_the_same_template() {
        for template in [
            ChatTemplate::ChatMl {
                default_system: None,
            },
            ChatTemplate::ChatMl {
                default_system: Some("You are a helpful AI assistant".into()),
            },
            ChatTemplate::Llama3,
        ] {
            let text = template.jinja().expect("a template");
            assert_eq!(
                ChatTemplate::detect(Some(&text)).unwrap(),
                template,
                "{text}"
            );
        }
        assert_eq!(ChatTemplate::Raw.jinja(), None);
    }

    #[test]
    fn chatml_renders_the_default_system_message_once() {
        let template = ChatTemplate::detect(Some(
            "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe kind<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}",
        ))
        .unwrap();
        assert_eq!(
            template.prompt(&[ChatMessage::new("user", "Hi")]),
            "<|im_start|>system\nBe kind<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let own = template.prompt(&[
            ChatMessage::new("system", "S"),
            ChatMessage::new("user", "Hi"),
        ]);
        assert!(own.starts_with("<|im_start|>system\nS<|im_end|>"));
        assert_eq!(template.response("Yes"), "Yes<|im_end|>");
        assert!(ChatTemplate::detect(Some("[INST]")).is_err());
    }
}
