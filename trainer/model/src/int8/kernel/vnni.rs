//! The AVX-512 VNNI micro-kernels: `vpdpbusd` multiplies four `u8` weights by four `i8`
//! activations and sums them into each of sixteen `i32` lanes per instruction. Same arithmetic,
//! in the same order, as the portable kernels of [`super`].

use std::arch::x86_64::*;

use super::WeightFormat;
use super::{NIBBLE_BLOCK, NIBBLE_PANEL_BLOCK, PANEL, PackedWeights, QuantizedRows, TILE_ROWS};

/// [`super::QuantizedRows`]'s quantization for one row in blocks of 32: the same scale,
/// rounding (ties to even) and sums.
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

/// One tile of `tile` rows in `format`, dispatched to a kernel specialised for its row count.
///
/// # Safety
/// avx512f, avx512bw and avx512vnni; `row + tile <= x.rows`, `1 <= tile <= TILE_ROWS`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn tile(
    format: WeightFormat,
    w: &PackedWeights,
    x: &QuantizedRows,
    panel: usize,
    row: usize,
    tile: usize,
    out: &mut [[f32; PANEL]; TILE_ROWS],
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match (format, tile) {
            (WeightFormat::Bytes, 6) => bytes::<6>(w, x, panel, row, out),
            (WeightFormat::Bytes, 5) => bytes::<5>(w, x, panel, row, out),
            (WeightFormat::Bytes, 4) => bytes::<4>(w, x, panel, row, out),
            (WeightFormat::Bytes, 3) => bytes::<3>(w, x, panel, row, out),
            (WeightFormat::Bytes, 2) => bytes::<2>(w, x, panel, row, out),
            (WeightFormat::Bytes, _) => bytes::<1>(w, x, panel, row, out),
            (WeightFormat::Nibbles, 6) => nibbles::<6>(w, x, panel, row, out),
            (WeightFormat::Nibbles, 5) => nibbles::<5>(w, x, panel, row, out),
            (WeightFormat::Nibbles, 4) => nibbles::<4>(w, x, panel, row, out),
            (WeightFormat::Nibbles, 3) => nibbles::<3>(w, x, panel, row, out),
            (WeightFormat::Nibbles, 2) => nibbles::<2>(w, x, panel, row, out),
            (WeightFormat::Nibbles, _) => nibbles::<1>(w, x, panel, row, out),
        }
    }
}

/// Folds one block's integer sums into the f32 totals: `total += acc · (s · d)`, then
/// `total += sum · m`, for the 32 lanes of a panel (`d`, `m` as two vectors each).
///
/// # Safety
/// avx512f; `r < R`, block `b` exists for the rows of the tile.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn fold<const R: usize>(
    total: &mut [[__m512; 2]; R],
    acc: &[[__m512i; 2]; R],
    x: &QuantizedRows,
    at: usize,
    blocks: usize,
    d: [__m512; 2],
    m: [__m512; 2],
) {
    for r in 0..R {
        let s = _mm512_set1_ps(x.scales[at + r * blocks]);
        let sum = _mm512_set1_ps(x.sums[at + r * blocks]);
        for half in 0..2 {
            total[r][half] = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(acc[r][half]),
                _mm512_mul_ps(s, d[half]),
                total[r][half],
            );
            total[r][half] = _mm512_fmadd_ps(sum, m[half], total[r][half]);
        }
    }
}

/// Sixteen f16 values at `p` as f32 (exact).
///
/// # Safety
/// avx512f; sixteen values readable at `p`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn half(p: *const u16) -> __m512 {
    // SAFETY: forwarded from the caller.
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
}

/// Stores the totals of a tile.
///
/// # Safety
/// avx512f.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store<const R: usize>(total: &[[__m512; 2]; R], out: &mut [[f32; PANEL]; TILE_ROWS]) {
    for r in 0..R {
        // SAFETY: each output row holds PANEL = 32 floats, two vectors of 16.
        unsafe {
            _mm512_storeu_ps(out[r].as_mut_ptr(), total[r][0]);
            _mm512_storeu_ps(out[r].as_mut_ptr().add(16), total[r][1]);
        }
    }
}

/// `R` rows of `x` times one panel of 8-bit weights: 2·R accumulators of sixteen `i32` lanes
/// per block, folded into 2·R f32 accumulators by one fused multiply-add per block.
///
/// # Safety
/// avx512f, avx512bw and avx512vnni; `row + R <= x.rows`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn bytes<const R: usize>(
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
            let d = [
                _mm512_loadu_ps(panel_scales.add(b * PANEL)),
                _mm512_loadu_ps(panel_scales.add(b * PANEL + 16)),
            ];
            let m = [
                _mm512_loadu_ps(panel_mins.add(b * PANEL)),
                _mm512_loadu_ps(panel_mins.add(b * PANEL + 16)),
            ];
            fold(&mut total, &acc, x, row * blocks + b, blocks, d, m);
        }
        store(&total, out);
    }
}

/// `R` rows of `x` times one panel of 4-bit weights: each 64-byte load holds two steps of four
/// inputs for sixteen lanes (low and high nibbles), so a block of 32 inputs is eight loads.
///
/// # Safety
/// avx512f, avx512bw and avx512vnni; `row + R <= x.rows`; `w` in the nibble format.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn nibbles<const R: usize>(
    w: &PackedWeights,
    x: &QuantizedRows,
    panel: usize,
    row: usize,
    out: &mut [[f32; PANEL]; TILE_ROWS],
) {
    debug_assert!(row + R <= x.rows && R <= TILE_ROWS);
    let blocks = x.padded_cols / NIBBLE_BLOCK;
    let low = _mm512_set1_epi8(0x0f);
    let mut total = [[_mm512_setzero_ps(); 2]; R];
    // SAFETY (all pointer arithmetic below): the panel holds `blocks` blocks of 512 bytes (4
    // pairs of 128); row `row + r < x.rows` holds `padded_cols` quantized values, of which
    // block `b` reads 32 (offsets `4p ..+ 4` and `16 + 4p ..+ 4`); scales and minima hold
    // 32 f16 per block and panel.
    unsafe {
        let panel_data = w.data.as_ptr().add(panel * blocks * NIBBLE_PANEL_BLOCK);
        let panel_scales = w.half_scales.as_ptr().add(panel * blocks * PANEL);
        let panel_mins = w.half_mins.as_ptr().add(panel * blocks * PANEL);
        for b in 0..blocks {
            let mut acc = [[_mm512_setzero_si512(); 2]; R];
            let weights = panel_data.add(b * NIBBLE_PANEL_BLOCK);
            let inputs = x.q.as_ptr().add(row * x.padded_cols + b * NIBBLE_BLOCK);
            for pair in 0..4 {
                let v0 = _mm512_loadu_si512(weights.add(pair * 128) as *const __m512i);
                let v1 = _mm512_loadu_si512(weights.add(pair * 128 + 64) as *const __m512i);
                let first = [_mm512_and_si512(v0, low), _mm512_and_si512(v1, low)];
                let second = [
                    _mm512_and_si512(_mm512_srli_epi16(v0, 4), low),
                    _mm512_and_si512(_mm512_srli_epi16(v1, 4), low),
                ];
                for (r, a) in acc.iter_mut().enumerate() {
                    let at = inputs.add(r * x.padded_cols + 4 * pair);
                    let xa = _mm512_set1_epi32((at as *const i32).read_unaligned());
                    let xb = _mm512_set1_epi32((at.add(16) as *const i32).read_unaligned());
                    a[0] = _mm512_dpbusd_epi32(a[0], first[0], xa);
                    a[1] = _mm512_dpbusd_epi32(a[1], first[1], xa);
                    a[0] = _mm512_dpbusd_epi32(a[0], second[0], xb);
                    a[1] = _mm512_dpbusd_epi32(a[1], second[1], xb);
                }
            }
            let d = [
                half(panel_scales.add(b * PANEL)),
                half(panel_scales.add(b * PANEL + 16)),
            ];
            let m = [
                half(panel_mins.add(b * PANEL)),
                half(panel_mins.add(b * PANEL + 16)),
            ];
            fold(&mut total, &acc, x, row * blocks + b, blocks, d, m);
        }
        store(&total, out);
    }
}
