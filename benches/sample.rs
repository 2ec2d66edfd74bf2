//! The sampler on a DeepSeek-V2-sized row of logits (V = 102,400): greedy, temperature + top-p
//! (a full sort of the vocabulary), top-k 50 + top-p (a partial selection first), min-p.

use criterion::{Criterion, criterion_group, criterion_main};
use deepblocks::sample::{Sampler, SamplingConfig};

const V: usize = 102_400;

/// Logits shaped like a model's: a few strong candidates over a long tail.
fn logits() -> Vec<f32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..V)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            let boost = if i % 5000 == 0 { 8.0 } else { 0.0 };
            4.0 * u - 2.0 + boost
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let x = logits();
    let history: Vec<u32> = (0..256).map(|i| (i * 397) % V as u32).collect();
    let configs = [
        ("greedy", SamplingConfig::greedy()),
        (
            "t0.7_top_p0.9",
            SamplingConfig {
                temperature: 0.7,
                top_p: 0.9,
                ..SamplingConfig::default()
            },
        ),
        (
            "t0.7_top_k50_top_p0.9",
            SamplingConfig {
                temperature: 0.7,
                top_k: 50,
                top_p: 0.9,
                ..SamplingConfig::default()
            },
        ),
        (
            "t1_min_p0.05_rep1.1",
            SamplingConfig {
                min_p: 0.05,
                repetition_penalty: 1.1,
                ..SamplingConfig::default()
            },
        ),
    ];
    let mut g = c.benchmark_group("sample_v102400");
    for (name, config) in configs {
        let mut s = Sampler::new(config, 0).unwrap();
        g.bench_function(name, |b| b.iter(|| s.sample(&x, &history).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
