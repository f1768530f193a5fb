//! Multi-head attention with grouped keys and values, forward and backward, on
//! [`super::matmul`]: `softmax(Q·Kᵀ·scale) · V` per head with its two products on
//! prefsmith's kernel and the softmax and its gradient in one pass each, instead of burn's
//! generic composition (its batched products ran on the `gemm` crate at a third of the
//! kernel's speed, and every element-wise step of the softmax was a pass of its own).
//!
//! Head `h` reads key/value head `h / group` (`group = heads / kv_heads`) in place, so the
//! keys and values are never copied out per query head. With `causal`, query `i` sees keys
//! `0..=i + keys − queries` (the new queries come after any cached keys); otherwise all keys.
//!
//! The backward pass, with `P` the probabilities kept from the forward pass and `dO` the
//! output's gradient, per head:
//! `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = scale · dS·K`,
//! `dK = scale · dSᵀ·Q`; the gradients of a key/value head sum over its query heads.

use rayon::prelude::*;

use super::{MatRef, MatmulPrecision, matmul};

/// A rank-4 `[batch, heads, positions, head_dim]` f32 view with arbitrary non-negative
/// strides, as the model's tensors come (heads split out of `[batch, positions, width]`).
#[derive(Debug, Clone, Copy)]
pub struct Heads<'a> {
    /// The underlying storage.
    pub data: &'a [f32],
    /// Offset of element `(0, 0, 0, 0)`.
    pub offset: usize,
    /// `[batch, heads, positions, head_dim]`.
    pub dims: [usize; 4],
    /// Element strides of the four dimensions.
    pub strides: [usize; 4],
}

impl<'a> Heads<'a> {
    /// Head `head` of batch row `row` as a `positions × head_dim` matrix, or `None` if it would
    /// reach outside the storage.
    fn head(&self, row: usize, head: usize) -> Option<MatRef<'a>> {
        MatRef::new(
            self.data,
            self.offset + row * self.strides[0] + head * self.strides[1],
            [self.dims[2], self.dims[3]],
            [self.strides[2], self.strides[3]],
        )
    }
}

/// The shape of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    /// Batch rows.
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// New positions (queries).
    pub queries: usize,
    /// Key positions (`≥ queries` when causal).
    pub keys: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Whether query `i` sees only keys up to `i + keys − queries`.
    pub causal: bool,
}

impl AttentionShape {
    /// The shape of `q` against `k` and `v`, or a reason it is not one this module takes.
    pub fn of(q: &Heads, k: &Heads, v: &Heads, causal: bool) -> Result<Self, String> {
        let [batch, heads, queries, head_dim] = q.dims;
        let [kb, kv_heads, keys, kd] = k.dims;
        if k.dims != v.dims || kb != batch || kd != head_dim {
            return Err(format!(
                "query {:?}, key {:?} and value {:?} do not match",
                q.dims, k.dims, v.dims
            ));
        }
        if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(format!(
                "{heads} query heads over {kv_heads} key/value heads"
            ));
        }
        if causal && keys < queries {
            return Err(format!(
                "causal attention of {queries} queries over {keys} keys"
            ));
        }
        Ok(Self {
            batch,
            heads,
            kv_heads,
            queries,
            keys,
            head_dim,
            causal,
        })
    }

    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Keys query `i` sees (a prefix of the keys).
    fn visible(&self, i: usize) -> usize {
        if self.causal {
            i + 1 + self.keys - self.queries
        } else {
            self.keys
        }
    }
}

/// What the forward pass returns: the merged output and what the backward pass needs.
pub struct AttentionOutput {
    /// `[batch, queries, heads · head_dim]`, row-major: heads already merged.
    pub output: Vec<f32>,
    /// The probabilities `[batch, heads, queries, keys]`, row-major (zero where masked).
    pub probabilities: Vec<f32>,
}

fn view<'a>(heads: &Heads<'a>, row: usize, head: usize) -> MatRef<'a> {
    heads
        .head(row, head)
        .expect("attention views lie inside their tensors (checked by the caller)")
}

/// The forward pass. `scale` multiplies the scores (usually `1 / √head_dim`).
///
/// # Panics
/// When a view reaches outside its storage or this CPU lacks the kernel at `precision`: both
/// are the caller's checks ([`check_views`], [`super::supports`]).
pub fn forward(
    shape: AttentionShape,
    (q, k, v): (&Heads, &Heads, &Heads),
    scale: f32,
    precision: MatmulPrecision,
) -> AttentionOutput {
    let AttentionShape {
        batch,
        heads,
        queries,
        keys,
        head_dim,
        ..
    } = shape;
    let group = shape.group();
    let mut probabilities = vec![0f32; batch * heads * queries * keys];
    let mut output = vec![0f32; batch * queries * heads * head_dim];
    if queries == 0 || keys == 0 || head_dim == 0 {
        // Nothing to attend to or nothing to carry: every output is an empty sum.
        return AttentionOutput {
            output,
            probabilities,
        };
    }
    let per_head: Vec<Vec<f32>> = probabilities
        .par_chunks_mut(queries * keys)
        .enumerate()
        .map(|(index, probs)| {
            let (row, head) = (index / heads, index % heads);
            let (qh, kh, vh) = (
                view(q, row, head),
                view(k, row, head / group),
                view(v, row, head / group),
            );
            let scores = matmul(qh, kh.t(), precision);
            for (i, (scores, probs)) in scores
                .chunks_exact(keys)
                .zip(probs.chunks_exact_mut(keys))
                .enumerate()
            {
                softmax_row(&scores[..shape.visible(i)], scale, probs);
            }
            let probs = MatRef::row_major(probs, queries, keys).expect("sized above");
            matmul(probs, vh, precision)
        })
        .collect();
    for (index, out) in per_head.iter().enumerate() {
        let (row, head) = (index / heads, index % heads);
        for (i, values) in out.chunks_exact(head_dim).enumerate() {
            let at = ((row * queries + i) * heads + head) * head_dim;
            output[at..at + head_dim].copy_from_slice(values);
        }
    }
    AttentionOutput {
        output,
        probabilities,
    }
}

/// `probs[j] = softmax(scale · scores)[j]` over the visible `scores`, zero past them.
fn softmax_row(scores: &[f32], scale: f32, probs: &mut [f32]) {
    let max = scores
        .iter()
        .fold(f32::NEG_INFINITY, |m, &s| m.max(s * scale));
    let mut sum = 0f32;
    for (p, &s) in probs.iter_mut().zip(scores) {
        *p = (s * scale - max).exp();
        sum += *p;
    }
    let inverse = sum.recip();
    for p in &mut probs[..scores.len()] {
        *p *= inverse;
    }
    probs[scores.len()..].fill(0.0);
}

/// The gradients `(dQ, dK, dV)`: `dQ` as `[batch, heads, queries, head_dim]` and `dK`, `dV` as
/// `[batch, kv_heads, keys, head_dim]`, all row-major. `grad` is the output's gradient viewed
/// as `[batch, heads, queries, head_dim]` (heads split out of the merged output).
///
/// # Panics
/// As [`forward`].
pub fn backward(
    shape: AttentionShape,
    (q, k, v): (&Heads, &Heads, &Heads),
    probabilities: &[f32],
    grad: &Heads,
    scale: f32,
    precision: MatmulPrecision,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let AttentionShape {
        batch,
        heads,
        kv_heads,
        queries,
        keys,
        head_dim,
        ..
    } = shape;
    let group = shape.group();
    let mut dq = vec![0f32; batch * heads * queries * head_dim];
    let mut dk = vec![0f32; batch * kv_heads * keys * head_dim];
    let mut dv = vec![0f32; batch * kv_heads * keys * head_dim];
    if queries == 0 || keys == 0 || head_dim == 0 {
        return (dq, dk, dv);
    }
    // One task per key/value head: it owns that head's dK and dV and its query heads' dQ.
    dq.par_chunks_mut(group * queries * head_dim)
        .zip(dk.par_chunks_mut(keys * head_dim))
        .zip(dv.par_chunks_mut(keys * head_dim))
        .enumerate()
        .for_each(|(index, ((dq, dk), dv))| {
            let (row, kv_head) = (index / kv_heads, index % kv_heads);
            let (kh, vh) = (view(k, row, kv_head), view(v, row, kv_head));
            for member in 0..group {
                let head = kv_head * group + member;
                let qh = view(q, row, head);
                let dout = view(grad, row, head);
                let first = (row * heads + head) * queries * keys;
                let probs = &probabilities[first..first + queries * keys];
                let p = MatRef::row_major(probs, queries, keys).expect("sized by forward");
                add(dv, &matmul(p.t(), dout, precision));
                // dP, then dS in place.
                let mut ds = matmul(dout, vh.t(), precision);
                for (i, (ds, probs)) in ds
                    .chunks_exact_mut(keys)
                    .zip(probs.chunks_exact(keys))
                    .enumerate()
                {
                    let visible = shape.visible(i);
                    let dot: f32 = ds[..visible]
                        .iter()
                        .zip(&probs[..visible])
                        .map(|(d, p)| d * p)
                        .sum();
                    for (d, &p) in ds[..visible].iter_mut().zip(&probs[..visible]) {
                        *d = scale * p * (*d - dot);
                    }
                    ds[visible..].fill(0.0);
                }
                let ds = MatRef::row_major(&ds, queries, keys).expect("sized above");
                dq[member * queries * head_dim..][..queries * head_dim]
                    .copy_from_slice(&matmul(ds, kh, precision));
                add(dk, &matmul(ds.t(), qh, precision));
            }
        });
    (dq, dk, dv)
}

fn add(into: &mut [f32], values: &[f32]) {
    for (a, b) in into.iter_mut().zip(values) {
        *a += b;
    }
}

/// Whether every head of `heads` lies inside its storage (what [`forward`] and [`backward`]
/// rely on).
pub fn check_views(heads: &Heads) -> bool {
    let [batch, count, ..] = heads.dims;
    batch == 0 || count == 0 || heads.head(batch - 1, count - 1).is_some()
}
