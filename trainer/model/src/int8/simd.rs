//! The f32 parts of the int8 engine's forward pass that are not matrix products: causal
//! attention (register-tiled, four queries at a time), softmax, log-sum-exp and SwiGLU, with
//! an `eˣ` that needs no library call. Each has an AVX-512 implementation, chosen at run time,
//! and a portable one that computes the same formulas.
#![allow(unsafe_code)]

/// f32 lanes of a 512-bit vector register.
const LANES: usize = 16;

// ln 2 split in a part exact in few bits and the rest, so n · LN2_HIGH has no rounding.
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;

/// Whether this CPU runs the AVX-512 code.
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `eˣ` to about 2 ulp for `x` in [−87, 88] (clamped outside; underflows to ~1e-38 rather than
/// 0, which no softmax here can tell apart): `2ⁿ · e^r` with `n = round(x / ln 2)`,
/// `|r| ≤ ln 2 / 2` and a degree-6 polynomial for `e^r`.
pub fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // adding and subtracting 1.5 · 2²³ rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HIGH) - n * LN2_LOW;
    let mut p = 1.0 / 720.0;
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p * r + c;
    }
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

fn lane_max(values: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has avx512f.
        return unsafe { x86::max(values) };
    }
    values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Replaces `values` by `exp(v − shift)` and returns their sum.
fn exp_shifted_sum(values: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has avx512f.
        return unsafe { x86::exp_sum(values.as_ptr(), values.as_mut_ptr(), values.len(), shift) };
    }
    let mut total = 0.0;
    for v in values {
        *v = exp(*v - shift);
        total += *v;
    }
    total
}

/// `log Σ exp(row)`, the log-softmax's normaliser.
pub fn log_sum_exp(row: &[f32]) -> f32 {
    let max = lane_max(row);
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has avx512f; a null destination means the row is only read.
        let total = unsafe { x86::exp_sum(row.as_ptr(), std::ptr::null_mut(), row.len(), max) };
        return max + total.ln();
    }
    max + row.iter().map(|&v| exp(v - max)).sum::<f32>().ln()
}

/// SwiGLU: `out[r][j] = silu(gate_up[r][j]) · gate_up[r][width + j]`, rows of `2 · width`.
pub fn swiglu(gate_up: &[f32], width: usize, out: &mut [f32]) {
    let wide = has_avx512();
    for (row, out) in gate_up
        .chunks_exact(2 * width)
        .zip(out.chunks_exact_mut(width))
    {
        let (gate, up) = row.split_at(width);
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the CPU has avx512f.
            unsafe { x86::swiglu_row(gate, up, out) };
            continue;
        }
        for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + exp(-g)) * u;
        }
    }
}

/// Queries handled together by the attention kernel (their scores and outputs stay in
/// registers while keys and values stream past). The kernel spells out four rows.
const QUERY_TILE: usize = 4;

/// Causal softmax attention of one head over one sequence: `q`, `k`, `v` are `[len, d]`;
/// returns `[len, d]`. Scores are scaled by `1 / √d`. Queries go in tiles of four; a tile's
/// scores against sixteen keys, and its outputs over sixteen dimensions, are accumulated in
/// registers.
pub fn causal_attention_head(q: &[f32], k: &[f32], v: &[f32], d: usize) -> Vec<f32> {
    attention_with(q, k, v, d, has_avx512())
}

/// [`causal_attention_head`] with the AVX-512 kernels (`wide`) or the portable ones.
fn attention_with(q: &[f32], k: &[f32], v: &[f32], d: usize, wide: bool) -> Vec<f32> {
    let len = q.len() / d;
    // Keys transposed to [d, padded len], so sixteen keys' scores are one vector.
    let padded = len.div_ceil(LANES) * LANES;
    let mut keys = vec![0.0f32; d * padded];
    for (j, row) in k.chunks_exact(d).enumerate() {
        for (c, &value) in row.iter().enumerate() {
            keys[c * padded + j] = value;
        }
    }
    // Values padded to whole vectors of dimensions.
    let width = d.div_ceil(LANES) * LANES;
    let mut values = vec![0.0f32; len * width];
    for (padded_row, row) in values.chunks_exact_mut(width).zip(v.chunks_exact(d)) {
        padded_row[..d].copy_from_slice(row);
    }
    // Queries pre-scaled and interleaved by tile: [tile][d][QUERY_TILE] (padding rows are 0
    // and never read back).
    let scale = 1.0 / (d as f32).sqrt();
    let tiles = len.div_ceil(QUERY_TILE);
    let mut queries = vec![0.0f32; tiles * QUERY_TILE * d];
    for (i, row) in q.chunks_exact(d).enumerate() {
        let (tile, r) = (i / QUERY_TILE, i % QUERY_TILE);
        for (c, &value) in row.iter().enumerate() {
            queries[(tile * d + c) * QUERY_TILE + r] = value * scale;
        }
    }
    let mut out = vec![0.0f32; len * d];
    let mut probs = vec![0.0f32; QUERY_TILE * padded];
    let mut tile_out = vec![0.0f32; QUERY_TILE * width];
    let block = KeyBlock {
        keys: &keys,
        values: &values,
        padded,
        width,
    };
    for tile in 0..tiles {
        let first = tile * QUERY_TILE;
        let rows = QUERY_TILE.min(len - first);
        let tile_queries = &queries[tile * d * QUERY_TILE..(tile + 1) * d * QUERY_TILE];
        let visible: [usize; QUERY_TILE] =
            std::array::from_fn(|r| if r < rows { first + r + 1 } else { 0 });
        attend_tile(
            tile_queries,
            &block,
            &visible,
            &mut probs,
            &mut tile_out,
            wide,
        );
        for r in 0..rows {
            let i = first + r;
            out[i * d..(i + 1) * d].copy_from_slice(&tile_out[r * width..r * width + d]);
        }
    }
    out
}

/// `probs[r][j] = Σ_c queries[c][r] · keys[c][j]` for `j < seen`.
fn portable_attention_scores(
    queries: &[f32],
    keys: &[f32],
    padded: usize,
    seen: usize,
    probs: &mut [f32],
) {
    for r in 0..QUERY_TILE {
        for j in 0..seen {
            probs[r * padded + j] = queries
                .chunks_exact(QUERY_TILE)
                .enumerate()
                .fold(0.0, |acc, (c, q)| acc + q[r] * keys[c * padded + j]);
        }
    }
}

/// `out[r][c] = Σ_{j < keys} probs[r][j] · values[j][c]`.
fn portable_attention_values(
    probs: &[f32],
    padded: usize,
    keys: usize,
    values: &[f32],
    width: usize,
    out: &mut [f32],
) {
    for r in 0..QUERY_TILE {
        for c in 0..width {
            out[r * width + c] = (0..keys).fold(0.0, |acc, j| {
                acc + probs[r * padded + j] * values[j * width + c]
            });
        }
    }
}

/// Keys and values one tile of queries attends to: keys transposed, `[d][padded]`, values
/// `[≥ visible][width]`, `padded` and `width` multiples of 16.
struct KeyBlock<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    padded: usize,
    width: usize,
}

/// One tile of four queries (`queries[c][r]`, pre-scaled): scores against the keys each sees
/// (`visible[r]` of them), softmax, and the weighted values into `out` (`[4][width]`).
fn attend_tile(
    queries: &[f32],
    block: &KeyBlock<'_>,
    visible: &[usize; QUERY_TILE],
    probs: &mut [f32],
    out: &mut [f32],
    wide: bool,
) {
    let KeyBlock {
        keys,
        values,
        padded,
        width,
    } = *block;
    let longest = visible.iter().copied().max().unwrap_or(0);
    let seen = longest.div_ceil(LANES) * LANES;
    let d = queries.len() / QUERY_TILE;
    // What the AVX-512 kernels read, checked here so their raw accesses stay in bounds.
    assert!(padded.is_multiple_of(LANES) && width.is_multiple_of(LANES) && seen <= padded);
    assert!(keys.len() >= d * padded && values.len() >= longest * width);
    assert!(probs.len() >= QUERY_TILE * padded && out.len() >= QUERY_TILE * width);
    #[cfg(target_arch = "x86_64")]
    if wide {
        // SAFETY: `wide` is only set when the CPU has avx512f; the lengths are checked above.
        unsafe { x86::attention_scores(queries, keys, padded, seen, probs) };
        softmax_rows(probs, padded, seen, visible);
        // SAFETY: as above; keys past `longest` are not read.
        unsafe { x86::attention_values(probs, padded, longest, values, width, out) };
        return;
    }
    portable_attention_scores(queries, keys, padded, seen, probs);
    softmax_rows(probs, padded, seen, visible);
    portable_attention_values(probs, padded, longest, values, width, out);
}

/// Softmax of each query row of a tile over its first `visible[r]` keys (of `seen` computed);
/// later keys, and rows with nothing visible, get probability 0.
fn softmax_rows(probs: &mut [f32], padded: usize, seen: usize, visible: &[usize; QUERY_TILE]) {
    for (r, &visible) in visible.iter().enumerate() {
        let row = &mut probs[r * padded..r * padded + seen];
        if visible == 0 {
            row.fill(0.0);
            continue;
        }
        let max = lane_max(&row[..visible]);
        let inverse = 1.0 / exp_shifted_sum(&mut row[..visible], max);
        row[..visible].iter_mut().for_each(|p| *p *= inverse);
        row[visible..].fill(0.0);
    }
}

/// Attention of one position's query heads (`queries`, `[heads, d]`, all sharing one key/value
/// head) over the first `visible` cached positions (`keys` `[d][capacity]`, `values`
/// `[capacity][width]`); returns `[heads, d]`.
pub fn cached_attention(
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    capacity: usize,
    visible: usize,
    d: usize,
) -> Vec<f32> {
    let heads = queries.len() / d;
    let cached = KeyBlock {
        keys,
        values,
        padded: capacity,
        width: values.len() / capacity,
    };
    let width = cached.width;
    let wide = has_avx512();
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0f32; heads * d];
    let mut probs = vec![0.0f32; QUERY_TILE * capacity];
    let mut tile_out = vec![0.0f32; QUERY_TILE * width];
    let mut tile_queries = vec![0.0f32; d * QUERY_TILE];
    for first in (0..heads).step_by(QUERY_TILE) {
        let rows = QUERY_TILE.min(heads - first);
        tile_queries.fill(0.0);
        for r in 0..rows {
            for c in 0..d {
                tile_queries[c * QUERY_TILE + r] = queries[(first + r) * d + c] * scale;
            }
        }
        let limits: [usize; QUERY_TILE] =
            std::array::from_fn(|r| if r < rows { visible } else { 0 });
        attend_tile(
            &tile_queries,
            &cached,
            &limits,
            &mut probs,
            &mut tile_out,
            wide,
        );
        for r in 0..rows {
            out[(first + r) * d..(first + r + 1) * d]
                .copy_from_slice(&tile_out[r * width..r * width + d]);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{LANES, QUERY_TILE};

    /// `eˣ` on sixteen lanes, the same method as [`super::exp`] (with fused multiply-adds).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp16(x: __m512) -> __m512 {
        let x = _mm512_max_ps(
            _mm512_min_ps(x, _mm512_set1_ps(88.0)),
            _mm512_set1_ps(-87.0),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(super::LN2_HIGH), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(super::LN2_LOW), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// The mask of the first `min(n, 16)` lanes.
    #[inline]
    fn first_lanes(n: usize) -> __mmask16 {
        ((1u32 << n.min(LANES)) - 1) as __mmask16
    }

    /// The largest value.
    ///
    /// # Safety
    /// avx512f.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max(values: &[f32]) -> f32 {
        let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut chunks = values.chunks_exact(LANES);
        // SAFETY: each load reads one whole chunk, or the remainder's lanes only (masked).
        unsafe {
            for chunk in &mut chunks {
                acc = _mm512_max_ps(acc, _mm512_loadu_ps(chunk.as_ptr()));
            }
            let rest = chunks.remainder();
            let tail = _mm512_mask_loadu_ps(
                _mm512_set1_ps(f32::NEG_INFINITY),
                first_lanes(rest.len()),
                rest.as_ptr(),
            );
            _mm512_reduce_max_ps(_mm512_max_ps(acc, tail))
        }
    }

    /// `Σ exp(src[i] − shift)` over `len` values, writing each term to `dst` unless it is
    /// null.
    ///
    /// # Safety
    /// avx512f; `src` readable and `dst` (if not null) writable for `len` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_sum(src: *const f32, dst: *mut f32, len: usize, shift: f32) -> f32 {
        let shift = _mm512_set1_ps(shift);
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        // SAFETY: full vectors while 16 lanes remain, then the remaining lanes masked.
        unsafe {
            while i < len {
                let mask = first_lanes(len - i);
                let e = exp16(_mm512_sub_ps(
                    _mm512_maskz_loadu_ps(mask, src.add(i)),
                    shift,
                ));
                if !dst.is_null() {
                    _mm512_mask_storeu_ps(dst.add(i), mask, e);
                }
                acc = _mm512_mask_add_ps(acc, mask, acc, e);
                i += LANES;
            }
        }
        _mm512_reduce_add_ps(acc)
    }

    /// `out = silu(gate) · up`, element by element (equal lengths).
    ///
    /// # Safety
    /// avx512f.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn swiglu_row(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let one = _mm512_set1_ps(1.0);
        let n = out.len().min(gate.len()).min(up.len());
        let mut i = 0;
        // SAFETY: full vectors while 16 lanes remain, then the remaining lanes masked.
        unsafe {
            while i < n {
                let mask = first_lanes(n - i);
                let g = _mm512_maskz_loadu_ps(mask, gate.as_ptr().add(i));
                let u = _mm512_maskz_loadu_ps(mask, up.as_ptr().add(i));
                let sig = _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g)));
                let y = _mm512_div_ps(_mm512_mul_ps(g, u), sig);
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), mask, y);
                i += LANES;
            }
        }
    }

    /// Scores of a tile of four queries (`queries[c][r]`) against keys `0..seen`
    /// (`keys[c][j]`, row length `padded`), into `probs[r][j]`.
    ///
    /// # Safety
    /// avx512f; `seen` a multiple of 16 and at most `padded`; `keys.len() >= d · padded` and
    /// `probs.len() >= 4 · padded` where `d = queries.len() / 4`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn attention_scores(
        queries: &[f32],
        keys: &[f32],
        padded: usize,
        seen: usize,
        probs: &mut [f32],
    ) {
        let d = queries.len() / QUERY_TILE;
        debug_assert!(seen <= padded && keys.len() >= d * padded && probs.len() >= 4 * padded);
        // SAFETY: every offset stays below the lengths promised above.
        unsafe {
            for j in (0..seen).step_by(LANES) {
                let mut acc = [_mm512_setzero_ps(); QUERY_TILE];
                let mut key = keys.as_ptr().add(j);
                let mut query = queries.as_ptr();
                for _ in 0..d {
                    let k = _mm512_loadu_ps(key);
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(*query.add(r)), k, *a);
                    }
                    key = key.add(padded);
                    query = query.add(QUERY_TILE);
                }
                for (r, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(probs.as_mut_ptr().add(r * padded + j), *a);
                }
            }
        }
    }

    /// `out[r][c] = Σ_{j < keys} probs[r][j] · values[j][c]` for a tile of four queries.
    ///
    /// # Safety
    /// avx512f; `width` a multiple of 16; `values.len() >= keys · width`, `keys <= padded`,
    /// `probs.len() >= 4 · padded`, `out.len() >= 4 · width`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn attention_values(
        probs: &[f32],
        padded: usize,
        keys: usize,
        values: &[f32],
        width: usize,
        out: &mut [f32],
    ) {
        debug_assert!(keys <= padded && values.len() >= keys * width && out.len() >= 4 * width);
        // SAFETY: every offset stays below the lengths promised above.
        unsafe {
            for c in (0..width).step_by(LANES) {
                let mut acc = [_mm512_setzero_ps(); QUERY_TILE];
                let mut value = values.as_ptr().add(c);
                for j in 0..keys {
                    let v = _mm512_loadu_ps(value);
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(
                            _mm512_set1_ps(*probs.as_ptr().add(r * padded + j)),
                            v,
                            *a,
                        );
                    }
                    value = value.add(width);
                }
                for (r, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(out.as_mut_ptr().add(r * width + c), *a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::kernel::tests::pseudo_random;

    #[test]
    fn fast_exp_is_within_a_few_ulp() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (fast, exact) = (exp(x), (x as f64).exp());
            assert!(
                ((fast as f64 - exact) / exact).abs() < 4e-7,
                "exp({x}) = {fast} vs {exact}"
            );
            x += 0.0137;
        }
        assert!(exp(-1000.0) < 1e-37 && exp(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn swiglu_matches_the_formula() {
        let width = 37;
        let gate_up: Vec<f32> = pseudo_random(3 * 2 * width, 4)
            .iter()
            .map(|v| v * 12.0)
            .collect();
        let mut out = vec![0.0; 3 * width];
        swiglu(&gate_up, width, &mut out);
        for (r, row) in gate_up.chunks_exact(2 * width).enumerate() {
            for j in 0..width {
                let (g, u) = (row[j] as f64, row[width + j] as f64);
                let expected = g / (1.0 + (-g).exp()) * u;
                assert!(
                    (out[r * width + j] as f64 - expected).abs() < 1e-5 * (1.0 + expected.abs())
                );
            }
        }
    }

    #[test]
    fn log_sum_exp_and_attention_match_direct_formulas() {
        let row = pseudo_random(1000, 9)
            .iter()
            .map(|v| v * 30.0)
            .collect::<Vec<_>>();
        let direct = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&row) as f64 - direct).abs() < 1e-5);
        for (len, d) in [(37, 8), (70, 64), (1, 20)] {
            let (q, k, v) = (
                pseudo_random(len * d, 10),
                pseudo_random(len * d, 11),
                pseudo_random(len * d, 12),
            );
            let out = causal_attention_head(&q, &k, &v, d);
            let portable = attention_with(&q, &k, &v, d, false);
            for i in 0..len {
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..d)
                            .map(|c| (q[i * d + c] * k[j * d + c]) as f64)
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for c in 0..d {
                    let expected: f64 = (0..=i)
                        .map(|j| weights[j] / total * v[j * d + c] as f64)
                        .sum();
                    assert!((out[i * d + c] as f64 - expected).abs() < 1e-5, "({i},{c})");
                    assert!(
                        (portable[i * d + c] as f64 - expected).abs() < 1e-5,
                        "({i},{c})"
                    );
                }
            }
        }
    }
}
