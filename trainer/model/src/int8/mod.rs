//! Int8 CPU inference for scoring, sampling and judging: the same llama forward pass as
//! [`crate::llama::Llama`], with every linear layer (and the language-model head) computed as
//! an 8-bit integer product — weights quantized once per output row and block of 32 inputs
//! (exactly, for Q4_1 GGUF weights), activations per token and block — the way llama.cpp runs
//! quantized models on CPUs ([`kernel`]). Norms, rotary embeddings, attention and the
//! log-softmax stay in f32 ([`simd`]).
//!
//! This is an opt-in precision (`precision = "int8"` for `prefsmith score`, `sample` and the
//! `reward` judge), for when throughput matters more than the last hundredth of a nat: its
//! log-probs differ from the f32 model's by the rounding of activations to 8 bits, as
//! llama.cpp's do (held by a test against llama.cpp's fixtures). Policy and reference log-probs
//! that are compared with each other should come from the same precision.
//!
//! Sequences are packed one after another into one matrix of rows (no padding): the linear
//! layers see every token of a batch at once and attention runs per sequence, so a batch's
//! result is bit-identical to scoring each sequence alone. Generation keeps keys and values in
//! an [`Int8Cache`]; a decoded token's logits are bit-identical to a full pass's.
//!
//! The file runs past 600 lines with its unit tests, kept beside the code they check (the int8
//! forward pass and cache against the f32 model).

pub mod kernel;
pub mod simd;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::llama::{Llama, LlamaConfig};
use crate::sequence::ScoreItem;
use kernel::{Kernel, PackedWeights, WeightFormat};

/// How the rows of one forward pass relate.
enum Mode<'a> {
    /// Whole sequences packed one after another (`starts`, with the end as a last entry),
    /// each at positions from 0 and attending causally within itself.
    Sequences(&'a [usize]),
    /// One sequence from position 0, whose keys and values are written to an empty cache.
    Prefill(&'a mut Int8Cache),
    /// One new token per cache row, at position `cache.len`, attending to the row's cache.
    Decode(&'a mut Int8Cache),
}

/// Keys and values of earlier positions for `rows` sequences decoding in step, per layer and
/// key/value head: keys transposed (`[head_dim][capacity]`, so one query's scores against
/// sixteen positions are one vector) and values `[capacity][width]` (`width` = head_dim
/// rounded up to 16).
#[derive(Debug, Clone)]
pub struct Int8Cache {
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    width: usize,
    capacity: usize,
    rows: usize,
    len: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl Int8Cache {
    fn new(layers: usize, kv_heads: usize, head_dim: usize, capacity: usize) -> Self {
        // Whole vectors of positions: the score kernel reads sixteen at a time.
        let capacity = capacity.div_ceil(16) * 16;
        let width = head_dim.div_ceil(16) * 16;
        Self {
            layers,
            kv_heads,
            head_dim,
            width,
            capacity,
            rows: 1,
            len: 0,
            keys: vec![0.0; layers * kv_heads * head_dim * capacity],
            values: vec![0.0; layers * kv_heads * capacity * width],
        }
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the prompt has run.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sequences held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn slot(&self, layer: usize, row: usize, head: usize) -> usize {
        (layer * self.rows + row) * self.kv_heads + head
    }

    /// The keys and values of one row and head.
    fn head(&self, layer: usize, row: usize, head: usize) -> (&[f32], &[f32]) {
        let slot = self.slot(layer, row, head);
        let k = self.head_dim * self.capacity;
        let v = self.capacity * self.width;
        (
            &self.keys[slot * k..(slot + 1) * k],
            &self.values[slot * v..(slot + 1) * v],
        )
    }

    /// Writes the k and v heads of `qkv` rows `rows` (q heads are the first `q_width` values
    /// of each row) at `(cache row, position) = place(row)`.
    fn store(
        &mut self,
        layer: usize,
        qkv: &[f32],
        row_width: usize,
        q_width: usize,
        rows: std::ops::Range<usize>,
        place: impl Fn(usize) -> (usize, usize),
    ) {
        let (d, kv_width) = (self.head_dim, self.kv_heads * self.head_dim);
        let (k_size, v_size) = (d * self.capacity, self.capacity * self.width);
        for t in rows {
            let (row, pos) = place(t);
            let base = t * row_width + q_width;
            for g in 0..self.kv_heads {
                let slot = self.slot(layer, row, g);
                let key = &qkv[base + g * d..base + (g + 1) * d];
                let value = &qkv[base + kv_width + g * d..base + kv_width + (g + 1) * d];
                for (c, &k) in key.iter().enumerate() {
                    self.keys[slot * k_size + c * self.capacity + pos] = k;
                }
                let at = slot * v_size + pos * self.width;
                self.values[at..at + d].copy_from_slice(value);
            }
        }
    }

    /// Keeps the cache rows `keep`, in that order (a row may repeat: `[0; n]` copies a
    /// prefilled prompt to `n` samples).
    pub fn select_rows(&mut self, keep: &[usize]) {
        let k_size = self.head_dim * self.capacity;
        let v_size = self.capacity * self.width;
        let mut keys = Vec::with_capacity(self.layers * keep.len() * self.kv_heads * k_size);
        let mut values = Vec::with_capacity(self.layers * keep.len() * self.kv_heads * v_size);
        for layer in 0..self.layers {
            for &row in keep {
                let first = self.slot(layer, row, 0);
                let heads = first..first + self.kv_heads;
                keys.extend_from_slice(&self.keys[heads.start * k_size..heads.end * k_size]);
                values.extend_from_slice(&self.values[heads.start * v_size..heads.end * v_size]);
            }
        }
        self.keys = keys;
        self.values = values;
        self.rows = keep.len();
    }
}

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
    /// Quantizes `model`'s weights (read back from its device): each matrix as 4-bit nibbles
    /// when it lies exactly on a 4-bit grid (a Q4_1 GGUF's matrices do), as bytes otherwise.
    pub fn from_model(model: &Llama) -> Result<Self> {
        Self::from_model_with(model, &[WeightFormat::Nibbles, WeightFormat::Bytes])
    }

    /// [`Self::from_model`] trying only `formats`, in that order, per matrix (the last must
    /// be [`WeightFormat::Bytes`], which takes any weights): `&[WeightFormat::Bytes]` is the
    /// 8-bit engine even for a Q4_1 model.
    pub fn from_model_with(model: &Llama, formats: &[WeightFormat]) -> Result<Self> {
        assert_eq!(
            formats.last(),
            Some(&WeightFormat::Bytes),
            "bytes comes last"
        );
        Kernel::configured().map_err(Error::Input)?;
        let pack = |weights: &[f32], rows: usize, cols: usize| {
            formats
                .iter()
                .find_map(|&format| PackedWeights::with_format(weights, rows, cols, format))
                .expect("the bytes format takes any weights")
        };
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
                qkv: pack(&stacked, q + 2 * kv, h),
                qkv_bias,
                o: pack(
                    &take(&format!("{p}.self_attn.o_proj.weight"), &[h, q])?,
                    h,
                    q,
                ),
                post_norm: take(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                gate_up: pack(&gate_up, 2 * i, h),
                down: pack(&take(&format!("{p}.mlp.down_proj.weight"), &[h, i])?, h, i),
            });
        }
        let norm = take("model.norm.weight", &[h])?;
        let head = if config.tie_word_embeddings {
            pack(&embed, config.vocab_size, h)
        } else {
            pack(
                &take("lm_head.weight", &[config.vocab_size, h])?,
                config.vocab_size,
                h,
            )
        };
        let (rope_cos, rope_sin) = crate::llama::rotary_tables(&config);
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

    /// Every packed matrix: the layers' projections, then the head.
    fn matrices(&self) -> impl Iterator<Item = &PackedWeights> {
        self.layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .chain([&self.head])
    }

    /// How the weights are held: `(matrices in nibbles, all matrices, bytes a token reads)`.
    pub fn weight_summary(&self) -> (usize, usize, usize) {
        let nibbles = self
            .matrices()
            .filter(|m| m.format() == WeightFormat::Nibbles)
            .count();
        let bytes = self.matrices().map(PackedWeights::size_bytes).sum();
        (nibbles, self.matrices().count(), bytes)
    }

    /// Embeds `ids`, checking each is in the vocabulary.
    fn embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let (h, vocab) = (self.config.hidden_size, self.config.vocab_size);
        let mut x = Vec::with_capacity(ids.len() * h);
        for &id in ids {
            let id = id as usize;
            if id >= vocab {
                return Err(Error::Input(format!(
                    "token id {id} is outside the vocabulary of {vocab}"
                )));
            }
            x.extend_from_slice(&self.embed[id * h..(id + 1) * h]);
        }
        Ok(x)
    }

    /// The decoder stack over `ids`: returns the last layer's residual stream `[rows, hidden]`
    /// (before the final norm). `mode` says how rows relate (see [`Mode`]).
    fn forward(&self, ids: &[u32], mut mode: Mode<'_>) -> Result<Vec<f32>> {
        let c = &self.config;
        let (h, d) = (c.hidden_size, c.head_dim);
        let rows = ids.len();
        let positions: Vec<usize> = match &mode {
            Mode::Sequences(starts) => starts.windows(2).flat_map(|w| 0..w[1] - w[0]).collect(),
            Mode::Prefill(_) => (0..rows).collect(),
            Mode::Decode(cache) => vec![cache.len; rows],
        };
        if let Some(&last) = positions.iter().max()
            && last >= c.context_limit()
        {
            return Err(Error::Input(format!(
                "position {last} is past the model's context of {}",
                c.context_limit()
            )));
        }
        let mut x = self.embed(ids)?;
        let q_width = c.num_attention_heads * d;
        let kv_width = c.num_key_value_heads * d;
        let qkv_width = q_width + 2 * kv_width;
        let mut normed = vec![0.0f32; rows * h];
        let mut qkv = vec![0.0f32; rows * qkv_width];
        let mut attended = vec![0.0f32; rows * q_width];
        let mut projected = vec![0.0f32; rows * h];
        let mut gate_up = vec![0.0f32; rows * 2 * c.intermediate_size];
        let mut activated = vec![0.0f32; rows * c.intermediate_size];
        let whole = [0, rows];
        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm(&x, &layer.input_norm, c.rms_norm_eps as f32, &mut normed);
            layer
                .qkv
                .matmul(&layer.qkv.quantize_input(&normed), &mut qkv);
            if let Some(bias) = &layer.qkv_bias {
                for row in qkv.chunks_exact_mut(qkv_width) {
                    row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
            }
            self.rotate(&mut qkv, &positions, qkv_width, q_width + kv_width);
            match &mut mode {
                Mode::Sequences(starts) => self.attention(&qkv, starts, &mut attended),
                Mode::Prefill(cache) => {
                    cache.store(l, &qkv, qkv_width, q_width, 0..rows, |t| (0, t));
                    self.attention(&qkv, &whole, &mut attended);
                }
                Mode::Decode(cache) => {
                    let at = cache.len;
                    cache.store(l, &qkv, qkv_width, q_width, 0..rows, |r| (r, at));
                    self.cached_attention(l, &qkv, cache, at + 1, &mut attended);
                }
            }
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
        match mode {
            Mode::Sequences(_) => {}
            Mode::Prefill(cache) => cache.len = rows,
            Mode::Decode(cache) => cache.len += 1,
        }
        Ok(x)
    }

    /// Final norm and head: logits `[rows, vocab]` of the residual-stream rows `x`.
    fn logits(&self, x: &[f32]) -> Vec<f32> {
        let c = &self.config;
        let mut normed = vec![0.0f32; x.len()];
        rms_norm(x, &self.norm, c.rms_norm_eps as f32, &mut normed);
        let mut logits = vec![0.0f32; x.len() / c.hidden_size * c.vocab_size];
        self.head
            .matmul(&self.head.quantize_input(&normed), &mut logits);
        logits
    }

    /// Packs sequences, each given as a non-empty head and a tail, one after another: their
    /// tokens and where each starts (the end last). A sequence longer than the context or with
    /// an empty head is an error naming it.
    fn pack<'a>(
        &self,
        sequences: impl IntoIterator<Item = (&'a [u32], &'a [u32])>,
    ) -> Result<(Vec<u32>, Vec<usize>)> {
        let limit = self.config.context_limit();
        let mut ids = Vec::new();
        let mut starts = Vec::new();
        for (i, (head, tail)) in sequences.into_iter().enumerate() {
            let len = head.len() + tail.len();
            if head.is_empty() || len > limit {
                return Err(Error::Input(format!(
                    "sequence {i}: {len} tokens (prompt {}); the model takes a non-empty prompt \
                     and at most {limit} tokens",
                    head.len()
                )));
            }
            starts.push(ids.len());
            ids.extend_from_slice(head);
            ids.extend_from_slice(tail);
        }
        starts.push(ids.len());
        Ok((ids, starts))
    }

    /// `log π(y_t | …)` of every response token of every item, item after item.
    pub fn response_token_logps(&self, items: &[&ScoreItem]) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let h = c.hidden_size;
        let (ids, starts) = self.pack(
            items
                .iter()
                .map(|item| (item.prompt.as_slice(), item.response.as_slice())),
        )?;
        let x = self.forward(&ids, Mode::Sequences(&starts))?;
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
        let mut logps = Vec::with_capacity(targets.len());
        // The head in chunks of rows bounds the logits matrix (512 × 49152 floats is 100 MB).
        for (rows, targets) in predicting.chunks(512 * h).zip(targets.chunks(512)) {
            let logits = self.logits(rows);
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

    /// The next-token logits after each of `sequences` (packed into one pass, no padding).
    pub fn last_logits(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let h = c.hidden_size;
        let (ids, starts) = self.pack(sequences.iter().map(|s| (*s, &[][..])))?;
        let x = self.forward(&ids, Mode::Sequences(&starts))?;
        let mut last = Vec::with_capacity(sequences.len() * h);
        for &end in &starts[1..] {
            last.extend_from_slice(&x[(end - 1) * h..end * h]);
        }
        Ok(self
            .logits(&last)
            .chunks_exact(c.vocab_size)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// An empty cache for one sequence of up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> Int8Cache {
        let c = &self.config;
        Int8Cache::new(
            c.num_hidden_layers,
            c.num_key_value_heads,
            c.head_dim,
            capacity.min(c.context_limit()),
        )
    }

    /// Runs `prompt` into an empty one-row `cache` and returns the next-token logits.
    pub fn prefill(&self, prompt: &[u32], cache: &mut Int8Cache) -> Result<Vec<f32>> {
        if cache.len != 0 || cache.rows != 1 {
            return Err(Error::Input("prefill needs an empty one-row cache".into()));
        }
        if prompt.is_empty() || prompt.len() > cache.capacity {
            return Err(Error::Input(format!(
                "a prompt of {} tokens does not fit a cache of {} positions",
                prompt.len(),
                cache.capacity
            )));
        }
        let x = self.forward(prompt, Mode::Prefill(cache))?;
        let h = self.config.hidden_size;
        Ok(self.logits(&x[x.len() - h..]))
    }

    /// Appends one token per cache row and returns each row's next-token logits.
    pub fn decode(&self, tokens: &[u32], cache: &mut Int8Cache) -> Result<Vec<Vec<f32>>> {
        if tokens.len() != cache.rows {
            return Err(Error::Input(format!(
                "{} tokens for a cache of {} rows",
                tokens.len(),
                cache.rows
            )));
        }
        if cache.len >= cache.capacity {
            return Err(Error::Input(format!(
                "the cache is full ({} positions)",
                cache.capacity
            )));
        }
        let x = self.forward(tokens, Mode::Decode(cache))?;
        let vocab = self.config.vocab_size;
        Ok(self
            .logits(&x)
            .chunks_exact(vocab)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Rotates the q and k heads (the first `width` values of each row) of every token by its
    /// position (`rotate_half` layout).
    fn rotate(&self, qkv: &mut [f32], positions: &[usize], row_width: usize, width: usize) {
        let d = self.config.head_dim;
        let half = d / 2;
        for (row, &pos) in qkv.chunks_exact_mut(row_width).zip(positions) {
            let cos = &self.rope_cos[pos * half..(pos + 1) * half];
            let sin = &self.rope_sin[pos * half..(pos + 1) * half];
            for head in row[..width].chunks_exact_mut(d) {
                let (first, second) = head.split_at_mut(half);
                for k in 0..half {
                    let (a, b) = (first[k], second[k]);
                    first[k] = a * cos[k] + -b * sin[k];
                    second[k] = b * cos[k] + a * sin[k];
                }
            }
        }
    }

    /// Attention of each cache row's new token (its q heads in `qkv`) over the row's first
    /// `visible` cached positions.
    fn cached_attention(
        &self,
        layer: usize,
        qkv: &[f32],
        cache: &Int8Cache,
        visible: usize,
        out: &mut [f32],
    ) {
        let c = &self.config;
        let d = c.head_dim;
        let group = c.num_attention_heads / c.num_key_value_heads;
        let q_width = c.num_attention_heads * d;
        let row_width = q_width + 2 * c.num_key_value_heads * d;
        let jobs: Vec<(usize, usize)> = (0..cache.rows)
            .flat_map(|r| (0..c.num_key_value_heads).map(move |g| (r, g)))
            .collect();
        let job = |&(r, g): &(usize, usize)| {
            let queries = &qkv[r * row_width + g * group * d..r * row_width + (g + 1) * group * d];
            let (keys, values) = cache.head(layer, r, g);
            simd::cached_attention(queries, keys, values, cache.capacity, visible, d)
        };
        // One token's attention over a short cache is less work than handing it to another
        // thread; the results are the same either way.
        let results: Vec<Vec<f32>> = if jobs.len() * visible < 4096 {
            jobs.iter().map(job).collect()
        } else {
            jobs.par_iter().map(job).collect()
        };
        for (&(r, g), values) in jobs.iter().zip(&results) {
            out[r * q_width + g * group * d..r * q_width + (g + 1) * group * d]
                .copy_from_slice(values);
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
                    let mut out = Vec::with_capacity((end - start) * d);
                    for row in qkv[start * row_width..end * row_width].chunks_exact(row_width) {
                        out.extend_from_slice(&row[offset..offset + d]);
                    }
                    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::TextTokenizer;

    /// The int8 engine of a tiny random model (the byte-level vocabulary of `tiny:11`).
    fn tiny() -> Int8Llama {
        let vocab = TextTokenizer::byte_level().unwrap().vocab_size();
        let model = LlamaConfig::tiny(vocab)
            .init_random(11, &burn::tensor::Device::flex())
            .unwrap();
        Int8Llama::from_model(&model).unwrap()
    }

    /// Logits at every position of `ids` from one pass over the whole sequence.
    fn full_logits(model: &Int8Llama, ids: &[u32]) -> Vec<Vec<f32>> {
        let x = model
            .forward(ids, Mode::Sequences(&[0, ids.len()]))
            .unwrap();
        let vocab = model.config.vocab_size;
        model
            .logits(&x)
            .chunks_exact(vocab)
            .map(<[f32]>::to_vec)
            .collect()
    }

    fn bits(rows: &[Vec<f32>]) -> Vec<Vec<u32>> {
        rows.iter()
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect()
    }

    #[test]
    fn decoding_with_the_cache_equals_a_full_pass_bit_for_bit() {
        let model = &tiny();
        // 40 tokens: the cache spans several 16-position vectors.
        let ids: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % 250).collect();
        let full = full_logits(model, &ids);
        let prompt = 7;
        let mut cache = model.new_cache(ids.len());
        let mut incremental = vec![model.prefill(&ids[..prompt], &mut cache).unwrap()];
        for &id in &ids[prompt..ids.len() - 1] {
            incremental.push(model.decode(&[id], &mut cache).unwrap().remove(0));
        }
        assert_eq!(cache.len(), ids.len() - 1);
        assert_eq!(bits(&incremental), bits(&full[prompt - 1..ids.len() - 1]));
    }

    #[test]
    fn cache_rows_decode_independently() {
        let model = &tiny();
        let prompt: Vec<u32> = vec![3, 90, 17, 4, 200];
        let mut cache = model.new_cache(16);
        model.prefill(&prompt, &mut cache).unwrap();
        cache.select_rows(&[0, 0, 0]);
        let both = model.decode(&[10, 20, 30], &mut cache).unwrap();
        // Keep the rows that took 30 and 10, in that order, and decode one more token each.
        cache.select_rows(&[2, 0]);
        let next = model.decode(&[1, 2], &mut cache).unwrap();
        for (first, second, row) in [(30, 1, 0), (10, 2, 1)] {
            let mut sequence = prompt.clone();
            sequence.extend([first, second]);
            let full = full_logits(model, &sequence);
            let first_at = if first == 30 { 2 } else { 0 };
            assert_eq!(bits(&[both[first_at].clone()]), bits(&full[5..6]));
            assert_eq!(bits(&[next[row].clone()]), bits(&full[6..7]));
        }
        // A full cache refuses another token instead of writing past its end.
        let mut small = model.new_cache(16);
        model.prefill(&[1; 16], &mut small).unwrap();
        assert!(model.decode(&[1], &mut small).is_err());
    }
}
