//! RoPE benchmarks at DeepSeek-V2 shapes: 128 query heads, rotary dimension r = 64, YaRN table.
//!
//! ```text
//! cargo bench --bench rope                  # everything
//! cargo bench --bench rope -- apply/        # only the rotations
//! ```
//!
//! `apply/*` rotates q_pe[t, 128, 64] at positions starting at 100,000 (a decode step t = 1, a
//! prefill chunk t = 128): contiguous out-of-place, the naive twin, and in place inside the full
//! query rows q[t, 128, 128 + 64] as MLA does (`strided`). `k_pe/*` is the shared key part
//! [t, 1, 64] inside the kv_a_proj_with_mqa rows [t, 512 + 64]. Throughput is in rotated
//! elements. `table/*` builds 4096 rows of the table (done once per model, extended on demand).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use deepblocks::rope::{Layout, RopeConfig, RopeScaling, RopeTable, YarnScaling, rope_apply_naive};
use deepblocks_testkit::det_values as values;
use std::hint::black_box;

const N_HEADS: usize = 128;
const R: usize = 64; // qk_rope_head_dim
const D: usize = 128; // qk_nope_head_dim
const C: usize = 512; // kv_lora_rank
const START: usize = 100_000;

fn config(layout: Layout) -> RopeConfig {
    let yarn = YarnScaling {
        mscale: Some(0.707),
        mscale_all_dim: Some(0.707),
        ..YarnScaling::new(40.0, 4096)
    };
    RopeConfig::new(R, 10_000.0, 163_840, layout).with_scaling(RopeScaling::Yarn(yarn))
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    for layout in [Layout::Interleaved, Layout::HalfSplit] {
        let table = RopeTable::with_len(config(layout), START + 128).expect("valid config");
        for t in [1usize, 128] {
            let positions: Vec<usize> = (START..START + t).collect();
            let x = values(t * N_HEADS * R, t as u32);
            let mut out = vec![0.0f32; x.len()];
            g.throughput(Throughput::Elements((t * N_HEADS * R) as u64));
            let id = |name: &str| BenchmarkId::new(format!("{name}/{layout:?}"), format!("t{t}"));
            g.bench_function(id("contiguous"), |b| {
                b.iter(|| {
                    table
                        .apply(black_box(&mut out), black_box(&x), &positions, N_HEADS)
                        .expect("valid shapes")
                })
            });
            let rows = table.cos_sin(&positions).expect("valid positions");
            g.bench_function(id("naive"), |b| {
                b.iter(|| {
                    rope_apply_naive(
                        black_box(&mut out),
                        black_box(&x),
                        rows.cos(),
                        rows.sin(),
                        t,
                        N_HEADS,
                        R,
                        layout,
                    )
                })
            });
            let mut q = values(t * N_HEADS * (D + R), 7);
            g.bench_function(id("strided"), |b| {
                b.iter(|| {
                    table
                        .apply_inplace_strided(black_box(&mut q), &positions, N_HEADS, D + R, D)
                        .expect("valid shapes")
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("k_pe");
    let table = RopeTable::with_len(config(Layout::Interleaved), START + 128).expect("valid");
    for t in [1usize, 128] {
        let positions: Vec<usize> = (START..START + t).collect();
        let mut kv = values(t * (C + R), 3);
        g.throughput(Throughput::Elements((t * R) as u64));
        g.bench_function(BenchmarkId::new("strided", format!("t{t}")), |b| {
            b.iter(|| {
                table
                    .apply_inplace_strided(black_box(&mut kv), &positions, 1, C + R, C)
                    .expect("valid shapes")
            })
        });
    }
    g.finish();
}

fn table(c: &mut Criterion) {
    let mut g = c.benchmark_group("table");
    g.sample_size(10);
    g.throughput(Throughput::Elements((4096 * R / 2) as u64));
    g.bench_function("build_4096_rows", |b| {
        b.iter(|| RopeTable::with_len(black_box(config(Layout::Interleaved)), 4096))
    });
    g.finish();
}

criterion_group!(benches, apply, table);
criterion_main!(benches);
