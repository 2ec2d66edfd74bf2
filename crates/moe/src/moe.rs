//! The DeepSeekMoE layer (DeepSeek-V2 §2.2.1):
//!
//! ```text
//! h'_t = u_t + Σ_{i ≤ N_s} FFN^(s)_i(u_t) + Σ_{i ≤ N_r} g_{i,t} · FFN^(r)_i(u_t)
//! ```
//!
//! This module computes the two sums (the caller adds the residual `u_t`): the shared experts,
//! which every token uses and which are stored as one MLP of width `moe_intermediate_size ·
//! n_shared_experts`, and the routed experts weighted by the router's `g_{i,t}` (zero for the
//! experts a token did not choose).

use deepblocks_core::{Weight, linear, linear_naive, on_pool};
use rayon::prelude::*;

use crate::{Error, Experts, Mlp, Result, Router, RouterConfig, Routing};

/// The configuration of one MoE layer: the MoE fields of config.json, named as there.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    /// Hidden size h (`hidden_size`).
    pub hidden_size: usize,
    /// Width i of one routed expert (`moe_intermediate_size`).
    pub moe_intermediate_size: usize,
    /// Shared experts (`n_shared_experts`); they are stored as one MLP of width
    /// `moe_intermediate_size · n_shared_experts`. 0 means none.
    pub n_shared_experts: usize,
    /// The router.
    pub router: RouterConfig,
}

/// The shared experts of a layer.
#[derive(Clone, Debug)]
pub enum SharedExperts {
    /// No shared experts (`n_shared_experts` = 0 or null).
    None,
    /// One MLP of width `moe_intermediate_size · n_shared_experts` (`mlp.shared_experts`).
    Mlp(Mlp),
}

/// One DeepSeekMoE layer: router, routed experts and shared experts.
///
/// ```
/// use deepblocks_core::Weight;
/// use deepblocks_moe::{Experts, Mlp, Moe, MoeConfig, RouterConfig, SharedExperts};
///
/// // h = 1, two experts of width 1, one per token; no shared experts.
/// let expert = |scale: f32| {
///     let w = |v: f32| Weight::from_f32(vec![v], 1, 1);
///     Mlp::new(w(1.0)?, w(1.0)?, w(scale)?)
/// };
/// let config = MoeConfig {
///     hidden_size: 1,
///     moe_intermediate_size: 1,
///     n_shared_experts: 0,
///     router: RouterConfig::new(2, 1),
/// };
/// let gate = Weight::from_f32(vec![-1.0, 1.0], 2, 1)?; // x > 0 prefers expert 1
/// let experts = Experts::from_mlps(vec![expert(1.0)?, expert(10.0)?])?;
/// let moe = Moe::new(config, gate, None, experts, SharedExperts::None)?;
///
/// let mut y = [0.0];
/// let routing = moe.forward(&mut y, &[2.0], 1)?;
/// assert_eq!(routing.token_ids(0), &[1]);
/// let g = routing.token_weights(0)[0]; // softmax([-2, 2])[1]
/// assert!((y[0] - g * 10.0 * deepblocks_core::silu(2.0) * 2.0).abs() < 1e-5);
/// # Ok::<(), deepblocks_moe::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Moe {
    config: MoeConfig,
    gate: Router,     // mlp.gate: weight [e, h] (+ e_score_correction_bias [e])
    experts: Experts, // mlp.experts.{0..e}: gate/up [i, h], down [h, i]
    shared_experts: SharedExperts, // mlp.shared_experts: gate/up [i·n_s, h], down [h, i·n_s]
}

impl Moe {
    /// A MoE layer from its configuration and weights (names as in the hub checkpoints):
    /// `gate` is `mlp.gate.weight [e, h]`, `e_score_correction_bias` is
    /// `mlp.gate.e_score_correction_bias [e]` (`noaux_tc` only).
    ///
    /// # Errors
    /// As [`Router::new`]; a core shape error naming `gate`, `experts`, `experts[0].down_proj`
    /// or `shared_experts.down_proj` when a weight does not match the configuration; [`Error::Config`] naming `n_shared_experts` when the
    /// shared experts are present but configured absent, or the reverse.
    pub fn new(
        config: MoeConfig,
        gate: Weight,
        e_score_correction_bias: Option<Vec<f32>>,
        experts: Experts,
        shared_experts: SharedExperts,
    ) -> Result<Self> {
        let (h, i) = (config.hidden_size, config.moe_intermediate_size);
        let e = config.router.n_routed_experts;
        if gate.cols() != h {
            return Err(Error::shape("gate", &[e, h], &gate.shape()));
        }
        let gate = Router::new(config.router.clone(), gate, e_score_correction_bias)?;
        if experts.len() != e {
            return Err(Error::length("experts", &[e], experts.len()));
        }
        let down = experts.get(0).down_proj();
        if down.shape() != [h, i] {
            return Err(Error::shape("experts[0].down_proj", &[h, i], &down.shape()));
        }
        match (&shared_experts, config.n_shared_experts) {
            (SharedExperts::None, 0) => {}
            (SharedExperts::Mlp(mlp), n) if n > 0 => {
                let width = i * n;
                if mlp.down_proj().shape() != [h, width] {
                    return Err(Error::shape(
                        "shared_experts.down_proj",
                        &[h, width],
                        &mlp.down_proj().shape(),
                    ));
                }
            }
            (SharedExperts::None, n) => {
                return Err(Error::Config {
                    field: "n_shared_experts",
                    value: n.to_string(),
                    reason: "the configuration has shared experts but no shared-expert weights were given",
                });
            }
            (SharedExperts::Mlp(_), _) => {
                return Err(Error::Config {
                    field: "n_shared_experts",
                    value: "0".into(),
                    reason: "shared-expert weights were given but the configuration has none",
                });
            }
        }
        Ok(Moe {
            config,
            gate,
            experts,
            shared_experts,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MoeConfig {
        &self.config
    }

    /// The router (`mlp.gate`).
    pub fn router(&self) -> &Router {
        &self.gate
    }

    /// The routed experts.
    pub fn experts(&self) -> &Experts {
        &self.experts
    }

    /// The shared experts.
    pub fn shared_experts(&self) -> &SharedExperts {
        &self.shared_experts
    }

    /// Bytes of all its weights (router with its correction bias, every routed expert, shared
    /// experts), in their stored dtypes.
    pub fn weight_bytes(&self) -> usize {
        let shared = match &self.shared_experts {
            SharedExperts::None => 0,
            SharedExperts::Mlp(m) => m.weight_bytes(),
        };
        let bias = self
            .gate
            .e_score_correction_bias()
            .map_or(0, |b| 4 * b.len());
        self.gate.weight().bytes()
            + bias
            + self
                .experts
                .as_slice()
                .iter()
                .map(Mlp::weight_bytes)
                .sum::<usize>()
            + shared
    }

    /// `out[t, h]` = shared experts + weighted routed experts of `x[t, h]` (no residual). Routes,
    /// then dispatches with [`Self::routed_decode`] for one token and [`Self::routed_grouped`]
    /// for more; the shared MLP runs beside the routed experts. Returns the routing (for
    /// [`crate::stats`]).
    ///
    /// # Errors
    /// a core shape error naming `x` or `out`; as [`Router::route`].
    pub fn forward(&self, out: &mut [f32], x: &[f32], t: usize) -> Result<Routing> {
        self.check_io(out, x, t)?;
        // One crossing into the pool: the gate, the experts and the shared MLP start their
        // loops there.
        on_pool(|| {
            let routing = self.gate.route(x, t)?;
            let (routed, shared) = rayon::join(
                || {
                    if t == 1 {
                        self.routed_decode(out, x, &routing)
                    } else {
                        self.routed_grouped(out, x, &routing)
                    }
                },
                || self.shared_forward(x, t, linear),
            );
            routed?;
            add_into(out, shared.as_deref());
            Ok(routing)
        })
    }

    /// The naive twin of [`Self::forward`]: [`Router::route_naive`], [`Self::routed_naive`] and
    /// the shared MLP through [`linear_naive`], all on one thread.
    ///
    /// # Errors
    /// As [`Self::forward`].
    pub fn forward_naive(&self, out: &mut [f32], x: &[f32], t: usize) -> Result<Routing> {
        self.check_io(out, x, t)?;
        let routing = self.gate.route_naive(x, t)?;
        self.routed_naive(out, x, &routing)?;
        add_into(out, self.shared_forward(x, t, linear_naive).as_deref());
        Ok(routing)
    }

    /// The routed sum `out[t] = Σ_j g_{t,j} · FFN_{id_{t,j}}(x[t])`, grouped by expert: the
    /// tokens routed to each expert are gathered into one matrix so that the expert runs one
    /// linear per projection over all of them (prefill). Experts run in parallel with rayon;
    /// each token's k terms are then summed in selection order, so the result does not depend on
    /// the thread schedule.
    ///
    /// # Errors
    /// a core shape error naming `routing`, `x` or `out` when they do not match this layer.
    pub fn routed_grouped(&self, out: &mut [f32], x: &[f32], routing: &Routing) -> Result<()> {
        self.check_routing(out, x, routing)?;
        let (t, k, h) = (routing.tokens(), routing.k(), self.config.hidden_size);
        let plan = DispatchPlan::new(routing);
        let active: Vec<usize> = (0..self.experts.len())
            .filter(|&j| plan.count(j) > 0)
            .collect();
        // One [n_j, h] output block per active expert.
        let blocks: Vec<Vec<f32>> = active
            .par_iter()
            .map(|&j| {
                let entries = plan.entries(j);
                let n = entries.len();
                let mut xe = vec![0.0f32; n * h]; // [n_j, h]
                for (row, &(token, _)) in xe.chunks_exact_mut(h).zip(entries) {
                    row.copy_from_slice(&x[token * h..(token + 1) * h]);
                }
                let mut ye = vec![0.0f32; n * h]; // [n_j, h]
                self.experts.get(j).forward_with(&mut ye, &xe, n, linear);
                ye
            })
            .collect();
        // Where each (token, slot) result lives: (block, row).
        let mut location = vec![(0usize, 0usize); t * k];
        for (b, &j) in active.iter().enumerate() {
            for (row, &(token, slot)) in plan.entries(j).iter().enumerate() {
                location[token * k + slot] = (b, row);
            }
        }
        for token in 0..t {
            let o = &mut out[token * h..(token + 1) * h];
            o.fill(0.0);
            for (slot, &g) in routing.token_weights(token).iter().enumerate() {
                let (b, row) = location[token * k + slot];
                axpy(o, g, &blocks[b][row * h..(row + 1) * h]);
            }
        }
        Ok(())
    }

    /// The routed sum for decoding: each token on its own, its k experts in parallel (each a
    /// GEMV per projection), summed in selection order. Meant for one token; correct for any.
    ///
    /// # Errors
    /// As [`Self::routed_grouped`].
    pub fn routed_decode(&self, out: &mut [f32], x: &[f32], routing: &Routing) -> Result<()> {
        self.check_routing(out, x, routing)?;
        let h = self.config.hidden_size;
        for token in 0..routing.tokens() {
            let xt = &x[token * h..(token + 1) * h];
            let ys: Vec<Vec<f32>> = routing
                .token_ids(token)
                .par_iter()
                .map(|&j| {
                    let mut y = vec![0.0f32; h];
                    self.experts.get(j).forward_with(&mut y, xt, 1, linear);
                    y
                })
                .collect();
            let o = &mut out[token * h..(token + 1) * h];
            o.fill(0.0);
            for (y, &g) in ys.iter().zip(routing.token_weights(token)) {
                axpy(o, g, y);
            }
        }
        Ok(())
    }

    /// The naive twin of the routed sum: token by token, expert by expert, with
    /// [`linear_naive`], on one thread.
    ///
    /// # Errors
    /// As [`Self::routed_grouped`].
    pub fn routed_naive(&self, out: &mut [f32], x: &[f32], routing: &Routing) -> Result<()> {
        self.check_routing(out, x, routing)?;
        let h = self.config.hidden_size;
        let mut y = vec![0.0f32; h];
        for token in 0..routing.tokens() {
            let xt = &x[token * h..(token + 1) * h];
            let o = &mut out[token * h..(token + 1) * h];
            o.fill(0.0);
            for (&j, &g) in routing
                .token_ids(token)
                .iter()
                .zip(routing.token_weights(token))
            {
                self.experts
                    .get(j)
                    .forward_with(&mut y, xt, 1, linear_naive);
                axpy(o, g, &y);
            }
        }
        Ok(())
    }

    fn shared_forward(
        &self,
        x: &[f32],
        t: usize,
        lin: fn(&mut [f32], &[f32], &Weight, usize),
    ) -> Option<Vec<f32>> {
        match &self.shared_experts {
            SharedExperts::None => None,
            SharedExperts::Mlp(mlp) => {
                let mut y = vec![0.0f32; t * self.config.hidden_size];
                mlp.forward_with(&mut y, x, t, lin);
                Some(y)
            }
        }
    }

    fn check_io(&self, out: &[f32], x: &[f32], t: usize) -> Result<()> {
        let h = self.config.hidden_size;
        for (name, len) in [("x", x.len()), ("out", out.len())] {
            if Some(len) != t.checked_mul(h) {
                return Err(Error::length(name, &[t, h], len));
            }
        }
        Ok(())
    }

    fn check_routing(&self, out: &[f32], x: &[f32], routing: &Routing) -> Result<()> {
        let e = self.experts.len();
        if routing.n_experts() != e {
            return Err(Error::shape(
                "routing (experts)",
                &[e],
                &[routing.n_experts()],
            ));
        }
        self.check_io(out, x, routing.tokens())
    }
}

/// `o += g · y`.
fn axpy(o: &mut [f32], g: f32, y: &[f32]) {
    for (a, &b) in o.iter_mut().zip(y) {
        *a += g * b;
    }
}

fn add_into(out: &mut [f32], add: Option<&[f32]>) {
    if let Some(add) = add {
        for (o, &a) in out.iter_mut().zip(add) {
            *o += a;
        }
    }
}

/// The (token, slot) pairs of a routing sorted by expert (a counting sort; tokens ascending
/// within an expert).
struct DispatchPlan {
    offsets: Vec<usize>,          // [e + 1]
    entries: Vec<(usize, usize)>, // [t·k]: (token, slot), grouped by expert
}

impl DispatchPlan {
    fn new(routing: &Routing) -> Self {
        let (e, k) = (routing.n_experts(), routing.k());
        let mut offsets = vec![0usize; e + 1];
        for &j in routing.ids() {
            offsets[j + 1] += 1;
        }
        for j in 0..e {
            offsets[j + 1] += offsets[j];
        }
        let mut next = offsets.clone();
        let mut entries = vec![(0, 0); routing.ids().len()];
        for (n, &j) in routing.ids().iter().enumerate() {
            entries[next[j]] = (n / k, n % k);
            next[j] += 1;
        }
        DispatchPlan { offsets, entries }
    }

    fn count(&self, j: usize) -> usize {
        self.offsets[j + 1] - self.offsets[j]
    }

    fn entries(&self, j: usize) -> &[(usize, usize)] {
        &self.entries[self.offsets[j]..self.offsets[j + 1]]
    }
}
