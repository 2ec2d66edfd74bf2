//! A tokenizer rebuilt from the values a GGUF file holds (`tokenizer.ggml.*`): the fixture
//! vocabulary (`testdata/tokenize`), its tokens, merges and special tokens passed as llama.cpp's
//! converter writes them, gives the ids Python `tokenizers` gave — under the `pre` name
//! `deepseek-llm` with DeepSeek LLM's chain (`expected.json`), and under `deepseek-v3` with
//! DeepSeek-V3's (`pre_deepseek_v3.json`, from `scripts/tokenizer/gguf_pre_v3.py`).

use std::path::PathBuf;

use deepblocks_tokenize::{GgufVocab, Tokenizer};
use serde_json::Value;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tokenize")
        .join(rel)
}

/// The fixture vocabulary as a GGUF file holds it: tokens by id, types, merges as "a b".
fn gguf_form() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = spec["model"]["vocab"].as_object().unwrap();
    let added = spec["added_tokens"].as_array().unwrap();
    let n = vocab.len().max(
        added
            .iter()
            .map(|a| a["id"].as_u64().unwrap() as usize + 1)
            .max()
            .unwrap_or(0),
    );
    let mut tokens = vec![String::new(); n];
    let mut types = vec![1i32; n];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    for a in added {
        let id = a["id"].as_u64().unwrap() as usize;
        tokens[id] = a["content"].as_str().unwrap().to_string();
        types[id] = if a["special"].as_bool().unwrap() {
            3
        } else {
            4
        };
    }
    let merges: Vec<String> = spec["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
            other => other.as_str().unwrap().to_string(),
        })
        .collect();
    (tokens, types, merges)
}

fn with_pre(pre: &str) -> Tokenizer {
    let (tokens, types, merges) = gguf_form();
    Tokenizer::from_gguf_vocab(&GgufVocab {
        model: "gpt2",
        pre,
        tokens: &tokens,
        token_types: &types,
        merges: &merges,
        ..GgufVocab::default()
    })
    .unwrap()
}

#[test]
fn deepseek_v3_pre_gives_the_hugging_face_ids() {
    let tok = with_pre("deepseek-v3");
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("pre_deepseek_v3.json")).unwrap())
            .unwrap();
    let cases = want["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text, false).unwrap(), ids, "{text:?}");
    }
    // The chain built in is the one the fixture was made with.
    let built: Value = serde_json::from_str(include_str!("../src/pre_deepseek_v3.json")).unwrap();
    assert_eq!(built, want["pre_tokenizer"]);
}

#[test]
fn deepseek_llm_vocab_gives_the_hugging_face_ids() {
    let tok = with_pre("deepseek-llm");
    let hf = Tokenizer::from_file(testdata("tokenizer.json")).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("expected.json")).unwrap()).unwrap();
    let mut checked = 0;
    for case in expected["cases"].as_array().into_iter().flatten() {
        let Some(text) = case["text"].as_str() else {
            continue;
        };
        let ids: Vec<u32> = tok.encode(text, false).unwrap();
        assert_eq!(ids, hf.encode(text, false).unwrap(), "{text:?}");
        if let Some(want) = case["ids"].as_array() {
            let want: Vec<u32> = want.iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(ids, want, "{text:?}");
        }
        checked += 1;
    }
    assert!(checked >= 5, "{checked} cases");
}
