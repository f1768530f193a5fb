//! Sampling N responses per prompt: temperature, nucleus (top-p), a token limit, stop at the
//! model's end-of-sequence or end-of-turn token, reproducible from a seed.
//!
//! The prompt is run once; its key/value cache is then copied to the N samples, which decode
//! together as one batch (one forward pass per new token for all of them). Each sample draws
//! from its own random stream, derived from (seed, stream id, sample index), so a sample does
//! not change when other samples finish earlier or when `n` grows.

use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::int8::{Int8Cache, Int8Llama};
use crate::llama::{AttentionMask, KvCache, Positions};
use crate::lm::LanguageModel;
use crate::rng::Rng;
use crate::scoring::Precision;

/// Sampling settings (the manifest records them); a key left out takes its default.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct SamplingConfig {
    /// Responses per prompt.
    pub n: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 disables it.
    pub top_p: f64,
    /// Longest response in tokens.
    pub max_new_tokens: usize,
    /// Base seed.
    pub seed: u64,
    /// Keep generating past stop tokens until `max_new_tokens` (benchmarks, as vLLM's
    /// `ignore_eos`).
    pub ignore_eos: bool,
    /// The model's arithmetic: `f32` (default) or `int8` (CPU only, several times faster;
    /// samples are reproducible within one precision, not across them).
    pub precision: Precision,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            n: 4,
            temperature: 0.8,
            top_p: 0.95,
            max_new_tokens: 256,
            seed: 0,
            ignore_eos: false,
            precision: Precision::F32,
        }
    }
}

impl SamplingConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 {
            return Err(Error::Config(
                "n (responses per prompt) must be at least 1".into(),
            ));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Config(format!(
                "temperature {} must be a finite number ≥ 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Config(format!(
                "top-p {} must be in (0, 1]",
                self.top_p
            )));
        }
        if self.max_new_tokens == 0 {
            return Err(Error::Config("max-new-tokens must be at least 1".into()));
        }
        Ok(())
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was produced (it is not part of the text).
    Stop,
    /// `max_new_tokens` or the context length was reached.
    Length,
}

impl FinishReason {
    /// The name written to tables (as vLLM and OpenAI write it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// One generated response.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated token ids, without the stop token.
    pub ids: Vec<u32>,
    /// Their text.
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
}

/// The seed of sample `index` of stream `stream` (e.g. a hash of the prompt id).
fn sample_seed(seed: u64, stream: u64, index: usize) -> u64 {
    let mut r = Rng::new(seed ^ stream.rotate_left(17) ^ (index as u64).wrapping_mul(0x9e37_79b9));
    r.next_u64()
}

/// Draws a token from `logits` (one vocabulary row).
pub fn pick_token(logits: &[f32], temperature: f64, top_p: f64, rng: &mut Rng) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = logits
        .iter()
        .map(|&v| ((v as f64 - max) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if top_p >= 1.0 {
        let mut u = rng.uniform() * total;
        for (i, w) in weights.iter().enumerate() {
            u -= w;
            if u < 0.0 {
                return i as u32;
            }
        }
        return argmax();
    }
    // Nucleus: the smallest set of most likely tokens holding `top_p` of the mass (ties by id).
    // Usually a few dozen or hundred tokens hold it: look among the 64, then 512, then 4096
    // most likely (each an O(vocabulary) selection) and sort the whole vocabulary only when
    // none suffices. The order is total (ties by id), so the set found, its order and the sums
    // over it are those of the full sort.
    let by_weight = |a: &u32, b: &u32| {
        weights[*b as usize]
            .total_cmp(&weights[*a as usize])
            .then(a.cmp(b))
    };
    let mut order: Vec<u32> = (0..weights.len() as u32).collect();
    for look in [64, 512, 4096] {
        if order.len() <= look {
            break;
        }
        order.select_nth_unstable_by(look - 1, by_weight);
        let head: f64 = order[..look].iter().map(|&i| weights[i as usize]).sum();
        if head >= top_p * total {
            order.truncate(look);
            break;
        }
    }
    order.sort_unstable_by(by_weight);
    let mut kept = 0.0;
    let mut cut = order.len();
    for (k, &i) in order.iter().enumerate() {
        kept += weights[i as usize];
        if kept >= top_p * total {
            cut = k + 1;
            break;
        }
    }
    let mut u = rng.uniform() * kept;
    for &i in &order[..cut] {
        u -= weights[i as usize];
        if u < 0.0 {
            return i;
        }
    }
    order[cut - 1]
}

/// Reads a `[rows, vocab]` tensor back as rows.
fn rows_of(logits: Tensor<2>) -> Result<Vec<Vec<f32>>> {
    let [_, vocab] = logits.dims();
    let flat = logits
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Input(format!("reading logits back: {e:?}")))?;
    Ok(flat.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
}

/// `config.n` responses to one prompt (token ids, template applied). `stream` separates the
/// random streams of different prompts (use a hash of the prompt id).
pub fn generate(
    lm: &LanguageModel,
    prompt: &[u32],
    config: &SamplingConfig,
    stream: u64,
) -> Result<Vec<Generation>> {
    config.validate()?;
    if prompt.is_empty() {
        return Err(Error::Input("the prompt is empty".into()));
    }
    let context = lm.context_length();
    if prompt.len() >= context {
        return Err(Error::Input(format!(
            "the prompt is {} tokens; the model's context is {context}, leaving no room for a response",
            prompt.len()
        )));
    }
    let budget = config.max_new_tokens.min(context - prompt.len());
    let stops = if config.ignore_eos {
        vec![]
    } else {
        lm.stop_ids()
    };
    let n = config.n;
    let mut rngs: Vec<Rng> = (0..n)
        .map(|k| Rng::new(sample_seed(config.seed, stream, k)))
        .collect();
    let mut decoder: Box<dyn Decoder + '_> = match config.precision {
        Precision::F32 => Box::new(BurnDecoder {
            lm,
            cache: KvCache::default(),
        }),
        Precision::Int8 => {
            let model = lm.int8()?;
            Box::new(Int8Decoder {
                cache: model.new_cache(prompt.len() + budget),
                model,
            })
        }
    };
    let first = decoder.prefill(prompt)?;
    decoder.select_rows(&vec![0; n])?;

    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut finish: Vec<Option<FinishReason>> = vec![None; n];
    let mut active: Vec<usize> = (0..n).collect();
    let mut logits: Vec<Vec<f32>> = vec![first; n];
    for step in 0..budget {
        let mut next = Vec::with_capacity(active.len());
        let mut still = Vec::with_capacity(active.len());
        for (row, &k) in active.iter().enumerate() {
            let token = pick_token(&logits[row], config.temperature, config.top_p, &mut rngs[k]);
            if stops.contains(&token) {
                finish[k] = Some(FinishReason::Stop);
                continue;
            }
            tokens[k].push(token);
            if step + 1 == budget {
                finish[k] = Some(FinishReason::Length);
                continue;
            }
            still.push(row);
            next.push(token);
        }
        if still.is_empty() {
            break;
        }
        if still.len() < active.len() {
            decoder.select_rows(&still)?;
        }
        active = still.iter().map(|&r| active[r]).collect();
        logits = decoder.step(&next, prompt.len() + step)?;
    }
    tokens
        .into_iter()
        .zip(finish)
        .map(|(ids, finish)| {
            Ok(Generation {
                text: lm.tokenizer.decode(&ids, true)?,
                ids,
                finish: finish.unwrap_or(FinishReason::Length),
            })
        })
        .collect()
}

/// A model decoding a batch of samples of one prompt step by step.
trait Decoder {
    /// Runs the prompt (one row) and returns its next-token logits.
    fn prefill(&mut self, prompt: &[u32]) -> Result<Vec<f32>>;
    /// Keeps the rows `keep` of the cache, in that order (repeats allowed).
    fn select_rows(&mut self, keep: &[usize]) -> Result<()>;
    /// Appends one token per row at `position` and returns each row's next-token logits.
    fn step(&mut self, tokens: &[u32], position: usize) -> Result<Vec<Vec<f32>>>;
}

/// The burn model on its configured device, f32.
struct BurnDecoder<'a> {
    lm: &'a LanguageModel,
    cache: KvCache,
}

impl Decoder for BurnDecoder<'_> {
    fn prefill(&mut self, prompt: &[u32]) -> Result<Vec<f32>> {
        let device = self.lm.model.device();
        let ids = prompt.iter().map(|&t| t as i64).collect::<Vec<_>>();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, prompt.len()]), &device);
        let hidden = self.lm.model.hidden(
            ids,
            &Positions::Contiguous(0),
            &AttentionMask::Causal,
            Some(&mut self.cache),
        );
        let [_, t, h] = hidden.dims();
        let last = hidden.narrow(1, t - 1, 1).reshape([1, h]);
        Ok(rows_of(self.lm.model.logits(last))?.remove(0))
    }

    fn select_rows(&mut self, keep: &[usize]) -> Result<()> {
        // One gather serves both uses: `[0; n]` copies the prompt's row, a subset keeps rows.
        let keep: Vec<i64> = keep.iter().map(|&r| r as i64).collect();
        let len = keep.len();
        let keep =
            Tensor::<1, Int>::from_data(TensorData::new(keep, [len]), &self.lm.model.device());
        self.cache.keep_rows(&keep);
        Ok(())
    }

    fn step(&mut self, tokens: &[u32], position: usize) -> Result<Vec<Vec<f32>>> {
        let device = self.lm.model.device();
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [tokens.len(), 1]), &device);
        let hidden = self.lm.model.hidden(
            ids,
            &Positions::Contiguous(position),
            &AttentionMask::Causal,
            Some(&mut self.cache),
        );
        let [rows, _, h] = hidden.dims();
        rows_of(self.lm.model.logits(hidden.reshape([rows, h])))
    }
}

/// The int8 CPU engine ([`crate::int8`]).
struct Int8Decoder<'a> {
    model: &'a Int8Llama,
    cache: Int8Cache,
}

impl Decoder for Int8Decoder<'_> {
    fn prefill(&mut self, prompt: &[u32]) -> Result<Vec<f32>> {
        self.model.prefill(prompt, &mut self.cache)
    }

    fn select_rows(&mut self, keep: &[usize]) -> Result<()> {
        self.cache.select_rows(keep);
        Ok(())
    }

    fn step(&mut self, tokens: &[u32], position: usize) -> Result<Vec<Vec<f32>>> {
        debug_assert_eq!(position, self.cache.len());
        self.model.decode(tokens, &mut self.cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After rows are copied, decoded apart and narrowed (to row 0 alone, the case that once
    /// broke), each row's logits equal those of its sequence decoded by itself.
    fn check_row_selection<'a>(make: &dyn Fn() -> Box<dyn Decoder + 'a>, tolerance: f32) {
        let prompt = [5u32, 60, 7, 99];
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance);
        let mut batch = make();
        batch.prefill(&prompt).unwrap();
        batch.select_rows(&[0, 0, 0]).unwrap();
        batch.step(&[10, 11, 12], 4).unwrap();
        batch.select_rows(&[0]).unwrap();
        let narrowed = batch.step(&[20], 5).unwrap();
        assert_eq!(narrowed.len(), 1);
        let mut alone = make();
        alone.prefill(&prompt).unwrap();
        alone.step(&[10], 4).unwrap();
        let expected = alone.step(&[20], 5).unwrap();
        assert!(close(&narrowed[0], &expected[0]));
        // Keeping rows 2 and 1, in that order.
        let mut batch = make();
        batch.prefill(&prompt).unwrap();
        batch.select_rows(&[0, 0, 0]).unwrap();
        batch.step(&[10, 11, 12], 4).unwrap();
        batch.select_rows(&[2, 1]).unwrap();
        let kept = batch.step(&[30, 31], 5).unwrap();
        let mut alone = make();
        alone.prefill(&prompt).unwrap();
        alone.step(&[12], 4).unwrap();
        assert!(close(&kept[0], &alone.step(&[30], 5).unwrap()[0]));
    }

    #[test]
    fn decoders_keep_the_rows_they_are_told_to() {
        let lm = LanguageModel::tiny(3, &burn::tensor::Device::flex()).unwrap();
        check_row_selection(
            &|| {
                Box::new(BurnDecoder {
                    lm: &lm,
                    cache: KvCache::default(),
                })
            },
            1e-5,
        );
        let model = lm.int8().unwrap();
        check_row_selection(
            &|| {
                Box::new(Int8Decoder {
                    model,
                    cache: model.new_cache(16),
                })
            },
            0.0,
        );
    }

    #[test]
    fn greedy_nucleus_and_temperature() {
        let logits = [0.0f32, 3.0, 1.0, 2.9];
        let mut rng = Rng::new(1);
        assert_eq!(pick_token(&logits, 0.0, 1.0, &mut rng), 1);
        // A tiny nucleus keeps only the most likely token.
        assert!((0..50).all(|_| pick_token(&logits, 1.0, 0.01, &mut rng) == 1));
        // top-p 0.9 keeps tokens 1 and 3 (and maybe 2) but never the least likely token 0.
        let draws: Vec<u32> = (0..2000)
            .map(|_| pick_token(&logits, 1.0, 0.8, &mut rng))
            .collect();
        assert!(draws.iter().all(|&t| t == 1 || t == 3));
        let ones = draws.iter().filter(|&&t| t == 1).count() as f64 / 2000.0;
        let expected = 3f64.exp() / (3f64.exp() + 2.9f64.exp());
        assert!((ones - expected).abs() < 0.04, "{ones} vs {expected}");
    }

    /// The nucleus by sorting the whole vocabulary: what the staged selection must equal.
    fn full_sort_pick(logits: &[f32], temperature: f64, top_p: f64, rng: &mut Rng) -> u32 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let weights: Vec<f64> = logits
            .iter()
            .map(|&v| ((v as f64 - max) / temperature).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut order: Vec<u32> = (0..weights.len() as u32).collect();
        order.sort_by(|a, b| {
            weights[*b as usize]
                .total_cmp(&weights[*a as usize])
                .then(a.cmp(b))
        });
        let (mut kept, mut cut) = (0.0, order.len());
        for (k, &i) in order.iter().enumerate() {
            kept += weights[i as usize];
            if kept >= top_p * total {
                cut = k + 1;
                break;
            }
        }
        let mut u = rng.uniform() * kept;
        for &i in &order[..cut] {
            u -= weights[i as usize];
            if u < 0.0 {
                return i;
            }
        }
        order[cut - 1]
    }

    #[test]
    fn staged_nucleus_equals_sorting_the_whole_vocabulary() {
        // Flatter and flatter distributions over a SmolLM2-sized vocabulary, so the nucleus
        // needs under 64, under 512, under 4096 and more tokens; repeated logits make ties.
        for (case, spread) in [8.0f32, 2.0, 0.5, 0.05].into_iter().enumerate() {
            let logits: Vec<f32> = crate::int8::kernel::tests::pseudo_random(49_152, case as u64)
                .iter()
                .map(|v| ((v * spread * 64.0).round() / 64.0).powi(3) * spread)
                .collect();
            for seed in 0..40 {
                let (mut a, mut b) = (Rng::new(seed), Rng::new(seed));
                assert_eq!(
                    pick_token(&logits, 0.8, 0.95, &mut a),
                    full_sort_pick(&logits, 0.8, 0.95, &mut b),
                    "spread {spread}, seed {seed}"
                );
            }
        }
    }
}
