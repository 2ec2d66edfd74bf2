//! The fuzz harnesses: one function per kind of user input, each taking arbitrary bytes and
//! required never to panic, hang or allocate what the input does not justify. `tests/fuzz.rs`
//! runs them under proptest on every `cargo test` (a bounded run, seeded from `testdata/`);
//! `fuzz/fuzz_targets/*.rs` runs the same functions under libFuzzer (`cargo fuzz`, see
//! docs/testing.md).
#![allow(dead_code)] // each fuzz target uses one harness

use deepblocks::config::AnyArchitecture;
use deepblocks::core::SafeTensorsStore;
use deepblocks::core::gguf::GgufFile;
use deepblocks::deepseek::blocks;
use deepblocks::params::Accounting;
use deepblocks::sample::{Sampler, SamplingConfig};
use deepblocks::tokenize::TokenizerConfig;

/// A safetensors file: opened from the bytes, then every tensor read as the loader would (2-D
/// as a weight, 1-D widened to f32, others viewed as `[first, rest]`), scanned for non-finite
/// values.
pub fn store(data: &[u8]) {
    let Ok(store) = SafeTensorsStore::from_bytes("fuzz.safetensors", data) else {
        return;
    };
    for info in store.infos() {
        match info.shape[..] {
            [n] => {
                let _ = store.tensor_f32(&info.name, &[n]);
            }
            [r, c] => {
                if let Ok(w) = store.weight(&info.name, [r, c]) {
                    let _ = w.first_non_finite();
                }
            }
            [first, ref rest @ ..] => {
                let cols = rest.iter().product::<usize>();
                let _ = store.weight_reshaped(&info.name, &info.shape, first, cols);
            }
            [] => {}
        }
    }
}

/// A `config.json`: read as any architecture; what reads must count (the accounting) and, for
/// the MLA family, map onto block configs every block accepts.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = AnyArchitecture::from_json_str(text) else {
        return;
    };
    // Counting may overflow 64 bits for absurd sizes: an error, not a panic.
    let _ = Accounting::of(&parsed.architecture, "fuzz");
    if let AnyArchitecture::Mla(arch) = &parsed.architecture {
        arch.validate()
            .expect("a description the reader returns validates");
        blocks::mla_config(arch)
            .expect("a validated description has a softmax scale")
            .validate()
            .expect("the MLA block accepts a validated description");
        blocks::rope_config(arch)
            .validate()
            .expect("the rope block accepts a validated description");
        blocks::cache_config(arch, deepblocks::deepseek::DEFAULT_CACHE_DTYPE)
            .validate()
            .expect("the cache accepts a validated description");
        if let Some(moe) = arch.moe() {
            blocks::router_config(moe, None)
                .validate()
                .expect("the router accepts a validated description");
        }
    }
}

/// A `tokenizer_config.json`.
pub fn tokenizer_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TokenizerConfig::from_json(text);
    }
}

/// The sampler: the bytes become a sampling config, a seed, logits and a history; a sample
/// that succeeds is a valid token id.
pub fn sampler(data: &[u8]) {
    let mut words = data
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            b
        })
        .map(u32::from_le_bytes);
    let mut next = || words.next().unwrap_or(0);
    let config = SamplingConfig {
        repetition_penalty: f32::from_bits(next()),
        frequency_penalty: f32::from_bits(next()),
        presence_penalty: f32::from_bits(next()),
        temperature: f32::from_bits(next()),
        top_k: next() as usize,
        top_p: f32::from_bits(next()),
        min_p: f32::from_bits(next()),
    };
    let seed = u64::from(next()) << 32 | u64::from(next());
    let vocab = (next() % 4096) as usize;
    let logits: Vec<f32> = (0..vocab).map(|_| f32::from_bits(next())).collect();
    let history: Vec<u32> = (0..(next() % 64)).map(|_| next()).collect();
    let Ok(mut sampler) = Sampler::new(config, seed) else {
        return;
    };
    if let Ok(sample) = sampler.sample(&logits, &history) {
        assert!(
            (sample.token as usize) < logits.len(),
            "token {} of {vocab}",
            sample.token
        );
    }
}

/// A GGUF file: its header read from the bytes, then every tensor's data borrowed and its
/// metadata walked.
pub fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data) else {
        return;
    };
    for (_, v) in file.metadata() {
        let _ = (v.as_u64(), v.as_f64(), v.as_str());
    }
    for t in file.tensors() {
        let bytes = file.tensor_data(&t.name).map_or(0, <[u8]>::len);
        assert_eq!(bytes as u64, t.bytes, "{}", t.name);
    }
    // What the loader reads from the header: the description and the tokenizer.
    let _ = deepblocks::deepseek::architecture_from_gguf(&file);
    let _ = deepblocks::deepseek::tokenizer_from_gguf(&file);
}
