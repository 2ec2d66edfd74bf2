//! The parameter tree: named components, each with its parameter count, matrix count and the
//! parameters one token activates.

use serde::Serialize;

use crate::error::{Error, Result};

/// What a tensor does. The kind decides how it counts per token (routed experts k of E, input
/// embeddings optionally), whether it is a matmul for the FLOP count, and how it is sharded in a
/// [deployment sketch](crate::deploy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Token embedding table `[V, h]`: a lookup, not a matmul.
    Embedding,
    /// Learned position embeddings `[n_ctx, h]` (GPT): a lookup, not a matmul.
    Position,
    /// A weight matrix every token multiplies by: attention projections, dense and shared-expert
    /// MLPs, the unembedding / `lm_head`.
    Linear,
    /// The MoE router (`mlp.gate.weight`, `[E, h]`): every token is scored against every expert.
    Router,
    /// A routed expert's matrix: a token multiplies by the matrices of its k chosen experts only.
    RoutedExpert,
    /// Normalisation parameters (RMSNorm gains; LayerNorm gains and biases).
    Norm,
    /// Bias vectors of linear layers.
    Bias,
}

impl Kind {
    /// Whether a token pays a multiply-add per active parameter of this kind (the `2·N` in the
    /// FLOP count): [`Linear`](Kind::Linear), [`Router`](Kind::Router) and
    /// [`RoutedExpert`](Kind::RoutedExpert).
    pub fn is_matmul(self) -> bool {
        matches!(self, Kind::Linear | Kind::Router | Kind::RoutedExpert)
    }

    /// Whether this is an input lookup table ([`Embedding`](Kind::Embedding) or
    /// [`Position`](Kind::Position)), which [`InputEmbedding::Exclude`] leaves out of the activated
    /// count. An untied unembedding / `lm_head` is a [`Linear`](Kind::Linear) and always counts.
    pub fn is_input_embedding(self) -> bool {
        matches!(self, Kind::Embedding | Kind::Position)
    }
}

/// Whether the input embedding tables count toward the parameters a token activates.
///
/// Hugging Face-style counts include them; the DeepSeek-V2 report's figures (21B of 236B, 2.4B
/// of 15.7B) exclude the input embedding (the output `lm_head` is a matmul and is counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputEmbedding {
    /// Count the input embedding tables (one row of each is read per token, but the convention
    /// counts the whole table, as `model.num_parameters()`-style counts do).
    Include,
    /// Leave the input embedding tables out (the DeepSeek-V2 report's convention).
    Exclude,
}

/// One tensor of the model, repeated `copies` times (once per layer, or per layer and expert).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tensor {
    /// What the tensor does.
    pub kind: Kind,
    /// The shape of one copy, `[out, in]` for a matrix as checkpoints store `nn.Linear` weights.
    pub shape: Vec<u64>,
    /// How many copies the model holds (layers × experts for a routed expert's matrix).
    pub copies: u64,
    /// How many copies one token uses (layers × k for a routed expert's matrix; `copies` for
    /// everything else).
    pub active_copies: u64,
    /// The checkpoint name of one copy, with `*` for the layer (and expert) index, e.g.
    /// `model.layers.*.self_attn.kv_b_proj.weight`. Empty when the count follows no checkpoint
    /// (the GPT-3 walk-through's per-head matrices).
    pub checkpoint: String,
}

impl Tensor {
    /// Elements in one copy (checked when a [`Component`] is built; saturates for a `Tensor`
    /// assembled by hand with an absurd shape).
    pub fn numel(&self) -> u64 {
        self.shape
            .iter()
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Leaf(Tensor),
    Group(Vec<Component>),
}

/// A named part of a model: either one [`Tensor`] (with its copies) or a group of components.
/// Counts are summed when the component is built, with overflow checked, so the getters are
/// plain reads.
///
/// ```
/// use deepblocks_params::{Component, InputEmbedding, Kind};
///
/// // 2 layers of a [16, 8] projection and 2 layers × 4 experts of a [3, 8] matrix, 1 of 4 routed.
/// let attn = Component::tensor("o_proj", Kind::Linear, &[16, 8], 2)?;
/// let experts = Component::routed("experts.up_proj", &[3, 8], 2 * 4, 2 * 1)?;
/// let model = Component::group("model", vec![attn, experts])?;
/// assert_eq!(model.params(), 2 * 128 + 8 * 24);
/// assert_eq!(model.matrices(), 2 + 8);
/// assert_eq!(model.activated(InputEmbedding::Include), 2 * 128 + 2 * 24);
/// # Ok::<(), deepblocks_params::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    name: String,
    node: Node,
    params: u64,
    matrices: u64,
    activated: u64,
}

fn overflow(what: &str) -> Error {
    Error::Overflow {
        what: what.to_string(),
    }
}

impl Component {
    /// A tensor every token uses, `copies` times (e.g. once per layer).
    pub fn tensor(name: &str, kind: Kind, shape: &[u64], copies: u64) -> Result<Component> {
        Self::leaf(name, kind, shape, copies, copies)
    }

    /// A routed expert's matrix: `copies` = MoE layers × E are stored, `active_copies` = MoE
    /// layers × k are used by one token.
    pub fn routed(name: &str, shape: &[u64], copies: u64, active_copies: u64) -> Result<Component> {
        if active_copies > copies {
            return Err(Error::invalid(
                name,
                active_copies,
                format!("a token cannot use more than the {copies} copies stored"),
            ));
        }
        Self::leaf(name, Kind::RoutedExpert, shape, copies, active_copies)
    }

    fn leaf(
        name: &str,
        kind: Kind,
        shape: &[u64],
        copies: u64,
        active_copies: u64,
    ) -> Result<Component> {
        let numel = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| overflow(name))?;
        let params = numel.checked_mul(copies).ok_or_else(|| overflow(name))?;
        let activated = numel * active_copies; // active_copies <= copies
        let matrices = if shape.len() == 2 { copies } else { 0 };
        Ok(Component {
            name: name.to_string(),
            node: Node::Leaf(Tensor {
                kind,
                shape: shape.to_vec(),
                copies,
                active_copies,
                checkpoint: String::new(),
            }),
            params,
            matrices,
            activated,
        })
    }

    /// Sets the checkpoint name of a tensor leaf (no effect on a group).
    pub fn with_checkpoint(mut self, checkpoint: impl Into<String>) -> Component {
        if let Node::Leaf(t) = &mut self.node {
            t.checkpoint = checkpoint.into();
        }
        self
    }

    /// A group whose counts are the sums of its children's.
    pub fn group(name: &str, children: Vec<Component>) -> Result<Component> {
        let mut params = 0u64;
        let mut matrices = 0u64;
        let mut activated = 0u64;
        for c in &children {
            params = params.checked_add(c.params).ok_or_else(|| overflow(name))?;
            matrices = matrices
                .checked_add(c.matrices)
                .ok_or_else(|| overflow(name))?;
            activated = activated
                .checked_add(c.activated)
                .ok_or_else(|| overflow(name))?;
        }
        Ok(Component {
            name: name.to_string(),
            node: Node::Group(children),
            params,
            matrices,
            activated,
        })
    }

    /// The component's name: a checkpoint-style name (`q_a_proj`, `embed_tokens`) or a group name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Total parameters.
    pub fn params(&self) -> u64 {
        self.params
    }

    /// Number of matrices (two-dimensional tensors, counting every copy).
    pub fn matrices(&self) -> u64 {
        self.matrices
    }

    /// Parameters one token activates: routed experts count k of E, everything else fully; input
    /// embedding tables count or not as `embeddings` says.
    pub fn activated(&self, embeddings: InputEmbedding) -> u64 {
        match embeddings {
            InputEmbedding::Include => self.activated,
            InputEmbedding::Exclude => self.activated - self.sum_active(|k| k.is_input_embedding()),
        }
    }

    /// Activated parameters one token multiplies by: the `N` in the `2·N` FLOPs per token.
    pub fn activated_matmul(&self) -> u64 {
        self.sum_active(Kind::is_matmul)
    }

    /// Total parameters of the tensors whose kind satisfies `pick`.
    pub fn params_where(&self, pick: impl Fn(Kind) -> bool) -> u64 {
        self.leaves()
            .into_iter()
            .filter(|c| c.as_tensor().is_some_and(|t| pick(t.kind)))
            .map(|c| c.params)
            .sum()
    }

    fn sum_active(&self, pick: impl Fn(Kind) -> bool) -> u64 {
        self.leaves()
            .into_iter()
            .filter(|c| c.as_tensor().is_some_and(|t| pick(t.kind)))
            .map(|c| c.activated)
            .sum()
    }

    /// The tensor of a leaf; `None` for a group.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match &self.node {
            Node::Leaf(t) => Some(t),
            Node::Group(_) => None,
        }
    }

    /// The children of a group (empty for a leaf).
    pub fn children(&self) -> &[Component] {
        match &self.node {
            Node::Leaf(_) => &[],
            Node::Group(c) => c,
        }
    }

    /// The direct child with this name.
    pub fn child(&self, name: &str) -> Option<&Component> {
        self.children().iter().find(|c| c.name == name)
    }

    /// The component at a `/`-separated path of names below this one, e.g.
    /// `"self_attn/kv_b_proj"`.
    pub fn get(&self, path: &str) -> Option<&Component> {
        path.split('/').try_fold(self, |c, name| c.child(name))
    }

    /// Every tensor leaf below (or at) this component, depth first.
    pub fn leaves(&self) -> Vec<&Component> {
        let mut out = Vec::new();
        self.collect_leaves(&mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, out: &mut Vec<&'a Component>) {
        match &self.node {
            Node::Leaf(_) => out.push(self),
            Node::Group(children) => children.iter().for_each(|c| c.collect_leaves(out)),
        }
    }

    /// The tree as a text table: one row per component, indented by depth, with the shape and
    /// copies of each tensor, its parameters, its share of this component's parameters (as a
    /// percentage and as a bar of [`BAR_WIDTH`] cells for the whole, in eighths of a cell), its
    /// matrices and the parameters it activates per token (embeddings included).
    ///
    /// ```
    /// use deepblocks_params::{Component, Kind};
    ///
    /// let big = Component::tensor("big", Kind::Linear, &[3, 100], 1)?;
    /// let small = Component::tensor("small", Kind::Norm, &[100], 1)?;
    /// let table = Component::group("model", vec![big, small])?.table();
    /// let rows: Vec<&str> = table.lines().collect();
    /// assert!(rows[0].starts_with("component  shape     copies  parameters   share"));
    /// // 300 of 400 parameters: 75% of the 30 cells is 22½.
    /// assert!(rows[3].contains(&format!(" 75.0%  {}▌ ", "█".repeat(22))));
    /// assert!(rows[4].contains(&format!(" 25.0%  {}▌ ", "█".repeat(7))));
    /// # Ok::<(), deepblocks_params::Error>(())
    /// ```
    pub fn table(&self) -> String {
        let mut rows = Vec::new();
        self.collect_rows(0, self.params, &mut rows);
        let header = [
            "component",
            "shape",
            "copies",
            "parameters",
            "share",
            "",
            "matrices",
            "activated/token",
        ];
        let mut widths = header.map(|h| h.chars().count());
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        // Left-aligned: the names, the shape and the bar; the numbers right-aligned.
        let left = [true, true, false, false, false, true, false, false];
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                let pad = " ".repeat(w - cell.chars().count());
                if left[i] {
                    text.push_str(cell);
                    text.push_str(&pad);
                } else {
                    text.push_str(&pad);
                    text.push_str(cell);
                }
                if i + 1 < cells.len() {
                    text.push_str("  ");
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&header.map(String::from), &mut out);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&rule, &mut out);
        for r in &rows {
            line(r, &mut out);
        }
        out
    }

    fn collect_rows(&self, depth: usize, total: u64, rows: &mut Vec<[String; 8]>) {
        let (shape, copies) = match self.as_tensor() {
            Some(t) => {
                let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
                let copies = if t.active_copies == t.copies {
                    thousands(t.copies)
                } else {
                    format!(
                        "{} ({} active)",
                        thousands(t.copies),
                        thousands(t.active_copies)
                    )
                };
                (format!("[{}]", dims.join(", ")), copies)
            }
            None => (String::new(), String::new()),
        };
        let share = if total == 0 {
            0.0
        } else {
            self.params as f64 / total as f64
        };
        rows.push([
            format!("{}{}", "  ".repeat(depth), self.name),
            shape,
            copies,
            thousands(self.params),
            percent(share),
            bar(share),
            thousands(self.matrices),
            thousands(self.activated),
        ]);
        for c in self.children() {
            c.collect_rows(depth + 1, total, rows);
        }
    }
}

/// Cells of [`Component::table`]'s bar for the whole model.
pub const BAR_WIDTH: usize = 30;

/// `share` of the whole as a percentage with one decimal; `<0.1%` for a non-zero share that would
/// print as 0.0%.
fn percent(share: f64) -> String {
    if share > 0.0 && share < 0.0005 {
        "<0.1%".to_string()
    } else {
        format!("{:.1}%", 100.0 * share)
    }
}

/// `share` of [`BAR_WIDTH`] cells in full blocks and a last partial block, rounded to eighths of
/// a cell (empty below half an eighth).
fn bar(share: f64) -> String {
    const PARTIAL: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (share.clamp(0.0, 1.0) * (BAR_WIDTH * 8) as f64).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(PARTIAL[eighths % 8]);
    }
    s
}

/// The JSON form of a component: `name`, `params`, `matrices`, `activated` (embeddings
/// included), then for a tensor `kind`, `shape`, `copies`, `active_copies`, `checkpoint`, and for
/// a group `children`.
impl Serialize for Component {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            name: &'a str,
            params: u64,
            matrices: u64,
            activated: u64,
            #[serde(flatten, skip_serializing_if = "Option::is_none")]
            tensor: Option<&'a Tensor>,
            #[serde(skip_serializing_if = "Option::is_none")]
            children: Option<&'a [Component]>,
        }
        View {
            name: &self.name,
            params: self.params,
            matrices: self.matrices,
            activated: self.activated,
            tensor: self.as_tensor(),
            children: match &self.node {
                Node::Group(c) => Some(c),
                Node::Leaf(_) => None,
            },
        }
        .serialize(s)
    }
}

/// `175181291520` → `"175,181,291,520"`.
///
/// ```
/// assert_eq!(deepblocks_params::thousands(27_938), "27,938");
/// assert_eq!(deepblocks_params::thousands(12), "12");
/// ```
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
