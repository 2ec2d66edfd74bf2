//! The machine's limits, measured in the same run as the kernels judged against them: DRAM read
//! bandwidth (a parallel sum over 512 MiB, 16× the L3 of the Zen 3 these benches were first
//! taken on) and peak f32 FLOP/s (12 independent 8-wide FMA chains per thread, no memory; and
//! 16-wide where the process may use AVX-512F; bf16 tile products where it may use AMX; the
//! bf16 and int8 dot products of AVX512-BF16 and AVX-512 VNNI where the attention kernels use
//! them).
//! Included by `kernels.rs` and `mla.rs` with `#[path]`.

use criterion::{Criterion, Throughput};
use deepblocks::core::probe;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Elements of the bandwidth probe's buffer (512 MiB of f32).
const STREAM_LEN: usize = 128 << 20;
/// Iterations of the FMA probe per thread.
const FMA_ITERS: usize = 1 << 20;
/// Iterations of the tile probe per thread (four 16 × 16 × 32 products each).
#[allow(dead_code)]
const TILE_ITERS: usize = 1 << 16;

/// `limits/stream_read_512MiB`, `limits/fma_peak_all_threads`, `limits/fma_peak_one_thread`.
pub fn limits(c: &mut Criterion) {
    eprintln!(
        "{} kernels, {} rayon threads",
        deepblocks::core::isa().name(),
        rayon::current_num_threads()
    );
    let mut g = c.benchmark_group("limits");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    let buf = vec![1.0f32; STREAM_LEN];
    g.throughput(Throughput::Bytes((buf.len() * 4) as u64));
    g.bench_function("stream_read_512MiB", |b| {
        b.iter(|| probe::stream_sum(black_box(&buf)))
    });
    drop(buf);
    let flops = probe::fma_peak_flops(FMA_ITERS, rayon::current_num_threads());
    g.throughput(Throughput::Elements(flops));
    g.bench_function("fma_peak_all_threads", |b| {
        b.iter(|| probe::fma_peak(black_box(FMA_ITERS)))
    });
    if probe::fma_peak_wide(1).is_some() {
        g.throughput(Throughput::Elements(probe::fma_peak_wide_flops(
            FMA_ITERS,
            rayon::current_num_threads(),
        )));
        g.bench_function("fma_peak_avx512_all_threads", |b| {
            b.iter(|| probe::fma_peak_wide(black_box(FMA_ITERS)))
        });
    }
    let threads = rayon::current_num_threads();
    if probe::bf16_dot_peak(1).is_some() {
        let ops = probe::dot_peak_ops(FMA_ITERS, threads, probe::BF16_DOT_LANES);
        g.throughput(Throughput::Elements(ops));
        g.bench_function("bf16_dot_peak_all_threads", |b| {
            b.iter(|| probe::bf16_dot_peak(black_box(FMA_ITERS)))
        });
    }
    if probe::int8_dot_peak(1).is_some() {
        let ops = probe::dot_peak_ops(FMA_ITERS, threads, probe::INT8_DOT_LANES);
        g.throughput(Throughput::Elements(ops));
        g.bench_function("int8_dot_peak_all_threads", |b| {
            b.iter(|| probe::int8_dot_peak(black_box(FMA_ITERS)))
        });
    }
    let one = probe::fma_peak_flops(FMA_ITERS, 1);
    g.throughput(Throughput::Elements(one));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a 1-thread pool");
    g.bench_function("fma_peak_one_thread", |b| {
        b.iter(|| pool.install(|| probe::fma_peak(black_box(FMA_ITERS))))
    });
    g.finish();
}

/// The limits as numbers, for a summary printed beside the figures they judge.
#[allow(dead_code)] // kernels.rs reports through criterion only
pub struct Limits {
    /// DRAM read bandwidth, bytes per second.
    pub read_bytes_per_s: f64,
    /// Peak f32 FLOP/s on every rayon thread, 8-wide FMAs (AVX2).
    pub flops_per_s: f64,
    /// The same with 16-wide FMAs, where the process may use AVX-512F.
    pub wide_flops_per_s: Option<f64>,
    /// Peak bf16-product FLOP/s of the AMX tile unit on every rayon thread, where the process
    /// may use it.
    pub tile_flops_per_s: Option<f64>,
    /// Peak FLOP/s of AVX512-BF16's `vdpbf16ps` on every rayon thread, where the process may use
    /// it (`deepblocks_core::bf16_dot`).
    pub bf16_dot_flops_per_s: Option<f64>,
    /// Peak operations per second (2 a multiply-add) of 512-bit `vpdpbusd` on every rayon
    /// thread, where the integer attention kernels use it.
    pub int8_dot_ops_per_s: Option<f64>,
}

/// Measures [`Limits`]: the best of `rounds` timings of each probe.
#[allow(dead_code)]
pub fn measure(rounds: usize) -> Limits {
    let buf = vec![1.0f32; STREAM_LEN];
    let read = best_seconds(rounds, || {
        black_box(probe::stream_sum(black_box(&buf)));
    });
    drop(buf);
    let fma = best_seconds(rounds, || {
        black_box(probe::fma_peak(black_box(FMA_ITERS)));
    });
    let threads = rayon::current_num_threads();
    let wide_flops_per_s = probe::fma_peak_wide(1).map(|_| {
        let secs = best_seconds(rounds, || {
            black_box(probe::fma_peak_wide(black_box(FMA_ITERS)));
        });
        probe::fma_peak_wide_flops(FMA_ITERS, threads) as f64 / secs
    });
    let tile_flops_per_s = probe::tile_peak(1).map(|_| {
        let secs = best_seconds(rounds, || {
            black_box(probe::tile_peak(black_box(TILE_ITERS)));
        });
        probe::tile_peak_flops(TILE_ITERS, threads) as f64 / secs
    });
    let bf16_dot_flops_per_s = probe::bf16_dot_peak(1).map(|_| {
        let secs = best_seconds(rounds, || {
            black_box(probe::bf16_dot_peak(black_box(FMA_ITERS)));
        });
        probe::dot_peak_ops(FMA_ITERS, threads, probe::BF16_DOT_LANES) as f64 / secs
    });
    let int8_dot_ops_per_s = probe::int8_dot_peak(1).map(|_| {
        let secs = best_seconds(rounds, || {
            black_box(probe::int8_dot_peak(black_box(FMA_ITERS)));
        });
        probe::dot_peak_ops(FMA_ITERS, threads, probe::INT8_DOT_LANES) as f64 / secs
    });
    Limits {
        read_bytes_per_s: (STREAM_LEN * 4) as f64 / read,
        flops_per_s: probe::fma_peak_flops(FMA_ITERS, threads) as f64 / fma,
        wide_flops_per_s,
        tile_flops_per_s,
        bf16_dot_flops_per_s,
        int8_dot_ops_per_s,
    }
}

/// The best (least) wall time of `rounds` calls of `f`, after one call to warm up.
#[allow(dead_code)]
pub fn best_seconds(rounds: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..rounds.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}
