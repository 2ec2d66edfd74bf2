//! `C[m, n] (+)= A[m, k] · B[k, n]` for a strided `A` and a small, row-major, cache-resident `B`:
//! the products inside blocked attention, where `A` is a block of cached keys (`A[i, p] =
//! K[i, p]`) or their transpose (`A[i, p] = V[p, i]`), and `B` a block of queries or
//! probabilities laid out with the query rows along `n`.
//!
//! The kernel is the outer-product form of a GEMM micro-kernel: a tile of 6 rows of `C` by 16
//! columns (two AVX2 registers) is held in 12 accumulators while `p` runs over `k`; each step
//! loads one row of `B` (two registers) and broadcasts six elements of `A`, for 12 FMAs. Where
//! the CPU has AVX-512F ([`crate::avx512()`]) and `C` has 32 columns or more, the tile is 6 rows
//! by 32 (two 512-bit registers), the last columns 12 rows by 16 (one register each). Nothing is
//! packed: `A`'s elements are read in place at any strides, `B` is read as it is.

/// `c[i·n + j] (+)= Σ_p a[i·a_rs + p·a_cs] · b[p·n + j]` for `i < m`, `j < n`, `p < k`; with
/// `accumulate` false `c` is overwritten. `A`'s strides are free (`a_rs = k, a_cs = 1` is a
/// row-major `[m, k]`, `a_rs = 1, a_cs = ld` is the transpose of a row-major `[k, ld]`). Runs on
/// the calling thread; AVX2 + FMA where [`crate::isa()`] says so.
///
/// ```
/// use deepblocks_core::matmul_strided;
/// // A = the transpose of the row-major [2, 3] matrix [[1, 2, 3], [4, 5, 6]]: [3, 2].
/// let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let b = [1.0, 0.0, 0.0, 1.0]; // [2, 2] identity
/// let mut c = [0.0; 6];
/// matmul_strided(&mut c, &a, 1, 3, &b, 3, 2, 2, false);
/// assert_eq!(c, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// ```
///
/// # Panics
/// If `c` is not `m·n` long, `b` not `k·n`, or an index of `A` passes `a`'s end (slice lengths
/// are a caller's invariant, not user data).
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, strides, then every dimension
pub fn matmul_strided(
    c: &mut [f32],
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    strided_on(Path::Best, c, a, a_rs, a_cs, b, m, k, n, accumulate);
}

/// [`matmul_strided`] on the AVX2 kernel whatever [`crate::avx512()`] says (the portable one on
/// CPUs without AVX2), for tests that compare the implementations.
///
/// # Panics
/// As [`matmul_strided`].
#[allow(clippy::too_many_arguments)]
#[doc(hidden)]
pub fn matmul_strided_avx2(
    c: &mut [f32],
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    strided_on(Path::Avx2, c, a, a_rs, a_cs, b, m, k, n, accumulate);
}

/// [`matmul_strided`] on the portable path whatever the CPU (what [`matmul_strided`] runs
/// under `DEEPBLOCKS_ISA=portable`), for tests that compare the two.
///
/// # Panics
/// As [`matmul_strided`].
#[allow(clippy::too_many_arguments)]
#[doc(hidden)]
pub fn matmul_strided_portable(
    c: &mut [f32],
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    strided_on(Path::Portable, c, a, a_rs, a_cs, b, m, k, n, accumulate);
}

/// The kernels a call may use: the best the CPU and [`crate::isa()`] allow, at most AVX2, or the
/// portable one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Best,
    Avx2,
    Portable,
}

/// Checks the arguments, then runs the fastest kernel `path` allows.
#[allow(clippy::too_many_arguments)]
fn strided_on(
    path: Path,
    c: &mut [f32],
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    check(c, a, a_rs, a_cs, b, m, k, n);
    if m == 0 || n == 0 {
        return;
    }
    // Fewer than 32 columns run on the AVX2 tiles even where AVX-512F is: their 6 × 16 tile
    // serves each broadcast element of `A` to two registers, the 512-bit 12 × 16 one to one (a
    // decode step's core over an f32 cache measured 1.13-1.19x faster so: docs/performance.md).
    #[cfg(target_arch = "x86_64")]
    if path == Path::Best && crate::avx512() && n >= 32 {
        // SAFETY: the CPU has AVX-512F, and `check` bounded every index.
        unsafe { avx512::matmul_strided(c, a, a_rs, a_cs, b, m, k, n, accumulate) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if path != Path::Portable && crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA, and `check` bounded every index.
        unsafe { avx2::matmul_strided(c, a, a_rs, a_cs, b, m, k, n, accumulate) };
        return;
    }
    portable(c, a, a_rs, a_cs, b, m, k, n, accumulate);
}

/// The naive twin of [`matmul_strided`]: one dot product per element, summed in `p` order.
///
/// # Panics
/// As [`matmul_strided`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_strided_naive(
    c: &mut [f32],
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    check(c, a, a_rs, a_cs, b, m, k, n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = if accumulate { c[i * n + j] } else { 0.0 };
            for p in 0..k {
                acc += a[i * a_rs + p * a_cs] * b[p * n + j];
            }
            c[i * n + j] = acc;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check(c: &[f32], a: &[f32], a_rs: usize, a_cs: usize, b: &[f32], m: usize, k: usize, n: usize) {
    assert_eq!(
        Some(c.len()),
        m.checked_mul(n),
        "matmul_strided: c is not [m, n]"
    );
    assert_eq!(
        Some(b.len()),
        k.checked_mul(n),
        "matmul_strided: b is not [k, n]"
    );
    if m > 0 && k > 0 {
        let last = (m - 1)
            .checked_mul(a_rs)
            .and_then(|x| (k - 1).checked_mul(a_cs).and_then(|y| x.checked_add(y)));
        assert!(
            last.is_some_and(|l| l < a.len()),
            "matmul_strided: a ends before A[m - 1, k - 1]"
        );
    }
}

/// The portable kernel: rows of `C` accumulated along `j` (contiguous), which compilers
/// vectorise for the baseline target.
#[allow(clippy::too_many_arguments)]
fn portable(
    c: &mut [f32],
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    for (i, row) in c.chunks_exact_mut(n).enumerate().take(m) {
        if !accumulate {
            row.fill(0.0);
        }
        for (p, brow) in b.chunks_exact(n).enumerate().take(k) {
            let x = a[i * a_rs + p * a_cs];
            for (y, &w) in row.iter_mut().zip(brow) {
                *y += x * w;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Rows of `C` per tile: with two 8-wide columns, 12 accumulators, two `B` registers and a
    /// broadcast fill 15 of AVX2's 16 registers.
    const MR: usize = 6;

    /// [`super::matmul_strided`] on AVX2 + FMA: tiles of up to 6 rows × 16 columns, then 8,
    /// then the last `n mod 8` columns one at a time.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `super::check` passed for these arguments.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matmul_strided(
        c: &mut [f32],
        a: &[f32],
        a_rs: usize,
        a_cs: usize,
        b: &[f32],
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) {
        let (cp, ap, bp) = (c.as_mut_ptr(), a.as_ptr(), b.as_ptr());
        let mut j0 = 0;
        while j0 < n {
            let nv = if n - j0 >= 16 {
                2
            } else if n - j0 >= 8 {
                1
            } else {
                0
            };
            let mut i0 = 0;
            while i0 < m {
                let mr = MR.min(m - i0);
                // SAFETY: rows i0..i0 + mr < m and columns j0..j0 + 8·nv ≤ n (or the one column
                // j0 < n) are inside `c` and `b`; A's indices are below the bound `check` proved.
                unsafe {
                    let a0 = ap.add(i0 * a_rs);
                    let c0 = cp.add(i0 * n + j0);
                    let b0 = bp.add(j0);
                    let t = Tile {
                        a_rs,
                        a_cs,
                        k,
                        n,
                        accumulate,
                    };
                    match (nv, mr) {
                        (2, 6) => t.run::<6, 2>(c0, a0, b0),
                        (2, 5) => t.run::<5, 2>(c0, a0, b0),
                        (2, 4) => t.run::<4, 2>(c0, a0, b0),
                        (2, 3) => t.run::<3, 2>(c0, a0, b0),
                        (2, 2) => t.run::<2, 2>(c0, a0, b0),
                        (2, _) => t.run::<1, 2>(c0, a0, b0),
                        (1, 6) => t.run::<6, 1>(c0, a0, b0),
                        (1, 5) => t.run::<5, 1>(c0, a0, b0),
                        (1, 4) => t.run::<4, 1>(c0, a0, b0),
                        (1, 3) => t.run::<3, 1>(c0, a0, b0),
                        (1, 2) => t.run::<2, 1>(c0, a0, b0),
                        (1, _) => t.run::<1, 1>(c0, a0, b0),
                        _ => t.column(c0, a0, b0, mr),
                    }
                }
                i0 += mr;
            }
            j0 += if nv == 0 { 1 } else { 8 * nv };
        }
    }

    /// The strides and sizes every tile of one call shares.
    struct Tile {
        a_rs: usize,
        a_cs: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    }

    impl Tile {
        /// `R` rows × `8·V` columns of `C` at `c`, from `A` at `a` and `B` at `b`.
        ///
        /// # Safety
        /// AVX2 + FMA; `c` and `b` start `R` rows × `8·V` columns inside their matrices, `a`
        /// the tile's first row of `A`.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn run<const R: usize, const V: usize>(
            &self,
            c: *mut f32,
            a: *const f32,
            b: *const f32,
        ) {
            let Tile {
                a_rs,
                a_cs,
                k,
                n,
                accumulate,
            } = *self;
            // SAFETY: every pointer stays inside the tile the caller vouched for: rows < R of C
            // and A, columns < 8·V of C and B, p < k.
            unsafe {
                let mut acc = [[_mm256_setzero_ps(); V]; R];
                if accumulate {
                    for (i, row) in acc.iter_mut().enumerate() {
                        for (v, x) in row.iter_mut().enumerate() {
                            *x = _mm256_loadu_ps(c.add(i * n + 8 * v));
                        }
                    }
                }
                for p in 0..k {
                    let mut bv = [_mm256_setzero_ps(); V];
                    for (v, x) in bv.iter_mut().enumerate() {
                        *x = _mm256_loadu_ps(b.add(p * n + 8 * v));
                    }
                    let ap = a.add(p * a_cs);
                    for (i, row) in acc.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*ap.add(i * a_rs));
                        for (v, y) in row.iter_mut().enumerate() {
                            *y = _mm256_fmadd_ps(x, bv[v], *y);
                        }
                    }
                }
                for (i, row) in acc.iter().enumerate() {
                    for (v, x) in row.iter().enumerate() {
                        _mm256_storeu_ps(c.add(i * n + 8 * v), *x);
                    }
                }
            }
        }

        /// One column of `C` for `rows` rows (the last `n mod 8` columns).
        ///
        /// # Safety
        /// As [`Tile::run`] for one column.
        unsafe fn column(&self, c: *mut f32, a: *const f32, b: *const f32, rows: usize) {
            let Tile {
                a_rs,
                a_cs,
                k,
                n,
                accumulate,
            } = *self;
            for i in 0..rows {
                // SAFETY: row i < rows of the tile, p < k, column 0 of the tile.
                unsafe {
                    let mut acc = if accumulate { *c.add(i * n) } else { 0.0 };
                    for p in 0..k {
                        acc += *a.add(i * a_rs + p * a_cs) * *b.add(p * n);
                    }
                    *c.add(i * n) = acc;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::matmul_strided`] on AVX-512F: tiles of up to 6 rows × 32 columns (two 512-bit
    /// registers) while 32 or more columns remain, else up to 12 rows × 16 columns, the last
    /// `n mod 16` columns under a mask.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `super::check` passed for these arguments.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn matmul_strided(
        c: &mut [f32],
        a: &[f32],
        a_rs: usize,
        a_cs: usize,
        b: &[f32],
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) {
        let (cp, ap, bp) = (c.as_mut_ptr(), a.as_ptr(), b.as_ptr());
        let t = Tile {
            a_rs,
            a_cs,
            k,
            n,
            accumulate,
        };
        let mut j0 = 0;
        while j0 < n {
            let (two, mask) = if n - j0 >= 32 {
                (true, u16::MAX)
            } else {
                (false, (u32::MAX >> (32 - (n - j0).min(16))) as u16)
            };
            let mr_max = if two { 6 } else { 12 };
            let mut i0 = 0;
            while i0 < m {
                let mr = mr_max.min(m - i0);
                // SAFETY: rows i0..i0 + mr < m and the tile's columns (32, or 16 under the mask)
                // from j0 are inside `c` and `b`; A's indices are below the bound `check` proved.
                unsafe {
                    let a0 = ap.add(i0 * a_rs);
                    let c0 = cp.add(i0 * n + j0);
                    let b0 = bp.add(j0);
                    match (two, mr) {
                        (true, 6) => t.run::<6, 2>(c0, a0, b0, mask),
                        (true, 5) => t.run::<5, 2>(c0, a0, b0, mask),
                        (true, 4) => t.run::<4, 2>(c0, a0, b0, mask),
                        (true, 3) => t.run::<3, 2>(c0, a0, b0, mask),
                        (true, 2) => t.run::<2, 2>(c0, a0, b0, mask),
                        (true, _) => t.run::<1, 2>(c0, a0, b0, mask),
                        (false, 12) => t.run::<12, 1>(c0, a0, b0, mask),
                        (false, 11) => t.run::<11, 1>(c0, a0, b0, mask),
                        (false, 10) => t.run::<10, 1>(c0, a0, b0, mask),
                        (false, 9) => t.run::<9, 1>(c0, a0, b0, mask),
                        (false, 8) => t.run::<8, 1>(c0, a0, b0, mask),
                        (false, 7) => t.run::<7, 1>(c0, a0, b0, mask),
                        (false, 6) => t.run::<6, 1>(c0, a0, b0, mask),
                        (false, 5) => t.run::<5, 1>(c0, a0, b0, mask),
                        (false, 4) => t.run::<4, 1>(c0, a0, b0, mask),
                        (false, 3) => t.run::<3, 1>(c0, a0, b0, mask),
                        (false, 2) => t.run::<2, 1>(c0, a0, b0, mask),
                        (false, _) => t.run::<1, 1>(c0, a0, b0, mask),
                    }
                }
                i0 += mr;
            }
            j0 += if two { 32 } else { 16 };
        }
    }

    /// The strides and sizes every tile of one call shares.
    struct Tile {
        a_rs: usize,
        a_cs: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    }

    impl Tile {
        /// `R` rows × `16·V` columns of `C` at `c` (the last register's lanes under `mask`), from
        /// `A` at `a` and `B` at `b`.
        ///
        /// # Safety
        /// AVX-512F; `c` and `b` start `R` rows × the tile's columns inside their matrices, `a`
        /// the tile's first row of `A`.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn run<const R: usize, const V: usize>(
            &self,
            c: *mut f32,
            a: *const f32,
            b: *const f32,
            mask: u16,
        ) {
            let Tile {
                a_rs,
                a_cs,
                k,
                n,
                accumulate,
            } = *self;
            let lanes = |v: usize| if v + 1 == V { mask } else { u16::MAX };
            // SAFETY: every pointer stays inside the tile the caller vouched for: rows < R of C
            // and A, the masked columns of C and B, p < k.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); V]; R];
                if accumulate {
                    for (i, row) in acc.iter_mut().enumerate() {
                        for (v, x) in row.iter_mut().enumerate() {
                            *x = _mm512_maskz_loadu_ps(lanes(v), c.add(i * n + 16 * v));
                        }
                    }
                }
                for p in 0..k {
                    let mut bv = [_mm512_setzero_ps(); V];
                    for (v, x) in bv.iter_mut().enumerate() {
                        *x = _mm512_maskz_loadu_ps(lanes(v), b.add(p * n + 16 * v));
                    }
                    let ap = a.add(p * a_cs);
                    for (i, row) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*ap.add(i * a_rs));
                        for (v, y) in row.iter_mut().enumerate() {
                            *y = _mm512_fmadd_ps(x, bv[v], *y);
                        }
                    }
                }
                for (i, row) in acc.iter().enumerate() {
                    for (v, x) in row.iter().enumerate() {
                        _mm512_mask_storeu_ps(c.add(i * n + 16 * v), lanes(v), *x);
                    }
                }
            }
        }
    }
}
