//! `Q5_0`: `[d: f16][qh: u32][qs: 16 bytes]`; the low four bits of weights `j` and `j + 16` as
//! in `Q4_0`, bit `i` of `qh` the fifth bit of weight `i`; weight `i` is `d · (q_i − 16)`.

use super::{read_f16, signed_absmax, write_f16};

pub(super) fn dequantize_block(out: &mut [f32], b: &[u8]) {
    let d = read_f16(b);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, &q) in b[6..22].iter().enumerate() {
        let lo = (q & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        out[j] = d * (lo as i8 - 16) as f32;
        out[j + 16] = d * (hi as i8 - 16) as f32;
    }
}

/// ggml's `quantize_row_q5_0_ref`: `d = max / −16`, `q = min(31, trunc(x / d + 16.5))`.
pub(super) fn quantize_block(b: &mut [u8], x: &[f32]) {
    let d = signed_absmax(x) / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(b, d);
    let code = |v: f32| ((v * id + 16.5) as i8).min(31) as u8;
    let mut qh = 0u32;
    for j in 0..16 {
        let (lo, hi) = (code(x[j]), code(x[j + 16]));
        b[6 + j] = (lo & 0x0F) | ((hi & 0x0F) << 4);
        qh |= u32::from(lo >> 4) << j;
        qh |= u32::from(hi >> 4) << (j + 16);
    }
    b[2..6].copy_from_slice(&qh.to_le_bytes());
}
