//! Core kernel benchmarks, with the machine's limits measured in the same run.
//!
//! ```text
//! cargo bench --bench kernels                 # everything (about 3 minutes)
//! cargo bench --bench kernels -- linear_decode
//! cargo bench --bench kernels -- attention_blocks
//! cargo bench --bench kernels -- pool_handoff
//! ```
//!
//! Throughput is reported by criterion as `elem/s` = FLOP/s (2 per multiply-add) and as bytes/s of
//! the data the kernel must read (GiB/s, binary units). `limits/*` are the ceilings those figures
//! are judged against: `stream_read` is a plain parallel sum over a buffer 16× larger than L3 (DRAM
//! read bandwidth), `fma_peak` is 12 independent FMA chains per thread that never touch memory.
//! docs/performance.md records the figures.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use deepblocks::core::half::bf16;
use deepblocks::core::quant::BlockFormat;
use deepblocks::core::quant::fp8::Fp8Block;
use deepblocks::core::{
    self, Bf16Products, DType, Weight, WeightFormat, linear, linear_gemm, linear_naive,
    linear_tiled, softmax_rows,
};
use deepblocks::norm::rms_norm;
use deepblocks_testkit::det_values as values;
use std::hint::black_box;

#[path = "common/limits.rs"]
mod common_limits;
use common_limits::limits;
use std::time::Duration;

fn weight(n: usize, k: usize, dtype: DType) -> Weight {
    let v: Vec<f32> = values(n * k, n as u32 ^ k as u32)
        .into_iter()
        .map(|x| x * 0.05)
        .collect();
    match dtype {
        DType::F32 => Weight::from_f32(v, n, k).expect("n*k values"),
        DType::BF16 => Weight::from_bf16(v.iter().map(|&x| bf16::from_f32(x)).collect(), n, k)
            .expect("n*k values"),
        DType::F16 => Weight::from_f32(v, n, k)
            .expect("n*k values")
            .to_dtype(DType::F16),
    }
}

/// The block formats and FP8 (DeepSeek-V3's blocks), with their bench names.
fn quantized_formats() -> Vec<(String, WeightFormat)> {
    let mut all: Vec<(String, WeightFormat)> = BlockFormat::ALL
        .map(|f| (f.to_string(), WeightFormat::Blocks(f)))
        .to_vec();
    all.push(("FP8_E4M3".into(), WeightFormat::Fp8(Fp8Block::DEEPSEEK_V3)));
    all
}

fn linear_prefill(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear_prefill");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    let (t, k, n) = (128, 2048, 2048);
    let x = values(t * k, 7);
    let mut y = vec![0.0f32; t * n];
    for dtype in [DType::F32, DType::BF16] {
        let w = weight(n, k, dtype);
        g.throughput(Throughput::ElementsAndBytes {
            elements: (2 * t * k * n) as u64,
            bytes: (w.bytes() + 4 * (t * k + t * n)) as u64,
        });
        g.bench_function(
            BenchmarkId::new(format!("{dtype}"), format!("{t}x{k}x{n}")),
            |b| b.iter(|| linear(black_box(&mut y), black_box(&x), &w, t)),
        );
    }
    for (name, format) in quantized_formats() {
        let w = weight(n, k, DType::F32)
            .to_format(format, "bench")
            .expect("2048 is whole blocks");
        g.throughput(Throughput::ElementsAndBytes {
            elements: (2 * t * k * n) as u64,
            bytes: (w.bytes() + 4 * (t * k + t * n)) as u64,
        });
        g.bench_function(BenchmarkId::new(name, format!("{t}x{k}x{n}")), |b| {
            b.iter(|| linear(black_box(&mut y), black_box(&x), &w, t))
        });
    }
    // bf16 on both wide paths: the tiled kernel (widens in registers) and sgemm on widened blocks;
    // at 128 rows `linear` picks the latter, at a MoE expert's dozen rows the former; and with
    // the inputs rounded to bf16 (`Bf16Products::Bf16`: `vdpbf16ps` where the CPU has
    // AVX512-BF16, the weights read in place).
    for (t, n) in [(128, 2048), (32, 2048), (12, 1408)] {
        let w = weight(n, k, DType::BF16);
        let x = values(t * k, 7);
        let mut y = vec![0.0f32; t * n];
        g.throughput(Throughput::ElementsAndBytes {
            elements: (2 * t * k * n) as u64,
            bytes: (w.bytes() + 4 * (t * k + t * n)) as u64,
        });
        for (path, f) in [
            (
                "tiled",
                linear_tiled as fn(&mut [f32], &[f32], &Weight, usize),
            ),
            ("gemm", linear_gemm),
        ] {
            g.bench_function(
                BenchmarkId::new(format!("BF16_{path}"), format!("{t}x{k}x{n}")),
                |b| b.iter(|| f(black_box(&mut y), black_box(&x), &w, t)),
            );
        }
        let w = w.with_bf16_products(Bf16Products::Bf16);
        g.bench_function(
            BenchmarkId::new("BF16_inputs", format!("{t}x{k}x{n}")),
            |b| b.iter(|| linear(black_box(&mut y), black_box(&x), &w, t)),
        );
    }
    g.finish();
}

fn linear_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear_decode");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    let k = 2048;
    let x = values(k, 11);
    for n in [10944, 102400] {
        let mut y = vec![0.0f32; n];
        for dtype in [DType::F32, DType::BF16] {
            let w = weight(n, k, dtype);
            g.throughput(Throughput::ElementsAndBytes {
                elements: (2 * k * n) as u64,
                bytes: w.bytes() as u64,
            });
            g.bench_function(
                BenchmarkId::new(format!("{dtype}"), format!("1x{k}x{n}")),
                |b| b.iter(|| linear(black_box(&mut y), black_box(&x), &w, 1)),
            );
        }
        // bf16 with its input rounded to bf16 (`vdpbf16ps` where the CPU has AVX512-BF16).
        let w = weight(n, k, DType::BF16).with_bf16_products(Bf16Products::Bf16);
        g.bench_function(BenchmarkId::new("BF16_inputs", format!("1x{k}x{n}")), |b| {
            b.iter(|| linear(black_box(&mut y), black_box(&x), &w, 1))
        });
    }
    // Block formats: the activations quantized once, integer dots per weight row; FP8: f32
    // activations, codes widened in registers.
    for n in [10944, 102400] {
        let mut y = vec![0.0f32; n];
        let base = weight(n, k, DType::F32);
        for (name, format) in quantized_formats() {
            let w = base
                .to_format(format, "bench")
                .expect("2048 is whole blocks");
            g.throughput(Throughput::ElementsAndBytes {
                elements: (2 * k * n) as u64,
                bytes: w.bytes() as u64,
            });
            g.bench_function(BenchmarkId::new(name, format!("1x{k}x{n}")), |b| {
                b.iter(|| linear(black_box(&mut y), black_box(&x), &w, 1))
            });
        }
    }
    // The baseline the GEMV kernel replaces: matrixmultiply's sgemm on a single row.
    let n = 10944;
    let w = weight(n, k, DType::F32);
    let wf = w.to_f32_vec();
    let mut y = vec![0.0f32; n];
    g.throughput(Throughput::ElementsAndBytes {
        elements: (2 * k * n) as u64,
        bytes: w.bytes() as u64,
    });
    g.bench_function(
        BenchmarkId::new("sgemm_one_row_F32", format!("1x{k}x{n}")),
        |b| {
            b.iter(|| {
                // SAFETY: x is [1, k], wf is [n, k] read as [k, n] with strides (1, k), y is [1, n].
                unsafe {
                    matrixmultiply::sgemm(
                        1,
                        k,
                        n,
                        1.0,
                        x.as_ptr(),
                        k as isize,
                        1,
                        wf.as_ptr(),
                        1,
                        k as isize,
                        0.0,
                        y.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        },
    );
    // And the naive twin, for scale.
    g.bench_function(BenchmarkId::new("naive_F32", format!("1x{k}x{n}")), |b| {
        b.iter(|| linear_naive(black_box(&mut y), black_box(&x), &w, 1))
    });
    g.finish();
}

fn norm_softmax(c: &mut Criterion) {
    let mut g = c.benchmark_group("rows");
    let h = 2048;
    let w = values(h, 3);
    for t in [1, 128] {
        let x = values(t * h, 5);
        let mut out = vec![0.0f32; t * h];
        g.throughput(Throughput::Bytes((4 * (2 * t * h + h)) as u64));
        g.bench_function(BenchmarkId::new("rms_norm", format!("{t}x{h}")), |b| {
            b.iter(|| rms_norm(black_box(&mut out), black_box(&x), &w, 1e-6, t, h))
        });
    }
    // Attention-shaped softmax: 16 heads over 4096 cached positions.
    let (rows, cols) = (16, 4096);
    let src = values(rows * cols, 9);
    let mut x = src.clone();
    g.throughput(Throughput::Bytes((4 * rows * cols) as u64));
    g.bench_function(BenchmarkId::new("softmax", format!("{rows}x{cols}")), |b| {
        b.iter(|| {
            x.copy_from_slice(&src);
            softmax_rows(black_box(&mut x), rows, cols)
        })
    });
    // The model's NaN check after each block: a decode step of V2-Lite shapes reads 2·h per layer
    // and the V = 102,400 logits.
    for len in [2048, 102_400] {
        let x = values(len, 11);
        g.throughput(Throughput::Bytes((4 * len) as u64));
        g.bench_function(BenchmarkId::new("first_non_finite", len), |b| {
            b.iter(|| core::first_non_finite(black_box(&x)))
        });
    }
    g.finish();
}

/// Block weights at the row counts prefill gives them: a MoE expert's few (k 2048, n 1408) and
/// a dense matrix's whole prompt (n 2048).
fn linear_rows(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear_rows");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    let k = 2048;
    for format in [
        BlockFormat::Q8_0,
        BlockFormat::Q4_K,
        BlockFormat::Q6_K,
        BlockFormat::Q4_0,
    ] {
        for (t, n) in [(4, 1408), (8, 1408), (12, 1408), (32, 2048), (128, 2048)] {
            let w = weight(n, k, DType::F32)
                .to_format(WeightFormat::Blocks(format), "bench")
                .expect("2048 is whole blocks");
            let x = values(t * k, 7);
            let mut y = vec![0.0f32; t * n];
            g.throughput(Throughput::Elements((2 * t * k * n) as u64));
            g.bench_function(
                BenchmarkId::new(format.to_string(), format!("{t}x{k}x{n}")),
                |b| b.iter(|| linear(black_box(&mut y), black_box(&x), &w, t)),
            );
        }
    }
    g.finish();
}

/// The two products of one decode step's attention over a bf16 latent cache, at DeepSeek's
/// shapes (16 query rows, keys of 576, values of 512), on one thread, over every block of 64 keys
/// of a 16,384-key cache (18.9 MB): read as they lie (`bf16_rows`) or widened to f32 and run
/// through `matmul_strided`, each on its dispatching (AVX-512 where allowed) and its AVX2 kernels,
/// and as AVX512-BF16 dot products where the CPU has them (`bf16_rows_dot`); and the same cache
/// as `Q8_0` rows (10.6 MB), with the mix on f32 registers or in integers.
fn attention_blocks(c: &mut Criterion) {
    use deepblocks::core::aligned::AlignedVec;
    use deepblocks::core::bf16_rows::{
        Bf16Pairs, Bf16Queries, bf16_dot_mix, bf16_dot_scores, bf16_mix, bf16_mix_avx2,
        bf16_scores, bf16_scores_avx2,
    };
    use deepblocks::core::quant::q8_rows::{
        Q8Queries, Q8Weights, q8_mix, q8_mix_quantized, q8_quantize_rows, q8_row_codes, q8_scores,
    };
    let (rp, dk, dv, kb, s) = (16, 576, 512, 64, 16_384);
    // On cache lines, as the latent cache keeps its rows.
    let cache: AlignedVec<bf16> = values(s * dk, 3)
        .into_iter()
        .map(|x| bf16::from_f32(0.1 * x))
        .collect();
    let qt = values(dk * rp, 4);
    let queries = Bf16Queries::from_transposed(&qt, dk, rp);
    let p = values(kb * rp, 5);
    let (mut st, mut o, mut wide) = (
        AlignedVec::<f32>::zeros(kb * rp),
        AlignedVec::<f32>::zeros(rp * dv),
        AlignedVec::<f32>::zeros(kb * dk),
    );
    let mut g = c.benchmark_group("attention_blocks");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements((2 * rp * s * (dk + dv)) as u64));
    let blocks = || cache.chunks_exact(kb * dk);
    g.bench_function("bf16_rows", |b| {
        b.iter(|| {
            let mut next = blocks().skip(1);
            for block in blocks() {
                let ahead = next.next().unwrap_or(&[]);
                bf16_scores(&mut st, block, dk, &queries, kb);
                bf16_mix(&mut o, &p, block, dk, kb, dv, rp, ahead);
            }
        })
    });
    // The same rows through AVX512-BF16's dot products where the CPU has them (the portable
    // loops elsewhere: not a figure to compare).
    if deepblocks::core::bf16_dot() {
        let mut pairs = Bf16Pairs::new();
        g.bench_function("bf16_rows_dot", |b| {
            b.iter(|| {
                let mut next = blocks().skip(1);
                for block in blocks() {
                    let ahead = next.next().unwrap_or(&[]);
                    bf16_dot_scores(&mut st, block, dk, &queries, kb);
                    bf16_dot_mix(&mut o, &p, block, dk, kb, dv, rp, &mut pairs, ahead);
                }
            })
        });
    }
    g.bench_function("bf16_rows_avx2", |b| {
        b.iter(|| {
            for block in blocks() {
                bf16_scores_avx2(&mut st, block, dk, &queries, kb);
                bf16_mix_avx2(&mut o, &p, block, dk, kb, dv, rp);
            }
        })
    });
    // The same cache as Q8_0 rows (648 bytes a row): integer scores, then the mix on f32
    // registers (`q8_rows`) or in integers with 8-bit probabilities (`q8_rows_quantized_mix`).
    let (stride, nbs) = (q8_row_codes(dk), q8_row_codes(dk) / 32);
    let widened: Vec<f32> = cache.iter().map(|x| x.to_f32()).collect();
    let (mut codes, mut scales) = (
        AlignedVec::<u8>::zeros(s * stride),
        AlignedVec::<f32>::zeros(s * nbs),
    );
    q8_quantize_rows(&mut codes, &mut scales, &widened, dk);
    let q8_queries = Q8Queries::from_transposed(&qt, dk, rp);
    let probabilities: Vec<f32> = p.iter().map(|x| x.abs()).collect();
    let mut weights = Q8Weights::new();
    let q8_blocks = || {
        codes
            .chunks_exact(kb * stride)
            .zip(scales.chunks_exact(kb * nbs))
    };
    g.bench_function("q8_rows", |b| {
        b.iter(|| {
            for (c, d) in q8_blocks() {
                q8_scores(&mut st, c, d, &q8_queries, kb);
                q8_mix(&mut o, &probabilities, c, d, stride, kb, dv, rp);
            }
        })
    });
    g.bench_function("q8_rows_quantized_mix", |b| {
        b.iter(|| {
            let mut next = q8_blocks().skip(1);
            for (c, d) in q8_blocks() {
                let ahead = next.next().map_or(&[][..], |(c, _)| c);
                q8_scores(&mut st, c, d, &q8_queries, kb);
                q8_mix_quantized(
                    &mut o,
                    &probabilities,
                    c,
                    d,
                    stride,
                    kb,
                    dv,
                    rp,
                    &mut weights,
                    ahead,
                );
            }
        })
    });
    for (name, gemm) in [
        (
            "widened_strided",
            core::matmul_strided
                as fn(&mut [f32], &[f32], usize, usize, &[f32], usize, usize, usize, bool),
        ),
        ("widened_strided_avx2", core::matmul_strided_avx2),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for block in blocks() {
                    core::widen_into(&mut wide, block);
                    gemm(&mut st, &wide, dk, 1, &qt, kb, dk, rp, false);
                    gemm(&mut o, &wide, 1, dk, &p, dv, kb, rp, true);
                }
            })
        });
    }
    g.finish();
    black_box((&st, &o));
}

/// What a parallel loop costs beyond its work, started from the caller's thread (outside the
/// pool: the loop is handed to the pool and the caller sleeps until it ends) and from a pool
/// thread ([`core::on_pool`]): 8 loops of two 5 µs pieces of work back to back, with and without
/// 100 µs of serial work before each (long enough for an idle pool thread to go to sleep).
fn pool_handoff(c: &mut Criterion) {
    use rayon::prelude::*;
    use std::time::Instant;
    let busy = |us: u64| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(us) {
            std::hint::spin_loop();
        }
    };
    let loops = |gap: u64| {
        for _ in 0..8 {
            busy(gap);
            (0..2).into_par_iter().for_each(|_| busy(5));
        }
    };
    let mut g = c.benchmark_group("pool_handoff");
    g.sample_size(30).warm_up_time(Duration::from_secs(1));
    for gap in [0, 100] {
        g.bench_function(BenchmarkId::new("from_the_caller", gap), |b| {
            b.iter(|| loops(gap))
        });
        g.bench_function(BenchmarkId::new("on_pool", gap), |b| {
            b.iter(|| core::on_pool(|| loops(gap)))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    limits,
    attention_blocks,
    linear_decode,
    linear_prefill,
    linear_rows,
    norm_softmax,
    pool_handoff
);
criterion_main!(benches);
