//! MoE layer benchmarks at DeepSeek-V2-Lite shapes: 64 routed experts, 6 per token, hidden 2048,
//! expert width 1408, 2 shared experts (one MLP of width 2816), greedy softmax routing, bf16
//! weights (random, seeded; about 1.1 GB).
//!
//! ```text
//! cargo bench --bench moe                     # everything
//! cargo bench --bench moe -- moe_layer/decode
//! cargo bench --bench moe -- --quick          # a brief check
//! ```
//!
//! - `moe_layer/{decode_1_token, prefill_128_tokens}`: `Moe::forward` (routing, routed experts,
//!   shared experts). Throughput is tokens/s (criterion's `elem/s`).
//! - `moe_routed/*`: the routed sum only, for one fixed routing of 128 tokens: the grouped
//!   dispatch (experts in parallel over rayon, each expert's linears parallel inside) against the
//!   same grouping with the experts run one after another (parallel only inside each linear),
//!   which is how the nesting of rayon parallelism was judged.
//! - `moe_routed/decode_*`: the same comparison for one token.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use deepblocks::core::half::bf16;
use deepblocks::core::{Buffer, Weight};
use deepblocks::moe::{
    Experts, Mlp, Moe, MoeConfig, RouterConfig, Routing, SharedExperts, TopkMethod,
};
use std::hint::black_box;
use std::time::Duration;

const E: usize = 64;
const K: usize = 6;
const H: usize = 2048;
const I: usize = 1408;
const N_SHARED: usize = 2;

/// Deterministic values in [-scale, scale) (splitmix64), so every run benchmarks the same data.
fn values(len: usize, seed: u64, scale: f32) -> impl Iterator<Item = f32> {
    let mut s = seed;
    (0..len).map(move |_| {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    })
}

fn bf16_weight(rows: usize, cols: usize, seed: u64, scale: f32) -> Weight {
    let data: Vec<bf16> = values(rows * cols, seed, scale)
        .map(bf16::from_f32)
        .collect();
    Weight::new(Buffer::from_vec(data), rows, cols).expect("rows * cols values")
}

/// The V2-Lite MoE layer, experts packed as transformers 5 stores them.
fn v2_lite_layer() -> Moe {
    let config = MoeConfig {
        hidden_size: H,
        moe_intermediate_size: I,
        n_shared_experts: N_SHARED,
        router: RouterConfig {
            topk_method: TopkMethod::Greedy,
            ..RouterConfig::new(E, K)
        },
    };
    let std = 0.02; // values in ±0.035: a trained layer's scale, with room for SiLU to bend
    let experts = Experts::from_packed(
        &bf16_weight(E * 2 * I, H, 1, std * 1.7),
        &bf16_weight(E * H, I, 2, std * 1.7),
        E,
    )
    .expect("packed V2-Lite experts");
    let w = I * N_SHARED;
    let shared = Mlp::new(
        bf16_weight(w, H, 3, std * 1.7),
        bf16_weight(w, H, 4, std * 1.7),
        bf16_weight(H, w, 5, std * 1.7),
    )
    .expect("shared experts");
    let gate = bf16_weight(E, H, 6, 0.05);
    Moe::new(config, gate, None, experts, SharedExperts::Mlp(shared)).expect("V2-Lite layer")
}

fn hidden(t: usize) -> Vec<f32> {
    values(t * H, 7 + t as u64, 1.0).collect()
}

/// The grouped dispatch with the experts run one after another: the baseline for nesting.
fn routed_sequential(moe: &Moe, out: &mut [f32], x: &[f32], routing: &Routing) {
    let (t, k) = (routing.tokens(), routing.k());
    out.fill(0.0);
    for j in 0..E {
        let rows: Vec<(usize, usize)> = (0..t * k)
            .filter(|&n| routing.ids()[n] == j)
            .map(|n| (n / k, n % k))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let mut xe = vec![0.0f32; rows.len() * H];
        for (dst, &(token, _)) in xe.chunks_exact_mut(H).zip(&rows) {
            dst.copy_from_slice(&x[token * H..(token + 1) * H]);
        }
        let mut ye = vec![0.0f32; rows.len() * H];
        moe.experts()
            .get(j)
            .forward(&mut ye, &xe, rows.len())
            .expect("shapes match");
        for (y, &(token, slot)) in ye.chunks_exact(H).zip(&rows) {
            let g = routing.token_weights(token)[slot];
            for (o, v) in out[token * H..(token + 1) * H].iter_mut().zip(y) {
                *o += g * v;
            }
        }
    }
}

fn benches(c: &mut Criterion) {
    eprintln!(
        "moe: V2-Lite layer, {} rayon threads; building 1.1 GB of bf16 weights",
        rayon::current_num_threads()
    );
    let moe = v2_lite_layer();

    let mut g = c.benchmark_group("moe_layer");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    for (name, t) in [("decode_1_token", 1), ("prefill_128_tokens", 128)] {
        let x = hidden(t);
        let mut out = vec![0.0f32; t * H];
        g.throughput(Throughput::Elements(t as u64));
        g.bench_function(name, |b| {
            b.iter(|| moe.forward(&mut out, black_box(&x), t).expect("forward"))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("moe_routed");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    for t in [1, 128] {
        let x = hidden(t);
        let routing = moe.router().route(&x, t).expect("route");
        let mut out = vec![0.0f32; t * H];
        g.throughput(Throughput::Elements(t as u64));
        g.bench_with_input(
            BenchmarkId::new("grouped_parallel_experts", t),
            &t,
            |b, _| {
                b.iter(|| {
                    moe.routed_grouped(&mut out, black_box(&x), &routing)
                        .expect("dispatch")
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("grouped_sequential_experts", t),
            &t,
            |b, _| b.iter(|| routed_sequential(&moe, &mut out, black_box(&x), &routing)),
        );
        if t == 1 {
            g.bench_with_input(
                BenchmarkId::new("decode_parallel_experts", t),
                &t,
                |b, _| {
                    b.iter(|| {
                        moe.routed_decode(&mut out, black_box(&x), &routing)
                            .expect("decode")
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(moe_benches, benches);
criterion_main!(moe_benches);
