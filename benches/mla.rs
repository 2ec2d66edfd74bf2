//! MLA decode-step benchmark at DeepSeek-V2-Lite shapes (16 heads, c 512, r 64, d 128, v 128,
//! hidden 2048, full q_proj, bf16 weights): one new token against 512, 4096 and 16384 cached
//! tokens, naive (expand every cached latent through kv_b_proj) vs absorbed; and absorbed with
//! `d` and `v` doubled to 256, whose cost per cached token must not change (it is `2·n·(c + r)`).
//!
//! ```text
//! cargo bench --bench mla
//! ```

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use deepblocks::mla::{
    AttentionPath, DType, Layout, Mla, MlaCache, MlaCacheConfig, MlaConfig, MlaWeights, QProj,
    QProjConfig, RmsNorm, RmsNormConfig, RopeConfig, RopeTable, Weight,
};
use deepblocks_testkit::det_values;
use std::hint::black_box;
use std::time::Duration;

/// Fixed values in [-0.05, 0.05).
fn values(len: usize, seed: u32) -> Vec<f32> {
    det_values(len, seed)
        .into_iter()
        .map(|v| v * 0.05)
        .collect()
}

fn weight(rows: usize, cols: usize, seed: u32) -> Weight {
    Weight::from_f32(values(rows * cols, seed), rows, cols)
        .expect("rows*cols values")
        .to_dtype(DType::BF16)
}

const MAX_POS: usize = 32_768;

/// An MLA layer at V2-Lite shapes with head dims `d` (no-RoPE) and `v` (value).
fn build(d: usize, v: usize) -> Mla {
    let (h, n, cl, r) = (2048, 16, 512, 64);
    let config = MlaConfig {
        hidden_size: h,
        num_heads: n,
        q_proj: QProjConfig::Full,
        kv_lora_rank: cl,
        qk_nope_head_dim: d,
        qk_rope_head_dim: r,
        v_head_dim: v,
        softmax_scale: ((d + r) as f32).powf(-0.5),
    };
    let weights = MlaWeights {
        q: QProj::Full {
            q_proj: weight(n * (d + r), h, 1),
        },
        kv_a_proj_with_mqa: weight(cl + r, h, 2),
        kv_a_layernorm: RmsNorm::ones(RmsNormConfig {
            hidden: cl,
            eps: 1e-6,
        })
        .expect("valid norm"),
        kv_b: weight(n * (d + v), cl, 3).into(),
        o_proj: weight(h, n * v, 4),
    };
    Mla::new(config, weights).expect("consistent shapes")
}

fn decode(c: &mut Criterion) {
    let (h, cl, r) = (2048, 512, 64);
    let max_pos = MAX_POS;
    let mla = build(128, 128);
    let wide = build(256, 256);
    let rope = RopeTable::with_len(
        RopeConfig::new(r, 10_000.0, max_pos, Layout::Interleaved),
        max_pos,
    )
    .expect("valid rope");
    let x = values(h, 5);
    let mut y = vec![0.0f32; h];

    let mut g = c.benchmark_group("mla_decode_v2_lite");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    for cached in [512usize, 4096, 16384] {
        let sizes = MlaCacheConfig {
            num_layers: 1,
            kv_lora_rank: cl,
            qk_rope_head_dim: r,
            max_positions: max_pos,
            dtype: DType::BF16,
        };
        let mut cache = MlaCache::with_capacity(sizes, cached + 1).expect("valid cache");
        cache
            .layer_mut(0)
            .expect("layer 0")
            .append(&values(cached * cl, 6), &values(cached * r, 7), cached)
            .expect("fits");
        for path in [AttentionPath::Absorbed, AttentionPath::Naive] {
            g.bench_function(BenchmarkId::new(format!("{path:?}"), cached), |b| {
                b.iter(|| {
                    let layer = cache.layer_mut(0).expect("layer 0");
                    mla.forward(black_box(&mut y), black_box(&x), 1, layer, &rope, path)
                        .expect("decode step");
                    layer.truncate(cached).expect("shorter");
                })
            });
        }
        if cached == 4096 {
            g.bench_function(BenchmarkId::new("Absorbed_d256_v256", cached), |b| {
                b.iter(|| {
                    let layer = cache.layer_mut(0).expect("layer 0");
                    wide.forward(
                        black_box(&mut y),
                        black_box(&x),
                        1,
                        layer,
                        &rope,
                        AttentionPath::Absorbed,
                    )
                    .expect("decode step");
                    layer.truncate(cached).expect("shorter");
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
