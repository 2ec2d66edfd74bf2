//! Properties of lookup, unembedding and the vector tools, over every storage dtype, and every
//! bad input.

use deepblocks_core::{DType, Weight};
use deepblocks_embed::{
    Embedding, Embeddings, Error, LmHead, Positions, cosine_similarity, unembed, unembed_naive,
};
use deepblocks_testkit::strategies::{matrix, values};
use proptest::prelude::*;

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

fn embedding(v: usize, h: usize, data: Vec<f32>, dtype: DType) -> Embedding {
    Embedding::new(Weight::from_f32(data, v, h).unwrap().to_dtype(dtype))
}

proptest! {
    #[test]
    fn lookup_returns_the_rows_in_the_stored_precision(
        (v, h, data) in matrix(24, 1.0),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        for dtype in DTYPES {
            let e = embedding(v, h, data.clone(), dtype);
            let ids: Vec<u32> = picks.iter().map(|p| p.index(v) as u32).collect();
            let x = e.lookup_nd(&ids).unwrap();
            prop_assert_eq!(x.dim(), (ids.len(), h));
            let rounded = e.weight().to_f32_vec();
            for (i, &id) in ids.iter().enumerate() {
                let row = &rounded[id as usize * h..(id as usize + 1) * h];
                prop_assert_eq!(x.row(i).to_vec(), row.to_vec());
            }
        }
    }

    #[test]
    fn unembedding_equals_its_naive_twin_and_last_is_the_last_row(
        (v, h, data) in matrix(40, 1.0), t in 1usize..9, seed in values(64, 1.0),
    ) {
        let x: Vec<f32> = (0..t * h).map(|i| seed[i % seed.len()] * (1.0 + (i / 64) as f32)).collect();
        for dtype in DTYPES {
            let u = Weight::from_f32(data.clone(), v, h).unwrap().to_dtype(dtype);
            let mut fast = vec![0.0; t * v];
            let mut naive = vec![0.0; t * v];
            unembed(&mut fast, &x, &u, t, Positions::All).unwrap();
            unembed_naive(&mut naive, &x, &u, t, Positions::All).unwrap();
            let tol = 1e-5 * (h as f32).sqrt() * (1.0 + t as f32);
            for (a, b) in fast.iter().zip(&naive) {
                prop_assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{:?}: {} vs {}", dtype, a, b);
            }
            let mut last = vec![0.0; v];
            unembed(&mut last, &x, &u, t, Positions::Last).unwrap();
            for (a, b) in last.iter().zip(&naive[(t - 1) * v..]) {
                prop_assert!((a - b).abs() <= tol * (1.0 + b.abs()));
            }
        }
    }

    #[test]
    fn cosine_is_bounded_symmetric_and_scale_invariant(
        a in values(17, 1.0), b in values(17, 1.0), s in 0.01f32..100.0,
    ) {
        let c = cosine_similarity(&a, &b).unwrap();
        prop_assert!((-1.0..=1.0).contains(&c));
        prop_assert!((c - cosine_similarity(&b, &a).unwrap()).abs() < 1e-6);
        let scaled: Vec<f32> = a.iter().map(|v| v * s).collect();
        prop_assert!((c - cosine_similarity(&scaled, &b).unwrap()).abs() < 1e-4);
    }

    #[test]
    fn nearest_equals_the_naive_search(
        (v, h, data) in matrix(40, 1.0), q in values(40, 1.0), k in 0usize..10,
        excluded in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        for dtype in DTYPES {
            let e = embedding(v, h, data.clone(), dtype);
            let exclude: Vec<u32> = excluded.iter().map(|p| p.index(v) as u32).collect();
            let fast = e.nearest(&q[..h], k, &exclude).unwrap();
            let naive = e.nearest_naive(&q[..h], k, &exclude).unwrap();
            prop_assert_eq!(fast.len(), naive.len());
            prop_assert!(fast.len() <= k);
            for (a, b) in fast.iter().zip(&naive) {
                // Ids may swap only between near-equal similarities.
                prop_assert!((a.similarity - b.similarity).abs() < 1e-5, "{:?} vs {:?}", a, b);
                prop_assert!(!exclude.contains(&a.id));
            }
            prop_assert!(fast.windows(2).all(|w| w[0].similarity >= w[1].similarity));
        }
    }

    #[test]
    fn a_row_is_its_own_nearest_neighbour((v, h, data) in matrix(24, 1.0), pick in any::<prop::sample::Index>()) {
        let e = embedding(v, h, data, DType::F32);
        let id = pick.index(v) as u32;
        let q = e.row(id).unwrap();
        prop_assume!(q.iter().any(|&x| x != 0.0));
        // The row is ranked first, or behind rows pointing the same way (similarity 1).
        let all = e.nearest(&q, v, &[]).unwrap();
        let pos = all.iter().position(|n| n.id == id).unwrap();
        prop_assert!(all[..=pos].iter().all(|n| n.similarity >= 1.0 - 1e-5), "{:?}", &all[..=pos]);
    }
}

#[test]
fn analogy_excludes_its_inputs() {
    // a − b + c lands exactly on a (b = c), yet a is excluded.
    let e = embedding(3, 2, vec![1.0, 0.0, 0.0, 1.0, 0.7, 0.7], DType::F32);
    let best = e.analogy(0, 1, 1, 3).unwrap();
    assert_eq!(best.len(), 1);
    assert_eq!(best[0].id, 2);
}

#[test]
fn out_of_range_ids_are_errors_naming_the_id() {
    let e = embedding(4, 3, vec![0.5; 12], DType::BF16);
    for err in [
        e.lookup_nd(&[0, 1, 4, 9]).unwrap_err(),
        e.row(4).unwrap_err(),
        e.neighbours(4, 2).unwrap_err(),
        e.analogy(0, 4, 1, 2).unwrap_err(),
        e.nearest(&[1.0, 0.0, 0.0], 2, &[4]).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::TokenOutOfRange {
                    id: 4,
                    vocab: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("token id 4"), "{err}");
    }
    let err = e.lookup_nd(&[0, 1, 4, 9]).unwrap_err();
    assert!(
        matches!(err, Error::TokenOutOfRange { position: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("position 2"), "{err}");
    let mut out = vec![7.0; 6];
    assert!(e.lookup(&mut out, &[1, 5]).is_err());
    assert_eq!(out, vec![7.0; 6], "out untouched on error");
}

#[test]
fn wrong_lengths_and_shapes_are_errors_naming_the_argument() {
    let e = embedding(4, 3, vec![0.5; 12], DType::F32);
    let err = e.nearest(&[1.0, 2.0], 1, &[]).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Core(deepblocks_core::Error::Length {
                what,
                expected: 3,
                found: 2,
                ..
            }) if what.as_str() == "query"
        ),
        "{err}"
    );
    let err = cosine_similarity(&[1.0, 2.0], &[1.0]).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Core(deepblocks_core::Error::Length {
                what,
                expected: 2,
                found: 1,
                ..
            }) if what.as_str() == "b"
        ),
        "{err}"
    );
    let err = e.lookup(&mut [0.0; 5], &[1, 2]).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Core(deepblocks_core::Error::Length {
                what,
                expected: 6,
                found: 5,
                ..
            }) if what.as_str() == "out"
        ),
        "{err}"
    );

    let head = Weight::from_f32(vec![0.0; 10], 5, 2).unwrap();
    let err = Embeddings::new(e.clone(), LmHead::Separate(head)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LmHeadShape {
                expected: [4, 3],
                found: [5, 2]
            }
        ),
        "{err}"
    );

    let m = Embeddings::new(e, LmHead::Tied).unwrap();
    let x = ndarray::Array2::<f32>::zeros((2, 4));
    let err = m.logits_nd(x.view(), Positions::All).unwrap_err();
    assert!(err.to_string().contains("hidden"), "{err}");
    let empty = ndarray::Array2::<f32>::zeros((0, 3));
    assert!(matches!(
        m.logits_nd(empty.view(), Positions::Last),
        Err(Error::NoPositions)
    ));
    assert_eq!(
        m.logits_nd(empty.view(), Positions::All).unwrap().dim(),
        (0, 4)
    );
    let err = m
        .logits_into(&mut [0.0; 3], &[0.0; 3], 1, Positions::Last)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Core(deepblocks_core::Error::Length {
                what,
                expected: 4,
                found: 3,
                ..
            }) if what.as_str() == "logits"
        ),
        "{err}"
    );
    let err = m
        .logits_into(&mut [0.0; 4], &[0.0; 4], 1, Positions::Last)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Core(deepblocks_core::Error::Length {
                what,
                expected: 3,
                found: 4,
                ..
            }) if what.as_str() == "hidden"
        ),
        "{err}"
    );
}

#[test]
fn zero_vectors_have_similarity_zero() {
    assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 2.0]).unwrap(), 0.0);
    let e = embedding(2, 2, vec![0.0, 0.0, 1.0, 0.0], DType::F32);
    let n = e.nearest(&[1.0, 0.0], 2, &[]).unwrap();
    assert_eq!((n[0].id, n[0].similarity), (1, 1.0));
    assert_eq!((n[1].id, n[1].similarity), (0, 0.0));
}
