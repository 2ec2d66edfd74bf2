//! Against Python `tokenizers` and transformers' `apply_chat_template`, on the small DeepSeek-like
//! tokenizer trained by scripts/tokenizer/train.py (testdata/tokenize/).

use std::path::PathBuf;

use deepblocks_tokenize::{Error, Message, Role, Tokenizer};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tokenize")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn encode_and_decode_match_python_tokenizers() {
    let tok = Tokenizer::from_dir(dir()).unwrap();
    let exp = expected();
    assert_eq!(tok.vocab_size() as u64, exp["vocab_size"].as_u64().unwrap());
    let cases = exp["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        assert_eq!(tok.encode(text, false).unwrap(), want, "ids of {text:?}");
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["ids_with_special"]),
            "ids with special tokens of {text:?}"
        );
        assert_eq!(
            tok.decode(&want, false).unwrap(),
            case["decoded"].as_str().unwrap()
        );
        assert_eq!(
            tok.decode(&want, true).unwrap(),
            case["decoded_skip_special"].as_str().unwrap()
        );
    }
}

#[test]
fn config_gives_bos_eos_and_the_chat_template() {
    let tok = Tokenizer::from_dir(dir()).unwrap();
    let exp = expected();
    let bos = &exp["bos"];
    let eos = &exp["eos"];
    assert_eq!(tok.special_token("bos").unwrap(), bos[0].as_str().unwrap());
    assert_eq!(tok.bos_id(), Some(bos[1].as_u64().unwrap() as u32));
    assert_eq!(tok.eos_id(), Some(eos[1].as_u64().unwrap() as u32));
    assert_eq!(
        tok.special_token_id(eos[0].as_str().unwrap()).unwrap() as u64,
        eos[1].as_u64().unwrap()
    );
    assert!(
        tok.chat_template()
            .unwrap()
            .contains("'Assistant: ' + message['content'] + eos_token")
    );
    let names: Vec<String> = tok.special_tokens().into_iter().map(|(s, _)| s).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    // Encoding with special tokens adds bos exactly once.
    let with = tok.encode("hi", true).unwrap();
    assert_eq!(with[0], tok.bos_id().unwrap());
    assert_ne!(with[1], tok.bos_id().unwrap());
}

#[test]
fn chat_prompts_match_transformers_apply_chat_template() {
    let tok = Tokenizer::from_dir(dir()).unwrap();
    for chat in expected()["chats"].as_array().unwrap() {
        let messages: Vec<Message> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message {
                role: match m["role"].as_str().unwrap() {
                    "system" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    r => panic!("role {r}"),
                },
                content: m["content"].as_str().unwrap().to_string(),
            })
            .collect();
        let add_gen = chat["add_generation_prompt"].as_bool().unwrap();
        let text = tok.chat_prompt(&messages, add_gen).unwrap();
        assert_eq!(text, chat["text"].as_str().unwrap());
        assert_eq!(
            tok.encode_chat(&messages, add_gen).unwrap(),
            ids(&chat["ids"])
        );
    }
}

#[test]
fn streaming_the_fixture_cases_gives_the_full_decode() {
    let tok = Tokenizer::from_dir(dir()).unwrap();
    for case in expected()["cases"].as_array().unwrap() {
        let want = ids(&case["ids"]);
        for skip in [false, true] {
            let mut s = tok.stream(skip);
            let mut out = String::new();
            for &id in &want {
                if let Some(piece) = s.push(id).unwrap() {
                    assert!(!piece.contains('\u{FFFD}'), "broken character in {piece:?}");
                    out.push_str(&piece);
                }
            }
            out.push_str(&s.finish().unwrap());
            assert_eq!(out, tok.decode(&want, skip).unwrap());
        }
    }
}

#[test]
fn missing_and_malformed_files_are_errors_naming_the_file() {
    let err = Tokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("tokenizer.json")),
        "{err}"
    );
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.json"),
        "{err}"
    );

    let tmp = std::env::temp_dir().join(format!("deepblocks-tokenize-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let bad = tmp.join("tokenizer.json");
    std::fs::write(&bad, b"{\"model\": {\"type\": \"BPE\", \"vocab\": 3}}").unwrap();
    let err = Tokenizer::from_file(&bad).unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { what, .. } if what.contains("tokenizer.json")),
        "{err}"
    );
    std::fs::write(&bad, b"not json").unwrap();
    assert!(matches!(
        Tokenizer::from_file(&bad),
        Err(Error::Malformed { .. })
    ));

    // A valid tokenizer with a malformed config beside it.
    std::fs::copy(dir().join("tokenizer.json"), &bad).unwrap();
    std::fs::write(tmp.join("tokenizer_config.json"), b"{\"bos_token\": 7}").unwrap();
    let err = Tokenizer::from_file(&bad).unwrap_err();
    assert!(
        matches!(&err, Error::Config { reason, .. } if reason.contains("bos_token")),
        "{err}"
    );
    std::fs::write(tmp.join("tokenizer_config.json"), b"[1, 2]").unwrap();
    assert!(matches!(
        Tokenizer::from_file(&bad),
        Err(Error::Config { .. })
    ));
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn unknown_special_tokens_and_ids_out_of_vocab_are_errors_naming_them() {
    let tok = Tokenizer::from_dir(dir()).unwrap();
    let err = tok.special_token_id("<｜nope｜>").unwrap_err();
    assert!(
        matches!(&err, Error::UnknownSpecialToken { name } if name == "<｜nope｜>"),
        "{err}"
    );
    let err = tok.special_token_id("pad").unwrap_err(); // the config has no pad token
    assert!(
        matches!(&err, Error::UnknownSpecialToken { name } if name == "pad"),
        "{err}"
    );
    // An ordinary token is not a special one.
    assert!(tok.token_to_id("the").is_some());
    assert!(tok.special_token_id("the").is_err());

    let v = tok.vocab_size() as u32;
    let err = tok.decode(&[1, 2, v, 3], false).unwrap_err();
    assert!(
        matches!(err, Error::IdOutOfVocab { id, vocab } if id == v && vocab == v as usize),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("token id {v}")));
    assert!(tok.id_to_token(u32::MAX).is_err());
    let mut s = tok.stream(false);
    assert!(s.push(v + 7).is_err());
    assert_eq!(
        s.push(tok.token_to_id("the").unwrap()).unwrap().as_deref(),
        Some("the")
    );
}
