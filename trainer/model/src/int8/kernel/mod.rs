//! The integer matrix product `Y = X · Wᵀ` behind [`super::Int8Llama`], computed the way
//! llama.cpp computes Q4_1 × Q8 products: integer dot products per block of inputs, then one
//! fused multiply-add per block in f32.
//!
//! * Weights are stored per output row and block of inputs, asymmetrically: `w = d · q + m`.
//!   Two formats ([`WeightFormat`]):
//!   - **nibbles**, 4 bits per weight, `q ∈ 0..=15`, `d` and `m` in f16 per block of 32: GGUF's
//!     Q4_1 block, levels 0 and 15 used (ggml's Q4_1 quantizer uses both in every block; a
//!     Q4_0 block often lacks level 15, which keeps its matrix 8-bit). A matrix is stored so
//!     only when every one of its blocks is *exactly* on such a grid (checked value by value
//!     at packing), so the product multiplies the same weights as the f32 model. This is what a Q4_1 GGUF loads as, and it
//!     halves the bytes a token must read from memory (batch-1 generation is bound by them).
//!   - **bytes**, 8 bits per weight, `q ∈ 0..=255`, `d` and `m` in f32: any weights. Because
//!     255 = 15 · 17, a Q4_1 block is still exact here too (`q = 17 · q₄`).
//! * Activations are quantized per row and block, symmetrically: `x ≈ s · q`, `q ∈ −127..=127`.
//!
//! ```text
//! y[r][n] = Σ_blocks  (s[r][b] · d[n][b]) · Σ_{k ∈ b} q_x[r][k] · q_w[n][k]
//!                   +  (s[r][b] · Σ_{k ∈ b} q_x[r][k]) · m[n][b]
//! ```
//!
//! The inner sums are exact integer arithmetic; the outer one is a chain of fused
//! multiply-adds in block order. Every kernel ([`Kernel`]: portable Rust, AVX2, AVX-512 VNNI)
//! does the same operations in the same order, so all return bit-identical results (a test
//! checks each one this CPU runs against the portable one).
//!
//! This module, its kernels ([`vnni`], [`avx2`]) and [`super::simd`] are the only ones in the
//! workspace allowed `unsafe`: SIMD loads and stores, and calls into functions compiled for
//! AVX2 or AVX-512 after the CPU has been checked for them at run time.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use half::f16;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod vnni;

/// Output columns per packed panel: two 512-bit vectors of sixteen `i32` lanes.
pub const PANEL: usize = 32;

/// Rows of `X` one micro-kernel call handles (12 + 12 of the 32 vector registers).
const TILE_ROWS: usize = 6;

/// Block sizes tried, largest first, for a given input width: 32 is the block of GGUF's
/// quantized types (so their weights stay exact) and of llama.cpp's activations.
const BLOCK_CANDIDATES: [usize; 4] = [32, 16, 8, 4];

/// The block of the nibble format (GGUF's Q4_1 block).
const NIBBLE_BLOCK: usize = 32;

/// Bytes of one block of one panel in the nibble format: 32 lanes × 32 weights × ½ byte.
const NIBBLE_PANEL_BLOCK: usize = PANEL * NIBBLE_BLOCK / 2;

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

/// How a packed matrix stores its weights (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// 4 bits per weight and an f16 scale and minimum per block of 32 (Q4_1's block), for
    /// weights exactly on such a grid.
    Nibbles,
    /// 8 bits per weight and an f32 scale and minimum per block, for any weights.
    Bytes,
}

/// A weight matrix `[rows (outputs), cols (inputs)]`, quantized and packed in panels of
/// [`PANEL`] output rows.
///
/// * Bytes: `data[panel][k / 4][PANEL][4]` holds `q`, and `scales[panel][block][PANEL]` and
///   `mins[panel][block][PANEL]` the per-block `d` and `m`.
/// * Nibbles: `data[panel][block][pair][PANEL][4]`, where byte `j` of pair `p` holds input
///   `4p + j` of the block in its low nibble and input `16 + 4p + j` in its high nibble (one
///   load, masked and shifted, gives two steps of four inputs); `half_scales` and `half_mins`
///   hold `d` and `m` as f16 bits, `[panel][block][PANEL]`.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    rows: usize,
    cols: usize,
    padded_cols: usize,
    block: usize,
    format: WeightFormat,
    data: Vec<u8>,
    scales: Vec<f32>,
    mins: Vec<f32>,
    half_scales: Vec<u16>,
    half_mins: Vec<u16>,
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

/// The 4-bit grid of one block of 32 weights, when the block lies exactly on one: `(d, m)` as
/// f16 with `q · d + m == v` in f32 for every value (the dequantization formula of GGUF's Q4_1,
/// the product rounded before the sum) and `q ∈ 0..=15` written to `out`. `None` otherwise.
fn nibble_grid(values: &[f32], out: &mut [u8]) -> Option<(f16, f16)> {
    let min = values.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    let max = values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let m = f16::from_f32(min);
    if !min.is_finite() || !max.is_finite() || m.to_f32() != min {
        return None;
    }
    // On a grid whose top level is used (ggml's quantizer always uses 0 and 15), the step is
    // the range over 15, up to f32 rounding that the f16 conversion removes.
    let d = f16::from_f32((max - min) / 15.0);
    let step = d.to_f32();
    for (q, &v) in out.iter_mut().zip(values) {
        let level = if step > 0.0 {
            round((v - min) / step)
        } else {
            0.0
        };
        if !(0.0..=15.0).contains(&level) || level * step + min != v {
            return None;
        }
        *q = level as u8;
    }
    Some((d, m))
}

impl PackedWeights {
    /// Quantizes and packs `weights`, row-major `[rows, cols]` (PyTorch's `[out, in]`): as
    /// nibbles when every block is exactly on a 4-bit grid, as bytes otherwise.
    pub fn new(weights: &[f32], rows: usize, cols: usize) -> Self {
        Self::nibbles(weights, rows, cols).unwrap_or_else(|| Self::bytes(weights, rows, cols))
    }

    /// Packs `weights` in `format`; `None` when `format` is nibbles and some block is not
    /// exactly on a 4-bit grid (or `cols` is not a multiple of 32).
    pub fn with_format(
        weights: &[f32],
        rows: usize,
        cols: usize,
        format: WeightFormat,
    ) -> Option<Self> {
        match format {
            WeightFormat::Nibbles => Self::nibbles(weights, rows, cols),
            WeightFormat::Bytes => Some(Self::bytes(weights, rows, cols)),
        }
    }

    fn empty(rows: usize, cols: usize, padded_cols: usize, block: usize) -> Self {
        Self {
            rows,
            cols,
            padded_cols,
            block,
            format: WeightFormat::Bytes,
            data: Vec::new(),
            scales: Vec::new(),
            mins: Vec::new(),
            half_scales: Vec::new(),
            half_mins: Vec::new(),
        }
    }

    fn bytes(weights: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(weights.len(), rows * cols, "weights are rows × cols");
        let (block, padded_cols) = block_for(cols);
        let panels = rows.div_ceil(PANEL);
        let blocks = padded_cols / block;
        let mut packed = Self::empty(rows, cols, padded_cols, block);
        packed.data = vec![0u8; panels * padded_cols * PANEL];
        packed.scales = vec![0.0f32; panels * blocks * PANEL];
        packed.mins = vec![0.0f32; panels * blocks * PANEL];
        let mut row_values = vec![0.0f32; padded_cols];
        let mut row_q = vec![0u8; padded_cols];
        for n in 0..rows {
            row_values[..cols].copy_from_slice(&weights[n * cols..(n + 1) * cols]);
            let (panel, lane) = (n / PANEL, n % PANEL);
            for b in 0..blocks {
                let span = b * block..(b + 1) * block;
                let (scale, min) =
                    quantize_weight_block(&row_values[span.clone()], &mut row_q[span]);
                packed.scales[(panel * blocks + b) * PANEL + lane] = scale;
                packed.mins[(panel * blocks + b) * PANEL + lane] = min;
            }
            let base = panel * padded_cols * PANEL;
            for (k, &q) in row_q.iter().enumerate() {
                packed.data[base + (k / 4) * PANEL * 4 + lane * 4 + k % 4] = q;
            }
        }
        packed
    }

    fn nibbles(weights: &[f32], rows: usize, cols: usize) -> Option<Self> {
        assert_eq!(weights.len(), rows * cols, "weights are rows × cols");
        if cols == 0 || !cols.is_multiple_of(NIBBLE_BLOCK) {
            return None;
        }
        let panels = rows.div_ceil(PANEL);
        let blocks = cols / NIBBLE_BLOCK;
        let mut packed = Self::empty(rows, cols, cols, NIBBLE_BLOCK);
        packed.format = WeightFormat::Nibbles;
        packed.data = vec![0u8; panels * blocks * NIBBLE_PANEL_BLOCK];
        packed.half_scales = vec![0u16; panels * blocks * PANEL];
        packed.half_mins = vec![0u16; panels * blocks * PANEL];
        let mut q = [0u8; NIBBLE_BLOCK];
        for n in 0..rows {
            let (panel, lane) = (n / PANEL, n % PANEL);
            for b in 0..blocks {
                let start = n * cols + b * NIBBLE_BLOCK;
                let (d, m) = nibble_grid(&weights[start..start + NIBBLE_BLOCK], &mut q)?;
                let at = (panel * blocks + b) * PANEL + lane;
                packed.half_scales[at] = d.to_bits();
                packed.half_mins[at] = m.to_bits();
                let base = (panel * blocks + b) * NIBBLE_PANEL_BLOCK;
                for (o, &level) in q.iter().enumerate() {
                    let step = o / 4;
                    let byte = base + (step % 4) * PANEL * 4 + lane * 4 + o % 4;
                    packed.data[byte] |= if step >= 4 { level << 4 } else { level };
                }
            }
        }
        Some(packed)
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// How the weights are stored.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Bytes a product reads from the packed matrix: the weights with their scales and minima.
    pub fn size_bytes(&self) -> usize {
        self.data.len()
            + 4 * (self.scales.len() + self.mins.len())
            + 2 * (self.half_scales.len() + self.half_mins.len())
    }

    /// Quantizes `x` (`[rows, cols]`, row-major) for a product with these weights.
    pub fn quantize_input(&self, x: &[f32]) -> QuantizedRows {
        QuantizedRows::new(x, self.cols, self.padded_cols, self.block)
    }

    /// `out[m][n] = Σ_k x[m][k] · w[n][k]` for `x` quantized by [`Self::quantize_input`];
    /// `out` is `[x rows, self.rows]`, row-major, and is overwritten.
    pub fn matmul(&self, x: &QuantizedRows, out: &mut [f32]) {
        self.matmul_with(Kernel::selected(), x, out);
    }

    /// [`Self::matmul`] with a given kernel (one this CPU runs: see [`Kernel::available`]).
    pub fn matmul_with(&self, kernel: Kernel, x: &QuantizedRows, out: &mut [f32]) {
        assert_eq!(x.padded_cols, self.padded_cols, "input width");
        assert_eq!(x.block, self.block, "input block");
        assert_eq!(
            out.len(),
            x.rows * self.rows,
            "output is x rows × weight rows"
        );
        assert!(
            Kernel::available().contains(&kernel),
            "kernel {kernel:?} does not run on this CPU"
        );
        let panels = self.rows.div_ceil(PANEL);
        let out_ptr = OutPtr(out.as_mut_ptr());
        // Each task owns a set of panels, i.e. a disjoint set of output columns; the rows are
        // cut into tiles inside it so a panel's weights stay in cache across all rows.
        // One contiguous run of panels per thread, not rayon's default splitting: at one row
        // (batch-1 decoding) a panel is a few microseconds of work, and each further split
        // is a task hand-off that costs about as much.
        let per_thread = panels.div_ceil(rayon::current_num_threads());
        (0..panels)
            .into_par_iter()
            .with_min_len(per_thread)
            .for_each(|panel| {
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
        Self::with_kernel(x, cols, padded_cols, block, Kernel::selected())
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
        let vector = block == 32 && cols.is_multiple_of(32) && kernel == Kernel::Avx512Vnni;
        for (m, row) in x.chunks_exact(cols).enumerate() {
            let row_q = &mut q[m * padded_cols..(m + 1) * padded_cols];
            let at = m * blocks..(m + 1) * blocks;
            #[cfg(target_arch = "x86_64")]
            if vector {
                // SAFETY: the AVX-512 kernel is only selected on CPUs with avx512f and avx512bw
                // (detected); the row is `blocks` whole blocks of 32 values, `row_q` as many
                // bytes, and there is one scale and sum per block.
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

/// Which implementation of the micro-kernels runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust, any CPU.
    Portable,
    /// AVX2 with FMA and F16C (`vpmaddubsw` on 256-bit vectors): x86-64 CPUs since 2013.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 with VNNI (`vpdpbusd` on 512-bit vectors).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

/// The environment variable that picks a kernel other than the fastest (to measure or test the
/// others on one machine): `portable`, `avx2` or `avx512-vnni`.
pub const KERNEL_VARIABLE: &str = "PREFSMITH_CPU_KERNEL";

impl Kernel {
    /// Every kernel this CPU runs, fastest first; the portable one is always last.
    pub fn available() -> &'static [Self] {
        static AVAILABLE: OnceLock<Vec<Kernel>> = OnceLock::new();
        AVAILABLE.get_or_init(|| {
            let mut kernels = Vec::new();
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                    kernels.push(Self::Avx512Vnni);
                }
                if has!("avx2") && has!("fma") && has!("f16c") {
                    kernels.push(Self::Avx2);
                }
            }
            kernels.push(Self::Portable);
            kernels
        })
    }

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        Self::available()[0]
    }

    /// The kernel's name, as [`KERNEL_VARIABLE`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => "avx512-vnni",
        }
    }

    /// The kernel that [`PackedWeights::matmul`] uses: the one [`KERNEL_VARIABLE`] names, or
    /// the fastest. Read once per process; an unknown name, or a kernel this CPU does not run,
    /// is an error naming the variable.
    pub fn configured() -> Result<Self, String> {
        static CHOSEN: OnceLock<Result<Kernel, String>> = OnceLock::new();
        CHOSEN
            .get_or_init(|| Self::choose(std::env::var(KERNEL_VARIABLE).ok().as_deref()))
            .clone()
    }

    /// The kernel a value of [`KERNEL_VARIABLE`] names (`None`: the fastest).
    fn choose(value: Option<&str>) -> Result<Self, String> {
        let Some(name) = value else {
            return Ok(Self::detect());
        };
        let available = Self::available();
        available
            .iter()
            .copied()
            .find(|k| k.name() == name.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = available.iter().map(|k| k.name()).collect();
                format!(
                    "{KERNEL_VARIABLE}={name:?}: this CPU runs the kernels {}",
                    names.join(", ")
                )
            })
    }

    /// [`Self::configured`], or the fastest kernel when the variable is wrong (the engine
    /// checks the variable when it is built, so a wrong one never gets this far silently).
    fn selected() -> Self {
        Self::configured().unwrap_or_else(|_| Self::detect())
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
        match (self, w.format) {
            (Self::Portable, WeightFormat::Bytes) => portable_bytes(w, x, panel, row, tile, out),
            (Self::Portable, WeightFormat::Nibbles) => {
                portable_nibbles(w, x, panel, row, tile, out)
            }
            #[cfg(target_arch = "x86_64")]
            (Self::Avx512Vnni, format) => {
                // SAFETY: this kernel is only used after `available` found avx512f, avx512bw
                // and avx512vnni on this CPU (checked by `matmul_with`).
                unsafe { vnni::tile(format, w, x, panel, row, tile, out) }
            }
            #[cfg(target_arch = "x86_64")]
            (Self::Avx2, format) => {
                // SAFETY: this kernel is only used after `available` found avx2, fma and f16c.
                unsafe { avx2::tile(format, w, x, panel, row, tile, out) }
            }
        }
    }
}

/// The reference micro-kernel for bytes: the SIMD kernels' arithmetic, one lane at a time.
fn portable_bytes(
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

/// The reference micro-kernel for nibbles: the SIMD kernels' arithmetic, one lane at a time.
fn portable_nibbles(
    w: &PackedWeights,
    x: &QuantizedRows,
    panel: usize,
    row: usize,
    tile: usize,
    out: &mut [[f32; PANEL]; TILE_ROWS],
) {
    let blocks = x.padded_cols / NIBBLE_BLOCK;
    for (r, out_row) in out.iter_mut().enumerate().take(tile) {
        let m = row + r;
        let xq = &x.q[m * x.padded_cols..(m + 1) * x.padded_cols];
        for (lane, value) in out_row.iter_mut().enumerate() {
            let mut total = 0.0f32;
            for b in 0..blocks {
                let base = (panel * blocks + b) * NIBBLE_PANEL_BLOCK;
                let mut acc = 0i32;
                for o in 0..NIBBLE_BLOCK {
                    let step = o / 4;
                    let byte = w.data[base + (step % 4) * PANEL * 4 + lane * 4 + o % 4];
                    let level = if step >= 4 { byte >> 4 } else { byte & 0x0f };
                    acc += level as i32 * xq[b * NIBBLE_BLOCK + o] as i32;
                }
                let at = (panel * blocks + b) * PANEL + lane;
                let d = f16::from_bits(w.half_scales[at]).to_f32();
                let min = f16::from_bits(w.half_mins[at]).to_f32();
                let scale = x.scales[m * blocks + b] * d;
                total = (acc as f32).mul_add(scale, total);
                total = x.sums[m * blocks + b].mul_add(min, total);
            }
            *value = total;
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
        for &kernel in Kernel::available() {
            assert_eq!(quantize(kernel), quantize(Kernel::Portable), "{kernel:?}");
        }
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
        assert_exact(&out, &x, &w, (m, n, k), 1e-5, "bytes");
    }

    /// Asserts that `out` (`[m, n]`) is `x · wᵀ` computed in f64, within `tolerance` of the
    /// sum of the absolute products.
    fn assert_exact(
        out: &[f32],
        x: &[f32],
        w: &[f32],
        (m, n, k): (usize, usize, usize),
        tolerance: f64,
        label: &str,
    ) {
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = (0..k)
                    .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                    .sum();
                let scale: f64 = (0..k)
                    .map(|t| (x[i * k + t] * w[j * k + t]).abs() as f64)
                    .sum();
                let got = out[i * n + j] as f64;
                assert!(
                    (got - exact).abs() < tolerance * scale,
                    "{label} ({i},{j}): {got} vs {exact}"
                );
            }
        }
    }

    /// Weights exactly on a Q4_1 grid, made the way GGUF's dequantization makes them (`q · d +
    /// m` in f32, `d` and `m` f16, levels 0 and 15 used in every block).
    pub(crate) fn q4_1_grid(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let noise = pseudo_random(rows * cols, seed);
        let mut out = Vec::with_capacity(rows * cols);
        for (b, block) in noise.chunks(32).enumerate() {
            let d = f16::from_f32(0.002 + 0.001 * (b % 13) as f32).to_f32();
            let m = f16::from_f32(-0.01 * (b % 5) as f32 - 0.003).to_f32();
            for (o, v) in block.iter().enumerate() {
                let level = match o {
                    0 => 0.0,
                    1 => 15.0,
                    _ => ((v + 1.0) * 7.5).floor().clamp(0.0, 15.0),
                };
                out.push(level * d + m);
            }
        }
        out
    }

    #[test]
    fn weights_on_a_four_bit_grid_pack_as_nibbles_and_others_as_bytes() {
        let (n, k) = (40, 96);
        let grid = q4_1_grid(n, k, 5);
        let packed = PackedWeights::new(&grid, n, k);
        assert_eq!(packed.format(), WeightFormat::Nibbles);
        // Half a byte per weight plus two f16 per block of 32: 5 bits per weight (the panel
        // pads 40 rows to 64).
        assert_eq!(packed.size_bytes(), 64 * k / 2 + 64 * (k / 32) * 4);
        // One value off the grid by one ulp, a width that is not whole blocks, or a minimum
        // that is not an f16: bytes.
        let mut off = grid.clone();
        off[37 * k + 50] = f32::from_bits(off[37 * k + 50].to_bits() + 1);
        assert_eq!(PackedWeights::new(&off, n, k).format(), WeightFormat::Bytes);
        assert_eq!(
            PackedWeights::new(&grid[..n * 48], n, 48).format(),
            WeightFormat::Bytes
        );
        let shifted: Vec<f32> = grid.iter().map(|v| v + 1e-4).collect();
        assert_eq!(
            PackedWeights::new(&shifted, n, k).format(),
            WeightFormat::Bytes
        );
        let mut nan = grid.clone();
        nan[3] = f32::NAN;
        assert_eq!(PackedWeights::new(&nan, n, k).format(), WeightFormat::Bytes);
        // A constant block (step 0) is on the grid.
        let mut flat = grid.clone();
        flat[..32].fill(0.25);
        assert_eq!(
            PackedWeights::new(&flat, n, k).format(),
            WeightFormat::Nibbles
        );
        assert!(PackedWeights::with_format(&off, n, k, WeightFormat::Nibbles).is_none());
    }

    #[test]
    fn nibbles_multiply_the_same_weights_as_bytes() {
        // The nibble format holds the grid's weights exactly; bytes holds them as 17 · q₄ with a
        // scale rounded to f32, so the two products agree to f32 rounding, and the nibble one
        // equals the exact product on activations that quantize without loss.
        let (m, n, k) = (7, 45, 128);
        let w = q4_1_grid(n, k, 8);
        let x: Vec<f32> = (0..m * k)
            .map(|i| {
                if i % 32 == 0 {
                    127.0
                } else {
                    ((i * 5) % 255) as f32 - 127.0
                }
            })
            .collect();
        let nibbles = PackedWeights::with_format(&w, n, k, WeightFormat::Nibbles).unwrap();
        let bytes = PackedWeights::with_format(&w, n, k, WeightFormat::Bytes).unwrap();
        let (mut a, mut b) = (vec![0.0; m * n], vec![0.0; m * n]);
        nibbles.matmul(&nibbles.quantize_input(&x), &mut a);
        bytes.matmul(&bytes.quantize_input(&x), &mut b);
        assert_exact(&a, &x, &w, (m, n, k), 1e-6, "nibbles");
        assert_exact(&b, &x, &w, (m, n, k), 1e-5, "bytes");
    }

    #[test]
    fn every_kernel_agrees_with_the_portable_one_bit_for_bit() {
        // Shapes with partial panels, partial tiles, and (for bytes) widths that are not
        // multiples of 4; nibble shapes are whole blocks of 32.
        let nibble_shapes = [(7, 70, 64), (13, 64, 32), (1, 576, 192), (6, 3, 96)];
        let mut cases = Vec::new();
        for (m, n, k) in SHAPES {
            let w = pseudo_random(n * k, 4 + k as u64);
            cases.push((
                m,
                PackedWeights::with_format(&w, n, k, WeightFormat::Bytes).unwrap(),
            ));
        }
        for (m, n, k) in nibble_shapes {
            let w = q4_1_grid(n, k, 6 + n as u64);
            cases.push((
                m,
                PackedWeights::with_format(&w, n, k, WeightFormat::Nibbles).unwrap(),
            ));
        }
        for (m, packed) in &cases {
            let (m, n, k) = (*m, packed.rows(), packed.cols());
            let x = pseudo_random(m * k, 3 + k as u64);
            let q = packed.quantize_input(&x);
            let mut slow = vec![0.0f32; m * n];
            packed.matmul_with(Kernel::Portable, &q, &mut slow);
            for &kernel in Kernel::available() {
                let mut fast = vec![f32::NAN; m * n];
                packed.matmul_with(kernel, &q, &mut fast);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&fast),
                    bits(&slow),
                    "{:?} {m}×{n}×{k} with {kernel:?}",
                    packed.format()
                );
            }
        }
    }

    #[test]
    fn the_kernel_variable_names_kernels_this_cpu_runs() {
        assert_eq!(Kernel::choose(None), Ok(Kernel::detect()));
        for &kernel in Kernel::available() {
            assert_eq!(Kernel::choose(Some(kernel.name())), Ok(kernel));
        }
        assert_eq!(Kernel::available().last(), Some(&Kernel::Portable));
        let error = Kernel::choose(Some("avx1024")).unwrap_err();
        assert!(
            error.contains(KERNEL_VARIABLE)
                && error.contains("avx1024")
                && error.contains("portable"),
            "{error}"
        );
    }
}
