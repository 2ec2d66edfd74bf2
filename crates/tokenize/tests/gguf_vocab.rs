//! A tokenizer rebuilt from the values a GGUF file holds (`tokenizer.ggml.*`): the fixture
//! tokenizer with DeepSeek LLM's pre-tokenizer chain (`testdata/tokenize`), its tokens, merges and
//! special tokens passed as llama.cpp's converter writes them, under the `pre` name
//! `deepseek-llm`, gives the ids Python `tokenizers` gave (`expected.json`).

use std::path::PathBuf;

use deepblocks_tokenize::{GgufVocab, Tokenizer};
use serde_json::Value;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tokenize")
        .join(rel)
}

#[test]
fn deepseek_llm_vocab_gives_the_hugging_face_ids() {
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
    // The converter writes merges as "a b".
    let merges: Vec<String> = spec["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
            other => other.as_str().unwrap().to_string(),
        })
        .collect();
    let tok = Tokenizer::from_gguf_vocab(&GgufVocab {
        model: "gpt2",
        pre: "deepseek-llm",
        tokens: &tokens,
        token_types: &types,
        merges: &merges,
        ..GgufVocab::default()
    })
    .unwrap();
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
