//! `C[m, n] (+)= (Σᵢ Aᵢ)[m, k] · (Σⱼ Bⱼ)[k, n]` with bf16 operands and f32 sums, on the AMX tile
//! unit where the CPU has it ([`crate::amx()`]): the products of blocked attention over a bf16
//! latent cache.
//!
//! One `tdpbf16ps` multiplies a 16 × 32 bf16 tile of `A` by a 32 × 16 tile of `B` into a 16 × 16
//! f32 tile of `C`: 8,192 multiply-adds, against 16 for a 512-bit FMA. Its operands are bf16, so a
//! value that is not one (a scaled query, a probability) is passed as two parts, `x = hi + lo`
//! with `hi = bf16(x)` and `lo = bf16(x − hi)` ([`split_bf16`]): the product then carries about 16
//! bits of the value, against 24 in f32 and 8 in bf16, at two tile products instead of one. The
//! cache side is bf16 already and goes in whole.
//!
//! `A` is row-major (`a[i·lda + p]`); `B` is in the pair layout the tile unit reads ([`pairs_into`]):
//! `B[p, j]` at `b[(p / 2)·2n + 2j + p % 2]`, two consecutive `p` of one column side by side.
//! `m` and `n` are multiples of 16, `k` of 32. At most two parts on either side.

use half::bf16;

/// Tile rows (of `A` and `C`) and columns (of `B` and `C`).
pub const TILE: usize = 16;
/// Tile depth: the `k` of one tile product.
pub const TILE_K: usize = 32;

/// `hi[i] + lo[i] ≈ x[i]`: `hi = bf16(x)`, `lo = bf16(x − hi)` (both rounded to nearest).
///
/// ```
/// use deepblocks_core::split_bf16;
/// let x = [1.0f32 + 1.0 / 1024.0, -3.14159];
/// let (mut hi, mut lo) = ([Default::default(); 2], [Default::default(); 2]);
/// split_bf16(&mut hi, &mut lo, &x);
/// for i in 0..2 {
///     let back = hi[i].to_f32() + lo[i].to_f32();
///     assert!((back - x[i]).abs() <= x[i].abs() / 65536.0);
/// }
/// ```
///
/// # Panics
/// If the three lengths differ.
pub fn split_bf16(hi: &mut [bf16], lo: &mut [bf16], x: &[f32]) {
    assert!(
        hi.len() == x.len() && lo.len() == x.len(),
        "split_bf16 lengths"
    );
    for ((h, l), &v) in hi.iter_mut().zip(lo.iter_mut()).zip(x) {
        *h = bf16::from_f32(v);
        *l = bf16::from_f32(v - h.to_f32());
    }
}

/// `hi + lo ≈ xᵀ` as [`split_bf16`] splits, transposed: `hi[j·k + p] + lo[j·k + p] ≈ x[p·n + j]`
/// for the row-major `x[k, n]` (the probabilities of a block, keys × rows, become the rows × keys
/// `A` of a tile product).
///
/// # Panics
/// If `x`, `hi` or `lo` is not `k·n` long.
pub fn split_bf16_transposed(hi: &mut [bf16], lo: &mut [bf16], x: &[f32], k: usize, n: usize) {
    let len = k.checked_mul(n);
    assert!(
        len.is_some_and(|len| x.len() == len && hi.len() == len && lo.len() == len),
        "split_bf16_transposed lengths"
    );
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if crate::amx()
        && n.is_multiple_of(16)
        && k.is_multiple_of(2)
        && x.len() / 2 <= i32::MAX as usize
    {
        // (The vector path scatters pairs at 32-bit indices.)
        // SAFETY: `amx()` implies AVX-512F; the lengths were checked above.
        unsafe { amx::split_transposed_avx512(hi, lo, x, k, n) };
        return;
    }
    for p in 0..k {
        for j in 0..n {
            let v = x[p * n + j];
            let h = bf16::from_f32(v);
            hi[j * k + p] = h;
            lo[j * k + p] = bf16::from_f32(v - h.to_f32());
        }
    }
}

/// `dst` = rows `0..k` of the row-major `src` (rows `lds` apart, columns `0..n`) in the pair
/// layout: `dst[(p / 2)·2n + 2j + p % 2] = src[p·lds + j]`; `k` even.
///
/// # Panics
/// If `k` is odd, `dst` is not `k·n` long or `src` ends before row `k − 1`'s column `n − 1`.
pub fn pairs_into(dst: &mut [bf16], src: &[bf16], lds: usize, k: usize, n: usize) {
    assert!(
        k.is_multiple_of(2) && k.checked_mul(n) == Some(dst.len()),
        "pairs_into shape"
    );
    if k == 0 || n == 0 {
        return;
    }
    assert!(
        extent(k, lds, n).is_some_and(|end| src.len() >= end),
        "pairs_into source"
    );
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if crate::amx() && n.is_multiple_of(32) {
        // SAFETY: `amx()` implies AVX-512BW; the lengths were checked above.
        unsafe { amx::pairs_into_avx512(dst, src, lds, k, n) };
        return;
    }
    for (pp, out) in dst.chunks_exact_mut(2 * n).enumerate() {
        let (r0, r1) = (&src[2 * pp * lds..], &src[(2 * pp + 1) * lds..]);
        for j in 0..n {
            out[2 * j] = r0[j];
            out[2 * j + 1] = r1[j];
        }
    }
}

/// `C[m, n]` (rows `ldc` apart) `(+)= (Σᵢ a[i])[m, k] · (Σⱼ b[j])[k, n]`: `a[i]` row-major with
/// rows `lda` apart, `b[j]` in the pair layout (`[k/2, n, 2]`); with `accumulate` false `C` is
/// overwritten. On the tile unit when [`crate::amx()`], else [`matmul_bf16_pairs_naive`].
///
/// ```
/// use deepblocks_core::{half::bf16, matmul_bf16_pairs, pairs_into};
/// let (m, k, n) = (16, 32, 16);
/// let a: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32((i % 7) as f32)).collect();
/// let b_rows: Vec<bf16> = (0..k * n).map(|i| bf16::from_f32((i % 5) as f32 - 2.0)).collect();
/// let mut b = vec![bf16::ZERO; k * n];
/// pairs_into(&mut b, &b_rows, n, k, n);
/// let mut c = vec![0.0f32; m * n];
/// matmul_bf16_pairs(&mut c, n, &[&a], k, &[&b], m, n, k, false);
/// let c01: f32 = (0..k).map(|p| a[p].to_f32() * b_rows[p * n + 1].to_f32()).sum();
/// assert_eq!(c[1], c01);
/// ```
///
/// # Panics
/// If `m` or `n` is not a multiple of 16, `k` not one of 32, a side has no part or more than
/// two, or a slice is too short for its shape.
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, strides, then every dimension
pub fn matmul_bf16_pairs(
    c: &mut [f32],
    ldc: usize,
    a: &[&[bf16]],
    lda: usize,
    b: &[&[bf16]],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    check(c, ldc, a, lda, b, m, n, k);
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if crate::amx() {
        // SAFETY: `amx()` checked the CPU and the kernel's permission; `check` the lengths.
        unsafe { amx::matmul(c, ldc, a, lda, b, m, n, k, accumulate) };
        return;
    }
    matmul_bf16_pairs_naive(c, ldc, a, lda, b, m, n, k, accumulate);
}

/// The plain twin of [`matmul_bf16_pairs`]: per `p`, the parts of each side summed in f32 and
/// multiplied, summed in order of `p` (the tile unit multiplies part by part, each product of two
/// bf16 exact, and flushes subnormal inputs to zero: the two agree to f32 rounding).
///
/// # Panics
/// As [`matmul_bf16_pairs`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_pairs_naive(
    c: &mut [f32],
    ldc: usize,
    a: &[&[bf16]],
    lda: usize,
    b: &[&[bf16]],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    check(c, ldc, a, lda, b, m, n, k);
    for i in 0..m {
        for j in 0..n {
            let mut sum = if accumulate { c[i * ldc + j] } else { 0.0 };
            for p in 0..k {
                let av: f32 = a.iter().map(|x| x[i * lda + p].to_f32()).sum();
                let bv: f32 = b
                    .iter()
                    .map(|x| x[(p / 2) * 2 * n + 2 * j + p % 2].to_f32())
                    .sum();
                sum += av * bv;
            }
            c[i * ldc + j] = sum;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    c: &[f32],
    ldc: usize,
    a: &[&[bf16]],
    lda: usize,
    b: &[&[bf16]],
    m: usize,
    n: usize,
    k: usize,
) {
    assert!(
        m.is_multiple_of(TILE) && n.is_multiple_of(TILE) && k.is_multiple_of(TILE_K),
        "matmul_bf16_pairs: m {m}, n {n}, k {k} are not whole tiles"
    );
    assert!(
        (1..=2).contains(&a.len()) && (1..=2).contains(&b.len()),
        "matmul_bf16_pairs: one or two parts a side"
    );
    if m == 0 || n == 0 {
        return;
    }
    // Every length in checked arithmetic: a wrapped product would let the tiles past the slices.
    assert!(
        ldc >= n && extent(m, ldc, n).is_some_and(|end| c.len() >= end),
        "matmul_bf16_pairs: c"
    );
    assert!(
        lda >= k && extent(m, lda, k).is_some_and(|end| a.iter().all(|x| x.len() >= end)),
        "matmul_bf16_pairs: a"
    );
    assert!(
        k.checked_mul(n)
            .is_some_and(|len| b.iter().all(|x| x.len() >= len)),
        "matmul_bf16_pairs: b"
    );
}

/// `(rows − 1)·stride + width`, the elements `rows ≥ 1` rows of `width` span `stride` apart;
/// `None` where that overflows.
fn extent(rows: usize, stride: usize, width: usize) -> Option<usize> {
    (rows - 1).checked_mul(stride)?.checked_add(width)
}

/// `iters` rounds of four independent tile products, for the peak probe
/// ([`crate::probe::tile_peak`]); the first element of the first product's tile. 0 where the
/// tile unit is not allowed ([`crate::amx()`]).
pub(crate) fn tile_products_loop(iters: usize) -> f32 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if crate::amx() {
        let a = vec![bf16::from_f32(1e-3); TILE * TILE_K];
        let mut c = vec![0.0f32; TILE * TILE];
        // SAFETY: `amx()` checked the CPU and the permission; the tiles are 1 KB each.
        unsafe { amx::products_loop(&mut c, &a, iters) };
        return c[0];
    }
    let _ = iters;
    0.0
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx {
    //! The tile kernel. Tile registers: `tmm0..3` four tiles of `C`, `tmm4`/`tmm5` the parts of
    //! `A`, `tmm6`/`tmm7` those of `B`; every tile is 16 rows of 64 bytes.
    //!
    //! Each load, product and store is its own `asm!` block, and the tile registers carry values
    //! from one block to the next. Rust's rules leave registers a block does not take as inputs
    //! undefined on entry; this relies on the compiler never using the tile registers itself (it
    //! only does for AMX intrinsics, which nothing here calls) and on nothing between the
    //! blocks of one call running AMX code. A kernel in one `asm!` block per call would not rely
    //! on it.

    use super::{TILE, TILE_K};
    use half::bf16;
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// The tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    const CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        Config(c)
    };

    macro_rules! load {
        ($t:literal, $p:expr, $stride:expr) => {
            asm!(concat!("tileloadd tmm", $t, ", [{p} + {s}*1]"), p = in(reg) $p, s = in(reg) $stride,
                 options(nostack, readonly))
        };
    }
    macro_rules! store {
        ($t:literal, $p:expr, $stride:expr) => {
            asm!(concat!("tilestored [{p} + {s}*1], tmm", $t), p = in(reg) $p, s = in(reg) $stride,
                 options(nostack))
        };
    }
    macro_rules! dot {
        ($c:literal, $a:literal, $b:literal) => {
            asm!(
                concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b),
                options(nostack, nomem)
            )
        };
    }

    unsafe fn load_c(t: usize, p: *const f32, stride: usize) {
        // SAFETY: the caller's: 16 rows of 64 bytes, `stride` apart, from `p`, and tiles configured.
        unsafe {
            match t {
                0 => load!("0", p, stride),
                1 => load!("1", p, stride),
                2 => load!("2", p, stride),
                _ => load!("3", p, stride),
            }
        }
    }
    unsafe fn zero_c(t: usize) {
        // SAFETY: the caller's: the tiles are configured (registers only, no memory).
        unsafe {
            match t {
                0 => asm!("tilezero tmm0", options(nostack, nomem)),
                1 => asm!("tilezero tmm1", options(nostack, nomem)),
                2 => asm!("tilezero tmm2", options(nostack, nomem)),
                _ => asm!("tilezero tmm3", options(nostack, nomem)),
            }
        }
    }
    unsafe fn store_c(t: usize, p: *mut f32, stride: usize) {
        // SAFETY: the caller's: 16 rows of 64 bytes, `stride` apart, from `p`, and tiles configured.
        unsafe {
            match t {
                0 => store!("0", p, stride),
                1 => store!("1", p, stride),
                2 => store!("2", p, stride),
                _ => store!("3", p, stride),
            }
        }
    }
    unsafe fn load_a(part: usize, p: *const bf16, stride: usize) {
        // SAFETY: the caller's: 16 rows of 64 bytes, `stride` apart, from `p`, and tiles configured.
        unsafe {
            match part {
                0 => load!("4", p, stride),
                _ => load!("5", p, stride),
            }
        }
    }
    unsafe fn load_b(part: usize, p: *const bf16, stride: usize) {
        // SAFETY: the caller's: 16 rows of 64 bytes, `stride` apart, from `p`, and tiles configured.
        unsafe {
            match part {
                0 => load!("6", p, stride),
                _ => load!("7", p, stride),
            }
        }
    }
    /// `C[t] += Σ` over the loaded parts (`na` of `A`, `nb` of `B`).
    unsafe fn dots(t: usize, na: usize, nb: usize) {
        // SAFETY: the caller's: the tiles are configured (registers only, no memory).
        unsafe {
            macro_rules! all {
                ($c:literal) => {{
                    dot!($c, "4", "6");
                    if nb > 1 {
                        dot!($c, "4", "7");
                    }
                    if na > 1 {
                        dot!($c, "5", "6");
                        if nb > 1 {
                            dot!($c, "5", "7");
                        }
                    }
                }};
            }
            match t {
                0 => all!("0"),
                1 => all!("1"),
                2 => all!("2"),
                _ => all!("3"),
            }
        }
    }

    /// See [`super::matmul_bf16_pairs`]. Up to four tiles of `C` share each load of the other
    /// side: along `n` when `n ≥ m` (the mix: 512 value columns against 16 rows), along `m`
    /// otherwise (the scores of a decode step: 64 keys against 16 rows).
    ///
    /// # Safety
    /// The CPU has AMX-TILE and AMX-BF16 and the kernel granted this process their state; the
    /// slices hold the shapes ([`super::check`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul(
        c: &mut [f32],
        ldc: usize,
        a: &[&[bf16]],
        lda: usize,
        b: &[&[bf16]],
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) {
        let (na, nb) = (a.len(), b.len());
        let (sc, sa, sb) = (ldc * 4, lda * 2, 2 * n * 2);
        let cp = c.as_mut_ptr();
        // SAFETY: the caller's contract; every tile read or written lies inside the checked slices.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
            let along_n = n >= m;
            let (outer, inner) = if along_n {
                (m / TILE, n / TILE)
            } else {
                (n / TILE, m / TILE)
            };
            for o in 0..outer {
                let mut g0 = 0;
                while g0 < inner {
                    let group = (inner - g0).min(4);
                    // Tile t of the group: C rows i0.., columns j0...
                    let at = |t: usize| {
                        if along_n {
                            (o * TILE, (g0 + t) * TILE)
                        } else {
                            ((g0 + t) * TILE, o * TILE)
                        }
                    };
                    for t in 0..group {
                        let (i0, j0) = at(t);
                        if accumulate {
                            load_c(t, cp.add(i0 * ldc + j0), sc);
                        } else {
                            zero_c(t);
                        }
                    }
                    for p0 in (0..k).step_by(TILE_K) {
                        if along_n {
                            // One A (rows i0) for the group; a B per tile.
                            let (i0, _) = at(0);
                            for (part, x) in a.iter().enumerate() {
                                load_a(part, x.as_ptr().add(i0 * lda + p0), sa);
                            }
                            for t in 0..group {
                                let (_, j0) = at(t);
                                for (part, x) in b.iter().enumerate() {
                                    load_b(part, x.as_ptr().add(p0 * n + 2 * j0), sb);
                                }
                                dots(t, na, nb);
                            }
                        } else {
                            let (_, j0) = at(0);
                            for (part, x) in b.iter().enumerate() {
                                load_b(part, x.as_ptr().add(p0 * n + 2 * j0), sb);
                            }
                            for t in 0..group {
                                let (i0, _) = at(t);
                                for (part, x) in a.iter().enumerate() {
                                    load_a(part, x.as_ptr().add(i0 * lda + p0), sa);
                                }
                                dots(t, na, nb);
                            }
                        }
                    }
                    for t in 0..group {
                        let (i0, j0) = at(t);
                        store_c(t, cp.add(i0 * ldc + j0), sc);
                    }
                    g0 += group;
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// `bf16(x)` of 16 finite values, rounded to nearest even, in the low half of each lane.
    #[target_feature(enable = "avx512f")]
    fn round_bf16(x: __m512) -> __m512i {
        let bits = _mm512_castps_si512(x);
        let odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff));
        _mm512_srli_epi32(_mm512_add_epi32(bits, bias), 16)
    }

    /// [`super::split_bf16_transposed`] for `n` a multiple of 16 and `k` even: two rows of `x` at
    /// a time become 16 pairs `(x[p, j], x[p + 1, j])`, scattered to `j·k + p`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the slices are `k·n` long.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn split_transposed_avx512(
        hi: &mut [bf16],
        lo: &mut [bf16],
        x: &[f32],
        k: usize,
        n: usize,
    ) {
        let xp = x.as_ptr();
        // Lane j of a group of 16 columns j0..: the pair at (j0 + j)·k + p, in 4-byte units.
        let lanes = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32((k / 2) as i32),
        );
        // SAFETY: the caller's: `x`, `hi` and `lo` are `k·n`; every pair scattered is below `k·n`.
        unsafe {
            for p in (0..k).step_by(2) {
                for j0 in (0..n).step_by(16) {
                    let x0 = _mm512_loadu_ps(xp.add(p * n + j0));
                    let x1 = _mm512_loadu_ps(xp.add((p + 1) * n + j0));
                    let (h0, h1) = (round_bf16(x0), round_bf16(x1));
                    let back = |h: __m512i| _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
                    let l0 = round_bf16(_mm512_sub_ps(x0, back(h0)));
                    let l1 = round_bf16(_mm512_sub_ps(x1, back(h1)));
                    let at =
                        _mm512_add_epi32(lanes, _mm512_set1_epi32((j0 * k / 2 + p / 2) as i32));
                    let pair =
                        |a: __m512i, b: __m512i| _mm512_or_si512(a, _mm512_slli_epi32(b, 16));
                    _mm512_i32scatter_epi32::<4>(hi.as_mut_ptr() as *mut _, at, pair(h0, h1));
                    _mm512_i32scatter_epi32::<4>(lo.as_mut_ptr() as *mut _, at, pair(l0, l1));
                }
            }
        }
    }

    /// `iters` rounds of `tmm0..3 += tmm4 · tmm6` with `tmm4 = tmm6 = a`; `c` = `tmm0`.
    ///
    /// # Safety
    /// As [`matmul`]; `a` and `c` hold a whole tile each.
    pub(super) unsafe fn products_loop(c: &mut [f32], a: &[bf16], iters: usize) {
        // SAFETY: the caller's contract; one tile read from `a`, one written to `c`.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
            for t in 0..4 {
                zero_c(t);
            }
            load_a(0, a.as_ptr(), 64);
            load_b(0, a.as_ptr(), 64);
            for _ in 0..iters {
                for t in 0..4 {
                    dots(t, 1, 1);
                }
            }
            store_c(0, c.as_mut_ptr(), 64);
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// [`super::pairs_into`] for `n` a multiple of 32, 32 columns of two rows at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512BW; the slices hold the shapes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn pairs_into_avx512(
        dst: &mut [bf16],
        src: &[bf16],
        lds: usize,
        k: usize,
        n: usize,
    ) {
        // unpacklo/hi interleave within 128-bit lanes: lo holds the pairs of columns 0–3, 8–11,
        // 16–19, 24–27; hi those of 4–7, 12–15, 20–23, 28–31. Two qword permutes restore the order.
        let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
        let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
        let s = src.as_ptr() as *const u16;
        let d = dst.as_mut_ptr() as *mut u16;
        // SAFETY: the caller's: rows 0..k of `src` hold `n` columns `lds` apart; `dst` is `k·n`.
        unsafe {
            for pp in 0..k / 2 {
                let (r0, r1) = (s.add(2 * pp * lds), s.add((2 * pp + 1) * lds));
                let out = d.add(pp * 2 * n);
                for j in (0..n).step_by(32) {
                    let x = _mm512_loadu_si512(r0.add(j) as *const _);
                    let y = _mm512_loadu_si512(r1.add(j) as *const _);
                    let lo = _mm512_unpacklo_epi16(x, y);
                    let hi = _mm512_unpackhi_epi16(x, y);
                    _mm512_storeu_si512(
                        out.add(2 * j) as *mut _,
                        _mm512_permutex2var_epi64(lo, first, hi),
                    );
                    _mm512_storeu_si512(
                        out.add(2 * j + 32) as *mut _,
                        _mm512_permutex2var_epi64(lo, second, hi),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(len: usize, seed: u64) -> Vec<bf16> {
        // A small LCG: values in [-2, 2) with a spread of exponents.
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (x >> 40) as f32 / (1u64 << 24) as f32;
                bf16::from_f32((u * 4.0 - 2.0) * if x & 1 == 0 { 1.0 } else { 1.0 / 64.0 })
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The dispatching kernel (the tile unit where the CPU has one) against the plain twin,
        /// over every grouping of tiles, both part counts on each side, padded strides and
        /// accumulation.
        #[test]
        fn tile_products_match_the_naive_twin(
            mt in 1usize..6, nt in 1usize..6, kt in 1usize..4,
            na in 1usize..3, nb in 1usize..3,
            pad_a in 0usize..3, pad_c in 0usize..3,
            accumulate: bool, seed in 0u64..1000,
        ) {
            let (m, n, k) = (mt * TILE, nt * TILE, kt * TILE_K);
            let (lda, ldc) = (k + 16 * pad_a, n + 8 * pad_c);
            let a: Vec<Vec<bf16>> = (0..na).map(|i| values(m * lda, seed + i as u64)).collect();
            let b: Vec<Vec<bf16>> = (0..nb)
                .map(|j| {
                    let rows = values(k * n, seed + 10 + j as u64);
                    let mut p = vec![bf16::ZERO; k * n];
                    pairs_into(&mut p, &rows, n, k, n);
                    p
                })
                .collect();
            let ar: Vec<&[bf16]> = a.iter().map(|x| &x[..]).collect();
            let br: Vec<&[bf16]> = b.iter().map(|x| &x[..]).collect();
            let c0: Vec<f32> = values(m * ldc, seed + 20).iter().map(|x| x.to_f32()).collect();
            let (mut got, mut want) = (c0.clone(), c0.clone());
            matmul_bf16_pairs(&mut got, ldc, &ar, lda, &br, m, n, k, accumulate);
            matmul_bf16_pairs_naive(&mut want, ldc, &ar, lda, &br, m, n, k, accumulate);
            // Sums of up to 4k products of magnitude ≤ 16 in another order.
            let tol = 4.0 * k as f32 * 16.0 * f32::EPSILON * 4.0;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                prop_assert!((g - w).abs() <= tol, "c[{}]: {} vs {}", i, g, w);
            }
        }

        /// The pair layout, on the vector path where the CPU has it, against its definition.
        #[test]
        fn pairs_match_their_definition(kp in 0usize..5, nq in 1usize..4, pad in 0usize..40) {
            let (k, n) = (2 * kp, 32 * nq);
            let lds = n + pad;
            let src = values(k.max(1) * lds, 7);
            let mut dst = vec![bf16::ZERO; k * n];
            pairs_into(&mut dst, &src, lds, k, n);
            for p in 0..k {
                for j in 0..n {
                    prop_assert_eq!(dst[(p / 2) * 2 * n + 2 * j + p % 2], src[p * lds + j]);
                }
            }
        }
    }

    #[test]
    fn the_transposed_split_matches_the_split() {
        for (k, n) in [(2, 16), (64, 16), (32, 48), (3, 5), (64, 64)] {
            let x: Vec<f32> = (0..k * n)
                .map(|i| ((i as f32) * 0.377).sin().abs())
                .collect();
            let mut xt = vec![0.0f32; k * n];
            for p in 0..k {
                for j in 0..n {
                    xt[j * k + p] = x[p * n + j];
                }
            }
            let (mut hi, mut lo) = (vec![bf16::ZERO; k * n], vec![bf16::ZERO; k * n]);
            let (mut want_hi, mut want_lo) = (vec![bf16::ZERO; k * n], vec![bf16::ZERO; k * n]);
            split_bf16_transposed(&mut hi, &mut lo, &x, k, n);
            split_bf16(&mut want_hi, &mut want_lo, &xt);
            assert_eq!((hi, lo), (want_hi, want_lo), "k {k}, n {n}");
        }
    }

    #[test]
    fn a_split_keeps_sixteen_bits() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i as f32) * 0.7317).sin() * 3.0)
            .collect();
        let (mut hi, mut lo) = (vec![bf16::ZERO; 1000], vec![bf16::ZERO; 1000]);
        split_bf16(&mut hi, &mut lo, &x);
        for i in 0..1000 {
            let err = (hi[i].to_f32() + lo[i].to_f32() - x[i]).abs();
            assert!(err <= x[i].abs() * 2f32.powi(-16), "{}: {err}", x[i]);
        }
    }

    #[test]
    #[should_panic(expected = "matmul_bf16_pairs: c")]
    fn a_stride_whose_extent_wraps_is_refused() {
        // 31·ldc = 2⁶⁴ + 15: unchecked, 31·ldc + 16 wraps to 31, a 32-element `c` would pass and
        // the tiles would be stored far outside it.
        let ldc = (1u128 << 64).div_ceil(31) as usize;
        assert_eq!(ldc.wrapping_mul(31).wrapping_add(16), 31);
        let a = vec![bf16::ZERO; 32 * 32];
        let b = vec![bf16::ZERO; 32 * 16];
        let mut c = vec![0.0; 32];
        matmul_bf16_pairs(&mut c, ldc, &[&a], 32, &[&b], 32, 16, 32, false);
    }

    #[test]
    #[should_panic(expected = "pairs_into shape")]
    fn a_pair_layout_whose_size_wraps_is_refused() {
        let mut dst: Vec<bf16> = Vec::new();
        pairs_into(&mut dst, &[], 1 << 63, 2, 1 << 63);
    }

    #[test]
    #[should_panic(expected = "not whole tiles")]
    fn a_shape_off_the_tiles_is_refused() {
        let a = vec![bf16::ZERO; 16 * 33];
        let b = vec![bf16::ZERO; 33 * 16];
        let mut c = vec![0.0; 256];
        matmul_bf16_pairs(&mut c, 16, &[&a], 33, &[&b], 16, 16, 33, false);
    }
}
