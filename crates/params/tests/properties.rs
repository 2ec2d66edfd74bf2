//! Properties over random DeepSeek-V2 configs: the tree equals the closed-form count, the parts
//! sum to the whole, routing k of E is the only thing that makes activated differ from total, the
//! layer rule matches a brute-force walk, and both config forms read the same.

use deepblocks_config::Architecture;
use deepblocks_params::{Component, InputEmbedding, Kind, mla_tree};
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct Cfg {
    vocab: u64,
    heads: u64,
    head_mult: u64, // hidden = heads · head_mult
    layers: u64,
    inter: u64,
    q_lora: Option<u64>,
    c: u64,
    d: u64,
    r: u64,
    v: u64,
    e_groups: u64, // n_group
    e_per_group: u64,
    k: u64,
    moe_inter: u64,
    shared: u64,
    first_k: u64,
    freq: u64,
    tied: bool,
}

impl Cfg {
    fn hidden(&self) -> u64 {
        self.heads * self.head_mult
    }
    fn experts(&self) -> u64 {
        self.e_groups * self.e_per_group
    }

    /// The hub form (`rope_theta` + `rope_scaling`).
    fn hub_json(&self) -> Value {
        json!({
            "model_type": "deepseek_v2",
            "vocab_size": self.vocab,
            "hidden_size": self.hidden(),
            "intermediate_size": self.inter,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.heads,
            "q_lora_rank": self.q_lora,
            "kv_lora_rank": self.c,
            "qk_nope_head_dim": self.d,
            "qk_rope_head_dim": self.r,
            "v_head_dim": self.v,
            "n_routed_experts": self.experts(),
            "num_experts_per_tok": self.k,
            "moe_intermediate_size": self.moe_inter,
            "n_shared_experts": self.shared,
            "n_group": self.e_groups,
            "topk_group": self.e_groups,
            "topk_method": "group_limited_greedy",
            "first_k_dense_replace": self.first_k,
            "moe_layer_freq": self.freq,
            "tie_word_embeddings": self.tied,
            "max_position_embeddings": 4096,
            "rope_theta": 10000,
            "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 1024,
                             "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
        })
    }

    /// The transformers-5 form (`rope_parameters`, derived `head_dim` and `qk_head_dim`).
    fn tf5_json(&self) -> Value {
        let mut v = self.hub_json();
        let m = v.as_object_mut().unwrap();
        let scaling = m.remove("rope_scaling").unwrap();
        let theta = m.remove("rope_theta").unwrap();
        let mut params = scaling.as_object().unwrap().clone();
        params.remove("type");
        params.insert("rope_type".into(), json!("yarn"));
        params.insert("rope_theta".into(), theta);
        m.insert("rope_parameters".into(), Value::Object(params));
        m.insert("head_dim".into(), json!(self.r));
        m.insert("qk_head_dim".into(), json!(self.d + self.r));
        v
    }

    /// The count written out by hand from the architecture.
    fn closed_form(&self) -> (u64, u64) {
        let (h, l, n) = (self.hidden(), self.layers, self.heads);
        let (c, d, r, v) = (self.c, self.d, self.r, self.v);
        let moe_layers = (0..l)
            .filter(|i| *i >= self.first_k && i % self.freq == 0)
            .count() as u64;
        let dense_layers = l - moe_layers;
        let q = match self.q_lora {
            None => n * (d + r) * h,
            Some(q) => q * h + q + n * (d + r) * q,
        };
        let attn = q + (c + r) * h + c + n * (d + v) * c + h * n * v;
        let mlp = |w: u64| 3 * w * h;
        let (e, i) = (self.experts(), self.moe_inter);
        let routed = 3 * i * h;
        let moe_shared = e * h
            + if self.shared > 0 {
                mlp(self.shared * i)
            } else {
                0
            };
        let per_layer = attn + 2 * h;
        let embed = self.vocab * h * if self.tied { 1 } else { 2 };
        let total = embed
            + l * per_layer
            + dense_layers * mlp(self.inter)
            + moe_layers * (moe_shared + e * routed)
            + h;
        let activated = total - moe_layers * (e - self.k) * routed;
        (total, activated)
    }
}

fn cfg() -> impl Strategy<Value = Cfg> {
    (
        (1u64..300, 1u64..9, 1u64..6, 1u64..7, 1u64..50),
        (
            proptest::option::of(1u64..20),
            1u64..20,
            1u64..9,
            1u64..5, // r / 2: the rotary dimension is even
            1u64..9,
        ),
        (1u64..5, 1u64..5, 1u64..30, 0u64..3),
        (0u64..4, 1u64..4, any::<bool>()),
    )
        .prop_flat_map(|(a, b, (g, per, mi, sh), (fk, fq, t))| {
            let e = g * per;
            (1..=e).prop_map(move |k| Cfg {
                vocab: a.0,
                heads: a.1,
                head_mult: a.2,
                layers: a.3,
                inter: a.4,
                q_lora: b.0,
                c: b.1,
                d: b.2,
                r: 2 * b.3,
                v: b.4,
                e_groups: g,
                e_per_group: per,
                k,
                moe_inter: mi,
                shared: sh,
                first_k: fk,
                freq: fq,
                tied: t,
            })
        })
}

/// Each group's counts are the sums of its children's, all the way down.
fn sums_hold(c: &Component) -> bool {
    if c.as_tensor().is_some() {
        return true;
    }
    let kids = c.children();
    kids.iter().map(Component::params).sum::<u64>() == c.params()
        && kids.iter().map(Component::matrices).sum::<u64>() == c.matrices()
        && kids
            .iter()
            .map(|k| k.activated(InputEmbedding::Include))
            .sum::<u64>()
            == c.activated(InputEmbedding::Include)
        && kids.iter().all(sums_hold)
}

proptest! {
    #[test]
    fn tree_equals_closed_form(c in cfg()) {
        let parsed = parse(&c.hub_json());
        let tree = mla_tree(&parsed).unwrap();
        let (total, activated) = c.closed_form();
        prop_assert_eq!(tree.params(), total);
        prop_assert_eq!(tree.activated(InputEmbedding::Include), activated);
        prop_assert_eq!(
            tree.activated(InputEmbedding::Exclude),
            activated - c.vocab * c.hidden()
        );
        prop_assert!(sums_hold(&tree));
        // Only routed experts make activated differ from total.
        let routed = tree.params_where(|k| k == Kind::RoutedExpert);
        let active_routed = routed / c.experts() * c.k;
        prop_assert_eq!(tree.params() - tree.activated(InputEmbedding::Include), routed - active_routed);
    }

    #[test]
    fn both_forms_read_the_same(c in cfg()) {
        let hub = parse(&c.hub_json());
        let tf5 = parse(&c.tf5_json());
        prop_assert_eq!(&hub, &tf5);
    }

    #[test]
    fn layer_rule_matches_a_walk(c in cfg()) {
        let parsed = parse(&c.hub_json());
        let walked = (0..c.layers as usize).filter(|&i| parsed.is_moe_layer(i)).count();
        prop_assert_eq!(parsed.moe_layers(), walked);
        prop_assert_eq!(parsed.dense_layers() + parsed.moe_layers(), c.layers as usize);
    }

    #[test]
    fn all_experts_active_means_activated_is_total(mut c in cfg()) {
        c.k = c.experts();
        let tree = mla_tree(&parse(&c.hub_json())).unwrap();
        prop_assert_eq!(tree.activated(InputEmbedding::Include), tree.params());
    }

    #[test]
    fn tying_saves_one_embedding(mut c in cfg()) {
        c.tied = false;
        let untied = mla_tree(&parse(&c.hub_json())).unwrap();
        c.tied = true;
        let tied = mla_tree(&parse(&c.hub_json())).unwrap();
        prop_assert_eq!(untied.params() - tied.params(), c.vocab * c.hidden());
        prop_assert_eq!(untied.matrices() - tied.matrices(), 1);
    }
}

fn parse(v: &Value) -> Architecture {
    Architecture::from_json(v).unwrap().architecture
}

/// Layers so many that a count passes 64 bits: an error, not a panic or a wrapped number.
#[test]
fn overflow_is_an_error() {
    let mut lite = Architecture::deepseek_v2_lite();
    lite.num_hidden_layers = 1 << 40;
    lite.max_position_embeddings = 4096;
    let err = mla_tree(&lite).unwrap_err();
    assert!(
        matches!(err, deepblocks_params::Error::Overflow { .. }),
        "{err}"
    );
}
