//! Writing GGUF (`Model::to_gguf`, `examples/quantize.rs`): what deepblocks writes is what
//! llama.cpp's own tools write — tensor by tensor, byte for byte — and reads back to the same model.

use std::path::PathBuf;

use deepblocks_core::gguf::{GgufFile, GgufValue};
use deepblocks_deepseek::{
    Error, LoadOptions, Model, Positions, Recipe, architecture_from_gguf, gguf_metadata,
    tokenizer_from_gguf,
};
use deepblocks_testkit::{close_report, testdata_dir};
use deepblocks_tokenize::Tokenizer;

/// Load options whose bf16 matrices multiply f32 inputs (`Bf16Products::F32`): these tests
/// compare layouts and converters, not the rounding of inputs.
fn exact() -> deepblocks_deepseek::LoadOptions {
    deepblocks_deepseek::LoadOptions {
        bf16_products: deepblocks_deepseek::Bf16Products::F32,
        ..Default::default()
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gguf-write");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn fixture(name: &str) -> PathBuf {
    testdata_dir().join("gguf").join(name)
}

fn logits(m: &Model, ids: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache(ids.len()).unwrap();
    m.forward(ids, &mut cache, Positions::All).unwrap()
}

/// `ours` holds every tensor of `theirs` with the same dimensions and type, and the same bytes;
/// but for the tensors `differs` accepts (name, our type, their type). Every metadata key of
/// theirs but the two naming the model has the same value in ours.
fn same_file(ours: &GgufFile, theirs: &GgufFile, differs: impl Fn(&str, &str, &str) -> bool) {
    assert_eq!(ours.tensors().len(), theirs.tensors().len());
    let mut compared = 0;
    for t in theirs.tensors() {
        let o = ours
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{} not written", t.name));
        assert_eq!(o.ne, t.ne, "{}", t.name);
        if o.ggml_type != t.ggml_type {
            assert!(
                differs(&t.name, &o.type_name(), &t.type_name()),
                "{}: ours {}, llama.cpp's {}",
                t.name,
                o.type_name(),
                t.type_name()
            );
            continue;
        }
        assert!(
            ours.tensor_data(&t.name) == theirs.tensor_data(&t.name),
            "{} ({}): bytes differ",
            t.name,
            t.type_name()
        );
        compared += 1;
    }
    assert!(compared * 10 >= theirs.tensors().len() * 9, "{compared}");
    for (key, value) in theirs.metadata() {
        if key == "general.name" || key == "general.size_label" {
            continue;
        }
        assert_eq!(ours.get(key), Some(value), "{key}");
    }
}

/// llama.cpp's converter's file, loaded and written back with no recipe, is the same file:
/// every tensor's bytes, every metadata key (deepblocks adds the two routing keys the converter
/// leaves at their defaults: `expert_weights_norm` false, `expert_gating_func` 1, softmax).
#[test]
fn a_converted_file_written_back_is_the_same_file() {
    let original = GgufFile::open(fixture("a_lowrank_group_yarn.gguf")).unwrap();
    let model = Model::load_gguf(fixture("a_lowrank_group_yarn.gguf"), &exact()).unwrap();
    let path = tmp("again.gguf");
    model.write_gguf(&path, None, "again").unwrap();
    let written = GgufFile::open(&path).unwrap();
    same_file(&written, &original, |_, _, _| false);
    assert_eq!(
        written.get("deepseek2.expert_weights_norm"),
        Some(&GgufValue::Bool(false))
    );
    assert_eq!(
        written.get("deepseek2.expert_gating_func"),
        Some(&GgufValue::U32(1))
    );
}

/// deepblocks' recipes, applied to the converted file and written as GGUF, are llama-quantize's
/// Q8_0, Q4_0 and Q4_K_M of it (`scripts/gguf_fixtures.sh`) tensor by tensor, byte for byte — the
/// block quantizers, the per-tensor choices and their fallbacks (rows not whole blocks: Q4_K →
/// Q5_0, then F16). One choice differs: in models of exactly 8 routed experts llama.cpp gives
/// `attn_output` Q5_K at Q4_K_M (here Q5_1, its fallback at 32-wide rows), formats deepblocks does
/// not have; deepblocks keeps Q4_K's fallback, Q5_0.
#[test]
fn written_recipes_are_llama_quantize_files() {
    for (recipe, theirs) in [
        (Recipe::Q8_0, "a_lowrank_group_yarn.Q8_0.gguf"),
        (Recipe::Q4_0, "a_lowrank_group_yarn.Q4_0.gguf"),
        (Recipe::Q4_K_M, "a_lowrank_group_yarn.Q4_K_M.gguf"),
    ] {
        let options = LoadOptions {
            quant: Some(recipe),
            ..exact()
        };
        let model = Model::load_gguf(fixture("a_lowrank_group_yarn.gguf"), &options).unwrap();
        let path = tmp(&format!("{recipe}.gguf"));
        model.write_gguf(&path, None, "x").unwrap();
        let ours = GgufFile::open(&path).unwrap();
        let theirs = GgufFile::open(fixture(theirs)).unwrap();
        same_file(&ours, &theirs, |name, o, t| {
            recipe == Recipe::Q4_K_M
                && name.ends_with("attn_output.weight")
                && (o, t) == ("Q5_0", "Q5_1")
        });
        // And llama.cpp's file loads to the model deepblocks quantized, but for those tensors.
        if recipe != Recipe::Q4_K_M {
            let ids: Vec<u32> = (0..12).map(|i| (i * 7 % 96) as u32).collect();
            let theirs = Model::load_gguf(fixture(theirs_name(recipe)), &exact()).unwrap();
            assert_eq!(logits(&model, &ids), logits(&theirs, &ids), "{recipe}");
        }
    }
}

fn theirs_name(recipe: Recipe) -> &'static str {
    match recipe {
        Recipe::Q8_0 => "a_lowrank_group_yarn.Q8_0.gguf",
        Recipe::Q4_0 => "a_lowrank_group_yarn.Q4_0.gguf",
        _ => "a_lowrank_group_yarn.Q4_K_M.gguf",
    }
}

/// The shipped model quantized while loading, written with its tokenizer and read back, is the
/// same model: identical logits (every weight's bytes as they were), the same description, and a
/// tokenizer that encodes as its `tokenizer.json` does, with its chat template.
#[test]
fn the_shipped_model_round_trips_through_gguf() {
    let dir = testdata_dir().join("../models/tiny-shakespeare");
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let text = "ROMEO:\nBut, soft! what light through yonder window breaks?";
    let ids = tokenizer.encode(text, false).unwrap();
    for recipe in [None, Some(Recipe::Q8_0), Some(Recipe::Q4_K_M)] {
        let options = LoadOptions {
            quant: recipe,
            ..exact()
        };
        let model = Model::load_with(&dir, &options).unwrap();
        let path = tmp(&format!("tiny-{recipe:?}.gguf"));
        model
            .write_gguf(&path, Some(&tokenizer), "tiny-shakespeare")
            .unwrap();
        let back = Model::load_gguf(&path, &exact()).unwrap();
        let r = close_report(&logits(&back, &ids), &logits(&model, &ids), 0.0, 0.0);
        eprintln!("{recipe:?}: max |Δ| {:e}", r.max_abs);
        // Quantized: the same blocks through the same kernels, bit for bit. bf16: the same
        // values, but the router's gate is bf16 in the checkpoint and f32 in the file (as
        // llama.cpp's converter writes it), and W_UKᵀ a copy there and a view here, which take
        // other kernels: 3.8e-6 measured.
        let bound = if recipe.is_some() { 0.0 } else { 1e-5 };
        assert!(r.max_abs <= bound, "{recipe:?}: {r}");
        let file = GgufFile::open(&path).unwrap();
        let file_type = file.get("general.file_type").and_then(GgufValue::as_u64);
        let want = match recipe {
            None => 32, // MOSTLY_BF16: the checkpoint's matrices
            Some(Recipe::Q8_0) => 7,
            _ => 15,
        };
        assert_eq!(file_type, Some(want), "{recipe:?}");
        let mut arch = architecture_from_gguf(&file).unwrap();
        let cfg = model.config();
        // GGUF holds one eos id and no transformers-only keys.
        arch.eos_token_ids = cfg.eos_token_ids.clone();
        assert_eq!(arch.attention, cfg.attention);
        assert_eq!(arch.ffn, cfg.ffn);
        assert_eq!(
            (
                arch.vocab_size,
                arch.hidden_size,
                arch.num_hidden_layers,
                arch.intermediate_size
            ),
            (
                cfg.vocab_size,
                cfg.hidden_size,
                cfg.num_hidden_layers,
                cfg.intermediate_size
            )
        );
        assert_eq!(arch.bos_token_id, cfg.bos_token_id);
        let tok = tokenizer_from_gguf(&file).unwrap();
        assert_eq!(tok.encode(text, false).unwrap(), ids);
        assert_eq!(tok.chat_template(), tokenizer.chat_template());
    }
}

/// What GGUF or llama.cpp's `deepseek2` cannot hold is an error naming it: an FP8 weight, RoPE on
/// halves (`rope_interleave` false).
#[test]
fn what_gguf_cannot_hold_is_refused_by_name() {
    let options = LoadOptions {
        quant: Some(Recipe::Fp8),
        ..exact()
    };
    let model = Model::load_gguf(fixture("a_lowrank_group_yarn.gguf"), &options).unwrap();
    let err = model.to_gguf(None, "fp8").unwrap_err();
    assert!(
        matches!(&err, Error::GgufUnwritable { what, reason } if what.starts_with("blk.") && reason.contains("FP8")),
        "{err}"
    );
    let mut arch = model.config().clone();
    arch.rope_interleave = false;
    let err = gguf_metadata(&arch).unwrap_err();
    assert!(
        matches!(&err, Error::GgufUnwritable { what, .. } if what == "rope_interleave"),
        "{err}"
    );
}
