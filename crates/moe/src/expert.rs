//! SwiGLU feed-forward networks: a routed expert, the shared experts and the dense MLP all have the
//! form `down(silu(gate x) ⊙ up x)` (DeepSeek-V2 §2.2.1, with FFN = SwiGLU).

use deepblocks_core::{Weight, linear, linear_naive, on_pool, swiglu};

use crate::{Error, Result};

/// The gate and up projections of an [`Mlp`], as the checkpoint stores them.
#[derive(Clone, Debug)]
pub enum GateUp {
    /// Two matrices, as the hub checkpoints store each expert
    /// (`mlp.experts.{j}.gate_proj.weight`, `mlp.experts.{j}.up_proj.weight`).
    Separate {
        /// `gate_proj`.
        gate_proj: Weight, // [i, h]
        /// `up_proj`.
        up_proj: Weight, // [i, h]
    },
    /// One matrix with the gate rows first, then the up rows, as transformers 5 packs each
    /// expert (`mlp.experts.gate_up_proj[j]`). One linear computes both.
    Fused(Weight), // [2i, h]
}

/// A SwiGLU feed-forward network `y = down_proj(silu(gate_proj x) ⊙ up_proj x)`.
///
/// ```
/// use deepblocks_core::{silu, Weight};
/// use deepblocks_moe::Mlp;
///
/// // h = 1, i = 1: y = 3 · silu(1 · x) · (2 · x)
/// let mlp = Mlp::new(
///     Weight::from_f32(vec![1.0], 1, 1)?, // gate_proj [i, h]
///     Weight::from_f32(vec![2.0], 1, 1)?, // up_proj   [i, h]
///     Weight::from_f32(vec![3.0], 1, 1)?, // down_proj [h, i]
/// )?;
/// let mut y = [0.0];
/// mlp.forward(&mut y, &[0.5], 1)?;
/// assert!((y[0] - 3.0 * silu(0.5) * 1.0).abs() < 1e-6);
/// # Ok::<(), deepblocks_moe::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Mlp {
    gate_up: GateUp,
    down_proj: Weight, // [h, i]
}

impl Mlp {
    /// An MLP from separate `gate_proj [i, h]`, `up_proj [i, h]` and `down_proj [h, i]`.
    ///
    /// # Errors
    /// a core shape error naming `up_proj` or `down_proj` when it does not match `gate_proj`.
    pub fn new(gate_proj: Weight, up_proj: Weight, down_proj: Weight) -> Result<Self> {
        let [i, h] = gate_proj.shape();
        if up_proj.shape() != [i, h] {
            return Err(Error::shape("up_proj", &[i, h], &up_proj.shape()));
        }
        check_down(&down_proj, h, i)?;
        Ok(Mlp {
            gate_up: GateUp::Separate { gate_proj, up_proj },
            down_proj,
        })
    }

    /// An MLP from a fused `gate_up_proj [2i, h]` (gate rows first) and `down_proj [h, i]`.
    ///
    /// # Errors
    /// a core shape error naming `gate_up_proj` when its row count is odd, or `down_proj` when it
    /// does not match.
    pub fn from_fused(gate_up_proj: Weight, down_proj: Weight) -> Result<Self> {
        let [two_i, h] = gate_up_proj.shape();
        if two_i % 2 != 0 {
            return Err(Error::shape(
                "gate_up_proj",
                &[two_i + 1, h],
                &gate_up_proj.shape(),
            ));
        }
        check_down(&down_proj, h, two_i / 2)?;
        Ok(Mlp {
            gate_up: GateUp::Fused(gate_up_proj),
            down_proj,
        })
    }

    /// Hidden size h.
    pub fn hidden_size(&self) -> usize {
        self.down_proj.rows()
    }

    /// Intermediate size i.
    pub fn intermediate_size(&self) -> usize {
        self.down_proj.cols()
    }

    /// The gate and up projections.
    pub fn gate_up(&self) -> &GateUp {
        &self.gate_up
    }

    /// The down projection `[h, i]`.
    pub fn down_proj(&self) -> &Weight {
        &self.down_proj
    }

    /// Bytes of its weights, in their stored dtypes.
    pub fn weight_bytes(&self) -> usize {
        let gate_up = match &self.gate_up {
            GateUp::Separate { gate_proj, up_proj } => gate_proj.bytes() + up_proj.bytes(),
            GateUp::Fused(w) => w.bytes(),
        };
        gate_up + self.down_proj.bytes()
    }

    /// `out[t, h] = down(silu(gate x) ⊙ up x)` for `x[t, h]`.
    ///
    /// # Errors
    /// a core shape error naming `x` or `out` when a length is not `t · h`.
    pub fn forward(&self, out: &mut [f32], x: &[f32], t: usize) -> Result<()> {
        self.check(out, x, t)?;
        // One crossing into the pool: the three projections start their loops there.
        on_pool(|| self.forward_with(out, x, t, linear));
        Ok(())
    }

    /// The naive twin of [`Self::forward`] ([`linear_naive`] for every projection).
    ///
    /// # Errors
    /// As [`Self::forward`].
    pub fn forward_naive(&self, out: &mut [f32], x: &[f32], t: usize) -> Result<()> {
        self.check(out, x, t)?;
        self.forward_with(out, x, t, linear_naive);
        Ok(())
    }

    fn check(&self, out: &[f32], x: &[f32], t: usize) -> Result<()> {
        let h = self.hidden_size();
        for (name, len) in [("x", x.len()), ("out", out.len())] {
            if Some(len) != t.checked_mul(h) {
                return Err(Error::length(name, &[t, h], len));
            }
        }
        Ok(())
    }

    /// The forward pass with `lin` as the linear kernel; lengths already checked.
    pub(crate) fn forward_with(
        &self,
        out: &mut [f32],
        x: &[f32],
        t: usize,
        lin: fn(&mut [f32], &[f32], &Weight, usize),
    ) {
        let i = self.intermediate_size();
        let mut act = vec![0.0f32; t * i]; // [t, i]
        match &self.gate_up {
            GateUp::Fused(w) => {
                let mut gate_up = vec![0.0f32; t * 2 * i]; // [t, 2i]
                lin(&mut gate_up, x, w, t);
                for (a, gu) in act.chunks_exact_mut(i).zip(gate_up.chunks_exact(2 * i)) {
                    let (gate, up) = gu.split_at(i);
                    swiglu(a, gate, up);
                }
            }
            GateUp::Separate { gate_proj, up_proj } => {
                let mut gate = vec![0.0f32; t * i]; // [t, i]
                let mut up = vec![0.0f32; t * i]; // [t, i]
                lin(&mut gate, x, gate_proj, t);
                lin(&mut up, x, up_proj, t);
                swiglu(&mut act, &gate, &up);
            }
        }
        lin(out, &act, &self.down_proj, t);
    }
}

fn check_down(down_proj: &Weight, h: usize, i: usize) -> Result<()> {
    if down_proj.shape() != [h, i] {
        return Err(Error::shape("down_proj", &[h, i], &down_proj.shape()));
    }
    Ok(())
}

/// The routed experts of one layer: e MLPs of the same shape, built from either checkpoint
/// layout without copying any weight.
#[derive(Clone, Debug)]
pub struct Experts {
    experts: Vec<Mlp>, // e × (gate/up [i, h], down [h, i])
}

impl Experts {
    /// From one [`Mlp`] per expert, as the hub checkpoints store them
    /// (`mlp.experts.{j}.{gate,up,down}_proj.weight`).
    ///
    /// # Errors
    /// [`Error::Config`] for an empty list; a core shape error naming
    /// `experts[j].down_proj` when expert j's shape differs from expert 0's.
    pub fn from_mlps(experts: Vec<Mlp>) -> Result<Self> {
        let Some(first) = experts.first() else {
            return Err(Error::Config {
                field: "n_routed_experts",
                value: "0".into(),
                reason: "a MoE layer needs at least one routed expert",
            });
        };
        let shape = first.down_proj.shape();
        for (j, mlp) in experts.iter().enumerate() {
            if mlp.down_proj.shape() != shape {
                return Err(Error::shape(
                    format!("experts[{j}].down_proj"),
                    &shape,
                    &mlp.down_proj.shape(),
                ));
            }
        }
        Ok(Experts { experts })
    }

    /// From transformers 5's packed tensors, viewed as 2-D (e.g. with
    /// `SafeTensorsStore::weight_reshaped`): `gate_up_proj [e·2i, h]` (for each expert its gate
    /// rows, then its up rows) and `down_proj [e·h, i]`. Each expert is a row range of the two
    /// matrices ([`Weight::slice_rows`]), sharing their memory.
    ///
    /// # Errors
    /// [`Error::Config`] for `n_experts = 0`; a core shape error naming the packed `gate_up_proj`
    /// or `down_proj` when the row counts do not split into `n_experts` experts of
    /// one hidden and intermediate size.
    pub fn from_packed(
        gate_up_proj: &Weight,
        down_proj: &Weight,
        n_experts: usize,
    ) -> Result<Self> {
        if n_experts == 0 {
            return Err(Error::Config {
                field: "n_routed_experts",
                value: "0".into(),
                reason: "a MoE layer needs at least one routed expert",
            });
        }
        let (h, i) = (gate_up_proj.cols(), down_proj.cols());
        if gate_up_proj.rows() != n_experts * 2 * i {
            return Err(Error::shape(
                "gate_up_proj (packed, viewed as [e·2i, h])",
                &[n_experts * 2 * i, h],
                &gate_up_proj.shape(),
            ));
        }
        if down_proj.rows() != n_experts * h {
            return Err(Error::shape(
                "down_proj (packed, viewed as [e·h, i])",
                &[n_experts * h, i],
                &down_proj.shape(),
            ));
        }
        let experts = (0..n_experts)
            .map(|j| {
                Mlp::from_fused(
                    gate_up_proj.slice_rows(j * 2 * i..(j + 1) * 2 * i),
                    down_proj.slice_rows(j * h..(j + 1) * h),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Experts { experts })
    }

    /// Number of experts e.
    pub fn len(&self) -> usize {
        self.experts.len()
    }

    /// Always false: a layer has at least one expert.
    pub fn is_empty(&self) -> bool {
        self.experts.is_empty()
    }

    /// Expert `j`.
    ///
    /// # Panics
    /// If `j >= len()`.
    pub fn get(&self, j: usize) -> &Mlp {
        &self.experts[j]
    }

    /// All experts.
    pub fn as_slice(&self) -> &[Mlp] {
        &self.experts
    }

    /// Hidden size h.
    pub fn hidden_size(&self) -> usize {
        self.experts[0].hidden_size()
    }

    /// Intermediate size i (`moe_intermediate_size`).
    pub fn intermediate_size(&self) -> usize {
        self.experts[0].intermediate_size()
    }
}
