//! prefsmith's own matrix product for the CPU, under the f32 model's linear layers in training
//! and f32 inference: `C = A · B` with packed panels and AVX-512 micro-kernels, in f32 or with
//! bf16 inputs and f32 accumulation ([`MatmulPrecision`]).
//!
//! Why not burn's: the CPU backend multiplies through the `gemm` crate, whose AVX2 kernels ran
//! at about a third of this CPU's f32 peak and took 80 % of a training step (BENCHMARKS.md).
//! This one follows the usual blocked scheme: for each block of `k`, `B` is packed once into
//! `NR`-column panels and `A` into `MR`-row panels, shared by all threads; the threads then take
//! tiles of `C` and run [`avx512`]'s micro-kernel on each `MR × NR` piece, whose accumulators
//! stay in registers for the whole block. Strided inputs (a transposed weight, a transposed
//! activation in the backward pass) are read through their strides while packing, so nothing
//! is copied into a contiguous layout first.
//!
//! The bf16 precision rounds both inputs to bf16 (nearest, ties to even) while packing and
//! multiplies with `vdpbf16ps`: each product of two bf16 values is exact in f32 and the sums
//! are f32, so the only error is the rounding of the inputs (at most 2⁻⁸ relative per value, 2⁻⁷ per
//! product). Twice the
//! multiplies per instruction of the f32 kernel.
//!
//! The kernels need AVX-512F (and AVX512_BF16 for bf16), checked at run time; [`supports`] says
//! whether this CPU has them, and callers fall back to burn's product when it does not.

#![allow(unsafe_code)]

pub mod attention;
mod avx512;
pub mod burn_ops;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Rows of `A` (and of `C`) per micro-kernel tile.
const MR: usize = 14;
/// Columns of `B` (and of `C`) per micro-kernel tile: two vectors of 16 f32.
const NR: usize = 32;
/// Largest block of `k` packed at once: a 14-row panel of `A` (14 KiB) and a 32-column panel
/// of `B` (32 KiB) stay in L1/L2 while a tile runs.
const KC: usize = 256;
/// Columns of `B` packed at once (a `KC × NC` block is 3 MiB).
const NC: usize = 3072;
/// Micro-panels per thread task, across and down (a task is at most 112 × 256 of `C`).
const TASK_PANELS: usize = 8;

/// The arithmetic of the CPU matrix product under the model's linear layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatmulPrecision {
    /// f32 inputs, f32 products and sums.
    #[default]
    F32,
    /// Inputs rounded to bf16, exact products, f32 sums.
    Bf16,
}

impl std::str::FromStr for MatmulPrecision {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!("unknown precision '{other}': use f32 or bf16")),
        }
    }
}

impl std::fmt::Display for MatmulPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

/// Whether this CPU runs prefsmith's kernel at `precision`.
pub fn supports(precision: MatmulPrecision) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let f = std::arch::is_x86_feature_detected!("avx512f");
        match precision {
            MatmulPrecision::F32 => f,
            MatmulPrecision::Bf16 => f && std::arch::is_x86_feature_detected!("avx512bf16"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = precision;
        false
    }
}

/// A read-only matrix over a slice: element `(i, j)` is
/// `data[offset + i · row_stride + j · col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A view, or `None` when some element would lie outside `data`.
    pub fn new(
        data: &'a [f32],
        offset: usize,
        [rows, cols]: [usize; 2],
        [row_stride, col_stride]: [usize; 2],
    ) -> Option<Self> {
        let last = if rows == 0 || cols == 0 {
            offset
        } else {
            offset + (rows - 1) * row_stride + (cols - 1) * col_stride
        };
        (rows == 0 || cols == 0 || last < data.len()).then_some(Self {
            data,
            offset,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A dense row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Option<Self> {
        Self::new(data, 0, [rows, cols], [cols, 1])
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[self.offset + i * self.row_stride + j * self.col_stride]
    }
}

/// `A · B` as a row-major `a.rows × b.cols` vector.
///
/// # Panics
/// When the inner dimensions differ or this CPU lacks the kernel ([`supports`]): both are the
/// caller's checks.
pub fn matmul(a: MatRef<'_>, b: MatRef<'_>, precision: MatmulPrecision) -> Vec<f32> {
    assert_eq!(
        a.cols, b.rows,
        "inner dimensions of a matrix product differ"
    );
    assert!(
        supports(precision),
        "this CPU lacks the {precision} matmul kernel"
    );
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    // Not zeroed: the first block of `k` writes every element before any block reads one.
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    let out = SharedOut(c.as_mut_ptr());
    let a_panels = m.div_ceil(MR);
    // bf16 pairs neighbouring values of `k`, so `k` blocks start at even offsets.
    const _: () = assert!(KC.is_multiple_of(2), "bf16 pairs need even block starts");
    let mut k_blocks = Vec::new();
    let mut start = 0;
    while start < k {
        let len = KC.min(k - start);
        k_blocks.push((start, len));
        start += len;
    }
    // `A`'s panels of a block of `k` serve every block of columns, so `k` is the outer loop.
    for (block, &(pc, kc)) in k_blocks.iter().enumerate() {
        let packed_a = match precision {
            MatmulPrecision::F32 => PackedA::F32(pack_a_f32(&a, pc, kc, a_panels)),
            MatmulPrecision::Bf16 => PackedA::Bf16(pack_a_bf16(&a, pc, kc, a_panels)),
        };
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            let b_panels = nc.div_ceil(NR);
            let packed = match &packed_a {
                PackedA::F32(a) => Packed::F32 {
                    a,
                    b: pack_b_f32(&b, pc, kc, jc, nc, b_panels),
                },
                PackedA::Bf16(a) => Packed::Bf16 {
                    a,
                    b: pack_b_bf16(&b, pc, kc, jc, nc, b_panels),
                },
            };
            let panels_down = TASK_PANELS;
            let tasks_down = a_panels.div_ceil(panels_down);
            // Few rows (decoding): narrower tasks so both threads get work.
            let panels_across = if tasks_down >= 2 * rayon::current_num_threads() {
                TASK_PANELS
            } else {
                2
            };
            let tasks_across = b_panels.div_ceil(panels_across);
            let accumulate = block > 0;
            (0..tasks_down * tasks_across)
                .into_par_iter()
                .for_each(|task| {
                    let (down, across) = (task / tasks_across, task % tasks_across);
                    let rows = down * panels_down..((down + 1) * panels_down).min(a_panels);
                    let cols = across * panels_across..((across + 1) * panels_across).min(b_panels);
                    for jr in cols {
                        for ir in rows.clone() {
                            let (row, col) = (ir * MR, jc + jr * NR);
                            let tile = avx512::TileOut {
                                // SAFETY: `row < m` and `col < n`, so the offset lies in `c`;
                                // tasks cover disjoint tiles, so no two threads write one
                                // element.
                                c: unsafe { out.base().add(row * n + col) },
                                ldc: n,
                                rows: MR.min(m - row),
                                cols: NR.min(n - col),
                                accumulate,
                            };
                            packed.run(ir, jr, kc, &tile);
                        }
                    }
                });
        }
    }
    // SAFETY: the tiles of the first block of `k` cover every row `< m` and column `< n`, and
    // each wrote its elements (overwriting, `accumulate` false), so all `m · n` are set.
    unsafe { c.set_len(m * n) };
    c
}

/// The output's base pointer, shared by the tasks that write its disjoint tiles.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every task writes a different set of tiles of the output, and the output outlives the
// parallel loop that uses the pointer.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    fn base(self) -> *mut f32 {
        self.0
    }
}

/// One block of `k` of `A`, packed.
enum PackedA {
    F32(Vec<f32>),
    Bf16(Vec<u32>),
}

/// One block of `k` of both inputs, packed: `A`'s for the block, `B`'s for one block of
/// columns.
enum Packed<'a> {
    F32 { a: &'a [f32], b: Vec<f32> },
    Bf16 { a: &'a [u32], b: Vec<u32> },
}

impl Packed<'_> {
    fn run(&self, ir: usize, jr: usize, kc: usize, tile: &avx512::TileOut) {
        match self {
            Self::F32 { a, b } => {
                let (a, b) = (&a[ir * kc * MR..][..kc * MR], &b[jr * kc * NR..][..kc * NR]);
                // SAFETY: `matmul` checked avx512f; the panels hold `kc` steps; `tile` lies in
                // the output.
                unsafe { avx512::tile_f32(kc, a.as_ptr(), b.as_ptr(), tile) }
            }
            Self::Bf16 { a, b } => {
                let kp = kc.div_ceil(2);
                let (a, b) = (&a[ir * kp * MR..][..kp * MR], &b[jr * kp * NR..][..kp * NR]);
                // SAFETY: `matmul` checked avx512f and avx512bf16; the panels hold `kp` pairs.
                unsafe { avx512::tile_bf16(kp, a.as_ptr(), b.as_ptr(), tile) }
            }
        }
    }
}

/// Rows `0..m` and columns `pc..pc + kc` of `a` as `MR`-row panels: panel `r`, step `p`, row
/// `i` at `(r · kc + p) · MR + i`; rows past `m` are zero.
///
/// Packing runs once per block of `k` and is a small share of the product's work only when it
/// streams, so each layout the model passes has its own loop over slices (no per-element
/// index arithmetic or bounds checks); any other strides take the general loop.
fn pack_a_f32(a: &MatRef<'_>, pc: usize, kc: usize, panels: usize) -> Vec<f32> {
    let mut packed = vec![0f32; panels * kc * MR];
    packed
        .par_chunks_mut(kc * MR)
        .enumerate()
        .for_each(|(r, panel)| {
            let height = MR.min(a.rows - r * MR);
            let first = a.offset + r * MR * a.row_stride + pc * a.col_stride;
            if a.row_stride == 1 {
                // A transposed activation (`Xᵀ` in `dW = Xᵀ · dY`): a panel's rows are
                // neighbours, so each step of `k` is one contiguous copy.
                for (p, step) in panel.chunks_exact_mut(MR).enumerate() {
                    let start = first + p * a.col_stride;
                    step[..height].copy_from_slice(&a.data[start..start + height]);
                }
            } else {
                for i in 0..height {
                    let start = first + i * a.row_stride;
                    let row = &a.data[start..start + (kc - 1) * a.col_stride + 1];
                    for (slot, &value) in panel
                        .iter_mut()
                        .skip(i)
                        .step_by(MR)
                        .zip(row.iter().step_by(a.col_stride))
                    {
                        *slot = value;
                    }
                }
            }
        });
    packed
}

/// Rows `pc..pc + kc` and columns `jc..jc + nc` of `b` as `NR`-column panels: panel `c`, step
/// `p`, column `j` at `(c · kc + p) · NR + j`; columns past `nc` are zero.
fn pack_b_f32(
    b: &MatRef<'_>,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    panels: usize,
) -> Vec<f32> {
    let mut packed = vec![0f32; panels * kc * NR];
    packed
        .par_chunks_mut(kc * NR)
        .enumerate()
        .for_each(|(c, panel)| {
            let width = NR.min(nc - c * NR);
            let first = b.offset + pc * b.row_stride + (jc + c * NR) * b.col_stride;
            if b.col_stride == 1 {
                for (p, step) in panel.chunks_exact_mut(NR).enumerate() {
                    let start = first + p * b.row_stride;
                    step[..width].copy_from_slice(&b.data[start..start + width]);
                }
            } else if b.row_stride == 1 {
                // A transposed weight (`Wᵀ` in `dX = dY · Wᵀ`): each column is contiguous.
                for j in 0..width {
                    let start = first + j * b.col_stride;
                    let column = &b.data[start..start + kc];
                    for (step, &value) in panel.chunks_exact_mut(NR).zip(column) {
                        step[j] = value;
                    }
                }
            } else {
                for j in 0..width {
                    for (p, step) in panel.chunks_exact_mut(NR).enumerate() {
                        step[j] = b.at(pc + p, jc + c * NR + j);
                    }
                }
            }
        });
    packed
}

/// `x` rounded to bf16 (nearest, ties to even; NaN stays a quiet NaN), branch-free so the
/// packing loops vectorise. Equal to `half::bf16::from_f32` (a test holds it).
#[inline(always)]
fn bf16_bits(x: f32) -> u32 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    if x.is_nan() {
        (bits >> 16) | 0x40
    } else {
        rounded
    }
}

/// Two values of neighbouring `k` as one packed pair: `lo` in the low half.
#[inline(always)]
fn bf16_pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) | bf16_bits(hi) << 16
}

/// A run of `k` as pairs: `(k₀, k₁), (k₂, k₃), …`, the last one zero-padded when odd.
#[inline(always)]
fn pairs(run: &[f32]) -> impl Iterator<Item = u32> + '_ {
    run.chunks(2)
        .map(|pair| bf16_pair(pair[0], pair.get(1).copied().unwrap_or(0.0)))
}

/// One step of packed pairs from two neighbouring runs of `k` (`hi` absent past the end of an
/// odd block, where the high halves are zero).
#[inline(always)]
fn pair_runs(step: &mut [u32], lo: &[f32], hi: Option<&[f32]>) {
    match hi {
        Some(hi) => {
            for ((slot, &l), &h) in step.iter_mut().zip(lo).zip(hi) {
                *slot = bf16_pair(l, h);
            }
        }
        None => {
            for (slot, &l) in step.iter_mut().zip(lo) {
                *slot = bf16_pair(l, 0.0);
            }
        }
    }
}

/// Like [`pack_a_f32`] over pairs of `k`: panel `r`, pair `q`, row `i` at `(r · kp + q) · MR + i`
/// holds columns `pc + 2q` (low half) and `pc + 2q + 1` (high half, zero past the block).
fn pack_a_bf16(a: &MatRef<'_>, pc: usize, kc: usize, panels: usize) -> Vec<u32> {
    let kp = kc.div_ceil(2);
    let mut packed = vec![0u32; panels * kp * MR];
    packed
        .par_chunks_mut(kp * MR)
        .enumerate()
        .for_each(|(r, panel)| {
            let height = MR.min(a.rows - r * MR);
            let first = a.offset + r * MR * a.row_stride + pc * a.col_stride;
            if a.row_stride == 1 {
                // `Xᵀ`: the panel's rows are neighbours at each step of `k`.
                for (q, step) in panel.chunks_exact_mut(MR).enumerate() {
                    let run = |p: usize| &a.data[first + p * a.col_stride..][..height];
                    pair_runs(step, run(2 * q), (2 * q + 1 < kc).then(|| run(2 * q + 1)));
                }
            } else if a.col_stride == 1 {
                for i in 0..height {
                    let start = first + i * a.row_stride;
                    let row = &a.data[start..start + kc];
                    for (step, pair) in panel.chunks_exact_mut(MR).zip(pairs(row)) {
                        step[i] = pair;
                    }
                }
            } else {
                for i in 0..height {
                    let row: Vec<f32> = (0..kc).map(|p| a.at(r * MR + i, pc + p)).collect();
                    for (step, pair) in panel.chunks_exact_mut(MR).zip(pairs(&row)) {
                        step[i] = pair;
                    }
                }
            }
        });
    packed
}

/// Like [`pack_b_f32`] over pairs of `k`: panel `c`, pair `q`, column `j` at
/// `(c · kp + q) · NR + j` holds rows `pc + 2q` (low half) and `pc + 2q + 1` (high half).
fn pack_b_bf16(
    b: &MatRef<'_>,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    panels: usize,
) -> Vec<u32> {
    let kp = kc.div_ceil(2);
    let mut packed = vec![0u32; panels * kp * NR];
    packed
        .par_chunks_mut(kp * NR)
        .enumerate()
        .for_each(|(c, panel)| {
            let width = NR.min(nc - c * NR);
            let first = b.offset + pc * b.row_stride + (jc + c * NR) * b.col_stride;
            if b.col_stride == 1 {
                for (q, step) in panel.chunks_exact_mut(NR).enumerate() {
                    let run = |p: usize| &b.data[first + p * b.row_stride..][..width];
                    pair_runs(step, run(2 * q), (2 * q + 1 < kc).then(|| run(2 * q + 1)));
                }
            } else if b.row_stride == 1 {
                // `Wᵀ`: each column is contiguous, so its pairs are neighbours.
                for j in 0..width {
                    let start = first + j * b.col_stride;
                    let column = &b.data[start..start + kc];
                    for (step, pair) in panel.chunks_exact_mut(NR).zip(pairs(column)) {
                        step[j] = pair;
                    }
                }
            } else {
                for j in 0..width {
                    let column: Vec<f32> = (0..kc).map(|p| b.at(pc + p, jc + c * NR + j)).collect();
                    for (step, pair) in panel.chunks_exact_mut(NR).zip(pairs(&column)) {
                        step[j] = pair;
                    }
                }
            }
        });
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) with a spread of magnitudes.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The row-major `cols × rows` transpose of a row-major `rows × cols` matrix.
    fn transposed(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..cols)
            .flat_map(|j| (0..rows).map(move |i| data[i * cols + j]))
            .collect()
    }

    /// `a · b` through the kernel with each input stored as given and stored transposed (read
    /// through its strides): all four layouts must give the same bits.
    /// A row-major `rows × cols` matrix laid out from offset 3 with strides `(2 · cols + 3, 2)`.
    fn spread(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; 3 + rows * (2 * cols + 3)];
        for i in 0..rows {
            for j in 0..cols {
                out[3 + i * (2 * cols + 3) + 2 * j] = data[i * cols + j];
            }
        }
        out
    }

    fn in_every_layout(
        a_data: &[f32],
        b_data: &[f32],
        (m, n, k): (usize, usize, usize),
        precision: MatmulPrecision,
    ) -> Vec<f32> {
        let (at_data, bt_data) = (transposed(a_data, m, k), transposed(b_data, k, n));
        let a = MatRef::row_major(a_data, m, k).unwrap();
        let b = MatRef::row_major(b_data, k, n).unwrap();
        let a_t = MatRef::row_major(&at_data, k, m).unwrap().t();
        let b_t = MatRef::row_major(&bt_data, n, k).unwrap().t();
        // Neither stride 1 (the packing's general loops), at an offset.
        let (ag_data, bg_data) = (spread(a_data, m, k), spread(b_data, k, n));
        let a_g = MatRef::new(&ag_data, 3, [m, k], [2 * k + 3, 2]).unwrap();
        let b_g = MatRef::new(&bg_data, 3, [k, n], [2 * n + 3, 2]).unwrap();
        let first = matmul(a, b, precision);
        for (x, y) in [
            (a_t, b),
            (a, b_t),
            (a_t, b_t),
            (a_g, b_g),
            (a_g, b_t),
            (a_t, b_g),
        ] {
            assert_eq!(
                matmul(x, y, precision),
                first,
                "{m}x{k}x{n} {precision} strided"
            );
        }
        first
    }

    /// The product in f64 of the inputs as `round` leaves them.
    fn reference(a: &MatRef<'_>, b: &MatRef<'_>, round: impl Fn(f32) -> f32) -> Vec<f64> {
        let mut c = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols)
                    .map(|p| f64::from(round(a.at(i, p))) * f64::from(round(b.at(p, j))))
                    .sum();
            }
        }
        c
    }

    fn to_bf16(x: f32) -> f32 {
        half::bf16::from_f32(x).to_f32()
    }

    /// Largest error relative to the sum of absolute products (the scale of f32 rounding).
    fn worst_error(got: &[f32], want: &[f64], a: &MatRef<'_>, b: &MatRef<'_>) -> f64 {
        let mut worst = 0f64;
        for i in 0..a.rows {
            for j in 0..b.cols {
                let scale: f64 = (0..a.cols)
                    .map(|p| f64::from(a.at(i, p)).abs() * f64::from(b.at(p, j)).abs())
                    .sum::<f64>()
                    .max(1e-30);
                let e = (f64::from(got[i * b.cols + j]) - want[i * b.cols + j]).abs() / scale;
                worst = worst.max(e);
            }
        }
        worst
    }

    /// Shapes that cut tiles, panels, k blocks and column blocks at every edge.
    const SHAPES: [(usize, usize, usize); 7] = [
        (1, 1, 1),
        (13, 31, 7),
        (14, 32, 256),
        (15, 33, 257),
        (100, 70, 513),
        (29, 3100, 40),
        (3, 200, 5),
    ];

    #[test]
    fn f32_products_match_f64_to_rounding_in_every_layout() {
        if !supports(MatmulPrecision::F32) {
            eprintln!("skipped: no avx512f on this CPU (the kernel is never called there)");
            return;
        }
        for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
            let a_data = values(m * k, 1 + s as u64);
            let b_data = values(k * n, 100 + s as u64);
            let a = MatRef::row_major(&a_data, m, k).unwrap();
            let b = MatRef::row_major(&b_data, k, n).unwrap();
            let got = in_every_layout(&a_data, &b_data, (m, n, k), MatmulPrecision::F32);
            let want = reference(&a, &b, |x| x);
            assert!(worst_error(&got, &want, &a, &b) < 1e-6, "{m}x{k}x{n}");
        }
    }

    #[test]
    fn bf16_products_are_the_exact_products_of_rounded_inputs_summed_in_f32() {
        if !supports(MatmulPrecision::Bf16) {
            eprintln!("skipped: no avx512bf16 on this CPU (the precision is refused there)");
            return;
        }
        for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
            let a_data = values(m * k, 7 + s as u64);
            let b_data = values(k * n, 70 + s as u64);
            let a = MatRef::row_major(&a_data, m, k).unwrap();
            let b = MatRef::row_major(&b_data, k, n).unwrap();
            let got = in_every_layout(&a_data, &b_data, (m, n, k), MatmulPrecision::Bf16);
            // Against the rounded inputs: only f32 summation error remains.
            let rounded = reference(&a, &b, to_bf16);
            assert!(worst_error(&got, &rounded, &a, &b) < 1e-6, "{m}x{k}x{n}");
            // Against the exact inputs: the bf16 rounding, at most 2⁻⁷ per product.
            let exact = reference(&a, &b, |x| x);
            let e = worst_error(&got, &exact, &a, &b);
            assert!(e < 2f64.powi(-7), "{m}x{k}x{n}: {e}");
        }
    }

    #[test]
    fn bf16_rounding_equals_half_on_every_kind_of_value() {
        let special = [
            0.0,
            -0.0,
            1.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        // Ties (the low 16 bits exactly 0x8000) on both parities, and their neighbours.
        let ties = [
            0x3F80_8000u32,
            0x3F81_8000,
            0x3F80_7FFF,
            0x3F80_8001,
            0x7F7F_8000,
        ]
        .map(f32::from_bits);
        for x in special
            .into_iter()
            .chain(ties)
            .chain(values(10_000, 3).into_iter().map(|v| v * 1e3))
        {
            assert_eq!(
                bf16_bits(x),
                u32::from(half::bf16::from_f32(x).to_bits()),
                "{x:e}"
            );
        }
        assert!(half::bf16::from_bits(bf16_bits(f32::NAN) as u16).is_nan());
    }

    #[test]
    fn views_outside_their_data_are_refused_and_empty_products_are_zero() {
        let data = [0f32; 6];
        assert!(MatRef::row_major(&data, 2, 3).is_some());
        assert!(MatRef::row_major(&data, 3, 3).is_none());
        assert!(MatRef::new(&data, 1, [2, 3], [3, 1]).is_none());
        if supports(MatmulPrecision::F32) {
            let a = MatRef::row_major(&data, 2, 0).unwrap();
            let b = MatRef::row_major(&data, 0, 3).unwrap();
            assert_eq!(matmul(a, b, MatmulPrecision::F32), vec![0.0; 6]);
        }
        assert_eq!("bf16".parse(), Ok(MatmulPrecision::Bf16));
        assert!(
            "fp8"
                .parse::<MatmulPrecision>()
                .unwrap_err()
                .contains("f32 or bf16")
        );
    }
}
