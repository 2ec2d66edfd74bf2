//! The fuzz harnesses (`tests/harness/mod.rs`) under proptest, on every `cargo test`: arbitrary
//! bytes, and the repository's own files (`testdata/`, the shipped model's configs) mutated —
//! bytes flipped, truncated, extended. Longer runs: `cargo fuzz` on the same harnesses
//! (docs/testing.md).

mod harness;

use std::path::Path;

use proptest::prelude::*;

/// The seed files of a harness.
fn seeds(kind: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<&str> = match kind {
        "store" => vec![
            "testdata/rmsnorm.safetensors",
            "testdata/moe_v3_router.safetensors",
            "testdata/tiny_shakespeare_ppl.safetensors",
            "testdata/params-tiny/model.safetensors",
        ],
        "config" => vec![
            "testdata/configs/deepseek-v2.json",
            "testdata/configs/deepseek-v2-lite.tf5.json",
            "testdata/deepseek/a_lowrank_group_yarn/config.json",
            "testdata/deepseek/c_plain_tied_allmoe/config.json",
            "models/tiny-shakespeare/config.json",
        ],
        "gguf" => vec![
            "testdata/gguf/container.gguf",
            "testdata/gguf/a_lowrank_group_yarn.gguf",
            "testdata/gguf/tiny-tokenizer.gguf",
        ],
        "tokenizer_config" => vec![
            "testdata/tokenize/tokenizer_config.json",
            "models/tiny-shakespeare/tokenizer_config.json",
        ],
        other => panic!("no seeds for {other}"),
    };
    files
        .iter()
        .map(|f| std::fs::read(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect()
}

/// A seed with a few edits: byte flips, a truncation, appended bytes. For the JSON seeds the
/// edits keep to ASCII digits and structure characters half of the time, so many mutants still
/// parse and reach the checks behind the parser.
fn mutate(seed: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for &(at, byte, op) in edits {
        if out.is_empty() {
            out.push(byte);
            continue;
        }
        let i = at % out.len();
        match op % 4 {
            0 => out[i] = byte,
            1 => out[i] = b"0123456789-.,:{}[]\"e"[byte as usize % 20],
            2 => out.truncate(i),
            _ => out.insert(i, byte),
        }
    }
    out
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn store_never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        harness::store(&data);
    }

    #[test]
    fn store_never_panics_on_mutated_checkpoints(pick in 0usize..4, edits in edits()) {
        let seeds = seeds("store");
        let seed = &seeds[pick % seeds.len()];
        // Mostly the header: edits land in its first 4 KiB.
        let edits: Vec<_> = edits.into_iter().map(|(at, b, op)| (at % seed.len().min(4096), b, op)).collect();
        harness::store(&mutate(seed, &edits));
    }

    #[test]
    fn config_never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        harness::config(&data);
    }

    #[test]
    fn config_never_panics_on_mutated_configs(pick in 0usize..5, edits in edits()) {
        let seeds = seeds("config");
        harness::config(&mutate(&seeds[pick % seeds.len()], &edits));
    }

    #[test]
    fn tokenizer_config_never_panics(pick in 0usize..2, edits in edits()) {
        let seeds = seeds("tokenizer_config");
        harness::tokenizer_config(&mutate(&seeds[pick % seeds.len()], &edits));
    }

    #[test]
    fn gguf_never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"GGUF\x03\0\0\0".to_vec(); // past the magic and version, mostly
        bytes.extend(data);
        harness::gguf(&bytes);
    }

    #[test]
    fn gguf_never_panics_on_mutated_files(pick in 0usize..3, edits in edits()) {
        let seeds = seeds("gguf");
        let seed = &seeds[pick % seeds.len()];
        // Mostly the header: edits land in its first 4 KiB.
        let edits: Vec<_> = edits.into_iter().map(|(at, b, op)| (at % seed.len().min(4096), b, op)).collect();
        harness::gguf(&mutate(seed, &edits));
    }

    #[test]
    fn sampler_never_panics(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        harness::sampler(&data);
    }
}

#[test]
fn the_seeds_pass_the_harnesses_unchanged() {
    for kind in ["store", "config", "tokenizer_config", "gguf"] {
        for seed in seeds(kind) {
            match kind {
                "store" => harness::store(&seed),
                "config" => harness::config(&seed),
                "gguf" => harness::gguf(&seed),
                _ => harness::tokenizer_config(&seed),
            }
        }
    }
}
