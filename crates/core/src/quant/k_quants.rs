//! The scale searches of ggml's k-quant reference quantizers (`ggml-quants.c`), in the same
//! order of f32 operations.

/// Below this a group's largest magnitude counts as zero.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even, for `|v| ≤ 4194303` (ggml's `nearest_int`: adding 1.5 · 2²³
/// leaves the rounded integer in the low mantissa bits).
#[inline]
pub(super) fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights: codes
/// `L_i = clamp(round(x_i / s), −nmax, nmax − 1) + nmax` for the scale `s` that maximises the
/// `x²`-weighted fit, trying 19 candidate scales around `−max / nmax`. Returns `s`.
pub(super) fn make_qx_quants(nmax: i32, x: &[f32], codes: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        codes.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut iscale = -(nmax as f32) / max;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = (level(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = (level(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_qkx2_quants` (squared error): codes `L_i ∈ [0, nmax]` with `x_i ≈ s·L_i − m`,
/// choosing `(s, m)` by weighted least squares over `nstep + 1` candidate code assignments (scale
/// steps `rmin + rdelta·k` around `nmax / (max − min)`), keeping the one of least weighted error.
/// Returns `(s, m)`, `m ≥ 0` (ggml's `the_min`). The reference [`make_qkx2_quants_x8`] is tested
/// against.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    codes: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        codes.fill(0);
        return (0.0, -min);
    }
    let level = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, nmax);
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((c, &v), &w) in codes.iter_mut().zip(x).zip(weights) {
        *c = level(iscale, v, min) as u8;
        let diff = scale * *c as f32 + min - v;
        best_error += w * (diff * diff);
    }
    let mut aux = [0u8; 32];
    let aux = &mut aux[..x.len()];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((a, &v), &w) in aux.iter_mut().zip(x).zip(weights) {
            let l = level(iscale, v, min);
            *a = l as u8;
            let l = l as f32;
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&a, &v), &w) in aux.iter().zip(x).zip(weights) {
                let diff = this_scale * a as f32 + this_min - v;
                cur_error += w * (diff * diff);
            }
            if cur_error < best_error {
                codes.copy_from_slice(aux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Sub-blocks [`make_qkx2_quants_x8`] runs side by side.
pub(super) const LANES: usize = 8;

/// [`make_qkx2_quants_x8`] compiled for AVX2 where [`crate::isa()`] allows it (8-wide lane loops
/// instead of SSE2's 4; the same operations, so the same bits).
#[allow(clippy::too_many_arguments)]
pub(super) fn make_qkx2_quants_x8_fast(
    nmax: i32,
    x: &[f32; 32 * LANES],
    weights: &[f32; 32 * LANES],
    codes: &mut [u8; 32 * LANES],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> ([f32; LANES], [f32; LANES]) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        fn avx2(
            nmax: i32,
            x: &[f32; 32 * LANES],
            weights: &[f32; 32 * LANES],
            codes: &mut [u8; 32 * LANES],
            rmin: f32,
            rdelta: f32,
            nstep: i32,
        ) -> ([f32; LANES], [f32; LANES]) {
            make_qkx2_quants_x8(nmax, x, weights, codes, rmin, rdelta, nstep)
        }
        // SAFETY: `isa()` reports AVX2 only when the CPU has it.
        return unsafe { avx2(nmax, x, weights, codes, rmin, rdelta, nstep) };
    }
    make_qkx2_quants_x8(nmax, x, weights, codes, rmin, rdelta, nstep)
}

/// [`make_qkx2_quants`] on eight sub-blocks of 32 at once, each in its own lane of every
/// operation (`x[j·32 + i]` is element `i` of sub-block `j`): the same f32 operations in the same
/// order per sub-block, so the results are bit-identical to eight scalar calls, and the lane loops
/// compile to SIMD. Returns each sub-block's `(s, m)`.
#[inline(always)]
pub(super) fn make_qkx2_quants_x8(
    nmax: i32,
    x: &[f32; 32 * LANES],
    weights: &[f32; 32 * LANES],
    codes: &mut [u8; 32 * LANES],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> ([f32; LANES], [f32; LANES]) {
    // Element-major copies: xt[i][j] is element i of sub-block j.
    let xt: [[f32; LANES]; 32] = std::array::from_fn(|i| std::array::from_fn(|j| x[32 * j + i]));
    let wt: [[f32; LANES]; 32] =
        std::array::from_fn(|i| std::array::from_fn(|j| weights[32 * j + i]));
    let (mut min, mut max) = (xt[0], xt[0]);
    let mut sum_w = wt[0];
    let mut sum_x: [f32; LANES] = std::array::from_fn(|j| sum_w[j] * xt[0][j]);
    for i in 1..32 {
        for j in 0..LANES {
            let (v, w) = (xt[i][j], wt[i][j]);
            min[j] = if v < min[j] { v } else { min[j] };
            max[j] = if v > max[j] { v } else { max[j] };
            sum_w[j] += w;
            sum_x[j] += w * v;
        }
    }
    let mut flat = [false; LANES];
    for j in 0..LANES {
        if min[j] > 0.0 {
            min[j] = 0.0;
        }
        flat[j] = max[j] == min[j];
    }
    let level = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, nmax);
    let mut scale = [0.0f32; LANES];
    let mut best_error = [0.0f32; LANES];
    let mut best = [[0u8; LANES]; 32]; // codes, element-major
    for j in 0..LANES {
        let iscale = nmax as f32 / (max[j] - min[j]);
        scale[j] = 1.0 / iscale;
        for i in 0..32 {
            let c = level(iscale, xt[i][j], min[j]) as u8;
            best[i][j] = c;
            let diff = scale[j] * c as f32 + min[j] - xt[i][j];
            best_error[j] += wt[i][j] * (diff * diff);
        }
    }
    let mut aux = [[0u8; LANES]; 32];
    for is in 0..=nstep {
        let step = rmin + rdelta * is as f32 + nmax as f32;
        // (`min` may have moved to an earlier candidate's: the range is taken afresh, as ggml does.)
        let iscale: [f32; LANES] = std::array::from_fn(|j| step / (max[j] - min[j]));
        let (mut sum_l, mut sum_l2, mut sum_xl) =
            ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
        for i in 0..32 {
            for j in 0..LANES {
                let l = level(iscale[j], xt[i][j], min[j]);
                aux[i][j] = l as u8;
                let (l, w) = (l as f32, wt[i][j]);
                sum_l[j] += w * l;
                sum_l2[j] += w * l * l;
                sum_xl[j] += w * l * xt[i][j];
            }
        }
        let mut this_scale = [0.0f32; LANES];
        let mut this_min = [0.0f32; LANES];
        let mut ok = [false; LANES];
        for j in 0..LANES {
            let det = sum_w[j] * sum_l2[j] - sum_l[j] * sum_l[j];
            ok[j] = det > 0.0;
            this_scale[j] = (sum_w[j] * sum_xl[j] - sum_x[j] * sum_l[j]) / det;
            this_min[j] = (sum_l2[j] * sum_x[j] - sum_l[j] * sum_xl[j]) / det;
            if this_min[j] > 0.0 {
                this_min[j] = 0.0;
                this_scale[j] = sum_xl[j] / sum_l2[j];
            }
        }
        let mut cur_error = [0.0f32; LANES];
        for i in 0..32 {
            for j in 0..LANES {
                let diff = this_scale[j] * aux[i][j] as f32 + this_min[j] - xt[i][j];
                cur_error[j] += wt[i][j] * (diff * diff);
            }
        }
        let mut take = [false; LANES];
        for j in 0..LANES {
            take[j] = ok[j] && cur_error[j] < best_error[j];
            if take[j] {
                best_error[j] = cur_error[j];
                scale[j] = this_scale[j];
                min[j] = this_min[j];
            }
        }
        for i in 0..32 {
            for j in 0..LANES {
                best[i][j] = if take[j] { aux[i][j] } else { best[i][j] };
            }
        }
    }
    let mut out_min = [0.0f32; LANES];
    for j in 0..LANES {
        if flat[j] {
            scale[j] = 0.0;
        }
        out_min[j] = -min[j];
        for i in 0..32 {
            codes[32 * j + i] = if flat[j] { 0 } else { best[i][j] };
        }
    }
    (scale, out_min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        let got: Vec<i32> = [0.5f32, 1.5, 2.5, -0.5, -1.5, 2.4999, -3.7, 4_194_303.0]
            .iter()
            .map(|&v| nearest_int(v))
            .collect();
        assert_eq!(got, [0, 2, 2, 0, -2, 2, -4, 4_194_303]);
    }

    /// The eight-lane search is the scalar one, bit for bit, on sub-blocks of every kind
    /// (flat, all positive, outliers, tiny, trained-like).
    #[test]
    fn eight_lanes_equal_eight_scalar_searches() {
        let mut seed = 12345u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for round in 0..200 {
            let mut x = [0.0f32; 256];
            for (j, sub) in x.chunks_exact_mut(32).enumerate() {
                for v in sub.iter_mut() {
                    *v = match (round + j) % 6 {
                        0 => 0.3,                // flat
                        1 => next().abs() + 0.5, // all positive
                        2 => next() * 1e-7,      // tiny
                        3 => next() * 100.0,     // large
                        _ => next() * 0.04,      // trained-like
                    };
                }
                if (round + j) % 7 == 0 {
                    sub[5] = 9.0; // an outlier
                }
            }
            let w: [f32; 256] = std::array::from_fn(|i| 0.01 + x[i].abs());
            let mut codes = [0u8; 256];
            let (s8, m8) = make_qkx2_quants_x8(15, &x, &w, &mut codes, -1.0, 0.1, 20);
            for j in 0..8 {
                let mut c = [0u8; 32];
                let r = 32 * j..32 * j + 32;
                let (s, m) =
                    make_qkx2_quants(15, &x[r.clone()], &w[r.clone()], &mut c, -1.0, 0.1, 20);
                assert_eq!(
                    (s.to_bits(), m.to_bits()),
                    (s8[j].to_bits(), m8[j].to_bits()),
                    "round {round} sub-block {j}"
                );
                assert_eq!(c, codes[r], "round {round} sub-block {j}");
            }
        }
    }
}
