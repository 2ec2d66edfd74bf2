//! Against torch (scripts/golden/embed.py): nn.Embedding lookup in f32 and bf16, the tied and the
//! separate unembedding, cosine similarity, nearest neighbours and analogy.

use deepblocks_core::{DType, SafeTensorsStore, Weight};
use deepblocks_embed::{Embedding, Embeddings, LmHead, Positions};
use deepblocks_testkit::{Golden, close_report, testdata_dir};

fn ids(g: &Golden, name: &str) -> Vec<u32> {
    g.data(name).iter().map(|&v| v as u32).collect()
}

fn f32_embedding(g: &Golden) -> Embedding {
    let [v, h] = [g.meta::<usize>("vocab"), g.meta::<usize>("hidden")];
    Embedding::new(Weight::from_f32(g.data("embed_f32").to_vec(), v, h).unwrap())
}

/// The fixture's `model.embed_tokens.weight` and `lm_head.weight` (bf16), borrowed from the map.
fn from_file(g: &Golden) -> Embeddings {
    let store = SafeTensorsStore::open_file(testdata_dir().join("embed.safetensors")).unwrap();
    let shape = [g.meta::<usize>("vocab"), g.meta::<usize>("hidden")];
    let e = Embedding::new(store.weight("model.embed_tokens.weight", shape).unwrap());
    let head = store.weight("lm_head.weight", shape).unwrap();
    Embeddings::new(e, LmHead::Separate(head)).unwrap()
}

fn check(what: &str, got: &[f32], want: &[f32], atol: f32) {
    let r = close_report(got, want, atol, 0.0);
    eprintln!("{what}: max |Δ| = {:e}", r.max_abs);
    assert_eq!(r.violations, 0, "{what}: {r}");
}

#[test]
fn lookup_matches_nn_embedding_exactly() {
    let g = Golden::load("embed");
    let m = from_file(&g);
    assert_eq!(
        m.embed_tokens().format(),
        DType::BF16.into(),
        "bf16 storage is kept"
    );
    assert!(
        m.embed_tokens().weight().is_mapped(),
        "borrowed from the map, not copied"
    );
    let ids = ids(&g, "ids");
    let mut x = vec![0.0; ids.len() * m.hidden_size()];
    m.embed_tokens().lookup(&mut x, &ids).unwrap();
    check("x_bf16", &x, g.data("x_bf16"), 0.0);
    let e = f32_embedding(&g);
    check(
        "x_f32 (ndarray)",
        e.lookup_nd(&ids).unwrap().as_slice().unwrap(),
        g.data("x_f32"),
        0.0,
    );
}

#[test]
fn unembedding_matches_torch_linear_tied_and_separate() {
    let g = Golden::load("embed");
    let (t, h) = (g.shape("hidden")[0], g.shape("hidden")[1]);
    let hidden = ndarray::Array2::from_shape_vec((t, h), g.data("hidden").to_vec()).unwrap();

    let tied = Embeddings::new(f32_embedding(&g), LmHead::Tied).unwrap();
    let all = tied.logits_nd(hidden.view(), Positions::All).unwrap();
    check(
        "logits_tied",
        all.as_slice().unwrap(),
        g.data("logits_tied"),
        2e-6,
    );

    let sep = from_file(&g);
    assert_eq!(sep.lm_head_weight().format(), DType::BF16.into());
    let want = g.data("logits_lm_head");
    let all = sep.logits_nd(hidden.view(), Positions::All).unwrap();
    check("logits_lm_head", all.as_slice().unwrap(), want, 2e-6);
    let last = sep.logits_nd(hidden.view(), Positions::Last).unwrap();
    assert_eq!(last.shape(), &[1, sep.vocab_size()]);
    check(
        "logits_lm_head last",
        last.as_slice().unwrap(),
        &want[(t - 1) * sep.vocab_size()..],
        2e-6,
    );
}

#[test]
fn similarity_neighbours_and_analogy_match_torch() {
    let g = Golden::load("embed");
    let e = f32_embedding(&g);
    let h = e.hidden_size();
    let query = &g.data("hidden")[..h];

    // Cosine similarity with every row (k = V returns them all; reorder by id).
    let all = e.nearest(query, e.vocab_size(), &[]).unwrap();
    let mut by_id = vec![f32::NAN; e.vocab_size()];
    for n in &all {
        by_id[n.id as usize] = n.similarity;
    }
    check("cos_query", &by_id, g.data("cos_query"), 1e-6);
    let top: Vec<u32> = e
        .nearest(query, 5, &[])
        .unwrap()
        .iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(top, ids(&g, "nearest_query"));

    let abc = ids(&g, "analogy_abc");
    let got = e.analogy(abc[0], abc[1], abc[2], 5).unwrap();
    let got_ids: Vec<u32> = got.iter().map(|n| n.id).collect();
    assert_eq!(got_ids, ids(&g, "analogy_ids"));
    let sims: Vec<f32> = got.iter().map(|n| n.similarity).collect();
    check("analogy_cos", &sims, g.data("analogy_cos"), 1e-6);
}
