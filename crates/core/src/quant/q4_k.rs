//! `Q4_K`: 256 weights as 8 sub-blocks of 32, `[d: f16][dmin: f16][scales: 12][qs: 128]`.
//! Sub-block `j` has a 6-bit scale `sc_j` and minimum `m_j` packed in `scales` (below); weight
//! `i` of sub-block `j` is `d·sc_j · q_i − dmin·m_j`, `q ∈ [0, 15]`. The codes come in four
//! 32-byte groups: group `g` holds sub-block `2g` in its low nibbles, `2g + 1` in its high ones.

use super::{read_f16, write_f16};
use crate::quant::k_quants::{make_qkx2_quants_x8_fast, nearest_int};

/// `(sc_j, m_j)` from the packed scales: bytes 0–3 hold `sc_0..3` (low six bits), 4–7 `m_0..3`;
/// for `j ≥ 4` the low four bits are in byte `j + 4` (scale low nibble, min high nibble) and the
/// top two in the spare bits of bytes `j − 4` (scale) and `j` (min).
pub(super) fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

pub(super) fn dequantize_block(out: &mut [f32], b: &[u8]) {
    let (d, dmin) = (read_f16(&b[0..2]), read_f16(&b[2..4]));
    let scales = &b[4..16];
    for (g, qs) in b[16..144].chunks_exact(32).enumerate() {
        for (half, shift) in [(0, 0), (1, 4)] {
            let j = 2 * g + half;
            let (sc, m) = scale_min(j, scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            for (o, &q) in out[32 * j..32 * j + 32].iter_mut().zip(qs) {
                *o = dl * ((q >> shift) & 0x0F) as f32 - ml;
            }
        }
    }
}

/// ggml's `quantize_row_q4_K_ref`: per sub-block a weighted least-squares scale and minimum
/// (`make_qkx2_quants`, weights `rms(x) + |x_i|`), the scales and minimums quantized to six bits
/// against their maxima, then the codes recomputed with the rounded scales.
pub(super) fn quantize_block(b: &mut [u8], x: &[f32]) {
    let mut codes = [0u8; 256];
    let mut weights = [0.0f32; 256];
    for (xs, ws) in x.chunks_exact(32).zip(weights.chunks_exact_mut(32)) {
        let sum_x2 = xs.iter().fold(0.0f32, |a, &v| a + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in ws.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
    }
    let xb: &[f32; 256] = x.try_into().expect("a Q4_K block is 256 weights");
    // The eight sub-blocks' searches side by side (bit-identical to one at a time).
    let (scales, mins) = make_qkx2_quants_x8_fast(15, xb, &weights, &mut codes, -1.0, 0.1, 20);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        max_scale = max_scale.max_ggml(scales[j]);
        max_min = max_min.max_ggml(mins[j]);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let packed = &mut b[4..16];
    packed.fill(0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    write_f16(&mut b[0..2], max_scale / 63.0);
    write_f16(&mut b[2..4], max_min / 63.0);
    let (d, dmin) = (read_f16(&b[0..2]), read_f16(&b[2..4]));
    for j in 0..8 {
        let (sc, m) = scale_min(j, &b[4..16]);
        let dl = d * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for i in 0..32 {
            codes[32 * j + i] = nearest_int((x[32 * j + i] + dm) / dl).clamp(0, 15) as u8;
        }
    }
    for (g, qs) in b[16..144].chunks_exact_mut(32).enumerate() {
        for (l, q) in qs.iter_mut().enumerate() {
            *q = codes[64 * g + l] | (codes[64 * g + l + 32] << 4);
        }
    }
}

/// `if v > self { v } else { self }`: ggml's running maximum (a NaN never replaces it).
trait MaxGgml {
    fn max_ggml(self, v: f32) -> f32;
}

impl MaxGgml for f32 {
    fn max_ggml(self, v: f32) -> f32 {
        if v > self { v } else { self }
    }
}
