//! The AVX2 + FMA + F16C dot kernels: codes unpacked to bytes, `maddubs` (unsigned × signed
//! byte pairs to i16) and `madd` (i16 pairs to i32) per block, one f32 FMA per block. Each has
//! the contract of [`DotFn`] plus: the CPU supports AVX2, FMA and F16C; the table is only chosen
//! when [`crate::isa()`] says so. The portable kernels in `dot.rs` are their reference.

use std::arch::x86_64::*;

use super::act::{ActQ8_0, ActQ8K};
use super::dot::{DotKernels, FormatKernels};
use super::q4_k::scale_min;
use crate::Isa;

#[allow(unused_imports)] // the contracts the kernels follow
use super::dot::{DotFn, Tile4Fn};

/// The AVX2 kernels.
pub(crate) static AVX2: DotKernels = DotKernels {
    isa: Isa::Avx2,
    q8_0: FormatKernels {
        dot: q8_0,
        tile4: q8_0_tile4,
    },
    q4_0: FormatKernels {
        dot: q4_0,
        tile4: q4_0_tile4,
    },
    q5_0: FormatKernels {
        dot: q5_0,
        tile4: q5_0_tile4,
    },
    q4_k: FormatKernels {
        dot: q4_k,
        tile4: q4_k_tile4,
    },
    q6_k: FormatKernels {
        dot: q6_k,
        tile4: q6_k_tile4,
    },
};

/// The f16 at `p` (little-endian), widened with F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller points `p` at two readable bytes.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// How far ahead of the block being read the weights are prefetched. Without it a row of
/// 32-blocks is read at half the speed; 4 KiB beats 1 KiB on every format (measured:
/// 1×2048·102400ᵀ Q8_0 14.3 → 9.9 ms, Q4_K 7.2 → 4.8 ms, docs/performance.md).
const PREFETCH_BYTES: usize = 4096;

/// Prefetches the cache lines of the block `PREFETCH_BYTES` past the one at `p` (`BYTES` long);
/// past the end of the weights the hint is dropped, it never faults.
#[inline(always)]
fn prefetch_block<const BYTES: usize>(p: *const u8) {
    let ahead = p.wrapping_add(PREFETCH_BYTES);
    let mut off = 0;
    while off < BYTES {
        // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(off).cast()) };
        off += 64;
    }
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The 32 signed byte products `w_i · x_i` summed in pairs of pairs: 8 i32 lanes, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_i8(w: __m256i, x: __m256i) -> __m256 {
    // maddubs multiplies unsigned by signed bytes: move w's signs onto x.
    let aw = _mm256_sign_epi8(w, w);
    let sx = _mm256_sign_epi8(x, w);
    let pairs = _mm256_maddubs_epi16(aw, sx);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// 16 bytes of nibbles as 32 bytes: the low nibbles first, then the high ones.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller points `p` at 16 readable bytes.
    let q = unsafe { _mm_loadu_si128(p.cast()) };
    let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Byte `i` all ones where bit `i` of `bits` is set, zero elsewhere.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bits_to_bytes(bits: u32) -> __m256i {
    // Byte i takes byte i / 8 of `bits`; OR-ing every bit but i % 8 leaves all ones iff bit i%8 is set.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1))
}

/// `Σ_b` of `block(b, acc)` over `nb` blocks into four accumulators, block `b` into `b % 4`
/// (one FMA chain per accumulator: the chains overlap).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_blocks(nb: usize, block: impl Fn(usize, __m256) -> __m256) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut b = 0;
    while b + 4 <= nb {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = block(b + j, *a);
        }
        b += 4;
    }
    for (j, bb) in (b..nb).enumerate() {
        acc[j] = block(bb, acc[j]);
    }
    hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0(w: *const u8, x: *const ActQ8_0, nb: usize) -> f32 {
    sum_blocks(nb, |b, acc| {
        // SAFETY: block b of each row is in bounds (`DotFn`).
        unsafe {
            let (wb, a) = (w.add(34 * b), &*x.add(b));
            prefetch_block::<34>(wb);
            let d = _mm256_set1_ps(f16_at(wb) * a.d);
            let qw = _mm256_loadu_si256(wb.add(2).cast());
            let qx = _mm256_loadu_si256(a.qs.as_ptr().cast());
            _mm256_fmadd_ps(d, dot_i8(qw, qx), acc)
        }
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0(w: *const u8, x: *const ActQ8_0, nb: usize) -> f32 {
    sum_blocks(nb, |b, acc| {
        // SAFETY: as in q8_0.
        unsafe {
            let (wb, a) = (w.add(18 * b), &*x.add(b));
            prefetch_block::<18>(wb);
            let d = _mm256_set1_ps(f16_at(wb) * a.d);
            let qw = _mm256_sub_epi8(nibbles(wb.add(2)), _mm256_set1_epi8(8));
            let qx = _mm256_loadu_si256(a.qs.as_ptr().cast());
            _mm256_fmadd_ps(d, dot_i8(qw, qx), acc)
        }
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0(w: *const u8, x: *const ActQ8_0, nb: usize) -> f32 {
    sum_blocks(nb, |b, acc| {
        // SAFETY: as in q8_0.
        unsafe {
            let (wb, a) = (w.add(22 * b), &*x.add(b));
            prefetch_block::<22>(wb);
            let d = _mm256_set1_ps(f16_at(wb) * a.d);
            let qh = wb.add(2).cast::<u32>().read_unaligned();
            let fifth = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
            let q = _mm256_or_si256(nibbles(wb.add(6)), fifth);
            let qw = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
            let qx = _mm256_loadu_si256(a.qs.as_ptr().cast());
            _mm256_fmadd_ps(d, dot_i8(qw, qx), acc)
        }
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k(w: *const u8, x: *const ActQ8K, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = 0.0f32;
    let low = _mm256_set1_epi8(0x0F);
    for b in 0..nb {
        // SAFETY: as in q8_0; a Q4_K block is 144 bytes.
        unsafe {
            let (wb, a) = (w.add(144 * b), &*x.add(b));
            prefetch_block::<144>(wb);
            let scales = std::slice::from_raw_parts(wb.add(4), 12);
            let mut summ = 0i32;
            let mut sumi = _mm256_setzero_si256();
            for g in 0..4 {
                let (sc0, m0) = scale_min(2 * g, scales);
                let (sc1, m1) = scale_min(2 * g + 1, scales);
                summ += m0 as i32 * (a.bsums[4 * g] as i32 + a.bsums[4 * g + 1] as i32)
                    + m1 as i32 * (a.bsums[4 * g + 2] as i32 + a.bsums[4 * g + 3] as i32);
                let q = _mm256_loadu_si256(wb.add(16 + 32 * g).cast());
                let lo = _mm256_and_si256(q, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                let xl = _mm256_loadu_si256(a.qs.as_ptr().add(64 * g).cast());
                let xh = _mm256_loadu_si256(a.qs.as_ptr().add(64 * g + 32).cast());
                let pl =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_set1_epi16(sc0 as i16));
                let ph =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), _mm256_set1_epi16(sc1 as i16));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
            }
            let d = f16_at(wb) * a.d;
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            acc_min += f16_at(wb.add(2)) * a.d * summ as f32;
        }
    }
    hsum(acc) - acc_min
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k(w: *const u8, x: *const ActQ8K, nb: usize) -> f32 {
    // Unpacks and multiplies a group of 32 at a time (not through `q6_k_unpack`, whose sixteen
    // live vectors spill here: measured 8.15 → 8.67 ms on 1×2048·102400ᵀ).
    let mut acc = _mm256_setzero_ps();
    let (low4, low2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03));
    let m32 = _mm256_set1_epi8(32);
    for b in 0..nb {
        // SAFETY: as in q8_0; a Q6_K block is 210 bytes.
        unsafe {
            let (wb, a) = (w.add(210 * b), &*x.add(b));
            prefetch_block::<210>(wb);
            let sc = std::slice::from_raw_parts(wb.add(192).cast::<i8>(), 16);
            let mut sumi = _mm256_setzero_si256();
            for half in 0..2 {
                let ql0 = _mm256_loadu_si256(wb.add(64 * half).cast());
                let ql1 = _mm256_loadu_si256(wb.add(64 * half + 32).cast());
                let qh = _mm256_loadu_si256(wb.add(128 + 32 * half).cast());
                let lows = [
                    _mm256_and_si256(ql0, low4),
                    _mm256_and_si256(ql1, low4),
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                ];
                let highs = [
                    _mm256_and_si256(qh, low2),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), low2),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 4), low2),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 6), low2),
                ];
                for k in 0..4 {
                    let q = _mm256_or_si256(lows[k], _mm256_slli_epi16(highs[k], 4));
                    let xk = _mm256_loadu_si256(a.qs.as_ptr().add(128 * half + 32 * k).cast());
                    // (q − 32)·x as q·x − 32·x, both through maddubs (q and 32 unsigned).
                    let dot = _mm256_sub_epi16(
                        _mm256_maddubs_epi16(q, xk),
                        _mm256_maddubs_epi16(m32, xk),
                    );
                    let s = 8 * half + 2 * k;
                    let scale = _mm256_set_m128i(
                        _mm_set1_epi16(sc[s + 1] as i16),
                        _mm_set1_epi16(sc[s] as i16),
                    );
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(dot, scale));
                }
            }
            let d = f16_at(wb.add(208)) * a.d;
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
    }
    hsum(acc)
}

/// `Σ_j sc_j Σ_i (q_i − 32)·x_i` of an unpacked `Q6_K` block ([`q6_k_unpack`]) and its
/// activations, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_block_dot(codes: &[__m256i; 8], scale: &[__m256i; 8], a: &ActQ8K) -> __m256i {
    let m32 = _mm256_set1_epi8(32);
    let mut sumi = _mm256_setzero_si256();
    for g in 0..8 {
        // SAFETY: an ActQ8K holds 256 activation bytes; group g is bytes 32g..32g + 32.
        let xq = unsafe { _mm256_loadu_si256(a.qs.as_ptr().add(32 * g).cast()) };
        // (q − 32)·x as q·x − 32·x, both through maddubs (q and 32 unsigned).
        let dot = _mm256_sub_epi16(
            _mm256_maddubs_epi16(codes[g], xq),
            _mm256_maddubs_epi16(m32, xq),
        );
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(dot, scale[g]));
    }
    sumi
}

/// A `Q6_K` block at `wb` unpacked: its eight groups of 32 codes (`q ∈ [0, 63]`, bytes) and, per
/// group, the i16 scales of its two sub-blocks of 16 (one per 128-bit half).
///
/// # Safety
/// `wb` points to a 210-byte `Q6_K` block; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_unpack(wb: *const u8) -> ([__m256i; 8], [__m256i; 8]) {
    let (low4, low2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03));
    let mut codes = [_mm256_setzero_si256(); 8];
    let mut scale = [_mm256_setzero_si256(); 8];
    // SAFETY: the 210 bytes of the block (caller): ql 0..128, qh 128..192, scales 192..208.
    unsafe {
        let sc = std::slice::from_raw_parts(wb.add(192).cast::<i8>(), 16);
        for half in 0..2 {
            let ql0 = _mm256_loadu_si256(wb.add(64 * half).cast());
            let ql1 = _mm256_loadu_si256(wb.add(64 * half + 32).cast());
            let qh = _mm256_loadu_si256(wb.add(128 + 32 * half).cast());
            let lows = [
                _mm256_and_si256(ql0, low4),
                _mm256_and_si256(ql1, low4),
                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
            ];
            let highs = [
                _mm256_and_si256(qh, low2),
                _mm256_and_si256(_mm256_srli_epi16(qh, 2), low2),
                _mm256_and_si256(_mm256_srli_epi16(qh, 4), low2),
                _mm256_and_si256(_mm256_srli_epi16(qh, 6), low2),
            ];
            for k in 0..4 {
                codes[4 * half + k] = _mm256_or_si256(lows[k], _mm256_slli_epi16(highs[k], 4));
                let s = 8 * half + 2 * k;
                scale[4 * half + k] = _mm256_set_m128i(
                    _mm_set1_epi16(sc[s + 1] as i16),
                    _mm_set1_epi16(sc[s] as i16),
                );
            }
        }
    }
    (codes, scale)
}

/// Four rows of 32-block activations against one weight row whose block `b` is
/// `block(b) = (d_w, codes)`: each block unpacked once, four accumulators ([`Tile4Fn`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile4_32(
    out: *mut f32,
    x: *const ActQ8_0,
    x_stride: usize,
    nb: usize,
    block: impl Fn(usize) -> (f32, __m256i),
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    for b in 0..nb {
        let (dw, qw) = block(b);
        let aw = _mm256_sign_epi8(qw, qw);
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row j's block b is in bounds (`Tile4Fn`).
            let a = unsafe { &*x.add(j * x_stride + b) };
            // SAFETY: `qs` is 32 bytes.
            let qx = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
            let pairs = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(qx, qw));
            let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * a.d), p, *acc);
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        // SAFETY: four writable outputs (`Tile4Fn`).
        unsafe { *out.add(j) = hsum(*acc) };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_tile4(out: *mut f32, w: *const u8, x: *const ActQ8_0, xs: usize, nb: usize) {
    // SAFETY: `Tile4Fn`: block b of the weight row is in bounds.
    unsafe {
        tile4_32(out, x, xs, nb, |b| {
            let wb = w.add(34 * b);
            prefetch_block::<34>(wb);
            (f16_at(wb), _mm256_loadu_si256(wb.add(2).cast()))
        })
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_tile4(out: *mut f32, w: *const u8, x: *const ActQ8_0, xs: usize, nb: usize) {
    // SAFETY: as in q8_0_tile4.
    unsafe {
        tile4_32(out, x, xs, nb, |b| {
            let wb = w.add(18 * b);
            prefetch_block::<18>(wb);
            let q = _mm256_sub_epi8(nibbles(wb.add(2)), _mm256_set1_epi8(8));
            (f16_at(wb), q)
        })
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_tile4(out: *mut f32, w: *const u8, x: *const ActQ8_0, xs: usize, nb: usize) {
    // SAFETY: as in q8_0_tile4.
    unsafe {
        tile4_32(out, x, xs, nb, |b| {
            let wb = w.add(22 * b);
            prefetch_block::<22>(wb);
            let qh = wb.add(2).cast::<u32>().read_unaligned();
            let fifth = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
            let q = _mm256_or_si256(nibbles(wb.add(6)), fifth);
            (f16_at(wb), _mm256_sub_epi8(q, _mm256_set1_epi8(16)))
        })
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_tile4(out: *mut f32, w: *const u8, x: *const ActQ8K, xs: usize, nb: usize) {
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut acc_min = [0.0f32; 4];
    for b in 0..nb {
        // SAFETY: block b of the weight row and of each activation row is in bounds (`Tile4Fn`).
        unsafe {
            let wb = w.add(144 * b);
            prefetch_block::<144>(wb);
            let scales = std::slice::from_raw_parts(wb.add(4), 12);
            let (d, dmin) = (f16_at(wb), f16_at(wb.add(2)));
            let mut codes = [_mm256_setzero_si256(); 8]; // sub-blocks 0..8, 32 codes each
            let mut sc = [_mm256_setzero_si256(); 8];
            let mut mins = [0i32; 8];
            for g in 0..4 {
                let q = _mm256_loadu_si256(wb.add(16 + 32 * g).cast());
                codes[2 * g] = _mm256_and_si256(q, low);
                codes[2 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
            }
            for (j, (s, m)) in sc.iter_mut().zip(&mut mins).enumerate() {
                let (scale, min) = scale_min(j, scales);
                *s = _mm256_set1_epi16(scale as i16);
                *m = min as i32;
            }
            for (r, (acc, acc_min)) in acc.iter_mut().zip(&mut acc_min).enumerate() {
                let a = &*x.add(r * xs + b);
                let mut sumi = _mm256_setzero_si256();
                let mut summ = 0i32;
                for j in 0..8 {
                    let xq = _mm256_loadu_si256(a.qs.as_ptr().add(32 * j).cast());
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(codes[j], xq), sc[j]);
                    sumi = _mm256_add_epi32(sumi, p);
                    summ += mins[j] * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32);
                }
                *acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(sumi), *acc);
                *acc_min += dmin * a.d * summ as f32;
            }
        }
    }
    for (j, (acc, acc_min)) in acc.iter().zip(acc_min).enumerate() {
        // SAFETY: four writable outputs (`Tile4Fn`).
        unsafe { *out.add(j) = hsum(*acc) - acc_min };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_tile4(out: *mut f32, w: *const u8, x: *const ActQ8K, xs: usize, nb: usize) {
    let mut acc = [_mm256_setzero_ps(); 4];
    for b in 0..nb {
        // SAFETY: as in q4_k_tile4; a Q6_K block is 210 bytes.
        unsafe {
            let wb = w.add(210 * b);
            prefetch_block::<210>(wb);
            let (codes, scale) = q6_k_unpack(wb);
            let d = f16_at(wb.add(208));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = &*x.add(r * xs + b);
                let sumi = q6_k_block_dot(&codes, &scale, a);
                *acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(sumi), *acc);
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        // SAFETY: four writable outputs (`Tile4Fn`).
        unsafe { *out.add(j) = hsum(*acc) };
    }
}
