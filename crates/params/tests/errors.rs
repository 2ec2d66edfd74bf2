//! Bad input: every error names the setting at fault. (A config's own errors are
//! deepblocks-config's, tested there; here they arrive as `Error::Config`.)

use deepblocks_config::{Architecture, Ffn};
use deepblocks_params::{Bits, DeploymentPlan, Error, GPT3_175B, mla_accounting, mla_tree};

#[track_caller]
fn assert_names(err: &Error, field: &str) {
    assert_eq!(err.field(), Some(field), "{err}");
    assert!(err.to_string().contains(field), "{err}");
}

#[test]
fn bits_out_of_range() {
    for b in [0, 65] {
        let err = Bits::new(b).unwrap_err();
        assert_names(&err, "bits");
    }
}

fn plan() -> DeploymentPlan {
    DeploymentPlan {
        devices: 8,
        memory_per_device: 80_000_000_000,
        reserve_per_device: 0,
        tensor_parallel: 8,
        expert_parallel: 8,
        weight_bits: Bits::BF16,
        kv_bits: Bits::BF16,
        batch: 1,
    }
}

#[test]
fn deployment_settings_must_fit_the_model() {
    let v2 = mla_accounting(&Architecture::deepseek_v2(), "V2").unwrap();
    let cases = [
        (
            DeploymentPlan {
                tensor_parallel: 3,
                ..plan()
            },
            "tensor_parallel",
        ), // not | 8 devices
        (
            DeploymentPlan {
                devices: 48,
                tensor_parallel: 48,
                expert_parallel: 16,
                ..plan()
            },
            "tensor_parallel", // not | 128 heads
        ),
        (
            DeploymentPlan {
                expert_parallel: 3,
                ..plan()
            },
            "expert_parallel",
        ),
        (
            DeploymentPlan {
                devices: 64,
                expert_parallel: 64, // not | 160 experts
                ..plan()
            },
            "expert_parallel",
        ),
        (
            DeploymentPlan {
                devices: 0,
                ..plan()
            },
            "devices",
        ),
        (DeploymentPlan { batch: 0, ..plan() }, "batch"),
        (
            DeploymentPlan {
                memory_per_device: 0,
                ..plan()
            },
            "memory_per_device",
        ),
    ];
    for (p, field) in cases {
        let err = p.plan(&v2).unwrap_err();
        assert_names(&err, field);
    }
    // A dense model has no experts to spread.
    let gpt3 = GPT3_175B.accounting().unwrap();
    let err = plan().plan(&gpt3).unwrap_err();
    assert_names(&err, "expert_parallel");
}

/// A description built by hand is checked by the count like a parsed one: an error naming the
/// config key, never a panic.
#[test]
fn hand_built_descriptions_are_validated() {
    let good = Architecture::deepseek_v2();
    let mut c = good.clone();
    let Ffn::Moe(m) = &mut c.ffn else { panic!() };
    m.moe_layer_freq = 0;
    let err = mla_tree(&c).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert_names(&err, "moe_layer_freq");
    let mut c = good.clone();
    c.attention.kv_lora_rank = 0;
    assert_names(&mla_tree(&c).unwrap_err(), "kv_lora_rank");
    let mut c = good.clone();
    let Ffn::Moe(m) = &mut c.ffn else { panic!() };
    m.num_experts_per_tok = 161;
    assert_names(&mla_tree(&c).unwrap_err(), "num_experts_per_tok");
    let mut c = good;
    c.attention.qk_rope_head_dim = usize::MAX - 1;
    let err = mla_tree(&c).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Config(deepblocks_config::Error::Overflow { .. })
        ),
        "{err}"
    );

    let huge = deepblocks_params::Gpt3Config {
        n_layers: u64::MAX,
        ..GPT3_175B
    };
    assert!(matches!(huge.full().unwrap_err(), Error::Overflow { .. }));
    assert!(matches!(
        huge.walkthrough().unwrap_err(),
        Error::Overflow { .. }
    ));
}
