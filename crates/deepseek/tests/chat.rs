//! A conversation with the shipped model, headless: the latent cache is kept across turns and
//! each turn prefills only what it does not hold, giving the tokens a fresh generation over the
//! whole conversation gives.

use std::path::PathBuf;

use deepblocks_deepseek::{
    ChatSession, GenerateOptions, GenerationDefaults, Model, SamplingConfig, chat_lines,
};
use deepblocks_tokenize::Tokenizer;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-shakespeare")
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplingConfig {
            temperature: 0.0,
            ..SamplingConfig::default()
        },
        seed: 7,
    }
}

#[test]
fn turns_reuse_the_cache_and_equal_a_fresh_generation() {
    let model = Model::load(shipped()).unwrap();
    let tokenizer = Tokenizer::from_dir(shipped()).unwrap();
    let options = greedy(12);
    let mut session =
        ChatSession::new(&model, &tokenizer, Some("Speak as Romeo."), options, &[]).unwrap();
    let first = session
        .send("What light through yonder window breaks?", |_| {})
        .unwrap();
    assert_eq!(first.reused_tokens, 0);
    assert!(first.reply_tokens > 0);
    let held = session.cached_tokens();
    let mut streamed = String::new();
    let second = session.send("And then?", |t| streamed.push_str(t)).unwrap();
    assert_eq!(streamed, second.reply, "the streamed text is the reply");
    // The second prompt starts with most of what the cache held: only the tail is prefilled.
    assert!(
        second.reused_tokens > 0 && second.reused_tokens <= held,
        "{second:?}, held {held}"
    );
    assert!(
        second.reused_tokens + 10 >= first.prompt_tokens,
        "{second:?} vs {first:?}"
    );
    assert_eq!(session.messages().len(), 5); // system, user, assistant, user, assistant

    // The same conversation generated from scratch gives the same reply tokens.
    let messages = &session.messages()[..4];
    let ids = tokenizer.encode_chat(messages, true).unwrap();
    assert_eq!(ids.len(), second.prompt_tokens);
    let fresh = model.generate(&ids, &options, &[], |_| Ok(())).unwrap();
    assert_eq!(tokenizer.decode(&fresh.tokens, true).unwrap(), second.reply);
}

#[test]
fn a_piped_conversation_runs_headless() {
    let model = Model::load(shipped()).unwrap();
    let tokenizer = Tokenizer::from_dir(shipped()).unwrap();
    let mut session = ChatSession::new(&model, &tokenizer, None, greedy(6), &[]).unwrap();
    let input = "ROMEO:\n\n   \nJULIET:\n".as_bytes();
    let mut out = Vec::new();
    let turns = chat_lines(&mut session, input, &mut out).unwrap();
    assert_eq!(turns.len(), 2, "blank lines are skipped");
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text, format!("{}\n{}\n", turns[0].reply, turns[1].reply));
    // The same seed and input give the same conversation.
    let mut again = ChatSession::new(&model, &tokenizer, None, greedy(6), &[]).unwrap();
    let mut out2 = Vec::new();
    chat_lines(&mut again, "ROMEO:\nJULIET:\n".as_bytes(), &mut out2).unwrap();
    assert_eq!(String::from_utf8(out2).unwrap(), text);
}

#[test]
fn generation_config_supplies_defaults_and_eos_lists() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generation-config");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("generation_config.json");
    std::fs::write(
        &path,
        r#"{"temperature": 0.6, "top_p": 0.95, "eos_token_id": [1, 7], "do_sample": true}"#,
    )
    .unwrap();
    let d = GenerationDefaults::from_dir(&dir).unwrap();
    assert_eq!(
        (d.temperature, d.top_p, d.top_k),
        (Some(0.6), Some(0.95), None)
    );
    assert_eq!(d.eos_token_ids, [1, 7]);
    let s = d.apply(SamplingConfig::default());
    assert_eq!((s.temperature, s.top_p), (0.6, 0.95));
    std::fs::write(
        &path,
        r#"{"do_sample": false, "temperature": 0.6, "eos_token_id": 2}"#,
    )
    .unwrap();
    let d = GenerationDefaults::from_dir(&dir).unwrap();
    assert_eq!(
        (d.temperature, d.eos_token_ids.clone()),
        (Some(0.0), vec![2])
    );
    std::fs::write(&path, r#"{"eos_token_id": [1, -3]}"#).unwrap();
    let err = GenerationDefaults::from_dir(&dir).unwrap_err();
    assert!(
        err.to_string().contains("generation_config.json")
            && err.to_string().contains("eos_token_id"),
        "{err}"
    );
    // A folder without one has no defaults.
    let none = GenerationDefaults::from_dir(shipped()).unwrap();
    assert_eq!(none, GenerationDefaults::default());
}
