//! Chat templates against transformers: every case of `testdata/tokenize/chat/cases.json`
//! (written by `scripts/tokenizer/chat_templates.py` with `apply_chat_template(tokenize=False)`)
//! rendered byte for byte, for DeepSeek-V2-Chat's template and DeepSeek-V3/R1's.

use std::path::PathBuf;

use deepblocks_tokenize::{ChatTemplate, DEEPSEEK_BOS, DEEPSEEK_EOS, Message, deepseek_v2_chat};
use serde_json::Value;

fn chat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tokenize/chat")
}

fn template(name: &str) -> ChatTemplate {
    let source = std::fs::read_to_string(chat_dir().join(format!("{name}.jinja"))).unwrap();
    ChatTemplate::new(source).unwrap()
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(chat_dir().join("cases.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

#[test]
fn every_case_renders_as_transformers_renders_it() {
    let cases = cases();
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        let t = template(case["template"].as_str().unwrap());
        let got = t
            .render(
                &case["messages"],
                case["bos_token"].as_str().unwrap(),
                case["eos_token"].as_str().unwrap(),
                case["add_generation_prompt"].as_bool().unwrap(),
            )
            .unwrap_or_else(|e| panic!("{} {}: {e}", case["template"], case["name"]));
        assert_eq!(
            got,
            case["expected"].as_str().unwrap(),
            "{} {} (generation prompt {})",
            case["template"],
            case["name"],
            case["add_generation_prompt"]
        );
        names.insert(format!("{}/{}", case["template"], case["name"]));
    }
    // Both templates, the conversations the issue names.
    for needed in [
        "\"deepseek-v2-chat\"/\"multi_turn\"",
        "\"deepseek-r1\"/\"two_systems\"",
        "\"deepseek-r1\"/\"think_stripped\"",
        "\"deepseek-r1\"/\"tool_call\"",
    ] {
        assert!(names.contains(needed), "{needed} missing from {names:?}");
    }
    assert!(cases.len() >= 24, "{}", cases.len());
}

/// The V2-Chat renderer kept as the fallback for folders without a template agrees with the
/// template it transcribes, on every V2 case without tools.
#[test]
fn the_native_v2_renderer_equals_the_v2_chat_template() {
    for case in cases()
        .iter()
        .filter(|c| c["template"] == "deepseek-v2-chat")
    {
        let messages: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let content = m["content"].as_str().unwrap().to_string();
                match m["role"].as_str().unwrap() {
                    "system" => Message::system(content),
                    "user" => Message::user(content),
                    _ => Message::assistant(content),
                }
            })
            .collect();
        let got = deepseek_v2_chat(
            &messages,
            DEEPSEEK_BOS,
            DEEPSEEK_EOS,
            case["add_generation_prompt"].as_bool().unwrap(),
        );
        assert_eq!(got, case["expected"].as_str().unwrap(), "{}", case["name"]);
    }
}

/// A tokenizer folder's template: `tokenizer_config.json`'s, overridden by a
/// `chat_template.jinja` beside it (as transformers 5 saves it); `chat_prompt` renders it, and
/// falls back to DeepSeek-V2-Chat's format only without one.
#[test]
fn a_folders_own_template_is_the_one_rendered() {
    use deepblocks_tokenize::{CHAT_TEMPLATE_FILE, Tokenizer};
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tokenize");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chat-folder");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let r1 = std::fs::read_to_string(chat_dir().join("deepseek-r1.jinja")).unwrap();
    let config = serde_json::json!({
        "bos_token": DEEPSEEK_BOS, "eos_token": DEEPSEEK_EOS, "chat_template": r1,
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let messages = [Message::user("Hi")];
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(
        tok.chat_prompt(&messages, true).unwrap(),
        format!("{DEEPSEEK_BOS}<｜User｜>Hi<｜Assistant｜>")
    );
    std::fs::write(
        dir.join(CHAT_TEMPLATE_FILE),
        "{{ bos_token }}[{{ messages[0].content }}]",
    )
    .unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(
        tok.chat_prompt(&messages, true).unwrap(),
        format!("{DEEPSEEK_BOS}[Hi]")
    );
    // No template at all: a render is an error, the prompt falls back to V2-Chat's format.
    let bare = Tokenizer::from_file(src.join("tokenizer.json"))
        .unwrap()
        .with_config(deepblocks_tokenize::TokenizerConfig {
            bos_token: Some(DEEPSEEK_BOS.into()),
            eos_token: Some(DEEPSEEK_EOS.into()),
            ..Default::default()
        });
    assert!(bare.render_chat(&serde_json::json!([]), true).is_err());
    assert_eq!(
        bare.chat_prompt(&messages, true).unwrap(),
        format!("{DEEPSEEK_BOS}User: Hi\n\nAssistant:")
    );
}
