//! Routing statistics: per-expert token counts and the three balance losses of DeepSeek-V2
//! §2.2.3, computed from one [`Routing`] (one sequence of T tokens, as in the paper).
//!
//! With N routed experts, K experts per token, T tokens, affinities `s_{i,t}` (the unbiased
//! scores) and the experts split into D equal contiguous device groups `E_1 … E_D`:
//!
//! ```text
//! f_i   = N / (K·T) · Σ_t 1(token t selects expert i)        P_i   = 1/T · Σ_t s_{i,t}
//! L_ExpBal  = α₁ · Σ_{i ≤ N} f_i · P_i
//!
//! f'_d  = 1/|E_d| · Σ_{i ∈ E_d} f_i                           P'_d  = Σ_{i ∈ E_d} P_i
//! L_DevBal  = α₂ · Σ_{d ≤ D} f'_d · P'_d
//!
//! f''_d = D / (M·T) · Σ_t 1(token t is sent to device d)     P''_d = Σ_{i ∈ E_d} P_i
//! L_CommBal = α₃ · Σ_{d ≤ D} f''_d · P''_d
//! ```
//!
//! M is the most devices a token may reach (`topk_group` under device-limited routing). The
//! functions return the sums without the α factors (DeepSeek-V2 trained with α₁ = 0.003,
//! α₂ = 0.05, α₃ = 0.02). Perfectly uniform routing gives 1 for each sum. For a batch of
//! sequences, average the per-sequence values (what DeepSeek's `seq_aux` does for L_ExpBal).

use crate::{Error, Result, Routing};

/// How many tokens each expert received: `counts[i] = Σ_t 1(token t selects expert i)`.
///
/// ```
/// use deepblocks_moe::{stats::expert_counts, Routing};
/// let r = Routing::new(vec![0, 2, 2, 1], vec![1.0; 4], vec![0.25; 6], 2, 2, 3)?;
/// assert_eq!(expert_counts(&r), vec![1, 1, 2]);
/// # Ok::<(), deepblocks_moe::Error>(())
/// ```
pub fn expert_counts(routing: &Routing) -> Vec<usize> {
    let mut counts = vec![0usize; routing.n_experts()];
    for &j in routing.ids() {
        counts[j] += 1;
    }
    counts
}

/// The statistics of §2.2.3 for one routing (see the module documentation for the formulas).
#[derive(Clone, Debug, PartialEq)]
pub struct Balance {
    /// Tokens per expert, `[N]`.
    pub counts: Vec<usize>,
    /// `f_i`: load of expert i relative to uniform, `[N]`.
    pub f: Vec<f64>,
    /// `P_i`: mean affinity of expert i, `[N]`.
    pub p: Vec<f64>,
    /// `Σ_i f_i P_i` (L_ExpBal / α₁).
    pub expert_loss: f64,
    /// `f'_d`: mean `f_i` over device d's experts, `[D]`.
    pub device_f: Vec<f64>,
    /// `P'_d = P''_d`: summed `P_i` over device d's experts, `[D]`.
    pub device_p: Vec<f64>,
    /// `Σ_d f'_d P'_d` (L_DevBal / α₂).
    pub device_loss: f64,
    /// Tokens sent to each device (a token counts once per device it reaches), `[D]`.
    pub device_tokens: Vec<usize>,
    /// `f''_d`: tokens sent to device d relative to uniform, `[D]`.
    pub comm_f: Vec<f64>,
    /// `Σ_d f''_d P''_d` (L_CommBal / α₃).
    pub comm_loss: f64,
}

/// The balance statistics of `routing` with its experts split into `n_devices` equal contiguous
/// groups, `max_devices_per_token` being M.
///
/// ```
/// use deepblocks_moe::{stats::balance, Routing};
/// // 4 experts on 2 devices, 2 tokens, k = 2, uniform affinities and perfectly even routing.
/// let r = Routing::new(vec![0, 2, 1, 3], vec![1.0; 4], vec![0.25; 8], 2, 2, 4)?;
/// let b = balance(&r, 2, 2)?;
/// assert!((b.expert_loss - 1.0).abs() < 1e-12);
/// assert!((b.device_loss - 1.0).abs() < 1e-12);
/// assert!((b.comm_loss - 1.0).abs() < 1e-12);
/// # Ok::<(), deepblocks_moe::Error>(())
/// ```
///
/// # Errors
/// [`Error::Config`] naming `routing` when it has no tokens, `n_devices` when it is 0 or does
/// not divide the experts, `max_devices_per_token` when it is not in `1..=n_devices`.
pub fn balance(
    routing: &Routing,
    n_devices: usize,
    max_devices_per_token: usize,
) -> Result<Balance> {
    let (t, k, n) = (routing.tokens(), routing.k(), routing.n_experts());
    if t == 0 {
        return Err(Error::Config {
            field: "routing",
            value: "0 tokens".into(),
            reason: "balance statistics average over tokens",
        });
    }
    if n_devices == 0 || !n.is_multiple_of(n_devices) {
        return Err(Error::Config {
            field: "n_devices",
            value: n_devices.to_string(),
            reason: "must divide the routed experts into equal groups",
        });
    }
    let m = max_devices_per_token;
    if m == 0 || m > n_devices {
        return Err(Error::Config {
            field: "max_devices_per_token",
            value: m.to_string(),
            reason: "must be in 1..=n_devices",
        });
    }
    let per_device = n / n_devices;
    let counts = expert_counts(routing);
    let f: Vec<f64> = counts
        .iter()
        .map(|&c| n as f64 / (k * t) as f64 * c as f64)
        .collect();
    let mut p = vec![0.0f64; n];
    for token in 0..t {
        for (pi, &s) in p.iter_mut().zip(routing.token_scores(token)) {
            *pi += s as f64;
        }
    }
    for pi in &mut p {
        *pi /= t as f64;
    }
    let expert_loss = f.iter().zip(&p).map(|(a, b)| a * b).sum();

    let device_f: Vec<f64> = f
        .chunks_exact(per_device)
        .map(|c| c.iter().sum::<f64>() / per_device as f64)
        .collect();
    let device_p: Vec<f64> = p.chunks_exact(per_device).map(|c| c.iter().sum()).collect();
    let device_loss = device_f.iter().zip(&device_p).map(|(a, b)| a * b).sum();

    let mut device_tokens = vec![0usize; n_devices];
    let mut reached = vec![false; n_devices];
    for token in 0..t {
        reached.fill(false);
        for &j in routing.token_ids(token) {
            reached[j / per_device] = true;
        }
        for (c, &r) in device_tokens.iter_mut().zip(&reached) {
            *c += r as usize;
        }
    }
    let comm_f: Vec<f64> = device_tokens
        .iter()
        .map(|&c| n_devices as f64 / (m * t) as f64 * c as f64)
        .collect();
    let comm_loss = comm_f.iter().zip(&device_p).map(|(a, b)| a * b).sum();

    Ok(Balance {
        counts,
        f,
        p,
        expert_loss,
        device_f,
        device_p,
        device_loss,
        device_tokens,
        comm_f,
        comm_loss,
    })
}
