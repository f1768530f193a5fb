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
//! This module and [`super::simd`] are the only ones in the workspace allowed `unsafe`: SIMD
//! loads and stores, and calls into functions compiled for AVX-512 after the CPU has been
//! checked for it at run time.
//!
//! One file of over 600 lines on purpose: the portable product and its AVX-512 kernels sit
//! side by side because they must accumulate in the same order to stay bit-identical.
#![allow(unsafe_code)]

use rayon::prelude::*;

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

const SHIFT: f32 = 12_582_912.0; // 1.5 · 2²³

/// Rounds to the nearest integer (ties to even) without a library call, so loops vectorize;
/// exact for `|v| < 2²²`.
#[inline(always)]
fn round(v: f32) -> f32 {
    (v + SHIFT) - SHIFT
}

/// `round(v)` as an integer, read from the mantissa instead of converted (a saturating
/// float-to-int cast does not vectorize); for `|v| < 2²²`.
#[inline(always)]
fn round_to_int(v: f32) -> i32 {
    (v + SHIFT).to_bits().wrapping_sub(SHIFT.to_bits()) as i32
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
        Self::with_kernel(x, cols, padded_cols, block, Kernel::detect())
    }

    /// Symmetric 8-bit quantization of rows of activations, block by block: `scale = max|x| /
    /// 127`, `q = round(x / scale)` (ties to even), `sum = scale · Σ q`, with `kernel`'s code.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn with_kernel(
        x: &[f32],
        cols: usize,
        padded_cols: usize,
        block: usize,
        kernel: Kernel,
    ) -> Self {
        assert!(
            x.len().is_multiple_of(cols),
            "input is a whole number of rows"
        );
        let rows = x.len() / cols;
        let blocks = padded_cols / block;
        let mut q = vec![0i8; rows * padded_cols];
        let mut scales = vec![0.0f32; rows * blocks];
        let mut sums = vec![0.0f32; rows * blocks];
        #[cfg(target_arch = "x86_64")]
        let vector = block == 32 && cols.is_multiple_of(32) && kernel != Kernel::Portable;
        for (m, row) in x.chunks_exact(cols).enumerate() {
            let row_q = &mut q[m * padded_cols..(m + 1) * padded_cols];
            let at = m * blocks..(m + 1) * blocks;
            #[cfg(target_arch = "x86_64")]
            if vector {
                // SAFETY: a kernel other than the portable one means the CPU has avx512f and
                // avx512bw (detected); the row is `blocks` whole blocks of 32 values, `row_q`
                // as many bytes, and there is one scale and sum per block.
                unsafe {
                    vnni::quantize_row_32(row, row_q, &mut scales[at.clone()], &mut sums[at])
                };
                continue;
            }
            for b in 0..blocks {
                let start = b * block;
                let end = ((b + 1) * block).min(cols);
                let values = if start < cols {
                    &row[start..end]
                } else {
                    &[][..]
                };
                let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let scale = max / 127.0;
                let inverse = if max > 0.0 { 127.0 / max } else { 0.0 };
                let block_q = &mut row_q[start..start + block];
                let mut total = 0i32;
                for (q, &v) in block_q.iter_mut().zip(values) {
                    let rounded = round_to_int(v * inverse);
                    total += rounded;
                    *q = rounded as i8;
                }
                block_q[values.len()..].fill(0);
                scales[at.start + b] = scale;
                sums[at.start + b] = scale * total as f32;
            }
        }
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

    /// [`super::quantize_activations`] for one row in blocks of 32: the same scale, rounding
    /// (ties to even) and sums.
    ///
    /// # Safety
    /// avx512f and avx512bw; `row.len()` a multiple of 32 with `q.len() >= row.len()` and one
    /// scale and sum per block.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_row_32(
        row: &[f32],
        q: &mut [i8],
        scales: &mut [f32],
        sums: &mut [f32],
    ) {
        let sign = _mm512_set1_ps(-0.0);
        for (b, block) in row.chunks_exact(32).enumerate() {
            // SAFETY: two loads of 16 values within the block, two 16-byte stores within q.
            unsafe {
                let lo = _mm512_loadu_ps(block.as_ptr());
                let hi = _mm512_loadu_ps(block.as_ptr().add(16));
                let max = _mm512_reduce_max_ps(_mm512_max_ps(
                    _mm512_andnot_ps(sign, lo),
                    _mm512_andnot_ps(sign, hi),
                ));
                let inverse = _mm512_set1_ps(if max > 0.0 { 127.0 / max } else { 0.0 });
                let qlo = _mm512_cvtps_epi32(_mm512_mul_ps(lo, inverse));
                let qhi = _mm512_cvtps_epi32(_mm512_mul_ps(hi, inverse));
                let total = _mm512_reduce_add_epi32(_mm512_add_epi32(qlo, qhi));
                let out = q.as_mut_ptr().add(b * 32) as *mut __m128i;
                _mm_storeu_si128(out, _mm512_cvtepi32_epi8(qlo));
                _mm_storeu_si128(out.add(1), _mm512_cvtepi32_epi8(qhi));
                let scale = max / 127.0;
                scales[b] = scale;
                sums[b] = scale * total as f32;
            }
        }
    }

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
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
    fn simd_and_portable_quantization_agree_bit_for_bit() {
        let (rows, cols) = (9, 96);
        let mut x = pseudo_random(rows * cols, 21);
        // A block whose maximum is 127 has scale 1, so 0.5 and 1.5 are ties: both round to
        // even (0 and 2).
        x[0] = 127.0;
        x[5] = 0.5;
        x[6] = 1.5;
        x[cols..2 * cols].fill(0.0); // an all-zero row
        let quantize = |kernel| {
            let q = QuantizedRows::with_kernel(&x, cols, cols, 32, kernel);
            (q.q, q.scales.map_bits(), q.sums.map_bits())
        };
        assert_eq!(quantize(Kernel::Portable).0[5..7], [0, 2]);
        assert_eq!(quantize(Kernel::detect()), quantize(Kernel::Portable));
    }

    trait Bits {
        fn map_bits(&self) -> Vec<u32>;
    }

    impl Bits for Vec<f32> {
        fn map_bits(&self) -> Vec<u32> {
            self.iter().map(|v| v.to_bits()).collect()
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
