//! Element-wise and row-wise activations: `exp`, softmax, SiLU, SwiGLU. All f32.

/// Softmax over each of `rows` rows of `cols` elements, in place:
/// `x[i] ← exp(x[i] − max(x)) / Σ_j exp(x[j] − max(x))`.
///
/// Subtracting the row maximum keeps every exponent ≤ 0, so nothing overflows; an entry of −∞
/// (a masked position) becomes exactly 0.
///
/// # Non-finite input
/// A row whose entries are all −∞, or that holds +∞ or NaN, has no defined softmax and comes out
/// NaN, as in torch. Callers that hold user-supplied logits check them first (the sampler does).
///
/// ```
/// let mut x = [1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
/// deepblocks_core::softmax_rows(&mut x, 1, 4);
/// assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// assert!((x[2] - 0.665_240_9).abs() < 1e-6);
/// assert_eq!(x[3], 0.0);
/// ```
///
/// # Panics
/// If `x.len() != rows * cols`.
pub fn softmax_rows(x: &mut [f32], rows: usize, cols: usize) {
    assert_eq!(x.len(), rows * cols, "softmax_rows: x is not [rows, cols]");
    if cols == 0 {
        return;
    }
    for row in x.chunks_exact_mut(cols) {
        softmax(row);
    }
}

/// Softmax of one row in place (see [`softmax_rows`]). The exponentials are [`exp_f32`], eight
/// at a time on AVX2 CPUs.
pub fn softmax(row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let max = max_lanes(row);
    let sum = exp_shifted_sum(row, max);
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// `e^x` in f32, written without branches or calls so that a loop over it vectorises: Cody–Waite
/// reduction `x = n·ln 2 + r` with `|r| ≤ ½ ln 2`, Cephes' degree-6 polynomial for `e^r`, and
/// `2^n` applied in two halves so that results near overflow and in the subnormal range come out
/// right. Within 1 ulp of the exact value for every f32 in [−110, 90] (checked exhaustively
/// against f64 by an ignored test in `tests/kernels.rs`; property-tested in CI). Plain multiplies
/// and adds (no FMA), so every CPU computes the same bits.
///
/// `e^{−∞} = 0`, `e^{+∞} = +∞`, NaN stays NaN; below −103.97 the result rounds to 0, above 88.72
/// it overflows to +∞, as libm's `expf` does.
///
/// ```
/// use deepblocks_core::exp_f32;
/// assert_eq!(exp_f32(0.0), 1.0);
/// assert!((exp_f32(1.0) - std::f32::consts::E).abs() <= f32::EPSILON * 3.0);
/// assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
/// assert!(exp_f32(f32::NAN).is_nan());
/// ```
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO; LN2_HI has 9 significant bits, so n·LN2_HI is exact for |n| < 2^15.
    const LN2_HI: f32 = 355.0 / 512.0;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // Past these, e^x is 0 or +∞ in f32 (and n stays small enough for the scaling below);
    // clamp keeps NaN.
    let x = x.clamp(-110.0, 89.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let y = p * (r * r) + r + 1.0;
    // 2^n = 2^n1 · 2^n2 with both halves normal for n in [−159, 129].
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((n2 + 127) as u32) << 23);
    y * s1 * s2
}

/// `x[i] ← e^{x[i]}` for every element, with [`exp_f32`] (eight lanes at a time on AVX2 CPUs; the
/// same bits everywhere).
pub fn exp_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::exp_inplace(x) };
        return;
    }
    exp_inplace_body(x);
}

/// The naive twin of [`exp_inplace`]: libm's `expf` on each element.
pub fn exp_inplace_naive(x: &mut [f32]) {
    for v in x {
        *v = v.exp();
    }
}

#[inline(always)]
fn exp_inplace_body(x: &mut [f32]) {
    for v in x {
        *v = exp_f32(*v);
    }
}

/// One block's step of an online softmax whose rows lie side by side (flash attention's
/// `[keys, rows]` scores): `s[w, n]` holds the scores of `w` keys for `n` rows, `m[n]` and
/// `l[n]` each row's running maximum and sum. After the call
///
/// ```text
/// m' = max(m, max_j s[j, ·])      alpha = e^(m − m')      s[j, ·] = e^(s[j, ·] − m')
/// l  = alpha · l + Σ_j s[j, ·]    (l rescaled only when some finite m moved)
/// ```
///
/// with [`exp_f32`] throughout (sixteen lanes at a time where [`crate::avx512`] allows, eight on
/// AVX2; the same bits everywhere). A row that has seen no finite score keeps `m = −∞`; its
/// exponentials are taken against 0 (all `e^(−∞) = 0`), its `alpha` is 0. Returns whether the
/// values mixed so far must be rescaled by `alpha` (some row's finite maximum moved).
///
/// ```
/// use deepblocks_core::online_softmax_columns;
/// // Two rows, one block of two keys, then a block of one.
/// let (mut m, mut l, mut alpha) = ([f32::NEG_INFINITY; 2], [0.0f32; 2], [0.0f32; 2]);
/// let mut s = [0.0, 1.0, 0.0, 2.0];
/// assert!(!online_softmax_columns(&mut s, &mut m, &mut l, &mut alpha));
/// assert_eq!(m, [0.0, 2.0]);
/// let mut s = [3.0, 0.0];
/// assert!(online_softmax_columns(&mut s, &mut m, &mut l, &mut alpha)); // row 0's maximum moved
/// assert_eq!(m, [3.0, 2.0]);
/// assert!((l[0] - (2.0 * (-3.0f32).exp() + 1.0)).abs() < 1e-6);
/// ```
///
/// # Panics
/// If `m`, `l` and `alpha` differ in length or `s` is not whole rows of them.
pub fn online_softmax_columns(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) -> bool {
    check_online_softmax("online_softmax_columns", s, m, l, alpha);
    online_softmax_step::<false>(s, m, l, alpha)
}

/// [`online_softmax_columns`] with its SIMD dispatch, the probabilities rounded to bf16 when
/// `ROUND` (the lengths checked by the caller).
fn online_softmax_step<const ROUND: bool>(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if crate::avx512() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx2::online_softmax_columns_avx512::<ROUND>(s, m, l, alpha) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::online_softmax_columns::<ROUND>(s, m, l, alpha) };
    }
    online_softmax_columns_body::<ROUND>(s, m, l, alpha)
}

/// [`online_softmax_columns`] without SIMD dispatch: the scalar loops, equal to it bit for bit.
///
/// # Panics
/// As [`online_softmax_columns`].
pub fn online_softmax_columns_portable(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) -> bool {
    check_online_softmax("online_softmax_columns", s, m, l, alpha);
    online_softmax_columns_body::<false>(s, m, l, alpha)
}

/// The naive twin of [`online_softmax_columns`]: one row at a time, libm's `expf`.
///
/// # Panics
/// As [`online_softmax_columns`].
pub fn online_softmax_columns_naive(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) -> bool {
    check_online_softmax("online_softmax_columns", s, m, l, alpha);
    online_softmax_naive(s, m, l, alpha, |e| e)
}

/// The naive steps, each probability passed through `round` before it is kept and summed.
fn online_softmax_naive(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
    round: impl Fn(f32) -> f32,
) -> bool {
    let n = m.len();
    let w = s.len().checked_div(n).unwrap_or(0);
    let mut rescale = false;
    for r in 0..n {
        let block = (0..w)
            .map(|j| s[j * n + r])
            .fold(f32::NEG_INFINITY, f32::max);
        let new = m[r].max(block);
        let shift = if new == f32::NEG_INFINITY { 0.0 } else { new };
        alpha[r] = (m[r] - shift).exp();
        if m[r] != new && m[r] != f32::NEG_INFINITY {
            rescale = true;
            l[r] *= alpha[r];
        }
        m[r] = new;
        for j in 0..w {
            let e = round((s[j * n + r] - shift).exp());
            s[j * n + r] = e;
            l[r] += e;
        }
    }
    rescale
}

/// [`online_softmax_columns`]' steps: passes across the rows, which vectorise.
#[inline(always)]
fn online_softmax_columns_body<const ROUND: bool>(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) -> bool {
    let n = m.len();
    if n == 0 {
        return false;
    }
    // alpha holds the block's maxima first.
    // Sixteen columns at a time in a local array, `if x > b` rather than `f32::max`: one
    // `vmaxps` a register (a NaN score is passed over either way).
    let max = |b: f32, x: f32| if x > b { x } else { b };
    let whole = n / 16 * 16;
    for c0 in (0..whole).step_by(16) {
        let mut acc = [f32::NEG_INFINITY; 16];
        for row in s.chunks_exact(n) {
            for (b, &x) in acc.iter_mut().zip(&row[c0..c0 + 16]) {
                *b = max(*b, x);
            }
        }
        alpha[c0..c0 + 16].copy_from_slice(&acc);
    }
    alpha[whole..].fill(f32::NEG_INFINITY);
    for row in s.chunks_exact(n) {
        for (b, &x) in alpha[whole..].iter_mut().zip(&row[whole..]) {
            *b = max(*b, x);
        }
    }
    let shift = |m: f32| if m == f32::NEG_INFINITY { 0.0 } else { m };
    let mut rescale = false;
    for ((m, a), l) in m.iter_mut().zip(alpha.iter_mut()).zip(l.iter_mut()) {
        let new = m.max(*a);
        let moved = *m != new && *m != f32::NEG_INFINITY;
        *a = exp_f32(*m - shift(new));
        if moved {
            *l *= *a;
        }
        rescale |= moved;
        *m = new;
    }
    // Sixteen columns at a time again, their shifts and sums in local arrays (registers): the
    // sums do not go through memory from one row to the next. Each sum adds its column's
    // probabilities in row order, as one row at a time would.
    let exp = |x: &mut f32, shift: f32, sum: &mut f32| {
        let e = exp_f32(*x - shift);
        *x = if ROUND { round_to_bf16(e) } else { e };
        *sum += *x;
    };
    for c0 in (0..whole).step_by(16) {
        let shifts: [f32; 16] = std::array::from_fn(|i| shift(m[c0 + i]));
        let mut sums: [f32; 16] = std::array::from_fn(|i| l[c0 + i]);
        for row in s.chunks_exact_mut(n) {
            for ((x, &sh), sum) in row[c0..c0 + 16].iter_mut().zip(&shifts).zip(&mut sums) {
                exp(x, sh, sum);
            }
        }
        l[c0..c0 + 16].copy_from_slice(&sums);
    }
    for row in s.chunks_exact_mut(n) {
        for ((x, &m), sum) in row[whole..]
            .iter_mut()
            .zip(&m[whole..])
            .zip(&mut l[whole..])
        {
            exp(x, shift(m), sum);
        }
    }
    rescale
}

/// `x` rounded to bf16 (to nearest, ties to even) and widened back, as bits: NaN stays itself.
#[inline(always)]
pub(crate) fn round_to_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    let rounded = f32::from_bits(bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000);
    if x.is_nan() { x } else { rounded }
}

/// The length checks of the online softmax steps: `m`, `l` and `alpha` alike, `s` whole rows.
fn check_online_softmax(name: &str, s: &[f32], m: &[f32], l: &[f32], alpha: &[f32]) {
    let n = m.len();
    assert!(
        l.len() == n && alpha.len() == n && (n == 0 || s.len().is_multiple_of(n)),
        "{name}: s of {} values, m {n}, l {}, alpha {}",
        s.len(),
        l.len(),
        alpha.len()
    );
}

/// [`online_softmax_columns`] for a mix that takes its weights in bf16
/// ([`bf16_dot_mix`](crate::bf16_rows::bf16_dot_mix)): each probability is rounded to bf16 (to
/// nearest, ties to even) as it is made, and the sums `l` add the rounded values. The mix then
/// uses exactly the weights the softmax divides by, so the outputs stay weighted averages of the
/// values whatever offset they share (rounding the weights alone would move each output by up
/// to 2⁻⁸ of that offset). The same dispatch as [`online_softmax_columns`]; each probability is
/// `bf16(online_softmax_columns's)` bit for bit.
///
/// ```
/// use deepblocks_core::online_softmax_columns_bf16;
/// let (mut m, mut l, mut alpha) = ([f32::NEG_INFINITY], [0.0f32], [0.0f32]);
/// let mut s = [0.0, (0.7f32).ln()]; // two keys, one row: e^0 = 1 and e^ln 0.7 = 0.7
/// online_softmax_columns_bf16(&mut s, &mut m, &mut l, &mut alpha);
/// assert_eq!(s, [1.0, 0.69921875]); // 0.7 rounded to bf16
/// assert_eq!(l, [1.69921875]);
/// ```
///
/// # Panics
/// As [`online_softmax_columns`].
pub fn online_softmax_columns_bf16(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) -> bool {
    check_online_softmax("online_softmax_columns_bf16", s, m, l, alpha);
    online_softmax_step::<true>(s, m, l, alpha)
}

/// [`online_softmax_columns_bf16`] without SIMD dispatch, equal to it bit for bit.
///
/// # Panics
/// As [`online_softmax_columns`].
pub fn online_softmax_columns_bf16_portable(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) -> bool {
    check_online_softmax("online_softmax_columns_bf16", s, m, l, alpha);
    online_softmax_columns_body::<true>(s, m, l, alpha)
}

/// The naive twin of [`online_softmax_columns_bf16`]: [`online_softmax_columns_naive`]'s steps,
/// each probability rounded by half's `bf16::from_f32`.
///
/// # Panics
/// As [`online_softmax_columns`].
pub fn online_softmax_columns_bf16_naive(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) -> bool {
    check_online_softmax("online_softmax_columns_bf16", s, m, l, alpha);
    online_softmax_naive(s, m, l, alpha, |e| half::bf16::from_f32(e).to_f32())
}

/// `x[i, ·] ← factors[i] · x[i, ·]` for the rows of `x[factors.len(), width]` (row-major):
/// sixteen lanes at a time where [`crate::avx512`] allows, eight on AVX2 — plain multiplies, the
/// same bits everywhere ([`scale_rows_naive`]).
///
/// # Panics
/// If `x` is not whole rows of `factors.len()` rows.
pub fn scale_rows(x: &mut [f32], factors: &[f32]) {
    crate::assert_whole_rows("scale_rows", x.len(), factors.len());
    scale(x, factors, true);
}

/// `x[·, i] ← factors[i] · x[·, i]` for the columns of `x[rows, factors.len()]` (row-major), as
/// [`scale_rows`] runs.
///
/// # Panics
/// If `x` is not whole rows of `factors.len()` values.
pub fn scale_columns(x: &mut [f32], factors: &[f32]) {
    crate::assert_whole_rows("scale_columns", x.len(), factors.len());
    scale(x, factors, false);
}

/// [`scale_rows`] (`rows`) or [`scale_columns`] on the widest registers allowed; the caller
/// checked the lengths.
fn scale(x: &mut [f32], factors: &[f32], rows: bool) {
    #[cfg(target_arch = "x86_64")]
    if crate::avx512() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx2::scale_avx512(x, factors, rows) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2::scale(x, factors, rows) };
    }
    scale_body(x, factors, rows);
}

/// The naive twin of [`scale_rows`] (`rows`) and [`scale_columns`]: one value at a time.
pub fn scale_rows_naive(x: &mut [f32], factors: &[f32], rows: bool) {
    let n = factors.len();
    if n == 0 {
        return;
    }
    let width = x.len() / n;
    for (i, v) in x.iter_mut().enumerate() {
        *v *= if rows {
            factors[i / width]
        } else {
            factors[i % n]
        };
    }
}

#[inline(always)]
fn scale_body(x: &mut [f32], factors: &[f32], rows: bool) {
    let n = factors.len();
    if n == 0 {
        return;
    }
    if rows {
        let width = x.len() / n;
        for (row, &f) in x.chunks_exact_mut(width.max(1)).zip(factors) {
            for v in row {
                *v *= f;
            }
        }
    } else {
        for row in x.chunks_exact_mut(n) {
            for (v, f) in row.iter_mut().zip(factors) {
                *v *= f;
            }
        }
    }
}

/// `row[i] ← e^{row[i] − shift}`, returning their sum (eight running sums, then added).
fn exp_shifted_sum(row: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::exp_shifted_sum(row, shift) };
    }
    exp_shifted_sum_body(row, shift)
}

#[inline(always)]
fn exp_shifted_sum_body(row: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for (v, l) in c.iter_mut().zip(lanes.iter_mut()) {
            *v = exp_f32(*v - shift);
            *l += *v;
        }
    }
    let mut tail = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp_f32(*v - shift);
        tail += *v;
    }
    lanes.iter().sum::<f32>() + tail
}

/// The loops above compiled for AVX2 (the same source; the compiler vectorises it eight wide).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn widen_bf16(out: &mut [f32], x: &[half::bf16]) {
        super::widen_bf16_body(out, x)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_inplace(x: &mut [f32]) {
        super::exp_inplace_body(x)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn online_softmax_columns<const ROUND: bool>(
        s: &mut [f32],
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    ) -> bool {
        super::online_softmax_columns_body::<ROUND>(s, m, l, alpha)
    }

    /// The same source compiled for 512-bit registers.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn online_softmax_columns_avx512<const ROUND: bool>(
        s: &mut [f32],
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    ) -> bool {
        super::online_softmax_columns_body::<ROUND>(s, m, l, alpha)
    }

    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scale(x: &mut [f32], factors: &[f32], rows: bool) {
        super::scale_body(x, factors, rows)
    }

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scale_avx512(x: &mut [f32], factors: &[f32], rows: bool) {
        super::scale_body(x, factors, rows)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shifted_sum(row: &mut [f32], shift: f32) -> f32 {
        super::exp_shifted_sum_body(row, shift)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_inplace(x: &mut [f32]) {
        super::silu_inplace_body(x)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn swiglu(out: &mut [f32], gate: &[f32], up: &[f32]) {
        super::swiglu_body(out, gate, up)
    }
}

/// `out[i] = x[i]` widened: a bf16 is an f32's top half, so a shift (eight lanes at a time on
/// AVX2 CPUs).
pub(crate) fn widen_bf16(out: &mut [f32], x: &[half::bf16]) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2.
        unsafe { avx2::widen_bf16(out, x) };
        return;
    }
    widen_bf16_body(out, x);
}

#[inline(always)]
fn widen_bf16_body(out: &mut [f32], x: &[half::bf16]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o = f32::from_bits((v.to_bits() as u32) << 16);
    }
}

/// Maximum with 16 independent lanes (vectorisable); NaN-propagating like torch's `max`.
fn max_lanes(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = if v > *l || v.is_nan() { v } else { *l };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(tail) {
        if v > m || v.is_nan() {
            m = v;
        }
    }
    m
}

/// The naive twin of [`softmax_rows`]: the definition evaluated in f64, then rounded to f32.
///
/// # Panics
/// If `x.len() != rows * cols`.
pub fn softmax_rows_naive(x: &mut [f32], rows: usize, cols: usize) {
    assert_eq!(
        x.len(),
        rows * cols,
        "softmax_rows_naive: x is not [rows, cols]"
    );
    if cols == 0 {
        return;
    }
    for row in x.chunks_exact_mut(cols) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| {
            if v.is_nan() {
                f64::NAN
            } else {
                m.max(v as f64)
            }
        });
        let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        for (v, e) in row.iter_mut().zip(exps) {
            *v = (e / sum) as f32;
        }
    }
}

/// SiLU (swish): `silu(x) = x · σ(x) = x / (1 + e^{−x})`, the formula of torch's `F.silu`, with
/// [`exp_f32`] for the exponential.
///
/// ```
/// assert!((deepblocks_core::silu(1.0) - 0.731_058_6).abs() < 1e-6);
/// ```
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

/// The logistic function `σ(x) = 1 / (1 + e^{−x})` in f32, with [`exp_f32`] (DeepSeek-V3's router
/// scores with it).
///
/// ```
/// assert_eq!(deepblocks_core::sigmoid(0.0), 0.5);
/// ```
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// [`silu`] applied to every element in place (eight lanes at a time on AVX2 CPUs).
pub fn silu_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::silu_inplace(x) };
        return;
    }
    silu_inplace_body(x);
}

#[inline(always)]
fn silu_inplace_body(x: &mut [f32]) {
    for v in x {
        *v = silu(*v);
    }
}

/// SwiGLU's gating: `out[i] = silu(gate[i]) · up[i]`, the inner step of a DeepSeek MLP
/// `down(silu(gate(x)) · up(x))`.
///
/// # Panics
/// If the three lengths differ.
pub fn swiglu(out: &mut [f32], gate: &[f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up differ in length");
    assert_eq!(out.len(), up.len(), "swiglu: out and up differ in length");
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::swiglu(out, gate, up) };
        return;
    }
    swiglu_body(out, gate, up);
}

#[inline(always)]
fn swiglu_body(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
    }
}

/// `Σ a[i]·b[i]` with 16 independent f32 accumulators (vectorised by the compiler).
///
/// ```
/// assert_eq!(deepblocks_core::dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
/// ```
///
/// # Panics
/// If the lengths differ.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: lengths differ");
    let mut lanes = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for l in 0..16 {
            lanes[l] += xa[l] * xb[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The naive twin of [`dot`]: one accumulator, in order.
///
/// # Panics
/// If the lengths differ.
pub fn dot_naive(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_naive: lengths differ");
    let mut acc = 0.0f32;
    for i in 0..a.len() {
        acc += a[i] * b[i];
    }
    acc
}

/// `Σ x[i]²` (see [`dot`]).
pub fn sum_squares(x: &[f32]) -> f32 {
    dot(x, x)
}

/// The index of the first NaN or infinite element of `x`, if any. One pass that the compiler
/// vectorises (`v · 0` is 0 for every finite `v` and NaN otherwise); the position is searched only
/// when something was found.
///
/// ```
/// assert_eq!(deepblocks_core::first_non_finite(&[1.0, 2.0, 3.0]), None);
/// assert_eq!(deepblocks_core::first_non_finite(&[1.0, f32::NAN, f32::INFINITY]), Some(1));
/// ```
pub fn first_non_finite(x: &[f32]) -> Option<usize> {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * 0.0;
        }
    }
    let clean = acc.iter().chain(tail).all(|v| (v * 0.0) == 0.0);
    if clean {
        None
    } else {
        x.iter().position(|v| !v.is_finite())
    }
}

/// The naive twin of [`first_non_finite`].
pub fn first_non_finite_naive(x: &[f32]) -> Option<usize> {
    x.iter().position(|v| !v.is_finite())
}
