//! Rows of `Q8_0` values kept as two arrays — codes and scales — for data appended once and read
//! by every later step (the latent cache of MLA), and the attention scores computed from them in
//! integers.
//!
//! Every 32 consecutive values share a scale: value `i` is `d[i / 32] · q_i`, `q_i ∈ [−127, 127]`,
//! with `d` and `q` exactly as ggml's `Q8_0` quantizer gives them (`d = max|x| / 127` rounded to
//! f16, `q = round(x / d)`), so the values equal a `Q8_0` tensor's and a `q8_0` KV cache's in
//! llama.cpp. Only the storage differs from GGUF's 34-byte blocks: the codes are stored as
//! `u_i = q_i + 128` in one byte array, the scales as f32 in another (one per 32 codes), so that a
//! SIMD load takes 32 codes of one row and `vpdpbusd`, which multiplies unsigned bytes by signed
//! ones, takes them as they lie. A row of a width that is not a multiple of 32 ends in a short
//! block, quantized over its own values and padded with zero codes to 32 (`u = 128`): rows are
//! always whole blocks.
//!
//! [`q8_scores`] multiplies such rows (keys) by queries quantized the same way ([`Q8Queries`],
//! 32-value blocks per query row) with one integer sum per block and key and query row:
//!
//! ```text
//! S[j, r] = Σ_b  d_k[j, b] · d_q[b, r] · Σ_{i ∈ b} q_k[j, i] · q_q[r, i]
//! ```
//!
//! where `Σ q_k · q_q = Σ u_k · q_q − 128 · Σ q_q` (the second sum is the query's, computed once).
//! [`q8_scores_portable`] is the scalar twin the SIMD kernel equals bit for bit;
//! [`q8_scores_naive`] is the plain reference over the dequantized values.

use super::act::{ActBlock, ActQ8_0};
use crate::aligned::AlignedVec;

/// Values per scale.
pub const Q8_BLOCK: usize = 32;

/// What is added to a code to store it in a byte (`u = q + 128`).
const OFFSET: i32 = 128;

/// Bytes of codes for a row of `width` values: `width` rounded up to whole blocks.
pub const fn q8_row_codes(width: usize) -> usize {
    width.div_ceil(Q8_BLOCK) * Q8_BLOCK
}

/// `codes[i] = q_i + 128` and `scales[b]` for the values `x` (one row), by ggml's `Q8_0`
/// quantizer, block by block; a last short block is quantized over its own values and its codes
/// padded with zero codes (the values finite).
///
/// ```
/// use deepblocks_core::quant::q8_rows::{q8_dequantize_into, q8_quantize_into};
/// let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
/// let (mut codes, mut scales) = (vec![0u8; 32], vec![0.0f32; 1]);
/// q8_quantize_into(&mut codes, &mut scales, &x);
/// assert_eq!(codes[0], 128 - 127); // −16 is the block's largest magnitude: q = −127
/// let mut back = vec![0.0f32; 32];
/// q8_dequantize_into(&mut back, &codes, &scales, 0);
/// assert!(back.iter().zip(&x).all(|(b, x)| (b - x).abs() <= 16.0 / 254.0 + 1e-3));
/// ```
///
/// # Panics
/// If `codes` is not [`q8_row_codes`]`(x.len())` long or `scales` not one per 32 codes (lengths
/// are the caller's invariant).
pub fn q8_quantize_into(codes: &mut [u8], scales: &mut [f32], x: &[f32]) {
    assert!(
        codes.len() == q8_row_codes(x.len()) && scales.len() == codes.len() / Q8_BLOCK,
        "q8_quantize_into: {} values, {} codes, {} scales",
        x.len(),
        codes.len(),
        scales.len()
    );
    let mut padded = [0.0f32; Q8_BLOCK];
    for ((xb, cb), d) in x
        .chunks(Q8_BLOCK)
        .zip(codes.chunks_exact_mut(Q8_BLOCK))
        .zip(scales.iter_mut())
    {
        padded.fill(0.0);
        padded[..xb.len()].copy_from_slice(xb);
        let block = ActQ8_0::quantize(&padded);
        *d = block.d;
        for (c, &q) in cb.iter_mut().zip(&block.qs) {
            *c = (q as i32 + OFFSET) as u8;
        }
    }
}

/// The rows of `x[rows, width]` by [`q8_quantize_into`], one after the other: `codes[rows,
/// stride]` and `scales[rows, stride / 32]`, `stride` = [`q8_row_codes`]`(width)` (what a `Q8_0`
/// latent cache appends).
///
/// # Panics
/// If the lengths are not those of whole rows (`x` empty when `width` is 0).
pub fn q8_quantize_rows(codes: &mut [u8], scales: &mut [f32], x: &[f32], width: usize) {
    let stride = q8_row_codes(width);
    let rows = x.len().checked_div(width).unwrap_or(0);
    assert!(
        rows * width == x.len()
            && codes.len() == rows * stride
            && scales.len() * Q8_BLOCK == codes.len(),
        "q8_quantize_rows: {} values of width {width}, {} codes, {} scales",
        x.len(),
        codes.len(),
        scales.len()
    );
    for ((row, c), d) in x
        .chunks_exact(width.max(1))
        .zip(codes.chunks_exact_mut(stride.max(1)))
        .zip(scales.chunks_exact_mut((stride / Q8_BLOCK).max(1)))
    {
        q8_quantize_into(c, d, row);
    }
}

/// `out[i] = d · q` of codes `start + i` of rows whose codes are `codes` and scales `scales`
/// (code `v`'s scale is `scales[v / 32]`: rows of whole blocks are one run of blocks).
///
/// # Panics
/// If the values `start .. start + out.len()` pass the end of `codes` or their blocks the end
/// of `scales`.
pub fn q8_dequantize_into(out: &mut [f32], codes: &[u8], scales: &[f32], start: usize) {
    let codes = &codes[start..start + out.len()];
    // The rest of the first block, then whole blocks (a loop of 32 the compiler vectorizes),
    // then the start of the last.
    let head = ((Q8_BLOCK - start % Q8_BLOCK) % Q8_BLOCK).min(out.len());
    let (out_head, out_rest) = out.split_at_mut(head);
    let (codes_head, codes_rest) = codes.split_at(head);
    if head > 0 {
        dequantize_run(out_head, codes_head, scales[start / Q8_BLOCK]);
    }
    let first = start.div_ceil(Q8_BLOCK); // the block of out_rest[0]
    let whole = out_rest.len() / Q8_BLOCK * Q8_BLOCK;
    let (out_whole, out_tail) = out_rest.split_at_mut(whole);
    let scales_whole = &scales[first..first + whole / Q8_BLOCK];
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2; out_whole, codes_rest and scales_whole hold the same whole
        // blocks.
        unsafe { x86::dequantize_blocks(out_whole, codes_rest, scales_whole) };
    } else {
        dequantize_blocks(out_whole, codes_rest, scales_whole);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dequantize_blocks(out_whole, codes_rest, scales_whole);
    if !out_tail.is_empty() {
        dequantize_run(
            out_tail,
            &codes_rest[whole..],
            scales[first + whole / Q8_BLOCK],
        );
    }
}

/// Whole blocks: `out[i] = scales[i / 32] · (codes[i] − 128)`.
fn dequantize_blocks(out: &mut [f32], codes: &[u8], scales: &[f32]) {
    for ((o, c), &d) in out
        .chunks_exact_mut(Q8_BLOCK)
        .zip(codes.chunks_exact(Q8_BLOCK))
        .zip(scales)
    {
        dequantize_run(o, c, d);
    }
}

/// `out[i] = d · (codes[i] − 128)`.
#[inline(always)]
fn dequantize_run(out: &mut [f32], codes: &[u8], d: f32) {
    for (o, &u) in out.iter_mut().zip(codes) {
        *o = d * (u as i32 - OFFSET) as f32;
    }
}

/// Query rows quantized for [`q8_scores`]: `rp` rows (a multiple of 8; rows past the real ones
/// zero) of `dk` values, as 32-value `Q8_0` blocks (`dk` rounded up to whole blocks, the padding
/// zero).
#[derive(Debug, Clone)]
pub struct Q8Queries {
    dk: usize, // whole blocks: q8_row_codes(the queries' width)
    rp: usize,
    codes: AlignedVec<i8>, // [dk / 4, rp, 4]: four consecutive values of a row, rows side by side
    d: Vec<f32>,           // [dk / 32, rp]: the blocks' scales
    n: Vec<i32>,           // [dk / 32, rp]: −128 · Σ of the block's codes
}

impl Q8Queries {
    /// The rows of `qt[dk, rp]` (the queries transposed: row `r` is column `r`), quantized by
    /// ggml's `Q8_0` quantizer in blocks of 32 of each row.
    ///
    /// # Panics
    /// If `rp` is not a multiple of 8 or `qt` not `dk · rp` long.
    pub fn from_transposed(qt: &[f32], dk: usize, rp: usize) -> Q8Queries {
        assert!(
            rp.is_multiple_of(8) && Some(qt.len()) == dk.checked_mul(rp),
            "Q8Queries: qt has {} values for dk {dk} × rp {rp} (rp a multiple of 8)",
            qt.len()
        );
        let width = dk;
        let dk = q8_row_codes(width);
        let nb = dk / Q8_BLOCK;
        let mut q = Q8Queries {
            dk,
            rp,
            codes: AlignedVec::zeros(dk * rp),
            d: vec![0.0; nb * rp],
            n: vec![0; nb * rp],
        };
        let mut row = [0.0f32; Q8_BLOCK];
        for r in 0..rp {
            for b in 0..nb {
                for (i, x) in row.iter_mut().enumerate() {
                    let v = b * Q8_BLOCK + i;
                    *x = if v < width { qt[v * rp + r] } else { 0.0 };
                }
                let block = ActQ8_0::quantize(&row);
                q.d[b * rp + r] = block.d;
                q.n[b * rp + r] = -OFFSET * block.qs.iter().map(|&c| c as i32).sum::<i32>();
                for (i, &c) in block.qs.iter().enumerate() {
                    let v = b * Q8_BLOCK + i;
                    q.codes[((v / 4) * rp + r) * 4 + v % 4] = c;
                }
            }
        }
        q
    }

    /// `(dk, rp)`: values per row (whole blocks), rows.
    pub fn dims(&self) -> (usize, usize) {
        (self.dk, self.rp)
    }

    /// Row `r`'s dequantized values (`d · q`), for tests.
    pub fn row(&self, r: usize) -> Vec<f32> {
        (0..self.dk)
            .map(|v| {
                let c = self.codes[((v / 4) * self.rp + r) * 4 + v % 4];
                self.d[(v / Q8_BLOCK) * self.rp + r] * c as f32
            })
            .collect()
    }
}

/// Checks a scores call's lengths.
fn check(st: &[f32], codes: &[u8], scales: &[f32], q: &Q8Queries, w: usize) {
    let (dk, rp) = (q.dk, q.rp);
    crate::assert_lengths(
        "q8_scores",
        format_args!("w {w} keys of dk {dk}, rp {rp} rows"),
        &[
            ("st", st.len(), w.checked_mul(rp)),
            ("codes", codes.len(), w.checked_mul(dk)),
            ("scales", scales.len(), w.checked_mul(dk / Q8_BLOCK)),
        ],
    );
}

/// `st[j, r] = S[j, r]` (module docs) for the `w` keys whose codes are `codes[w, dk]` and scales
/// `scales[w, dk / 32]` against the rows of `q` (`dk` in whole blocks, [`Q8Queries::dims`]):
/// with `vpdpbusd` where the CPU has VNNI
/// ([`crate::vnni`]), [`q8_scores_portable`] otherwise, equal to it bit for bit.
///
/// # Panics
/// If `st` is not `w · rp`, `codes` not `w · dk` or `scales` not `w · dk / 32` long.
pub fn q8_scores(st: &mut [f32], codes: &[u8], scales: &[f32], q: &Q8Queries, w: usize) {
    check(st, codes, scales, q, w);
    #[cfg(target_arch = "x86_64")]
    if crate::vnni() {
        // SAFETY: the CPU has VNNI in one of its encodings; `check` bounded every index.
        unsafe { x86::scores(st, codes, scales, q, w) };
        return;
    }
    q8_scores_portable(st, codes, scales, q, w);
}

/// The scalar twin of [`q8_scores`]: the same integer sums, then per block
/// `f ← (Σ as f32) · (d_q · d_k) + f` as one fused multiply-add, in block order.
///
/// # Panics
/// As [`q8_scores`].
pub fn q8_scores_portable(st: &mut [f32], codes: &[u8], scales: &[f32], q: &Q8Queries, w: usize) {
    check(st, codes, scales, q, w);
    let (dk, rp) = (q.dk, q.rp);
    let nb = dk / Q8_BLOCK;
    for (j, out) in st.chunks_exact_mut(rp).enumerate() {
        let key = &codes[j * dk..(j + 1) * dk];
        for (r, o) in out.iter_mut().enumerate() {
            let mut f = 0.0f32;
            for b in 0..nb {
                let mut s = q.n[b * rp + r];
                for (v, &u) in key.iter().enumerate().skip(b * Q8_BLOCK).take(Q8_BLOCK) {
                    s += u as i32 * q.codes[((v / 4) * rp + r) * 4 + v % 4] as i32;
                }
                f = (s as f32).mul_add(q.d[b * rp + r] * scales[j * nb + b], f);
            }
            *o = f;
        }
    }
}

/// The naive twin of [`q8_scores`]: keys and queries dequantized, then `S[j, r] = Σ_i k_i q_i`
/// summed in f64 in `i` order.
///
/// # Panics
/// As [`q8_scores`].
pub fn q8_scores_naive(st: &mut [f32], codes: &[u8], scales: &[f32], q: &Q8Queries, w: usize) {
    check(st, codes, scales, q, w);
    let (dk, rp) = (q.dk, q.rp);
    let rows: Vec<Vec<f32>> = (0..rp).map(|r| q.row(r)).collect();
    let mut key = vec![0.0f32; dk];
    for (j, out) in st.chunks_exact_mut(rp).enumerate() {
        q8_dequantize_into(&mut key, codes, scales, j * dk);
        for (o, row) in out.iter_mut().zip(&rows) {
            *o = key
                .iter()
                .zip(row)
                .map(|(&k, &x)| k as f64 * x as f64)
                .sum::<f64>() as f32;
        }
    }
}

/// Checks a mix call's lengths.
#[allow(clippy::too_many_arguments)]
fn check_mix(
    o: &[f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    assert!(
        stride.is_multiple_of(Q8_BLOCK) && dv <= stride,
        "q8_mix: rows of {stride} codes (whole blocks) hold no {dv} values"
    );
    crate::assert_lengths(
        "q8_mix",
        format_args!("w {w} rows of {stride} codes, dv {dv}, rp {rp}"),
        &[
            ("o", o.len(), rp.checked_mul(dv)),
            ("p", p.len(), w.checked_mul(rp)),
            ("codes", codes.len(), w.checked_mul(stride)),
            ("scales", scales.len(), w.checked_mul(stride / Q8_BLOCK)),
        ],
    );
}

/// `o[r, c] += Σ_j p[j, r] · v[j, c]` for `r < rp`, `c < dv`: the weighted sum of the first `dv`
/// values of `w` rows (codes `[w, stride]`, scales `[w, stride / 32]`, `stride` whole blocks),
/// read from the codes as they lie — the mix of attention over a `Q8_0` latent cache. With
/// AVX-512F or AVX2 registers where [`crate::isa`] allows, [`q8_mix_portable`] otherwise, equal to
/// it bit for bit: every `o[r, c]` gains `p[j, r] · v[j, c]` by one fused multiply-add per row `j`,
/// in order, with `v = d · (u − 128)`.
///
/// # Panics
/// If the lengths do not match (`o` `rp · dv`, `p` `w · rp`, `codes` `w · stride`, `scales`
/// `w · stride / 32`) or `dv > stride`.
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
pub fn q8_mix(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, codes, scales, stride, w, dv, rp);
    #[cfg(target_arch = "x86_64")]
    if crate::avx512() {
        // SAFETY: the CPU has AVX-512F; the lengths were checked.
        unsafe { x86::mix_zmm(o, p, codes, scales, stride, w, dv, rp) };
        return;
    }
    q8_mix_avx2(o, p, codes, scales, stride, w, dv, rp);
}

/// [`q8_mix`] on AVX2 registers whatever [`crate::avx512`] says ([`q8_mix_portable`] on CPUs
/// without AVX2), for tests that compare the implementations.
///
/// # Panics
/// As [`q8_mix`].
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn q8_mix_avx2(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, codes, scales, stride, w, dv, rp);
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA; the lengths were checked.
        unsafe { x86::mix_ymm(o, p, codes, scales, stride, w, dv, rp) };
        return;
    }
    q8_mix_portable(o, p, codes, scales, stride, w, dv, rp);
}

/// The scalar twin of [`q8_mix`].
///
/// # Panics
/// As [`q8_mix`].
#[allow(clippy::too_many_arguments)]
pub fn q8_mix_portable(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, codes, scales, stride, w, dv, rp);
    mix_columns(o, p, codes, scales, stride, w, dv, rp, 0);
}

/// [`q8_mix_portable`]'s steps for the columns `first .. dv` only (the SIMD kernels' tails).
#[allow(clippy::too_many_arguments)]
fn mix_columns(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
    first: usize,
) {
    let nb = stride / Q8_BLOCK;
    for j in 0..w {
        let row = &codes[j * stride + first..j * stride + dv];
        for r in 0..rp {
            let pj = p[j * rp + r];
            let out = &mut o[r * dv + first..(r + 1) * dv];
            for (c, (y, &u)) in (first..).zip(out.iter_mut().zip(row)) {
                let v = scales[j * nb + c / Q8_BLOCK] * (u as i32 - OFFSET) as f32;
                *y = pj.mul_add(v, *y);
            }
        }
    }
}

/// The naive twin of [`q8_mix`]: the rows dequantized, each `o[r, c]` summed in f64.
///
/// # Panics
/// As [`q8_mix`].
#[allow(clippy::too_many_arguments)]
pub fn q8_mix_naive(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, codes, scales, stride, w, dv, rp);
    let mut v = vec![0.0f32; w * dv];
    for (j, row) in v.chunks_exact_mut(dv.max(1)).enumerate().take(w) {
        q8_dequantize_into(row, codes, scales, j * stride);
    }
    for r in 0..rp {
        for c in 0..dv {
            let sum: f64 = (0..w)
                .map(|j| p[j * rp + r] as f64 * v[j * dv + c] as f64)
                .sum();
            o[r * dv + c] = (o[r * dv + c] as f64 + sum) as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::panel::avx2::{dp_vnni, dp_vnni512};

    use super::{Q8_BLOCK, Q8Queries};

    /// [`super::q8_scores`] on VNNI: sixteen query rows a 512-bit register where the CPU has
    /// AVX-512 VNNI (and [`crate::avx512`] allows it) and the rows come in sixteens, eight a
    /// 256-bit register otherwise; four keys at a time, each key's sums in two halves (even and
    /// odd groups of four columns) so that eight `vpdpbusd` chains are in flight.
    ///
    /// # Safety
    /// The CPU has AVX-VNNI or AVX-512 VNNI with VL (as [`crate::vnni`] checks); the lengths
    /// were checked.
    pub(super) unsafe fn scores(
        st: &mut [f32],
        codes: &[u8],
        scales: &[f32],
        q: &Q8Queries,
        w: usize,
    ) {
        // AVX-512F (allowed by the environment) and AVX-512 VNNI.
        let wide = crate::avx512() && crate::isa::vnni_evex() && q.rp.is_multiple_of(16);
        let vex = crate::isa::vnni_vex();
        let (dk, rp) = (q.dk, q.rp);
        let nb = dk / Q8_BLOCK;
        let lanes = if wide { 16 } else { 8 };
        let (st, codes, scales) = (st.as_mut_ptr(), codes.as_ptr(), scales.as_ptr());
        for rg in 0..rp / lanes {
            let mut j = 0;
            while j < w {
                let keys = (w - j).min(4);
                // SAFETY: keys j .. j + keys are within the `w` keys of `codes` (`dk` apart),
                // `scales` (`nb` apart) and `st` (`rp` apart); the caller has the instructions.
                unsafe {
                    let (c, s, o) = (codes.add(j * dk), scales.add(j * nb), st.add(j * rp));
                    macro_rules! go {
                        ($f:ident) => {
                            match keys {
                                4 => $f::<4>(o, c, s, q, rg),
                                3 => $f::<3>(o, c, s, q, rg),
                                2 => $f::<2>(o, c, s, q, rg),
                                _ => $f::<1>(o, c, s, q, rg),
                            }
                        };
                    }
                    if wide {
                        go!(keys_zmm)
                    } else if vex {
                        go!(keys_vnni)
                    } else {
                        go!(keys_vnni512)
                    }
                }
                j += keys;
            }
        }
    }

    macro_rules! keys_kernel {
        ($name:ident, $features:literal, $dp:ident) => {
            /// `K` keys (codes `dk` apart from `codes`, scales `dk / 32` apart from `scales`)
            /// against query rows `8·rg .. 8·rg + 8`, into `st` (rows `rp` apart).
            ///
            /// # Safety
            /// As [`scores`], for these keys and rows.
            #[target_feature(enable = $features)]
            unsafe fn $name<const K: usize>(
                st: *mut f32,
                codes: *const u8,
                scales: *const f32,
                q: &Q8Queries,
                rg: usize,
            ) {
                let (dk, rp) = (q.dk, q.rp);
                let nb = dk / Q8_BLOCK;
                let (qc, qd, qn) = (q.codes.as_ptr(), q.d.as_ptr(), q.n.as_ptr());
                let mut f = [_mm256_setzero_ps(); K];
                // SAFETY: every access below is in bounds: b < nb, v < dk, k < K, rows 8·rg .. 8·rg + 8 < rp.
                unsafe {
                    for b in 0..nb {
                        let mut even = [_mm256_loadu_si256(qn.add(b * rp + 8 * rg).cast()); K];
                        let mut odd = [_mm256_setzero_si256(); K];
                        for g in (0..Q8_BLOCK / 4).step_by(2) {
                            for (half, sums) in [(0, &mut even), (1, &mut odd)] {
                                let v = b * Q8_BLOCK + 4 * (g + half);
                                let x =
                                    _mm256_loadu_si256(qc.add(((v / 4) * rp + 8 * rg) * 4).cast());
                                for (k, s) in sums.iter_mut().enumerate() {
                                    let u = codes.add(k * dk + v).cast::<i32>().read_unaligned();
                                    *s = $dp(*s, _mm256_set1_epi32(u), x);
                                }
                            }
                        }
                        let d = _mm256_loadu_ps(qd.add(b * rp + 8 * rg));
                        for k in 0..K {
                            let sum = _mm256_add_epi32(even[k], odd[k]);
                            let e = _mm256_mul_ps(d, _mm256_set1_ps(*scales.add(k * nb + b)));
                            f[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), e, f[k]);
                        }
                    }
                    for (k, f) in f.iter().enumerate() {
                        _mm256_storeu_ps(st.add(k * rp + 8 * rg), *f);
                    }
                }
            }
        };
    }

    /// [`keys_vnni`] on 512-bit registers: query rows `16·rg .. 16·rg + 16`.
    ///
    /// # Safety
    /// As [`scores`], for these keys and rows; the CPU has AVX-512F and AVX-512 VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn keys_zmm<const K: usize>(
        st: *mut f32,
        codes: *const u8,
        scales: *const f32,
        q: &Q8Queries,
        rg: usize,
    ) {
        let (dk, rp) = (q.dk, q.rp);
        let nb = dk / Q8_BLOCK;
        let (qc, qd, qn) = (q.codes.as_ptr(), q.d.as_ptr(), q.n.as_ptr());
        let mut f = [_mm512_setzero_ps(); K];
        // SAFETY: every access below is in bounds: b < nb, v < dk, k < K, rows 16·rg .. 16·rg + 16 < rp.
        unsafe {
            for b in 0..nb {
                let mut even = [_mm512_loadu_si512(qn.add(b * rp + 16 * rg).cast()); K];
                let mut odd = [_mm512_setzero_si512(); K];
                for g in (0..Q8_BLOCK / 4).step_by(2) {
                    for (half, sums) in [(0, &mut even), (1, &mut odd)] {
                        let v = b * Q8_BLOCK + 4 * (g + half);
                        let x = _mm512_loadu_si512(qc.add(((v / 4) * rp + 16 * rg) * 4).cast());
                        for (k, s) in sums.iter_mut().enumerate() {
                            let u = codes.add(k * dk + v).cast::<i32>().read_unaligned();
                            *s = _mm512_dpbusd_epi32(*s, _mm512_set1_epi32(u), x);
                        }
                    }
                }
                let d = _mm512_loadu_ps(qd.add(b * rp + 16 * rg));
                for k in 0..K {
                    let sum = _mm512_add_epi32(even[k], odd[k]);
                    let e = _mm512_mul_ps(d, _mm512_set1_ps(*scales.add(k * nb + b)));
                    f[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), e, f[k]);
                }
            }
            for (k, f) in f.iter().enumerate() {
                _mm512_storeu_ps(st.add(k * rp + 16 * rg), *f);
            }
        }
    }

    /// [`super::dequantize_blocks`] in AVX2: eight codes widened per step.
    ///
    /// # Safety
    /// The CPU has AVX2; `out` is whole blocks, `codes` at least as long, `scales` one per block.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dequantize_blocks(out: &mut [f32], codes: &[u8], scales: &[f32]) {
        let offset = _mm256_set1_epi32(128);
        for ((o, c), &d) in out
            .chunks_exact_mut(Q8_BLOCK)
            .zip(codes.chunks_exact(Q8_BLOCK))
            .zip(scales)
        {
            let d = _mm256_set1_ps(d);
            for i in (0..Q8_BLOCK).step_by(8) {
                // SAFETY: i + 8 ≤ 32 = the lengths of `o` and `c`.
                unsafe {
                    let u = _mm_loadl_epi64(c.as_ptr().add(i).cast());
                    let q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(u), offset);
                    let v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
                    _mm256_storeu_ps(o.as_mut_ptr().add(i), v);
                }
            }
        }
    }

    /// [`super::q8_mix`] on AVX-512F: up to eight output rows at a time over a whole block of 32
    /// values (two registers: each broadcast probability serves both), then the columns past the
    /// last whole block sixteen a register (the last under a mask), up to sixteen rows at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the lengths were checked.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn mix_zmm(
        o: &mut [f32],
        p: &[f32],
        codes: &[u8],
        scales: &[f32],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
    ) {
        let whole = dv / Q8_BLOCK * Q8_BLOCK;
        let mut r0 = 0;
        while r0 < rp {
            let rows = (rp - r0).min(8);
            macro_rules! go {
                ($($r:literal)*) => {
                    match rows {
                        $($r => mix_blocks_zmm::<$r>(o, p, codes, scales, stride, w, whole, dv, rp, r0),)*
                        _ => unreachable!("1 to 8 rows"),
                    }
                };
            }
            // SAFETY: rows r0 .. r0 + rows < rp, columns below whole ≤ dv; the caller checked
            // the rest.
            unsafe { go!(1 2 3 4 5 6 7 8) };
            r0 += rows;
        }
        if whole == dv {
            return;
        }
        let mut r0 = 0;
        while r0 < rp {
            let rows = (rp - r0).min(16);
            macro_rules! go {
                ($($r:literal)*) => {
                    match rows {
                        $($r => mix_rows_zmm::<$r>(o, p, codes, scales, stride, w, whole, dv, rp, r0),)*
                        _ => unreachable!("1 to 16 rows"),
                    }
                };
            }
            // SAFETY: rows r0 .. r0 + rows < rp; the caller checked the rest.
            unsafe { go!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16) };
            r0 += rows;
        }
    }

    /// Output rows `r0 .. r0 + R` of [`mix_zmm`] over the columns `0 .. whole` (whole blocks).
    ///
    /// # Safety
    /// As [`mix_zmm`]; `r0 + R ≤ rp`, `whole ≤ dv` a multiple of 32.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn mix_blocks_zmm<const R: usize>(
        o: &mut [f32],
        p: &[f32],
        codes: &[u8],
        scales: &[f32],
        stride: usize,
        w: usize,
        whole: usize,
        dv: usize,
        rp: usize,
        r0: usize,
    ) {
        let nb = stride / Q8_BLOCK;
        let (o, p, codes, scales) = (o.as_mut_ptr(), p.as_ptr(), codes.as_ptr(), scales.as_ptr());
        for c in (0..whole).step_by(Q8_BLOCK) {
            // SAFETY: every access below is in bounds: rows r0 + i < rp of `o` and `p`; columns
            // c .. c + 32 ≤ whole ≤ dv of `o`; 32 codes of row j < w from j·stride + c, inside
            // the row (c + 32 ≤ dv ≤ stride); the scale of their block.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); 2]; R];
                for (i, a) in acc.iter_mut().enumerate() {
                    for (h, x) in a.iter_mut().enumerate() {
                        *x = _mm512_loadu_ps(o.add((r0 + i) * dv + c + 16 * h));
                    }
                }
                for j in 0..w {
                    // v = d·(u − 128) as d·u − 128·d in one rounding: the same value (128·d is
                    // exact), one operation fewer per register.
                    let scale = *scales.add(j * nb + c / Q8_BLOCK);
                    let (d, shift) = (_mm512_set1_ps(scale), _mm512_set1_ps(-128.0 * scale));
                    let row = codes.add(j * stride + c);
                    let v: [__m512; 2] = std::array::from_fn(|h| {
                        let u = _mm512_cvtepu8_epi32(_mm_loadu_si128(row.add(16 * h).cast()));
                        _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(u), shift)
                    });
                    let pj = p.add(j * rp + r0);
                    for (i, a) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*pj.add(i));
                        a[0] = _mm512_fmadd_ps(x, v[0], a[0]);
                        a[1] = _mm512_fmadd_ps(x, v[1], a[1]);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    for (h, x) in a.iter().enumerate() {
                        _mm512_storeu_ps(o.add((r0 + i) * dv + c + 16 * h), *x);
                    }
                }
            }
        }
    }

    /// Output rows `r0 .. r0 + R` of [`mix_zmm`] over the columns `first .. dv`, sixteen a
    /// register.
    ///
    /// # Safety
    /// As [`mix_zmm`]; `r0 + R ≤ rp`, `first` a multiple of 16.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn mix_rows_zmm<const R: usize>(
        o: &mut [f32],
        p: &[f32],
        codes: &[u8],
        scales: &[f32],
        stride: usize,
        w: usize,
        first: usize,
        dv: usize,
        rp: usize,
        r0: usize,
    ) {
        let nb = stride / Q8_BLOCK;
        let (o, p, codes, scales) = (o.as_mut_ptr(), p.as_ptr(), codes.as_ptr(), scales.as_ptr());
        let offset = _mm512_set1_epi32(128);
        let mut c = first;
        while c < dv {
            let mask: u16 = if dv - c >= 16 {
                u16::MAX
            } else {
                (1u16 << (dv - c)) - 1
            };
            // SAFETY: every access below is in bounds: rows r0 + i < rp of `o` and `p`; columns c .. c + 16
            // of `o` under the mask (c + 16 > dv only for the last, masked); 16 codes of row
            // j < w from j·stride + c, inside the row since c is a multiple of 16 below
            // dv ≤ stride, a multiple of 32; the scale of their block.
            unsafe {
                let mut acc = [_mm512_setzero_ps(); R];
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_maskz_loadu_ps(mask, o.add((r0 + i) * dv + c));
                }
                for j in 0..w {
                    let u = _mm_loadu_si128(codes.add(j * stride + c).cast());
                    let q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(u), offset);
                    let d = _mm512_set1_ps(*scales.add(j * nb + c / Q8_BLOCK));
                    let v = _mm512_mul_ps(d, _mm512_cvtepi32_ps(q));
                    let pj = p.add(j * rp + r0);
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(*pj.add(i)), v, *a);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(o.add((r0 + i) * dv + c), mask, *a);
                }
            }
            c += 16;
        }
    }

    /// [`super::q8_mix`] on AVX2: eight values of a row a register, up to eight output rows at a
    /// time (the last `dv mod 8` values by the scalar twin's steps).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the lengths were checked.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mix_ymm(
        o: &mut [f32],
        p: &[f32],
        codes: &[u8],
        scales: &[f32],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
    ) {
        let mut r0 = 0;
        while r0 < rp {
            let rows = (rp - r0).min(8);
            macro_rules! go {
                ($($r:literal)*) => {
                    match rows {
                        $($r => mix_rows_ymm::<$r>(o, p, codes, scales, stride, w, dv, rp, r0),)*
                        _ => unreachable!("1 to 8 rows"),
                    }
                };
            }
            // SAFETY: rows r0 .. r0 + rows < rp; the caller checked the rest.
            unsafe { go!(1 2 3 4 5 6 7 8) };
            r0 += rows;
        }
        // The columns past the last whole eight, as the portable twin computes them.
        super::mix_columns(o, p, codes, scales, stride, w, dv, rp, dv / 8 * 8);
    }

    /// Output rows `r0 .. r0 + R` of [`mix_ymm`], whole eights of columns.
    ///
    /// # Safety
    /// As [`mix_ymm`]; `r0 + R ≤ rp`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mix_rows_ymm<const R: usize>(
        o: &mut [f32],
        p: &[f32],
        codes: &[u8],
        scales: &[f32],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
        r0: usize,
    ) {
        let nb = stride / Q8_BLOCK;
        let (o, p, codes, scales) = (o.as_mut_ptr(), p.as_ptr(), codes.as_ptr(), scales.as_ptr());
        let offset = _mm256_set1_epi32(128);
        for c in (0..dv / 8 * 8).step_by(8) {
            // SAFETY: every access below is in bounds: rows r0 + i < rp of `o` and `p`, columns c .. c + 8
            // ≤ dv, rows j < w of `codes` (8 bytes from j·stride + c, c + 8 ≤ dv ≤ stride) and
            // their scales.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); R];
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(o.add((r0 + i) * dv + c));
                }
                for j in 0..w {
                    let u = _mm_loadl_epi64(codes.add(j * stride + c).cast());
                    let q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(u), offset);
                    let d = _mm256_set1_ps(*scales.add(j * nb + c / Q8_BLOCK));
                    let v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
                    let pj = p.add(j * rp + r0);
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_set1_ps(*pj.add(i)), v, *a);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(o.add((r0 + i) * dv + c), *a);
                }
            }
        }
    }

    // The one-instruction products the integer panels use too.
    keys_kernel!(keys_vnni, "avx2,fma,f16c,avxvnni", dp_vnni);
    keys_kernel!(
        keys_vnni512,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        dp_vnni512
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 2003.0 - 0.5) * 3.0)
            .collect()
    }

    #[test]
    fn quantized_values_are_those_of_q8_0_blocks() {
        let x = values(96, 1);
        let (mut codes, mut scales) = (vec![0u8; 96], vec![0.0f32; 3]);
        q8_quantize_into(&mut codes, &mut scales, &x);
        let mut blocks = vec![0u8; 3 * 34];
        super::super::BlockFormat::Q8_0.quantize_row(&mut blocks, &x);
        let mut want = vec![0.0f32; 96];
        super::super::BlockFormat::Q8_0.dequantize_row(&mut want, &blocks);
        let mut got = vec![0.0f32; 96];
        q8_dequantize_into(&mut got, &codes, &scales, 0);
        assert_eq!(got, want);
        // A range that starts and ends inside blocks.
        let mut part = vec![0.0f32; 50];
        q8_dequantize_into(&mut part, &codes, &scales, 17);
        assert_eq!(part, want[17..67]);
    }

    #[test]
    fn mix_equals_the_portable_twin_and_the_naive_reference() {
        for (w, width, dv, rp) in [
            (1, 32, 16, 8),
            (5, 40, 24, 8),
            (64, 576, 512, 16),
            (7, 96, 77, 24),
            (3, 64, 64, 40),
        ] {
            let stride = q8_row_codes(width);
            let rows = values(w * width, 7);
            let (mut codes, mut scales) = (vec![0u8; w * stride], vec![0.0f32; w * stride / 32]);
            q8_quantize_rows(&mut codes, &mut scales, &rows, width);
            let p: Vec<f32> = values(w * rp, 9).iter().map(|x| x.abs()).collect();
            let start = values(rp * dv, 11);
            let (mut fast, mut port, mut naive) = (start.clone(), start.clone(), start.clone());
            let mut avx2 = start.clone();
            q8_mix(&mut fast, &p, &codes, &scales, stride, w, dv, rp);
            q8_mix_avx2(&mut avx2, &p, &codes, &scales, stride, w, dv, rp);
            q8_mix_portable(&mut port, &p, &codes, &scales, stride, w, dv, rp);
            q8_mix_naive(&mut naive, &p, &codes, &scales, stride, w, dv, rp);
            assert_eq!(fast, port, "w {w} width {width} dv {dv} rp {rp}");
            assert_eq!(avx2, port, "AVX2: w {w} width {width} dv {dv} rp {rp}");
            for (a, b) in port.iter().zip(&naive) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()) * w as f32,
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn a_short_last_block_is_quantized_over_its_own_values() {
        let x = values(40, 2);
        let (mut codes, mut scales) = (vec![0u8; 64], vec![0.0f32; 2]);
        q8_quantize_into(&mut codes, &mut scales, &x);
        let mut whole = (vec![0u8; 32], vec![0.0f32; 1]);
        let mut tail = [0.0f32; 32];
        tail[..8].copy_from_slice(&x[32..]);
        q8_quantize_into(&mut whole.0, &mut whole.1, &tail);
        assert_eq!(scales[1], whole.1[0]);
        assert_eq!(codes[32..], whole.0[..]);
        assert!(
            codes[40..].iter().all(|&u| u == 128),
            "padding codes are zero"
        );
        // Three such rows as one matrix: each row as it alone quantizes.
        let x3 = values(120, 4);
        let (mut codes3, mut scales3) = (vec![0u8; 3 * 64], vec![0.0f32; 6]);
        q8_quantize_rows(&mut codes3, &mut scales3, &x3, 40);
        for j in 0..3 {
            q8_quantize_into(&mut codes, &mut scales, &x3[j * 40..(j + 1) * 40]);
            assert_eq!(codes3[j * 64..(j + 1) * 64], codes[..], "row {j}");
            assert_eq!(scales3[j * 2..(j + 1) * 2], scales[..], "row {j}");
        }
    }

    #[test]
    fn scores_equal_the_portable_twin_and_the_naive_reference() {
        for (w, width, rp) in [
            (1, 32, 8),
            (7, 64, 8),
            (9, 576, 16),
            (4, 96, 24),
            (5, 40, 8),
        ] {
            let qt = values(width * rp, 3);
            let q = Q8Queries::from_transposed(&qt, width, rp);
            let dk = q.dims().0;
            let keys = values(w * width, 5);
            let (mut codes, mut scales) = (vec![0u8; w * dk], vec![0.0f32; w * dk / 32]);
            q8_quantize_rows(&mut codes, &mut scales, &keys, width);
            let mut fast = vec![0.0f32; w * rp];
            let mut port = vec![0.0f32; w * rp];
            let mut naive = vec![0.0f32; w * rp];
            q8_scores(&mut fast, &codes, &scales, &q, w);
            q8_scores_portable(&mut port, &codes, &scales, &q, w);
            q8_scores_naive(&mut naive, &codes, &scales, &q, w);
            assert_eq!(fast, port, "w {w} dk {dk} rp {rp}");
            for (a, b) in port.iter().zip(&naive) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }
}
