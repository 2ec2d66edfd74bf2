//! Machine limits measured by the benchmarks, in the same run as the kernels they judge: a
//! streaming read of a buffer larger than the last-level cache (DRAM read bandwidth) and an
//! FMA loop that never touches memory (peak f32 FLOP/s), and where the process may use it, a loop of
//! AMX tile products (peak bf16 FLOP/s of the tile unit).

use rayon::prelude::*;

/// Sum of `buf`, read once from start to end, split over the rayon pool. Time it on a buffer well
/// beyond L3 and `4 · len / seconds` is the DRAM read bandwidth every thread together gets.
///
/// ```
/// assert_eq!(deepblocks_core::probe::stream_sum(&vec![0.5; 1000]), 500.0);
/// ```
pub fn stream_sum(buf: &[f32]) -> f32 {
    // 4 MiB per task: long contiguous runs, as the best-behaved kernel would read.
    buf.par_chunks(1 << 20).map(sum_lanes).sum()
}

/// Sum with 16 independent accumulators (vectorised by the compiler).
fn sum_lanes(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Floating-point operations one call of [`fma_peak`] performs with `iters` iterations on each of
/// `threads` threads.
pub fn fma_peak_flops(iters: usize, threads: usize) -> u64 {
    // 12 chains of 8-lane FMAs, 2 FLOPs each.
    (iters as u64) * 12 * 8 * 2 * threads as u64
}

/// Runs `iters` iterations of 12 independent 8-wide fused multiply-adds on every rayon thread
/// (AVX2+FMA when available, else a portable multiply-add loop) and returns a value that depends
/// on all of them. Its FLOP count is [`fma_peak_flops`]`(iters, rayon::current_num_threads())`.
pub fn fma_peak(iters: usize) -> f32 {
    on_every_thread(|i| fma_chains(iters, i as f32))
}

/// The sum of `chains(i)` run once on each rayon thread `i` (a probe's loop on every thread).
fn on_every_thread(chains: impl Fn(usize) -> f32 + Sync + Send) -> f32 {
    (0..rayon::current_num_threads())
        .into_par_iter()
        .map(chains)
        .sum()
}

fn fma_chains(iters: usize, seed: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { fma_chains_avx2(iters, seed) };
    }
    let mut acc = [[seed; 8]; 12];
    let (a, b) = (0.999_999f32, 1e-7f32);
    for _ in 0..iters {
        for chain in acc.iter_mut() {
            for v in chain.iter_mut() {
                *v = v.mul_add(a, b);
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(iters: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(seed); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut out = [0.0f32; 8];
    let mut s = _mm256_setzero_ps();
    for v in acc {
        s = _mm256_add_ps(s, v);
    }
    // SAFETY: `out` has room for 8 f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// Floating-point operations one call of [`fma_peak_wide`] performs with `iters` iterations on
/// each of `threads` threads.
pub fn fma_peak_wide_flops(iters: usize, threads: usize) -> u64 {
    // 12 chains of 16-lane FMAs, 2 FLOPs each.
    (iters as u64) * 12 * 16 * 2 * threads as u64
}

/// [`fma_peak`] with 16-wide FMAs on AVX-512F when [`crate::avx512()`] allows them (the peak the
/// wide kernels are judged against); `None` where it does not.
pub fn fma_peak_wide(iters: usize) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if crate::avx512() {
        // SAFETY: the CPU supports AVX-512F (checked by avx512()).
        return Some(on_every_thread(|i| unsafe {
            fma_chains_avx512(iters, i as f32)
        }));
    }
    let _ = iters;
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(seed); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for v in acc {
        s = _mm512_add_ps(s, v);
    }
    _mm512_reduce_add_ps(s)
}

/// Floating-point operations one call of [`tile_peak`] performs with `iters` iterations on each
/// of `threads` threads.
pub fn tile_peak_flops(iters: usize, threads: usize) -> u64 {
    // Four 16 × 16 × 32 tile products per iteration, 2 FLOPs per multiply-add.
    (iters as u64) * 4 * 16 * 16 * 32 * 2 * threads as u64
}

/// Runs `iters` iterations of four independent bf16 tile products (`tdpbf16ps`, no memory
/// traffic) on every rayon thread when [`crate::amx()`] allows the tile unit (the peak the tile
/// kernels are judged against), and returns a value that depends on them; `None` where it
/// does not. Its FLOP count is [`tile_peak_flops`]`(iters, rayon::current_num_threads())`.
pub fn tile_peak(iters: usize) -> Option<f32> {
    if crate::amx() {
        return Some(on_every_thread(|_| {
            crate::linear::tile_products_loop(iters)
        }));
    }
    let _ = iters;
    None
}

/// Multiply-adds one call of [`bf16_dot_peak`] or [`int8_dot_peak`] performs with `iters`
/// iterations on each of `threads` threads, counted as 2 operations each (as FLOPs are).
pub fn dot_peak_ops(iters: usize, threads: usize, lanes_per_instruction: usize) -> u64 {
    // 12 chains, one instruction each per iteration.
    (iters as u64) * 12 * lanes_per_instruction as u64 * 2 * threads as u64
}

/// Multiply-adds of one `vdpbf16ps` on 512-bit registers: 16 lanes × 2 bf16 pairs.
pub const BF16_DOT_LANES: usize = 32;

/// Multiply-adds of one `vpdpbusd` on 512-bit registers: 16 lanes × 4 byte pairs.
pub const INT8_DOT_LANES: usize = 64;

/// Runs `iters` iterations of 12 independent chains of `vdpbf16ps` (no memory traffic) on every
/// rayon thread where [`crate::bf16_dot`] allows them (the peak the bf16 dot kernels are judged
/// against), and returns a value that depends on them; `None` elsewhere. Its operation count
/// is [`dot_peak_ops`]`(iters, threads, `[`BF16_DOT_LANES`]`)`.
pub fn bf16_dot_peak(iters: usize) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if crate::bf16_dot() {
        // SAFETY: the CPU supports AVX-512F and AVX512-BF16 (checked by bf16_dot()).
        return Some(on_every_thread(|i| unsafe {
            bf16_dot_chains(iters, i as f32)
        }));
    }
    let _ = iters;
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn bf16_dot_chains(iters: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY: 64 bytes of plain bits either way.
    let (a, b) = unsafe {
        (
            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3F80_3F80)), // 1.0, 1.0
            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3380_3380)), // 2⁻²⁴
        )
    };
    let mut acc = [_mm512_set1_ps(seed); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbf16_ps(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for v in acc {
        s = _mm512_add_ps(s, v);
    }
    _mm512_reduce_add_ps(s)
}

/// Runs `iters` iterations of 12 independent chains of 512-bit `vpdpbusd` (no memory traffic) on
/// every rayon thread where the integer attention kernels use them ([`crate::avx512`] and
/// AVX-512 VNNI allowed by [`crate::vnni`]), and returns a value that depends on them; `None`
/// elsewhere. Its operation count is [`dot_peak_ops`]`(iters, threads, `[`INT8_DOT_LANES`]`)`.
pub fn int8_dot_peak(iters: usize) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if crate::avx512() && crate::vnni() && crate::isa::vnni_evex() {
        // SAFETY: the CPU supports AVX-512F and AVX-512 VNNI (checked above).
        return Some(on_every_thread(
            |i| unsafe { int8_dot_chains(iters, i as i32) } as f32,
        ));
    }
    let _ = iters;
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn int8_dot_chains(iters: usize, seed: i32) -> i32 {
    use std::arch::x86_64::*;
    let (a, b) = (
        _mm512_set1_epi32(0x0101_0101),
        _mm512_set1_epi32(0x0102_0301),
    );
    let mut acc = [_mm512_set1_epi32(seed); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbusd_epi32(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_si512();
    for v in acc {
        s = _mm512_add_epi32(s, v);
    }
    _mm512_reduce_add_epi32(s)
}
