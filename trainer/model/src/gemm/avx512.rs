//! The AVX-512 micro-kernels: one `MR × NR` tile of `C` from an `MR`-row panel of packed `A`
//! and an `NR`-column panel of packed `B` ([`super::pack`] lays them out).
//!
//! Each tile keeps its `MR · NR / 16` = 28 accumulators in registers for the whole `k` block.
//! Per step of `k` it loads two vectors of `B` and broadcasts `MR` values of `A`, so the loads
//! stay well under the FMA rate. The bf16 kernel is the same loop over pairs of `k`:
//! `vdpbf16ps` multiplies two bf16 pairs per lane and adds both exact products into the f32
//! accumulator.

use std::arch::x86_64::*;

use super::{MR, NR};

/// Where a tile's result goes: `rows × cols` of `C` at `c` with row stride `ldc`. A tile cut
/// by the edge of `C` is computed in full into a scratch tile and only its valid part is
/// written.
pub(super) struct TileOut {
    pub c: *mut f32,
    pub ldc: usize,
    pub rows: usize,
    pub cols: usize,
    /// Add to what `C` holds (a later block of `k`) instead of overwriting it.
    pub accumulate: bool,
}

/// Expands `$body!(i)` for every row `i` of a tile, with `i` a literal: indexing the
/// accumulators by constants lets the compiler keep all of them in registers (a loop over the
/// rows left them on the stack at this crate's optimisation level).
macro_rules! each_row {
    ($body:ident) => {
        $body!(0);
        $body!(1);
        $body!(2);
        $body!(3);
        $body!(4);
        $body!(5);
        $body!(6);
        $body!(7);
        $body!(8);
        $body!(9);
        $body!(10);
        $body!(11);
        $body!(12);
        $body!(13);
    };
}
const _: () = assert!(MR == 14, "each_row! expands 14 rows");

/// Stores the accumulators to `out`.
///
/// # Safety
/// avx512f; `out` must describe writable memory of `rows` rows of `cols` floats at stride `ldc`.
#[target_feature(enable = "avx512f")]
unsafe fn store(acc: [[__m512; 2]; MR], out: &TileOut) {
    if out.rows == MR && out.cols == NR {
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: a full tile: rows `i < MR` and 32 columns lie inside `C`.
            unsafe {
                let dst = out.c.add(i * out.ldc);
                let (mut lo, mut hi) = (row[0], row[1]);
                if out.accumulate {
                    lo = _mm512_add_ps(lo, _mm512_loadu_ps(dst));
                    hi = _mm512_add_ps(hi, _mm512_loadu_ps(dst.add(16)));
                }
                _mm512_storeu_ps(dst, lo);
                _mm512_storeu_ps(dst.add(16), hi);
            }
        }
        return;
    }
    let mut scratch = [[0f32; NR]; MR];
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: the scratch row holds 32 floats.
        unsafe {
            _mm512_storeu_ps(scratch[i].as_mut_ptr(), row[0]);
            _mm512_storeu_ps(scratch[i].as_mut_ptr().add(16), row[1]);
        }
    }
    for (i, row) in scratch.iter().enumerate().take(out.rows) {
        for (j, value) in row.iter().enumerate().take(out.cols) {
            // SAFETY: `i < rows` and `j < cols`, inside `C` by the caller's contract.
            unsafe {
                let dst = out.c.add(i * out.ldc + j);
                *dst = if out.accumulate { *dst + value } else { *value };
            }
        }
    }
}

/// `C = A · B` (or `C += A · B`) for one tile in f32.
///
/// # Safety
/// avx512f; `a` holds `kc · MR` floats and `b` holds `kc · NR` floats in the packed layouts;
/// `out` as in [`store`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_f32(kc: usize, a: *const f32, b: *const f32, out: &TileOut) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kc {
        // SAFETY: `p < kc`, inside both packed panels.
        unsafe {
            let b0 = _mm512_loadu_ps(b.add(p * NR));
            let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
            let a_row = a.add(p * MR);
            macro_rules! row {
                ($i:literal) => {
                    let ai = _mm512_set1_ps(*a_row.add($i));
                    acc[$i][0] = _mm512_fmadd_ps(ai, b0, acc[$i][0]);
                    acc[$i][1] = _mm512_fmadd_ps(ai, b1, acc[$i][1]);
                };
            }
            each_row!(row);
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { store(acc, out) }
}

/// `C = A · B` (or `C += A · B`) for one tile from bf16 pairs: `a` holds `kp · MR` pairs (one
/// `u32` each, the even `k` in the low half) and `b` holds `kp · NR` pairs.
///
/// # Safety
/// avx512f and avx512bf16; the packed panels hold `kp` pairs of `k`; `out` as in [`store`].
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn tile_bf16(kp: usize, a: *const u32, b: *const u32, out: &TileOut) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kp {
        // SAFETY: `p < kp`, inside both packed panels; `__m512i` and `__m512bh` are both 64
        // bytes of lanes, reinterpreted without conversion.
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
            let a_row = a.add(p * MR);
            macro_rules! row {
                ($i:literal) => {
                    let ai: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a_row.add($i) as i32));
                    acc[$i][0] = _mm512_dpbf16_ps(acc[$i][0], ai, b0);
                    acc[$i][1] = _mm512_dpbf16_ps(acc[$i][1], ai, b1);
                };
            }
            each_row!(row);
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { store(acc, out) }
}
