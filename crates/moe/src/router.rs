//! The router: gate logits, scoring, top-k selection and weighting (DeepSeek-V2 §2.2.1–2.2.2,
//! DeepSeek-V3 §2.1.2).
//!
//! For token t with hidden state `u_t` and gate weight `W_g` (`[e, h]`, one centroid per expert):
//!
//! ```text
//! logit_{i,t} = u_t · W_g[i]                         (f32, whatever the stored dtype of W_g)
//! s_{i,t}     = softmax_i(logit_{·,t})               (Scoring::Softmax, DeepSeek-V2)
//!             | sigmoid(logit_{i,t})                 (Scoring::Sigmoid, DeepSeek-V3)
//! c_{i,t}     = s_{i,t} + b_i                        (noaux_tc only; b = e_score_correction_bias)
//!             | s_{i,t}                              (otherwise)
//! ```
//!
//! Selection keeps the k largest `c_{i,t}`, restricted to the experts of the `topk_group` best of
//! `n_group` equal, contiguous groups for the grouped methods. The weights start from the
//! *unbiased* scores `s_{i,t}` of the chosen experts and go through a [`Weighting`] policy.
//!
//! Ties are broken towards the lower index, for groups and for experts alike, so a routing is a
//! pure function of its inputs. (torch.topk does not promise any order among equal values.)

use deepblocks_core::{Weight, linear, linear_naive, sigmoid, softmax_rows, softmax_rows_naive};
#[cfg(feature = "ndarray")]
use ndarray::{Array2, ArrayView2};

use crate::{Error, Result};

/// Added to the sum of the k weights before normalising, as DeepSeek's code does
/// (`topk_weight.sum(dim=-1, keepdim=True) + 1e-20`); it only matters for an all-zero row.
pub const NORM_EPS: f32 = 1e-20;

/// How gate logits become affinity scores `s_{i,t}` (`scoring_func` in config.json).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scoring {
    /// `softmax` over the experts (DeepSeek-V2 §2.2.1).
    #[default]
    Softmax,
    /// `sigmoid` of each logit (DeepSeek-V3 §2.1.2).
    Sigmoid,
}

impl Scoring {
    /// Turns `rows` rows of `cols` logits into scores, in place.
    ///
    /// # Panics
    /// If `x.len() != rows * cols`.
    pub fn apply_rows(self, x: &mut [f32], rows: usize, cols: usize) {
        match self {
            Scoring::Softmax => softmax_rows(x, rows, cols),
            Scoring::Sigmoid => {
                assert_eq!(
                    x.len(),
                    rows * cols,
                    "Scoring::apply_rows: x is not [rows, cols]"
                );
                for v in x {
                    *v = sigmoid(*v);
                }
            }
        }
    }

    /// The naive twin of [`Scoring::apply_rows`]: the definitions evaluated in f64.
    ///
    /// # Panics
    /// If `x.len() != rows * cols`.
    pub fn apply_rows_naive(self, x: &mut [f32], rows: usize, cols: usize) {
        match self {
            Scoring::Softmax => softmax_rows_naive(x, rows, cols),
            Scoring::Sigmoid => {
                assert_eq!(
                    x.len(),
                    rows * cols,
                    "Scoring::apply_rows_naive: x is not [rows, cols]"
                );
                for v in x {
                    *v = (1.0 / (1.0 + (-(*v as f64)).exp())) as f32;
                }
            }
        }
    }
}

/// How the k experts of a token are chosen (`topk_method` in config.json).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TopkMethod {
    /// `greedy`: the k largest scores over all experts.
    #[default]
    Greedy,
    /// `group_limited_greedy` (DeepSeek-V2 §2.2.2, device-limited routing): the experts form
    /// `n_group` contiguous groups of `e / n_group`; a group scores its best expert; the
    /// `topk_group` best groups are kept, and the k largest scores are taken inside them.
    GroupLimitedGreedy {
        /// Number of groups (devices in the paper, M of D).
        n_group: usize,
        /// Groups kept per token.
        topk_group: usize,
    },
    /// `noaux_tc` (DeepSeek-V3 §2.1.2, auxiliary-loss-free balancing): selection uses
    /// `s + e_score_correction_bias`; a group scores the sum of its two best biased scores; the
    /// `topk_group` best groups are kept and the k largest biased scores taken inside them. The
    /// weights come from the unbiased scores.
    NoauxTc {
        /// Number of groups (nodes in DeepSeek-V3).
        n_group: usize,
        /// Groups kept per token.
        topk_group: usize,
    },
}

impl TopkMethod {
    /// `(n_group, topk_group)` for the grouped methods.
    pub fn groups(self) -> Option<(usize, usize)> {
        match self {
            TopkMethod::Greedy => None,
            TopkMethod::GroupLimitedGreedy {
                n_group,
                topk_group,
            }
            | TopkMethod::NoauxTc {
                n_group,
                topk_group,
            } => Some((n_group, topk_group)),
        }
    }
}

/// How the unbiased scores `s` of the k chosen experts become their weights `g`.
///
/// With `S = Σ_{j ≤ k} s_j` and `ρ = routed_scaling_factor`:
///
/// | policy | `norm_topk_prob` and k > 1 | otherwise | used by |
/// |---|---|---|---|
/// | [`NormalizeOrScale`](Weighting::NormalizeOrScale) | `s / (S + 1e-20)` | `ρ · s` | DeepSeek-V2's `modeling_deepseek.py` (default) |
/// | [`NormalizeThenScale`](Weighting::NormalizeThenScale) | `ρ · s / (S + 1e-20)` | `ρ · s` | DeepSeek-V3's `modeling_deepseek.py` |
/// | [`ScaleOnly`](Weighting::ScaleOnly) | `ρ · s` | `ρ · s` | transformers 5's `deepseek_v2` (ignores `norm_topk_prob`) |
/// | [`AlwaysNormalizeThenScale`](Weighting::AlwaysNormalizeThenScale) | `ρ · s / (S + 1e-20)` | `ρ · s / (S + 1e-20)` when `norm_topk_prob` (k = 1 too: `ρ`), else `ρ · s` | transformers 5's `deepseek_v3` |
///
/// The released V2 and V2-Lite configs have `norm_topk_prob = false`, where all agree; the
/// V3-style ones have k = 8 and `norm_topk_prob = true`, where the last two agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weighting {
    /// DeepSeek-V2's rule: normalise when `norm_topk_prob` and k > 1, otherwise multiply by
    /// `routed_scaling_factor` (never both).
    #[default]
    NormalizeOrScale,
    /// DeepSeek-V3's rule: normalise when `norm_topk_prob` and k > 1, then always multiply by
    /// `routed_scaling_factor`.
    NormalizeThenScale,
    /// transformers 5's `DeepseekV2TopkRouter`: always multiply by `routed_scaling_factor`,
    /// never normalise.
    ScaleOnly,
    /// transformers 5's `DeepseekV3TopkRouter`: normalise whenever `norm_topk_prob` (for k = 1
    /// as well), then always multiply by `routed_scaling_factor`.
    AlwaysNormalizeThenScale,
}

impl Weighting {
    /// Applies the policy to one token's k raw scores, in place.
    pub fn apply(self, w: &mut [f32], norm_topk_prob: bool, routed_scaling_factor: f32) {
        let normalize = norm_topk_prob
            && match self {
                Weighting::NormalizeOrScale | Weighting::NormalizeThenScale => w.len() > 1,
                Weighting::AlwaysNormalizeThenScale => true,
                Weighting::ScaleOnly => false,
            };
        if normalize {
            let denominator = w.iter().sum::<f32>() + NORM_EPS;
            for v in w.iter_mut() {
                *v /= denominator;
            }
        }
        let then_scale = matches!(
            self,
            Weighting::NormalizeThenScale | Weighting::AlwaysNormalizeThenScale
        );
        if !normalize || then_scale {
            for v in w.iter_mut() {
                *v *= routed_scaling_factor;
            }
        }
    }
}

/// The router's configuration: the MoE fields of config.json that routing needs, named as there.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterConfig {
    /// Routed experts, e (`n_routed_experts`).
    pub n_routed_experts: usize,
    /// Experts per token, k (`num_experts_per_tok`).
    pub num_experts_per_tok: usize,
    /// `scoring_func`.
    pub scoring_func: Scoring,
    /// `topk_method`, with `n_group` / `topk_group` for the grouped methods.
    pub topk_method: TopkMethod,
    /// `norm_topk_prob`: whether the k weights are normalised to sum to 1 (see [`Weighting`]).
    pub norm_topk_prob: bool,
    /// `routed_scaling_factor` (ρ): 16 in DeepSeek-V2, 1 in V2-Lite, 2.5 in V3.
    pub routed_scaling_factor: f32,
    /// Which rule combines `norm_topk_prob` and `routed_scaling_factor`.
    pub weighting: Weighting,
}

impl RouterConfig {
    /// Greedy softmax routing of `n_routed_experts` experts, k per token, weights unscaled
    /// (ρ = 1, no normalisation, DeepSeek's weighting rule). Change the public fields for more.
    pub fn new(n_routed_experts: usize, num_experts_per_tok: usize) -> Self {
        RouterConfig {
            n_routed_experts,
            num_experts_per_tok,
            scoring_func: Scoring::Softmax,
            topk_method: TopkMethod::Greedy,
            norm_topk_prob: false,
            routed_scaling_factor: 1.0,
            weighting: Weighting::NormalizeOrScale,
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`Error::Config`] for zero experts, k = 0 or a non-finite `routed_scaling_factor`;
    /// [`Error::TooManyExpertsPerToken`] for k > e; [`Error::GroupsDoNotDivide`] when `n_group`
    /// is 0 or does not divide e; [`Error::BadTopkGroup`] for `topk_group` outside
    /// `1..=n_group`; [`Error::KeptGroupsTooSmall`] when the kept groups hold fewer than k
    /// experts; [`Error::Config`] for `noaux_tc` with groups of one expert (a group scores its
    /// top two).
    pub fn validate(&self) -> Result<()> {
        let (e, k) = (self.n_routed_experts, self.num_experts_per_tok);
        if e == 0 {
            return Err(Error::Config {
                field: "n_routed_experts",
                value: "0".into(),
                reason: "a MoE layer needs at least one routed expert",
            });
        }
        if k == 0 {
            return Err(Error::Config {
                field: "num_experts_per_tok",
                value: "0".into(),
                reason: "each token needs at least one expert",
            });
        }
        if k > e {
            return Err(Error::TooManyExpertsPerToken { k, experts: e });
        }
        if !self.routed_scaling_factor.is_finite() {
            return Err(Error::Config {
                field: "routed_scaling_factor",
                value: self.routed_scaling_factor.to_string(),
                reason: "must be a finite number",
            });
        }
        if let Some((n_group, topk_group)) = self.topk_method.groups() {
            if n_group == 0 || !e.is_multiple_of(n_group) {
                return Err(Error::GroupsDoNotDivide {
                    n_group,
                    experts: e,
                });
            }
            if topk_group == 0 || topk_group > n_group {
                return Err(Error::BadTopkGroup {
                    topk_group,
                    n_group,
                });
            }
            let group_size = e / n_group;
            if k > topk_group * group_size {
                return Err(Error::KeptGroupsTooSmall {
                    k,
                    topk_group,
                    group_size,
                });
            }
            if matches!(self.topk_method, TopkMethod::NoauxTc { .. }) && group_size < 2 {
                return Err(Error::Config {
                    field: "n_group",
                    value: n_group.to_string(),
                    reason: "noaux_tc scores a group by its two best experts, so groups need at least two",
                });
            }
        }
        Ok(())
    }

    /// Experts per group (`e` for greedy routing).
    pub fn group_size(&self) -> usize {
        match self.topk_method.groups() {
            Some((n_group, _)) if n_group > 0 => self.n_routed_experts / n_group,
            _ => self.n_routed_experts,
        }
    }

    /// Checks `bias` against the method: required (length e, finite) for `noaux_tc`, absent
    /// otherwise.
    fn check_bias(&self, bias: Option<&[f32]>) -> Result<()> {
        let noaux = matches!(self.topk_method, TopkMethod::NoauxTc { .. });
        match bias {
            None if noaux => Err(Error::Config {
                field: "e_score_correction_bias",
                value: "absent".into(),
                reason: "topk_method noaux_tc selects experts with it",
            }),
            Some(b) if !noaux => Err(Error::Config {
                field: "e_score_correction_bias",
                value: format!("[{} values]", b.len()),
                reason: "only topk_method noaux_tc uses it; refusing to ignore it silently",
            }),
            Some(b) => {
                if b.len() != self.n_routed_experts {
                    return Err(Error::length(
                        "e_score_correction_bias",
                        &[self.n_routed_experts],
                        b.len(),
                    ));
                }
                check_finite("e_score_correction_bias", b)
            }
            None => Ok(()),
        }
    }
}

fn check_finite(what: &'static str, x: &[f32]) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFinite {
            what,
            index,
            value: x[index],
        }),
        None => Ok(()),
    }
}

/// The routing of `t` tokens: for each, k distinct expert ids, their weights, and the scores of
/// all experts (what the balance statistics need).
///
/// A token's ids come in selection order: largest selection score first (for `noaux_tc` the
/// biased score), ties to the lower id.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    t: usize,
    k: usize,
    n_experts: usize,
    ids: Vec<usize>,   // [t, k]
    weights: Vec<f32>, // [t, k]
    scores: Vec<f32>,  // [t, e]  unbiased s_{i,t}
}

impl Routing {
    /// A routing from its parts, checked: ids in `0..n_experts` and distinct per token, weights
    /// and scores finite.
    ///
    /// # Errors
    /// a core shape or length error naming `ids`, `weights` or `scores` when a length is not `[t, k]` /
    /// `[t, n_experts]`; [`Error::ExpertOutOfRange`]; [`Error::DuplicateExpert`];
    /// [`Error::NonFinite`].
    pub fn new(
        ids: Vec<usize>,
        weights: Vec<f32>,
        scores: Vec<f32>,
        t: usize,
        k: usize,
        n_experts: usize,
    ) -> Result<Self> {
        for (name, len, shape) in [
            ("ids", ids.len(), [t, k]),
            ("weights", weights.len(), [t, k]),
            ("scores", scores.len(), [t, n_experts]),
        ] {
            if Some(len) != shape[0].checked_mul(shape[1]) {
                return Err(Error::length(name, &shape, len));
            }
        }
        for token in 0..t {
            let row = &ids[token * k..(token + 1) * k];
            for (slot, &expert) in row.iter().enumerate() {
                if expert >= n_experts {
                    return Err(Error::ExpertOutOfRange {
                        token,
                        slot,
                        expert,
                        experts: n_experts,
                    });
                }
                if row[..slot].contains(&expert) {
                    return Err(Error::DuplicateExpert { token, expert });
                }
            }
        }
        check_finite("weights", &weights)?;
        check_finite("scores", &scores)?;
        Ok(Routing {
            t,
            k,
            n_experts,
            ids,
            weights,
            scores,
        })
    }

    /// Tokens routed, t.
    pub fn tokens(&self) -> usize {
        self.t
    }

    /// Experts per token, k.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Routed experts, e.
    pub fn n_experts(&self) -> usize {
        self.n_experts
    }

    /// All expert ids, `[t, k]` row-major.
    pub fn ids(&self) -> &[usize] {
        &self.ids
    }

    /// All weights, `[t, k]` row-major, matching [`Self::ids`].
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// All unbiased scores `s_{i,t}`, `[t, e]` row-major.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// The k expert ids of `token`.
    ///
    /// # Panics
    /// If `token >= t`.
    pub fn token_ids(&self, token: usize) -> &[usize] {
        &self.ids[token * self.k..(token + 1) * self.k]
    }

    /// The k weights of `token`.
    ///
    /// # Panics
    /// If `token >= t`.
    pub fn token_weights(&self, token: usize) -> &[f32] {
        &self.weights[token * self.k..(token + 1) * self.k]
    }

    /// The e scores of `token`.
    ///
    /// # Panics
    /// If `token >= t`.
    pub fn token_scores(&self, token: usize) -> &[f32] {
        &self.scores[token * self.n_experts..(token + 1) * self.n_experts]
    }

    /// The ids as an ndarray `[t, k]`.
    #[cfg(feature = "ndarray")]
    pub fn ids_nd(&self) -> Array2<usize> {
        Array2::from_shape_vec((self.t, self.k), self.ids.clone()).expect("ids are [t, k]")
    }

    /// The weights as an ndarray `[t, k]`.
    #[cfg(feature = "ndarray")]
    pub fn weights_nd(&self) -> Array2<f32> {
        Array2::from_shape_vec((self.t, self.k), self.weights.clone()).expect("weights are [t, k]")
    }
}

/// Selection and weighting from scores: fills `ids[t, k]` and `weights[t, k]` from
/// `scores[t, e]` (already through [`Scoring`]) under `config`. `bias` is the
/// `e_score_correction_bias` `[e]`, required by `noaux_tc` and refused otherwise.
///
/// A single pass per token keeps the k best candidates in order (O(e·k)).
///
/// # Errors
/// As [`RouterConfig::validate`]; a core shape or length error naming the slice whose length is wrong;
/// [`Error::Config`] for a missing or unexpected bias; [`Error::NonFinite`] for a non-finite
/// score or bias.
pub fn route_scores(
    ids: &mut [usize],
    weights: &mut [f32],
    scores: &[f32],
    bias: Option<&[f32]>,
    config: &RouterConfig,
    t: usize,
) -> Result<()> {
    check_route_args(ids, weights, scores, bias, config, t)?;
    let (e, k) = (config.n_routed_experts, config.num_experts_per_tok);
    let group_size = config.group_size();
    let mut choice = vec![0.0f32; e];
    let (n_group, topk_group) = config.topk_method.groups().unwrap_or((1, 1));
    let mut group_scores = vec![0.0f32; n_group];
    let mut kept = vec![0usize; topk_group];
    let mut group_kept = vec![false; n_group];
    for token in 0..t {
        let s = &scores[token * e..(token + 1) * e];
        let c: &[f32] = match bias {
            Some(b) => {
                for ((ci, &si), &bi) in choice.iter_mut().zip(s).zip(b) {
                    *ci = si + bi;
                }
                &choice
            }
            None => s,
        };
        let out = &mut ids[token * k..(token + 1) * k];
        match config.topk_method {
            TopkMethod::Greedy => {
                top_k_into(out, c, 0..e);
            }
            TopkMethod::GroupLimitedGreedy { .. } | TopkMethod::NoauxTc { .. } => {
                let top_two = matches!(config.topk_method, TopkMethod::NoauxTc { .. });
                for (g, gs) in group_scores.iter_mut().enumerate() {
                    let members = &c[g * group_size..(g + 1) * group_size];
                    *gs = if top_two {
                        sum_of_top_two(members)
                    } else {
                        members.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                    };
                }
                top_k_into(&mut kept, &group_scores, 0..n_group);
                group_kept.fill(false);
                for &g in &kept {
                    group_kept[g] = true;
                }
                let eligible = (0..e).filter(|&i| group_kept[i / group_size]);
                top_k_into(out, c, eligible);
            }
        }
        let w = &mut weights[token * k..(token + 1) * k];
        for (wj, &id) in w.iter_mut().zip(out.iter()) {
            *wj = s[id];
        }
        config
            .weighting
            .apply(w, config.norm_topk_prob, config.routed_scaling_factor);
    }
    Ok(())
}

/// The naive twin of [`route_scores`]: sorts every candidate list in full, in the order
/// (value descending, index ascending), and normalises in f64.
///
/// # Errors
/// As [`route_scores`].
pub fn route_scores_naive(
    ids: &mut [usize],
    weights: &mut [f32],
    scores: &[f32],
    bias: Option<&[f32]>,
    config: &RouterConfig,
    t: usize,
) -> Result<()> {
    check_route_args(ids, weights, scores, bias, config, t)?;
    let (e, k) = (config.n_routed_experts, config.num_experts_per_tok);
    let ranked = |values: &[f32], candidates: Vec<usize>| -> Vec<usize> {
        let mut c = candidates;
        c.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
        c
    };
    for token in 0..t {
        let s = &scores[token * e..(token + 1) * e];
        let c: Vec<f32> = match bias {
            Some(b) => s.iter().zip(b).map(|(si, bi)| si + bi).collect(),
            None => s.to_vec(),
        };
        let eligible: Vec<usize> = match config.topk_method.groups() {
            None => (0..e).collect(),
            Some((n_group, topk_group)) => {
                let size = e / n_group;
                let group_score: Vec<f32> = (0..n_group)
                    .map(|g| {
                        let members = ranked(&c, (g * size..(g + 1) * size).collect());
                        match config.topk_method {
                            TopkMethod::NoauxTc { .. } => c[members[0]] + c[members[1]],
                            _ => c[members[0]],
                        }
                    })
                    .collect();
                let groups = ranked(&group_score, (0..n_group).collect());
                let kept = &groups[..topk_group];
                (0..e).filter(|i| kept.contains(&(i / size))).collect()
            }
        };
        let chosen = ranked(&c, eligible);
        ids[token * k..(token + 1) * k].copy_from_slice(&chosen[..k]);
        let raw: Vec<f64> = chosen[..k].iter().map(|&i| s[i] as f64).collect();
        let rho = config.routed_scaling_factor as f64;
        let sum: f64 = raw.iter().sum();
        // The table of `Weighting`, read off row by row.
        let (normalize, then_scale) = match config.weighting {
            Weighting::NormalizeOrScale => (config.norm_topk_prob && k > 1, false),
            Weighting::NormalizeThenScale => (config.norm_topk_prob && k > 1, true),
            Weighting::AlwaysNormalizeThenScale => (config.norm_topk_prob, true),
            Weighting::ScaleOnly => (false, true),
        };
        for (j, r) in raw.iter().enumerate() {
            weights[token * k + j] = match (normalize, then_scale) {
                (true, true) => rho * r / (sum + NORM_EPS as f64),
                (true, false) => r / (sum + NORM_EPS as f64),
                (false, _) => rho * r,
            } as f32;
        }
    }
    Ok(())
}

fn check_route_args(
    ids: &[usize],
    weights: &[f32],
    scores: &[f32],
    bias: Option<&[f32]>,
    config: &RouterConfig,
    t: usize,
) -> Result<()> {
    config.validate()?;
    config.check_bias(bias)?;
    let (e, k) = (config.n_routed_experts, config.num_experts_per_tok);
    for (name, len, shape) in [
        ("ids", ids.len(), [t, k]),
        ("weights", weights.len(), [t, k]),
        ("scores", scores.len(), [t, e]),
    ] {
        if Some(len) != t.checked_mul(shape[1]) {
            return Err(Error::length(name, &shape, len));
        }
    }
    check_finite("scores", scores)
}

/// Writes into `out` the indices of the `out.len()` largest `values` among `candidates` (which
/// must come in ascending order), largest first; equal values keep the lower index first.
/// Returns how many were found (fewer only when there are fewer candidates).
pub(crate) fn top_k_into(
    out: &mut [usize],
    values: &[f32],
    candidates: impl Iterator<Item = usize>,
) -> usize {
    let k = out.len();
    let mut len = 0;
    for i in candidates {
        let v = values[i];
        if len == k && v <= values[out[k - 1]] {
            // Scores are checked finite, so `<=` is the negation of `>`.
            continue;
        }
        // First position holding a strictly smaller value: equal values stay ahead (lower index).
        let pos = out[..len].partition_point(|&j| values[j] >= v);
        let end = if len < k { len } else { k - 1 };
        out.copy_within(pos..end, pos + 1);
        out[pos] = i;
        len = (len + 1).min(k);
    }
    len
}

/// The sum of the two largest values (`topk(2).sum()`); `values.len() >= 2`.
fn sum_of_top_two(values: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in values {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a + b
}

/// The router of one MoE layer: the gate weight, the optional correction bias and the
/// configuration.
///
/// ```
/// use deepblocks_core::Weight;
/// use deepblocks_moe::{Router, RouterConfig};
///
/// // Two experts, one per token; expert 1's centroid points along the input.
/// let gate = Weight::from_f32(vec![0.0, 0.0, 1.0, 1.0], 2, 2)?; // [e 2, h 2]
/// let router = Router::new(RouterConfig::new(2, 1), gate, None)?;
/// let routing = router.route(&[1.0, 1.0], 1)?;
/// assert_eq!(routing.token_ids(0), &[1]);
/// // softmax([0, 2])[1] = 1 / (1 + e^-2)
/// assert!((routing.token_weights(0)[0] - 0.880_797).abs() < 1e-6);
/// # Ok::<(), deepblocks_moe::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Router {
    config: RouterConfig,
    weight: Weight,                            // [e, h]  mlp.gate.weight
    e_score_correction_bias: Option<Vec<f32>>, // [e]  mlp.gate.e_score_correction_bias (noaux_tc only)
}

impl Router {
    /// A router over the gate weight `[e, h]` (`mlp.gate.weight`, any dtype: it is widened to
    /// f32 inside the kernel, as transformers does with `F.linear(h.float(), w.float())`).
    /// `e_score_correction_bias` (`[e]`) is required by `noaux_tc` and refused otherwise.
    ///
    /// # Errors
    /// As [`RouterConfig::validate`]; a core shape error naming `gate` (the weight) when it does not
    /// have e rows, or `e_score_correction_bias` when it does not have e entries;
    /// [`Error::Config`] for a missing or unexpected bias; [`Error::NonFinite`] for a
    /// non-finite bias entry.
    pub fn new(
        config: RouterConfig,
        weight: Weight,
        e_score_correction_bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        config.validate()?;
        if weight.rows() != config.n_routed_experts {
            return Err(Error::shape(
                "gate",
                &[config.n_routed_experts, weight.cols()],
                &weight.shape(),
            ));
        }
        config.check_bias(e_score_correction_bias.as_deref())?;
        Ok(Router {
            config,
            weight,
            e_score_correction_bias,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The gate weight `[e, h]`.
    pub fn weight(&self) -> &Weight {
        &self.weight
    }

    /// The correction bias `[e]` of `noaux_tc`.
    pub fn e_score_correction_bias(&self) -> Option<&[f32]> {
        self.e_score_correction_bias.as_deref()
    }

    /// Hidden size h.
    pub fn hidden_size(&self) -> usize {
        self.weight.cols()
    }

    /// Routed experts e.
    pub fn n_experts(&self) -> usize {
        self.config.n_routed_experts
    }

    /// Gate logits `logits[t, e] = x[t, h] · W_gᵀ` in f32, checked to be finite.
    ///
    /// # Errors
    /// a core shape or length error naming `x` or `logits` for wrong lengths;
    /// [`Error::NonFiniteGateLogit`] naming the token, the expert and the value.
    pub fn gate_logits(&self, logits: &mut [f32], x: &[f32], t: usize) -> Result<()> {
        self.check_x(x, t)?;
        let e = self.n_experts();
        if Some(logits.len()) != t.checked_mul(e) {
            return Err(Error::length("logits", &[t, e], logits.len()));
        }
        linear(logits, x, &self.weight, t);
        check_logits(logits, e)
    }

    /// Routes `t` tokens `x[t, h]`: logits, scores, selection and weights.
    ///
    /// # Errors
    /// As [`Self::gate_logits`].
    pub fn route(&self, x: &[f32], t: usize) -> Result<Routing> {
        let e = self.n_experts();
        let mut scores = vec![0.0; t * e];
        self.gate_logits(&mut scores, x, t)?;
        self.config.scoring_func.apply_rows(&mut scores, t, e);
        self.finish(scores, t, route_scores)
    }

    /// The naive twin of [`Self::route`]: [`linear_naive`], scores in f64, selection by full
    /// sorts ([`route_scores_naive`]).
    ///
    /// # Errors
    /// As [`Self::route`].
    pub fn route_naive(&self, x: &[f32], t: usize) -> Result<Routing> {
        self.check_x(x, t)?;
        let e = self.n_experts();
        let mut scores = vec![0.0; t * e];
        linear_naive(&mut scores, x, &self.weight, t);
        check_logits(&scores, e)?;
        self.config.scoring_func.apply_rows_naive(&mut scores, t, e);
        self.finish(scores, t, route_scores_naive)
    }

    /// ndarray wrapper of [`Self::route`]: routes `x[t, h]`.
    ///
    /// # Errors
    /// As [`Self::route`].
    #[cfg(feature = "ndarray")]
    pub fn route_nd(&self, x: ArrayView2<'_, f32>) -> Result<Routing> {
        let (t, h) = x.dim();
        if h != self.hidden_size() {
            return Err(Error::shape("x", &[t, self.hidden_size()], &[t, h]));
        }
        let x = x.as_standard_layout();
        self.route(x.as_slice().expect("standard layout is contiguous"), t)
    }

    fn finish(&self, scores: Vec<f32>, t: usize, select: SelectFn) -> Result<Routing> {
        let (e, k) = (self.n_experts(), self.config.num_experts_per_tok);
        let mut ids = vec![0; t * k];
        let mut weights = vec![0.0; t * k];
        select(
            &mut ids,
            &mut weights,
            &scores,
            self.e_score_correction_bias(),
            &self.config,
            t,
        )?;
        Ok(Routing {
            t,
            k,
            n_experts: e,
            ids,
            weights,
            scores,
        })
    }

    fn check_x(&self, x: &[f32], t: usize) -> Result<()> {
        let h = self.hidden_size();
        if Some(x.len()) != t.checked_mul(h) {
            return Err(Error::length("x", &[t, h], x.len()));
        }
        Ok(())
    }
}

/// The signature of [`route_scores`] and [`route_scores_naive`].
type SelectFn =
    fn(&mut [usize], &mut [f32], &[f32], Option<&[f32]>, &RouterConfig, usize) -> Result<()>;

fn check_logits(logits: &[f32], e: usize) -> Result<()> {
    match logits.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::NonFiniteGateLogit {
            token: i / e,
            expert: i % e,
            value: logits[i],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_order_and_breaks_ties_to_the_lower_index() {
        let v = [0.5, 0.9, 0.5, 0.1, 0.9, 0.5];
        let mut out = [0; 4];
        assert_eq!(top_k_into(&mut out, &v, 0..6), 4);
        assert_eq!(out, [1, 4, 0, 2]);
        let mut out = [0; 2];
        top_k_into(&mut out, &v, [0, 2, 3, 5].into_iter());
        assert_eq!(out, [0, 2]);
    }

    #[test]
    fn sum_of_top_two_handles_a_repeated_maximum() {
        assert_eq!(sum_of_top_two(&[0.1, 0.7, 0.7, 0.3]), 1.4);
        assert_eq!(sum_of_top_two(&[-1.0, -3.0]), -4.0);
    }

    #[test]
    fn weighting_policies_follow_their_sources() {
        let raw = [0.3f32, 0.1];
        let run = |p: Weighting, norm| {
            let mut w = raw;
            p.apply(&mut w, norm, 16.0);
            w
        };
        assert_eq!(run(Weighting::NormalizeOrScale, false), [4.8, 1.6]);
        assert_eq!(run(Weighting::NormalizeOrScale, true), [0.75, 0.25]);
        assert_eq!(run(Weighting::NormalizeThenScale, true), [12.0, 4.0]);
        assert_eq!(run(Weighting::ScaleOnly, true), [4.8, 1.6]);
        assert_eq!(run(Weighting::AlwaysNormalizeThenScale, true), [12.0, 4.0]);
        assert_eq!(run(Weighting::AlwaysNormalizeThenScale, false), [4.8, 1.6]);
        // k = 1: transformers' deepseek_v3 normalises the one weight to 1, then scales.
        let mut one = [0.3f32];
        Weighting::AlwaysNormalizeThenScale.apply(&mut one, true, 2.5);
        assert_eq!(one, [2.5]);
        let mut one = [0.3f32];
        Weighting::NormalizeThenScale.apply(&mut one, true, 2.5);
        assert_eq!(one, [0.75]);
        // k = 1 never normalises under DeepSeek's rules.
        let mut w = [0.3f32];
        Weighting::NormalizeOrScale.apply(&mut w, true, 16.0);
        assert_eq!(w, [4.8]);
    }
}
