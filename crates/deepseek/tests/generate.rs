//! Generation on a fixture model: greedy decoding equals a hand-written argmax loop, the stop
//! conditions, seeded reproducibility, and bad options.

use deepblocks_deepseek::{
    Error, GenerateOptions, LoadOptions, Model, Positions, SamplingConfig, StopReason,
};
use deepblocks_testkit::testdata_dir;

fn model() -> Model {
    Model::load_with(
        testdata_dir().join("deepseek").join("a_lowrank_group_yarn"),
        &LoadOptions::default(),
    )
    .unwrap()
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplingConfig::greedy(),
        seed: 0,
    }
}

const PROMPT: [u32; 5] = [5, 17, 33, 2, 60];

#[test]
fn greedy_generation_equals_an_argmax_loop_over_forward() {
    let m = model();
    let g = m.generate(&PROMPT, &greedy(12), &[], |_| Ok(())).unwrap();
    // Without an eos among them, all 12 tokens come out.
    let mut cache = m.new_cache(32).unwrap();
    let mut logits = m.forward(&PROMPT, &mut cache, Positions::Last).unwrap();
    let mut want = Vec::new();
    for _ in 0..12 {
        let id = argmax(&logits);
        if m.config().eos_token_ids.contains(&id) {
            break;
        }
        want.push(id);
        logits = m.forward(&[id], &mut cache, Positions::Last).unwrap();
    }
    assert_eq!(g.tokens, want);
    assert_eq!(g.prompt, PROMPT);
    if want.len() == 12 {
        assert_eq!(g.stop, StopReason::MaxTokens);
    }
    assert!(g.prefill_seconds > 0.0 && g.decode_seconds >= 0.0);
}

#[test]
fn stops_at_an_end_of_sequence_token_without_emitting_it() {
    let m = model();
    let all = m.generate(&PROMPT, &greedy(8), &[], |_| Ok(())).unwrap();
    assert!(all.tokens.len() >= 4);
    let eos = all.tokens[3];
    let mut seen = Vec::new();
    let g = m
        .generate(&PROMPT, &greedy(8), &[eos], |id| {
            seen.push(id);
            Ok(())
        })
        .unwrap();
    assert_eq!(g.stop, StopReason::Eos);
    let first = all.tokens.iter().position(|&t| t == eos).unwrap();
    assert_eq!(g.tokens, all.tokens[..first]);
    assert_eq!(seen, g.tokens);
}

#[test]
fn stops_when_the_context_is_full() {
    let m = model();
    let max = m.config().max_position_embeddings;
    let prompt = vec![7u32; max - 3];
    let g = m.generate(&prompt, &greedy(100), &[], |_| Ok(())).unwrap();
    if g.stop != StopReason::Eos {
        assert_eq!(g.stop, StopReason::ContextFull);
        // Three more positions fit in the cache; the fourth token is sampled from the last one.
        assert_eq!(g.tokens.len(), 4);
    }
    let err = m
        .generate(&vec![7u32; max + 1], &greedy(1), &[], |_| Ok(()))
        .unwrap_err();
    assert!(
        matches!(err, Error::Mla(deepblocks_mla::Error::ContextFull { .. })),
        "{err}"
    );
}

#[test]
fn the_same_seed_gives_the_same_tokens() {
    let m = model();
    let opts = |seed| GenerateOptions {
        max_tokens: 16,
        sampling: SamplingConfig {
            temperature: 1.5,
            top_p: 0.95,
            ..SamplingConfig::default()
        },
        seed,
    };
    let a = m.generate(&PROMPT, &opts(42), &[], |_| Ok(())).unwrap();
    let b = m.generate(&PROMPT, &opts(42), &[], |_| Ok(())).unwrap();
    assert_eq!(a.tokens, b.tokens);
    // Different seeds: at temperature 1.5 over 96 tokens, 16 draws coinciding is (almost) impossible.
    let seeds: Vec<Vec<u32>> = (0..4)
        .map(|s| {
            m.generate(&PROMPT, &opts(s), &[], |_| Ok(()))
                .unwrap()
                .tokens
        })
        .collect();
    assert!(seeds.iter().any(|t| t != &seeds[0]));
}

#[test]
fn max_tokens_zero_and_callback_errors() {
    let m = model();
    let g = m.generate(&PROMPT, &greedy(0), &[], |_| Ok(())).unwrap();
    assert!(g.tokens.is_empty() && g.stop == StopReason::MaxTokens);
    let err = m
        .generate(&PROMPT, &greedy(5), &[], |id| {
            Err(Error::Block {
                prefix: format!("the callback, at token {id}"),
                source: Box::new(deepblocks_mla::Error::EmptyInput.into()),
            })
        })
        .unwrap_err();
    assert!(matches!(err, Error::Block { .. }), "{err}");
    assert!(err.to_string().contains("the callback"), "{err}");
}

#[test]
fn bad_options_and_prompts_are_errors() {
    let m = model();
    let bad = GenerateOptions {
        sampling: SamplingConfig {
            temperature: -1.0,
            ..SamplingConfig::default()
        },
        ..GenerateOptions::default()
    };
    let err = m.generate(&PROMPT, &bad, &[], |_| Ok(())).unwrap_err();
    assert!(matches!(err, Error::Sample(_)), "{err}");
    assert!(err.to_string().contains("temperature"), "{err}");
    let err = m.generate(&[], &greedy(3), &[], |_| Ok(())).unwrap_err();
    assert!(
        matches!(err, Error::Mla(deepblocks_mla::Error::EmptyInput)),
        "{err}"
    );
    let err = m
        .generate(&[1000], &greedy(3), &[], |_| Ok(()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Embed(deepblocks_embed::Error::TokenOutOfRange { id: 1000, .. })
        ),
        "{err}"
    );
}
