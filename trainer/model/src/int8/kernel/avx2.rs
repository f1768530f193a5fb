//! The AVX2 micro-kernels, for x86-64 CPUs without AVX-512 VNNI: `vpmaddubsw` multiplies
//! `u8` weights by `i8` activations and adds neighbouring pairs into `i16` lanes, and
//! `vpmaddwd` against ones widens those to `i32`. Same arithmetic, in the same order, as the
//! portable kernels of [`super`].
//!
//! `vpmaddubsw` saturates at ±32767, so weights enter it as 4-bit values only: a pair of
//! products is then at most 2 · 15 · 127 = 3810, and eight such pairs (a block of 32 inputs,
//! or the low or high nibbles of a block of 8-bit weights) sum to at most 30480 — exact in
//! `i16`. An 8-bit weight `q = 16 · hi + lo` is multiplied as its two nibbles, and the high
//! sum is scaled by 16 when it is widened.
//!
//! A tile's rows run two at a time (AVX2 has sixteen vector registers, not thirty-two); the
//! panel's weights for one block stay in L1 meanwhile.

// The lane-group and row indices address the weights, the scales and the totals at once.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{
    NIBBLE_BLOCK, NIBBLE_PANEL_BLOCK, PANEL, PackedWeights, QuantizedRows, TILE_ROWS, WeightFormat,
};

/// Lanes of one 256-bit vector of `i32` or `f32`.
const LANES: usize = 8;

/// Vectors across a panel.
const GROUPS: usize = PANEL / LANES;

/// One tile of `tile` rows in `format`.
///
/// # Safety
/// avx2, fma and f16c; `row + tile <= x.rows`, `1 <= tile <= TILE_ROWS`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile(
    format: WeightFormat,
    w: &PackedWeights,
    x: &QuantizedRows,
    panel: usize,
    row: usize,
    tile: usize,
    out: &mut [[f32; PANEL]; TILE_ROWS],
) {
    let mut first = 0;
    while first < tile {
        let rows = (tile - first).min(2);
        let (start, out_rows) = (row + first, &mut out[first..first + rows]);
        // SAFETY: forwarded from the caller; `start + rows <= row + tile <= x.rows`.
        unsafe {
            match (format, rows) {
                (WeightFormat::Bytes, 2) => bytes::<2>(w, x, panel, start, out_rows),
                (WeightFormat::Bytes, _) => bytes::<1>(w, x, panel, start, out_rows),
                (WeightFormat::Nibbles, 2) => nibbles::<2>(w, x, panel, start, out_rows),
                (WeightFormat::Nibbles, _) => nibbles::<1>(w, x, panel, start, out_rows),
            }
        }
        first += rows;
    }
}

/// Folds one block's `i32` sums of one vector of lanes into its f32 totals:
/// `total += acc · (s · d)`, then `total += sum · m`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn fold(total: __m256, acc: __m256i, scale: f32, sum: f32, d: __m256, m: __m256) -> __m256 {
    let s = _mm256_set1_ps(scale);
    let total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_mul_ps(s, d), total);
    _mm256_fmadd_ps(_mm256_set1_ps(sum), m, total)
}

/// Four activation bytes at `p`, broadcast to every `i32` lane.
///
/// # Safety
/// avx2; four bytes readable at `p`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn broadcast(p: *const i8) -> __m256i {
    // SAFETY: forwarded from the caller.
    _mm256_set1_epi32(unsafe { (p as *const i32).read_unaligned() })
}

/// Stores the totals of `R` rows.
#[target_feature(enable = "avx2")]
#[inline]
fn store<const R: usize>(total: &[[__m256; GROUPS]; R], out: &mut [[f32; PANEL]]) {
    for (r, row) in total.iter().enumerate() {
        for (g, &v) in row.iter().enumerate() {
            // SAFETY: group `g < GROUPS` covers lanes `8g ..+ 8` of a PANEL-float row.
            unsafe { _mm256_storeu_ps(out[r].as_mut_ptr().add(g * LANES), v) };
        }
    }
}

/// `R` (1 or 2) rows of `x` times one panel of 8-bit weights.
///
/// # Safety
/// avx2, fma and f16c; `row + R <= x.rows`; `out` holds at least `R` rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes<const R: usize>(
    w: &PackedWeights,
    x: &QuantizedRows,
    panel: usize,
    row: usize,
    out: &mut [[f32; PANEL]],
) {
    let blocks = x.padded_cols / x.block;
    let steps = x.block / 4;
    let low = _mm256_set1_epi8(0x0f);
    let (ones, sixteen) = (_mm256_set1_epi16(1), _mm256_set1_epi16(16));
    let mut total = [[_mm256_setzero_ps(); GROUPS]; R];
    // SAFETY (all pointer arithmetic below): the panel holds `padded_cols / 4` steps of 128
    // bytes; row `row + r < x.rows` holds `padded_cols` quantized values; block `b < blocks`
    // indexes scales, minima and sums that exist for every row and panel.
    unsafe {
        let panel_data = w.data.as_ptr().add(panel * w.padded_cols * PANEL);
        let panel_scales = w.scales.as_ptr().add(panel * blocks * PANEL);
        let panel_mins = w.mins.as_ptr().add(panel * blocks * PANEL);
        for b in 0..blocks {
            let block_data = panel_data.add(b * steps * PANEL * 4);
            let inputs = x.q.as_ptr().add(row * x.padded_cols + b * x.block);
            for g in 0..GROUPS {
                let mut low_sums = [_mm256_setzero_si256(); R];
                let mut high_sums = [_mm256_setzero_si256(); R];
                for step in 0..steps {
                    let v = _mm256_loadu_si256(
                        block_data.add(step * PANEL * 4 + g * LANES * 4) as *const __m256i
                    );
                    let lo = _mm256_and_si256(v, low);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                    for r in 0..R {
                        let xv = broadcast(inputs.add(r * x.padded_cols + 4 * step));
                        low_sums[r] = _mm256_add_epi16(low_sums[r], _mm256_maddubs_epi16(lo, xv));
                        high_sums[r] = _mm256_add_epi16(high_sums[r], _mm256_maddubs_epi16(hi, xv));
                    }
                }
                let d = _mm256_loadu_ps(panel_scales.add(b * PANEL + g * LANES));
                let m = _mm256_loadu_ps(panel_mins.add(b * PANEL + g * LANES));
                for r in 0..R {
                    let acc = _mm256_add_epi32(
                        _mm256_madd_epi16(high_sums[r], sixteen),
                        _mm256_madd_epi16(low_sums[r], ones),
                    );
                    let at = (row + r) * blocks + b;
                    total[r][g] = fold(total[r][g], acc, x.scales[at], x.sums[at], d, m);
                }
            }
        }
    }
    store(&total, out);
}

/// `R` (1 or 2) rows of `x` times one panel of 4-bit weights.
///
/// # Safety
/// avx2, fma and f16c; `row + R <= x.rows`; `out` holds at least `R` rows; `w` in the nibble
/// format.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles<const R: usize>(
    w: &PackedWeights,
    x: &QuantizedRows,
    panel: usize,
    row: usize,
    out: &mut [[f32; PANEL]],
) {
    let blocks = x.padded_cols / NIBBLE_BLOCK;
    let low = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let mut total = [[_mm256_setzero_ps(); GROUPS]; R];
    // SAFETY (all pointer arithmetic below): the panel holds `blocks` blocks of 512 bytes (4
    // pairs of 128); row `row + r < x.rows` holds `padded_cols` quantized values, of which
    // block `b` reads 32; scales and minima hold 32 f16 per block and panel.
    unsafe {
        let panel_data = w.data.as_ptr().add(panel * blocks * NIBBLE_PANEL_BLOCK);
        let panel_scales = w.half_scales.as_ptr().add(panel * blocks * PANEL);
        let panel_mins = w.half_mins.as_ptr().add(panel * blocks * PANEL);
        for b in 0..blocks {
            let block_data = panel_data.add(b * NIBBLE_PANEL_BLOCK);
            let inputs = x.q.as_ptr().add(row * x.padded_cols + b * NIBBLE_BLOCK);
            for g in 0..GROUPS {
                let mut sums = [_mm256_setzero_si256(); R];
                for pair in 0..4 {
                    let v = _mm256_loadu_si256(
                        block_data.add(pair * PANEL * 4 + g * LANES * 4) as *const __m256i
                    );
                    let first = _mm256_and_si256(v, low);
                    let second = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                    for (r, sum) in sums.iter_mut().enumerate() {
                        let at = inputs.add(r * x.padded_cols + 4 * pair);
                        let products = _mm256_add_epi16(
                            _mm256_maddubs_epi16(first, broadcast(at)),
                            _mm256_maddubs_epi16(second, broadcast(at.add(16))),
                        );
                        *sum = _mm256_add_epi16(*sum, products);
                    }
                }
                let offset = b * PANEL + g * LANES;
                let d =
                    _mm256_cvtph_ps(_mm_loadu_si128(panel_scales.add(offset) as *const __m128i));
                let m = _mm256_cvtph_ps(_mm_loadu_si128(panel_mins.add(offset) as *const __m128i));
                for r in 0..R {
                    let acc = _mm256_madd_epi16(sums[r], ones);
                    let at = (row + r) * blocks + b;
                    total[r][g] = fold(total[r][g], acc, x.scales[at], x.sums[at], d, m);
                }
            }
        }
    }
    store(&total, out);
}
