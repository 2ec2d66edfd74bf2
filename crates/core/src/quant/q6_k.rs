//! `Q6_K`: 256 weights as 16 sub-blocks of 16, `[ql: 128][qh: 64][scales: 16 × i8][d: f16]`;
//! weight `i` of sub-block `j` is `d·sc_j · (q_i − 32)`, `q ∈ [0, 63]`. Each half of 128 weights
//! takes 64 bytes of `ql` (weights 0–63 in the low nibbles, 64–127 in the high ones) and 32 of
//! `qh` (bit pair `k` of byte `l` is the top two bits of weight `32k + l`).

use super::{read_f16, write_f16};
use crate::quant::k_quants::{make_qx_quants, nearest_int};

/// The block's 256 codes less 32 (`q − 32 ∈ [−32, 31]`), in weight order.
pub(super) fn codes(b: &[u8]) -> [i8; 256] {
    let (ql, qh) = (&b[0..128], &b[128..192]);
    let mut out = [0i8; 256];
    for half in 0..2 {
        let (ql, qh) = (
            &ql[64 * half..64 * half + 64],
            &qh[32 * half..32 * half + 32],
        );
        for i in 0..128 {
            let low = if i < 64 {
                ql[i] & 0x0F
            } else {
                ql[i - 64] >> 4
            };
            let high = (qh[i % 32] >> (2 * (i / 32))) & 3;
            out[128 * half + i] = (low | (high << 4)) as i8 - 32;
        }
    }
    out
}

pub(super) fn dequantize_block(out: &mut [f32], b: &[u8]) {
    let sc = &b[192..208];
    let d = read_f16(&b[208..210]);
    for (n, (o, q)) in out.iter_mut().zip(codes(b)).enumerate() {
        *o = d * sc[n / 16] as i8 as f32 * q as f32;
    }
}

/// ggml's `quantize_row_q6_K_ref`: per sub-block of 16 the scale of `make_qx_quants` (32 levels,
/// weights `x²`), the scales quantized to i8 against the largest, then the codes recomputed.
pub(super) fn quantize_block(b: &mut [u8], x: &[f32]) {
    let mut codes = [0i8; 256];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for j in 0..16 {
        let s = make_qx_quants(32, &x[16 * j..16 * j + 16], &mut codes[16 * j..16 * j + 16]);
        scales[j] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    b.fill(0);
    if max_abs_scale < super::k_quants::GROUP_MAX_EPS {
        return; // all zero (d = +0)
    }
    let iscale = -128.0 / max_scale;
    write_f16(&mut b[208..210], 1.0 / iscale);
    for j in 0..16 {
        b[192 + j] = nearest_int(iscale * scales[j]).min(127) as i8 as u8;
    }
    let d = read_f16(&b[208..210]);
    for j in 0..16 {
        let dl = d * b[192 + j] as i8 as f32;
        if dl == 0.0 {
            continue;
        }
        for i in 0..16 {
            codes[16 * j + i] = (nearest_int(x[16 * j + i] / dl).clamp(-32, 31) + 32) as i8;
        }
    }
    let (ql, rest) = b.split_at_mut(128);
    let qh = &mut rest[..64];
    for half in 0..2 {
        let l0 = 128 * half;
        for l in 0..32 {
            let c = |k: usize| codes[l0 + l + 32 * k] as u8;
            ql[64 * half + l] = (c(0) & 0x0F) | ((c(2) & 0x0F) << 4);
            ql[64 * half + l + 32] = (c(1) & 0x0F) | ((c(3) & 0x0F) << 4);
            qh[32 * half + l] =
                (c(0) >> 4) | ((c(1) >> 4) << 2) | ((c(2) >> 4) << 4) | ((c(3) >> 4) << 6);
        }
    }
}
