//! The int8 matrix product `Y = X · Wᵀ` behind [`super::Int8Llama`], computed the way
//! llama.cpp computes Q4_1 × Q8 products, with AVX-512 VNNI's `vpdpbusd` (four `u8 × i8`
//! products summed into each of sixteen `i32` lanes per instruction).
//!
//! * Weights are quantized per output row and block of 32 inputs, asymmetrically:
//!   `w ≈ d · q + m` with `q ∈ 0..=255`. Because 255 = 15 · 17, a block that was Q4_1 in a GGUF
//!   file (`d₄ · q₄ + m`, `q₄ ∈ 0..=15`) is represented exactly (`q = 17 · q₄`), so the int8
//!   path multiplies the same weights as the f32 model.
//! * Activations are quantized per row and block, symmetrically: `x ≈ s · q`, `q ∈ −127..=127`.
//!
//! ```text
//! y[r][n] = Σ_blocks  (s[r][b] · d[n][b]) · Σ_{k ∈ b} q_x[r][k] · q_w[n][k]
//!                   +  (s[r][b] · Σ_{k ∈ b} q_x[r][k]) · m[n][b]
//! ```
//!
//! The inner sums are exact integer arithmetic; the outer one is a chain of fused
//! multiply-adds in block order. The portable kernel does the same operations in the same
//! order, so both return bit-identical results (a test checks it wherever VNNI exists).
//!
//! This is the one module of the workspace allowed `unsafe`: SIMD loads and stores, and calls
//! into functions compiled for AVX-512 after the CPU has been checked for it at run time.
#![allow(unsafe_code)]

use rayon::prelude::*;

/// Defines a function twice: as written, and compiled for AVX-512 (which LLVM then vectorizes
/// 16 lanes wide), choosing at run time. The body must be plain safe Rust; helpers it calls
/// are `#[inline(always)]` so they are compiled in the caller's context.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if has_avx512() {
                    // SAFETY: the CPU was checked for every feature `wide` is compiled with.
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
}

/// Output columns per packed panel: two 512-bit vectors of sixteen `i32` lanes.
pub const PANEL: usize = 32;

/// Rows of `X` one micro-kernel call handles (12 + 12 of the 32 vector registers).
const TILE_ROWS: usize = 6;

/// Block sizes tried, largest first, for a given input width: 32 is the block of GGUF's
/// quantized types (so their weights stay exact) and of llama.cpp's activations.
const BLOCK_CANDIDATES: [usize; 4] = [32, 16, 8, 4];

/// The quantization block for `cols` inputs: the first candidate dividing the width rounded up
/// to a multiple of four.
pub fn block_for(cols: usize) -> (usize, usize) {
    let padded = cols.div_ceil(4) * 4;
    let block = BLOCK_CANDIDATES
        .into_iter()
        .find(|b| padded.is_multiple_of(*b))
        .unwrap_or(4);
    (block, padded)
}

/// A weight matrix `[rows (outputs), cols (inputs)]`, quantized and packed in panels of
/// [`PANEL`] output rows: `data[panel][k / 4][PANEL][4]` holds `q`, and
/// `scales[panel][block][PANEL]` and `mins[panel][block][PANEL]` the per-block `d` and `m`.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    rows: usize,
    cols: usize,
    padded_cols: usize,
    block: usize,
    data: Vec<u8>,
    scales: Vec<f32>,
    mins: Vec<f32>,
}

/// Rounds to the nearest integer (ties to even) without a library call, so loops vectorize;
/// exact for `|v| < 2²²`.
#[inline(always)]
fn round(v: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 · 2²³
    (v + SHIFT) - SHIFT
}

/// Asymmetric 8-bit quantization of one block of weights: `(d, m)` with
/// `v ≈ d · q + m`, `q = round((v − m) / d) ∈ 0..=255`, `m` the block's minimum.
fn quantize_weight_block(values: &[f32], out: &mut [u8]) -> (f32, f32) {
    let min = values.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    let max = values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if max <= min {
        out.fill(0);
        return (0.0, min);
    }
    let scale = (max - min) / 255.0;
    let inverse = 1.0 / scale;
    for (q, &v) in out.iter_mut().zip(values) {
        *q = round((v - min) * inverse).clamp(0.0, 255.0) as u8;
    }
    (scale, min)
}

multiversion! {
    /// Symmetric 8-bit quantization of rows of activations, block by block: `scales[b] =
    /// max|x| / 127`, `q = round(x / scale)`, and `sums[b] = scale · Σ q`.
    pub fn quantize_activations(
        x: &[f32],
        cols: usize,
        block: usize,
        q: &mut [i8],
        scales: &mut [f32],
        sums: &mut [f32],
    ) {
        let padded_cols = q.len() / (x.len() / cols).max(1);
        let blocks = padded_cols / block;
        for (m, row) in x.chunks_exact(cols).enumerate() {
            let row_q = &mut q[m * padded_cols..(m + 1) * padded_cols];
            for b in 0..blocks {
                let start = b * block;
                let end = ((b + 1) * block).min(cols);
                let values = if start < cols { &row[start..end] } else { &[][..] };
                let max = lane_max_abs(values);
                let scale = max / 127.0;
                let inverse = if max > 0.0 { 127.0 / max } else { 0.0 };
                let block_q = &mut row_q[start..start + block];
                let mut total = 0i32;
                for (q, &v) in block_q.iter_mut().zip(values) {
                    let rounded = round(v * inverse) as i8;
                    total += rounded as i32;
                    *q = rounded;
                }
                block_q[values.len()..].fill(0);
                scales[m * blocks + b] = scale;
                sums[m * blocks + b] = scale * total as f32;
            }
        }
    }
}

impl PackedWeights {
    /// Quantizes and packs `weights`, row-major `[rows, cols]` (PyTorch's `[out, in]`).
    pub fn new(weights: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(weights.len(), rows * cols, "weights are rows × cols");
        let (block, padded_cols) = block_for(cols);
        let panels = rows.div_ceil(PANEL);
        let blocks = padded_cols / block;
        let mut data = vec![0u8; panels * padded_cols * PANEL];
        let mut scales = vec![0.0f32; panels * blocks * PANEL];
        let mut mins = vec![0.0f32; panels * blocks * PANEL];
        let mut row_values = vec![0.0f32; padded_cols];
        let mut row_q = vec![0u8; padded_cols];
        for n in 0..rows {
            row_values[..cols].copy_from_slice(&weights[n * cols..(n + 1) * cols]);
            let (panel, lane) = (n / PANEL, n % PANEL);
            for b in 0..blocks {
                let span = b * block..(b + 1) * block;
                let (scale, min) =
                    quantize_weight_block(&row_values[span.clone()], &mut row_q[span]);
                scales[(panel * blocks + b) * PANEL + lane] = scale;
                mins[(panel * blocks + b) * PANEL + lane] = min;
            }
            let base = panel * padded_cols * PANEL;
            for (k, &q) in row_q.iter().enumerate() {
                data[base + (k / 4) * PANEL * 4 + lane * 4 + k % 4] = q;
            }
        }
        Self {
            rows,
            cols,
            padded_cols,
            block,
            data,
            scales,
            mins,
        }
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Quantizes `x` (`[rows, cols]`, row-major) for a product with these weights.
    pub fn quantize_input(&self, x: &[f32]) -> QuantizedRows {
        QuantizedRows::new(x, self.cols, self.padded_cols, self.block)
    }

    /// `out[m][n] = Σ_k x[m][k] · w[n][k]` for `x` quantized by [`Self::quantize_input`];
    /// `out` is `[x rows, self.rows]`, row-major, and is overwritten.
    pub fn matmul(&self, x: &QuantizedRows, out: &mut [f32]) {
        assert_eq!(x.padded_cols, self.padded_cols, "input width");
        assert_eq!(
            out.len(),
            x.rows * self.rows,
            "output is x rows × weight rows"
        );
        let kernel = Kernel::detect();
        let panels = self.rows.div_ceil(PANEL);
        let out_ptr = OutPtr(out.as_mut_ptr());
        // Each task owns a set of panels, i.e. a disjoint set of output columns; the rows are
        // cut into tiles inside it so a panel's weights stay in cache across all rows.
        (0..panels).into_par_iter().for_each(|panel| {
            let mut row = 0;
            while row < x.rows {
                let tile = TILE_ROWS.min(x.rows - row);
                let cols = PANEL.min(self.rows - panel * PANEL);
                let mut tile_out = [[0.0f32; PANEL]; TILE_ROWS];
                kernel.run(self, x, panel, row, tile, &mut tile_out);
                for (r, values) in tile_out.iter().take(tile).enumerate() {
                    let start = (row + r) * self.rows + panel * PANEL;
                    // SAFETY: `start + cols <= out.len()` (row < x.rows, column < self.rows),
                    // and the columns `panel * PANEL ..+ cols` belong to this task alone, so
                    // no two tasks write the same element and `out` outlives the loop.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            values.as_ptr(),
                            out_ptr.get().add(start),
                            cols,
                        );
                    }
                }
                row += tile;
            }
        });
    }
}

/// The output pointer shared by the panel tasks of one product.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks write disjoint columns (see `matmul`), and the borrow of `out` outlives them.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Activations quantized per row and block: `q[row][k]`, `scales[row][block]`, and
/// `sums[row][block] = scale · Σ_{k ∈ block} q` (what multiplies the weights' block minimum).
#[derive(Debug, Clone)]
pub struct QuantizedRows {
    rows: usize,
    padded_cols: usize,
    block: usize,
    q: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<f32>,
}

impl QuantizedRows {
    fn new(x: &[f32], cols: usize, padded_cols: usize, block: usize) -> Self {
        assert!(
            x.len().is_multiple_of(cols),
            "input is a whole number of rows"
        );
        let rows = x.len() / cols;
        let blocks = padded_cols / block;
        let mut q = vec![0i8; rows * padded_cols];
        let mut scales = vec![0.0f32; rows * blocks];
        let mut sums = vec![0.0f32; rows * blocks];
        quantize_activations(x, cols, block, &mut q, &mut scales, &mut sums);
        Self {
            rows,
            padded_cols,
            block,
            q,
            scales,
            sums,
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// Which implementation of the micro-kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust, any CPU.
    Portable,
    /// AVX-512 with VNNI (`vpdpbusd` on 512-bit vectors).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return Self::Avx512Vnni;
        }
        Self::Portable
    }

    /// One tile: rows `row ..+ tile` of `x` times panel `panel` of `w`, into `out`.
    fn run(
        self,
        w: &PackedWeights,
        x: &QuantizedRows,
        panel: usize,
        row: usize,
        tile: usize,
        out: &mut [[f32; PANEL]; TILE_ROWS],
    ) {
        match self {
            Self::Portable => portable_tile(w, x, panel, row, tile, out),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => {
                // SAFETY: `detect` found avx512f, avx512bw and avx512vnni on this CPU.
                unsafe {
                    match tile {
                        6 => vnni::tile::<6>(w, x, panel, row, out),
                        5 => vnni::tile::<5>(w, x, panel, row, out),
                        4 => vnni::tile::<4>(w, x, panel, row, out),
                        3 => vnni::tile::<3>(w, x, panel, row, out),
                        2 => vnni::tile::<2>(w, x, panel, row, out),
                        _ => vnni::tile::<1>(w, x, panel, row, out),
                    }
                }
            }
        }
    }
}

/// The reference micro-kernel: the VNNI kernel's arithmetic, one lane at a time.
fn portable_tile(
    w: &PackedWeights,
    x: &QuantizedRows,
    panel: usize,
    row: usize,
    tile: usize,
    out: &mut [[f32; PANEL]; TILE_ROWS],
) {
    let blocks = x.padded_cols / x.block;
    let panel_data = &w.data[panel * w.padded_cols * PANEL..(panel + 1) * w.padded_cols * PANEL];
    for (r, out_row) in out.iter_mut().enumerate().take(tile) {
        let m = row + r;
        let xq = &x.q[m * x.padded_cols..(m + 1) * x.padded_cols];
        for (lane, value) in out_row.iter_mut().enumerate() {
            let mut total = 0.0f32;
            for b in 0..blocks {
                let mut acc = 0i32;
                for k in b * x.block..(b + 1) * x.block {
                    let wq = panel_data[(k / 4) * PANEL * 4 + lane * 4 + k % 4];
                    acc += wq as i32 * xq[k] as i32;
                }
                let at = (panel * blocks + b) * PANEL + lane;
                let scale = x.scales[m * blocks + b] * w.scales[at];
                total = (acc as f32).mul_add(scale, total);
                total = x.sums[m * blocks + b].mul_add(w.mins[at], total);
            }
            *value = total;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{PANEL, PackedWeights, QuantizedRows, TILE_ROWS};

    /// `R` rows of `x` times one panel of `w`: 2·R accumulators of sixteen `i32` lanes per
    /// block, folded into 2·R f32 accumulators by one fused multiply-add per block.
    ///
    /// # Safety
    /// The CPU must support avx512f, avx512bw and avx512vnni; `row + R <= x.rows`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile<const R: usize>(
        w: &PackedWeights,
        x: &QuantizedRows,
        panel: usize,
        row: usize,
        out: &mut [[f32; PANEL]; TILE_ROWS],
    ) {
        debug_assert!(row + R <= x.rows && R <= TILE_ROWS);
        let blocks = x.padded_cols / x.block;
        let steps = x.block / 4;
        let mut total = [[_mm512_setzero_ps(); 2]; R];
        // SAFETY (all pointer arithmetic below): the panel holds `padded_cols / 4` steps of
        // 128 bytes; row `row + r < x.rows` holds `padded_cols` quantized values; block `b <
        // blocks` indexes scales, minima and sums that exist for every row and panel.
        unsafe {
            let panel_data = w.data.as_ptr().add(panel * w.padded_cols * PANEL);
            let panel_scales = w.scales.as_ptr().add(panel * blocks * PANEL);
            let panel_mins = w.mins.as_ptr().add(panel * blocks * PANEL);
            for b in 0..blocks {
                let mut acc = [[_mm512_setzero_si512(); 2]; R];
                let mut weights = panel_data.add(b * steps * PANEL * 4);
                let mut inputs = x.q.as_ptr().add(row * x.padded_cols + b * x.block);
                for _ in 0..steps {
                    let w0 = _mm512_loadu_si512(weights as *const __m512i);
                    let w1 = _mm512_loadu_si512(weights.add(64) as *const __m512i);
                    for (r, a) in acc.iter_mut().enumerate() {
                        let four = (inputs.add(r * x.padded_cols) as *const i32).read_unaligned();
                        let xv = _mm512_set1_epi32(four);
                        a[0] = _mm512_dpbusd_epi32(a[0], w0, xv);
                        a[1] = _mm512_dpbusd_epi32(a[1], w1, xv);
                    }
                    weights = weights.add(PANEL * 4);
                    inputs = inputs.add(4);
                }
                let d0 = _mm512_loadu_ps(panel_scales.add(b * PANEL));
                let d1 = _mm512_loadu_ps(panel_scales.add(b * PANEL + 16));
                let m0 = _mm512_loadu_ps(panel_mins.add(b * PANEL));
                let m1 = _mm512_loadu_ps(panel_mins.add(b * PANEL + 16));
                for r in 0..R {
                    let s = _mm512_set1_ps(x.scales[(row + r) * blocks + b]);
                    let sum = _mm512_set1_ps(x.sums[(row + r) * blocks + b]);
                    total[r][0] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(acc[r][0]),
                        _mm512_mul_ps(s, d0),
                        total[r][0],
                    );
                    total[r][1] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(acc[r][1]),
                        _mm512_mul_ps(s, d1),
                        total[r][1],
                    );
                    total[r][0] = _mm512_fmadd_ps(sum, m0, total[r][0]);
                    total[r][1] = _mm512_fmadd_ps(sum, m1, total[r][1]);
                }
            }
            for r in 0..R {
                _mm512_storeu_ps(out[r].as_mut_ptr(), total[r][0]);
                _mm512_storeu_ps(out[r].as_mut_ptr().add(16), total[r][1]);
            }
        }
    }
}

/// Lanes of the manual reductions below: a float sum is not reassociated by the compiler, so
/// sums and maxima are kept in this many independent lanes to let it vectorize.
const LANES: usize = 16;

/// `eˣ` to about 2 ulp for `x` in [−87, 88] (clamped outside; underflows to ~1e-38 rather than
/// 0, which no softmax here can tell apart): `2ⁿ · e^r` with `n = round(x / ln 2)`, `|r| ≤ ln 2 / 2`
/// and a degree-6 polynomial for `e^r`. Written without calls so it vectorizes.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in few bits and the rest, so n · LN2_HIGH has no rounding.
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HIGH) - n * LN2_LOW;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn lane_max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l = if *v > *l { *v } else { *l };
        }
    }
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    lanes.iter().fold(rest, |m, &v| m.max(v))
}

#[inline(always)]
fn lane_max_abs(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            let a = v.abs();
            *l = if a > *l { a } else { *l };
        }
    }
    let rest = chunks
        .remainder()
        .iter()
        .fold(0.0f32, |m, &v| m.max(v.abs()));
    lanes.iter().fold(rest, |m, &v| m.max(v))
}

/// Replaces `values` by `exp(v − shift)` and returns their sum.
#[inline(always)]
fn exp_shifted_sum(values: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = values.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *v = exp(*v - shift);
            *l += *v;
        }
    }
    let mut rest = 0.0;
    for v in chunks.into_remainder() {
        *v = exp(*v - shift);
        rest += *v;
    }
    lanes.iter().sum::<f32>() + rest
}

multiversion! {
    /// `log Σ exp(row)`, the log-softmax's normaliser.
    pub fn log_sum_exp(row: &[f32]) -> f32 {
        let max = lane_max(row);
        let mut lanes = [0.0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (l, v) in lanes.iter_mut().zip(chunk) {
                *l += exp(*v - max);
            }
        }
        let rest: f32 = chunks.remainder().iter().map(|v| exp(v - max)).sum();
        max + (lanes.iter().sum::<f32>() + rest).ln()
    }
}

multiversion! {
    /// SwiGLU: `out[r][j] = silu(gate_up[r][j]) · gate_up[r][width + j]`, rows of `2 · width`.
    pub fn swiglu(gate_up: &[f32], width: usize, out: &mut [f32]) {
        for (row, out) in gate_up.chunks_exact(2 * width).zip(out.chunks_exact_mut(width)) {
            let (gate, up) = row.split_at(width);
            for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + exp(-g)) * u;
            }
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
    for tile in 0..tiles {
        let first = tile * QUERY_TILE;
        let rows = QUERY_TILE.min(len - first);
        let seen = (first + rows).div_ceil(LANES) * LANES;
        let tile_queries = &queries[tile * d * QUERY_TILE..(tile + 1) * d * QUERY_TILE];
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: `has_avx512` checked the CPU; the slices have the lengths the kernel
            // reads (`keys` is d × padded with seen ≤ padded, `probs` 4 × padded).
            unsafe { x86::attention_scores(tile_queries, &keys, padded, seen, &mut probs) };
        }
        if !wide {
            portable_attention_scores(tile_queries, &keys, padded, seen, &mut probs);
        }
        softmax_tile(&mut probs, padded, seen, first, rows);
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: as above; `values` is len × width, and keys beyond first + rows have
            // probability 0 and are not read (the loop stops at first + rows).
            unsafe {
                x86::attention_values(&probs, padded, first + rows, &values, width, &mut tile_out)
            };
        }
        if !wide {
            portable_attention_values(&probs, padded, first + rows, &values, width, &mut tile_out);
        }
        for r in 0..rows {
            let i = first + r;
            out[i * d..(i + 1) * d].copy_from_slice(&tile_out[r * width..r * width + d]);
        }
    }
    out
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
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
                .fold(0.0, |acc, (c, q)| q[r].mul_add(keys[c * padded + j], acc));
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
                probs[r * padded + j].mul_add(values[j * width + c], acc)
            });
        }
    }
}

multiversion! {
    /// Softmax of each query row of a tile over its visible keys (`0..=first + r`); later
    /// keys, and rows past the end of the sequence, get probability 0.
    pub fn softmax_tile(probs: &mut [f32], padded: usize, seen: usize, first: usize, rows: usize) {
        for r in 0..QUERY_TILE {
            let row = &mut probs[r * padded..r * padded + seen];
            if r >= rows {
                row.fill(0.0);
                continue;
            }
            let i = first + r;
            let max = lane_max(&row[..=i]);
            let inverse = 1.0 / exp_shifted_sum(&mut row[..=i], max);
            row[..=i].iter_mut().for_each(|p| *p *= inverse);
            row[i + 1..].fill(0.0);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{LANES, QUERY_TILE};

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

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Shapes with partial panels, partial tiles, and widths that are not multiples of 4.
    const SHAPES: [(usize, usize, usize); 5] = [
        (7, 70, 45),
        (13, 64, 32),
        (1, 576, 192),
        (12, 30, 33),
        (6, 3, 1),
    ];

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

    #[test]
    fn quantized_product_is_close_to_the_f32_product() {
        for (m, n, k) in SHAPES {
            let x = pseudo_random(m * k, 1 + m as u64);
            let w = pseudo_random(n * k, 2 + n as u64);
            let packed = PackedWeights::new(&w, n, k);
            let mut out = vec![f32::NAN; m * n];
            packed.matmul(&packed.quantize_input(&x), &mut out);
            for i in 0..m {
                for j in 0..n {
                    let exact: f32 = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum();
                    // Two 8-bit roundings of values in [-1, 1]: about 1/127 relative per term,
                    // random in sign, so well under 2 % of √k.
                    let bound = 0.02 * (k as f32).sqrt();
                    assert!(
                        (out[i * n + j] - exact).abs() < bound,
                        "{m}×{n}×{k} at ({i},{j}): {} vs {exact}",
                        out[i * n + j]
                    );
                }
            }
        }
    }

    #[test]
    fn q4_1_weights_and_integer_activations_multiply_exactly() {
        // Weights on a Q4_1 grid (d₄ · q₄ + m per block of 32, with q₄ = 0 and 15 present, as
        // ggml's quantizer makes them) and activations that are integers with a block maximum
        // of 127 (scale 1) are both represented without loss, so only f32 rounding remains.
        let (m, n, k) = (5, 33, 64);
        let x: Vec<f32> = (0..m * k)
            .map(|i| {
                if i % 32 == 0 {
                    127.0
                } else {
                    ((i * 7) % 255) as f32 - 127.0
                }
            })
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| {
                let block = i / 32;
                let (d4, min) = (
                    0.01 + 0.003 * (block % 7) as f32,
                    -0.05 * (block % 5) as f32,
                );
                let q4 = match i % 32 {
                    0 => 0,
                    1 => 15,
                    r => (r * 11 + block) % 16,
                };
                d4 * q4 as f32 + min
            })
            .collect();
        let packed = PackedWeights::new(&w, n, k);
        let mut out = vec![0.0; m * n];
        packed.matmul(&packed.quantize_input(&x), &mut out);
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = (0..k)
                    .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                    .sum();
                let scale: f64 = (0..k)
                    .map(|t| (x[i * k + t] * w[j * k + t]).abs() as f64)
                    .sum();
                assert!(
                    (out[i * n + j] as f64 - exact).abs() < 1e-5 * scale,
                    "({i},{j}): {} vs {exact}",
                    out[i * n + j]
                );
            }
        }
    }

    #[test]
    fn simd_and_portable_kernels_agree_bit_for_bit() {
        let kernel = Kernel::detect();
        if kernel == Kernel::Portable {
            // Nothing to compare on this CPU: the portable kernel is the only one.
            return;
        }
        for (m, n, k) in SHAPES {
            let x = pseudo_random(m * k, 3 + k as u64);
            let w = pseudo_random(n * k, 4 + k as u64);
            let packed = PackedWeights::new(&w, n, k);
            let q = packed.quantize_input(&x);
            for panel in 0..n.div_ceil(PANEL) {
                let mut row = 0;
                while row < m {
                    let tile = TILE_ROWS.min(m - row);
                    let mut fast = [[0.0; PANEL]; TILE_ROWS];
                    let mut slow = [[0.0; PANEL]; TILE_ROWS];
                    kernel.run(&packed, &q, panel, row, tile, &mut fast);
                    Kernel::Portable.run(&packed, &q, panel, row, tile, &mut slow);
                    for r in 0..tile {
                        let bits = |v: &[f32; PANEL]| v.map(f32::to_bits);
                        assert_eq!(
                            bits(&fast[r]),
                            bits(&slow[r]),
                            "{m}×{n}×{k} row {}",
                            row + r
                        );
                    }
                    row += tile;
                }
            }
        }
    }
}
