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

/// The other way: a tokenizer's vocabulary as a GGUF file holds it is the form above (tokens by
/// id, types, merges), under the name of its pre-tokenizer chain, with its bos, eos and chat
/// template; rebuilt from that form it encodes as the original does (the fixture with DeepSeek
/// LLM's chain, and the shipped model's GPT-2 byte-level tokenizer).
#[test]
fn a_tokenizer_written_as_gguf_vocab_reads_back_the_same() {
    let hf = Tokenizer::from_file(testdata("tokenizer.json")).unwrap();
    let data = hf.to_gguf_vocab().unwrap();
    let (tokens, types, merges) = gguf_form();
    assert_eq!(
        (&data.tokens, &data.token_types, &data.merges),
        (&tokens, &types, &merges)
    );
    assert_eq!(
        (data.model.as_str(), data.pre.as_str()),
        ("gpt2", "deepseek-llm")
    );
    assert_eq!(data.bos_id, hf.bos_id());
    assert_eq!(data.chat_template.as_deref(), hf.chat_template());
    let back = Tokenizer::from_gguf_vocab(&data.as_vocab()).unwrap();
    let shipped = Tokenizer::from_file(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/tiny-shakespeare/tokenizer.json"),
    )
    .unwrap();
    let shipped_data = shipped.to_gguf_vocab().unwrap();
    assert_eq!(shipped_data.pre, "gpt-2");
    assert_eq!(shipped_data.tokens.len(), shipped.vocab_size());
    let shipped_back = Tokenizer::from_gguf_vocab(&shipped_data.as_vocab()).unwrap();
    for text in [
        "Hello, world! 12345 — naïve café",
        "ROMEO:\nBut, soft! what light through yonder window breaks?",
        "<｜begin▁of▁sentence｜>User: hi\n\nAssistant:",
        "  spaces\t\ttabs\n\nnewlines 3.14159",
    ] {
        assert_eq!(
            back.encode(text, false).unwrap(),
            hf.encode(text, false).unwrap(),
            "{text:?}"
        );
        assert_eq!(
            shipped_back.encode(text, false).unwrap(),
            shipped.encode(text, false).unwrap(),
            "{text:?}"
        );
    }
}

/// A vocabulary whose ids have gaps cannot be a GGUF token list: refused naming the token and its
/// id, which is checked against the number of entries before it sizes anything. (An id of 4·10⁹
/// is refused the same way, but `tokenizers` itself takes 90 s to load such a vocabulary.)
#[test]
fn ids_with_gaps_are_refused_by_name() {
    let mut spec: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("tokenizer.json")).unwrap())
            .unwrap();
    spec["model"]["vocab"]["zzz-far"] = serde_json::json!(10_000_000u64);
    let tok = Tokenizer::from_json_bytes(spec.to_string().as_bytes()).unwrap();
    let err = tok.to_gguf_vocab().unwrap_err().to_string();
    assert!(err.contains("zzz-far") && err.contains("10000000"), "{err}");
}
