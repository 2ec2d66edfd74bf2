//! `Q4_0`: `[d: f16][qs: 16 bytes]`; byte `j` holds weight `j` in its low nibble and weight
//! `j + 16` in its high nibble, weight `i` is `d · (q_i − 8)`.

use super::{read_f16, signed_absmax, write_f16};

pub(super) fn dequantize_block(out: &mut [f32], b: &[u8]) {
    let d = read_f16(b);
    let (lo, hi) = out.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b[2..18]) {
        *l = d * ((q & 0x0F) as i8 - 8) as f32;
        *h = d * ((q >> 4) as i8 - 8) as f32;
    }
}

/// ggml's `quantize_row_q4_0_ref`: `d = max / −8` for the signed value of largest magnitude,
/// `q = min(15, trunc(x / d + 8.5))`.
pub(super) fn quantize_block(b: &mut [u8], x: &[f32]) {
    let d = signed_absmax(x) / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(b, d);
    let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    for (j, q) in b[2..18].iter_mut().enumerate() {
        *q = code(x[j]) | (code(x[j + 16]) << 4);
    }
}
