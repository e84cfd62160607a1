//! The fusion plan: a graph split into a host scalar program and kernel phases.

use crate::dtype::Class;
use crate::graph::{Graph, Target};
use petgraph::stable_graph::NodeIndex;
use std::fmt;

/// A per-element buffer that a kernel reads or writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Buffer {
    /// The parameter tensor.
    Param,
    /// The gradient.
    Grad,
    /// A per-element state, by name.
    State(String),
    /// Per-element scratch buffer `i` of the plan (printed `tmp<i>`), written in one phase and
    /// read in a later one: a materialized value, cheaper than recomputing it.
    Temp(usize),
    /// The per-column values of [`FusionPlan::col_values`]`[i]` (printed `col<i>`), computed
    /// by the host and read by each element of their column.
    ColValue(usize),
}

impl Buffer {
    /// The name as printed (`param`, `grad`, `exp_avg`, `tmp0`, `col0`).
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Buffer::Param => "param".into(),
            Buffer::Grad => "grad".into(),
            Buffer::State(n) => n.as_str().into(),
            Buffer::Temp(i) => format!("tmp{i}").into(),
            Buffer::ColValue(i) => format!("col{i}").into(),
        }
    }
}

impl fmt::Display for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// How a phase uses one buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferUse {
    /// Which buffer.
    pub buffer: Buffer,
    /// Whether the phase loads it.
    pub read: bool,
    /// Whether the phase stores it.
    pub write: bool,
}

impl BufferUse {
    /// `buffer`, loaded if `read`, stored if `write`.
    pub fn new(buffer: Buffer, read: bool, write: bool) -> BufferUse {
        BufferUse {
            buffer,
            read,
            write,
        }
    }
}

/// How a phase's kernel walks each tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Walk {
    /// Contiguous runs of elements (row by row when the step has per-row values).
    #[default]
    Elements,
    /// Column by column of each matrix (a strided walk), for column means.
    Columns,
}

/// One kernel: a single pass over every element of every tensor of every group.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    /// How the kernel walks the elements.
    pub walk: Walk,
    /// How many reductions its values depend on: phases of one level need only reductions
    /// finished by phases of lower levels.
    pub level: usize,
    /// The per-element nodes computed in this phase, in topological order.
    pub nodes: Vec<NodeIndex>,
    /// The buffers the phase touches, in kernel-argument order: param, grad, states in
    /// declaration order, then scratch buffers `tmp0`, `tmp1`, ...
    pub buffers: Vec<BufferUse>,
    /// What the phase writes at the end of each element.
    pub stores: Vec<(Buffer, NodeIndex)>,
    /// The reductions whose per-chunk partials the phase computes (the `Reduce` nodes, in
    /// partial-slot order); the host combines them before the next stage of the scalar program.
    pub reductions: Vec<NodeIndex>,
    /// Values an earlier phase materialized: each node is loaded from its scratch buffer here
    /// instead of being computed.
    pub loads: Vec<(Buffer, NodeIndex)>,
}

impl Phase {
    /// Bytes loaded and stored per element, for `elem_bytes`-sized elements.
    pub fn bytes_per_elem(&self, elem_bytes: usize) -> usize {
        self.buffers
            .iter()
            .map(|b| (b.read as usize + b.write as usize) * elem_bytes)
            .sum()
    }
}

/// The whole compiled step: what the host computes per group, and what each kernel computes.
#[derive(Clone, Debug)]
pub struct FusionPlan {
    /// The optimized graph the plan refers to.
    pub graph: Graph,
    /// Host nodes evaluated once per group per step (Scalar class) or once per tensor (Tensor
    /// class), in stage order and topological order within a stage. A `Reduce` node here is not computed but combined from
    /// the partials of the phase that reduced it.
    pub scalar_program: Vec<NodeIndex>,
    /// Where each stage of the scalar program ends: `scalar_program[..stage_ends[0]]` runs
    /// before phase 0, `[stage_ends[k - 1]..stage_ends[k]]` between phase k - 1 and phase k, and
    /// the last stage (`k = phases.len()`) after the last phase. One entry per phase, plus one.
    pub stage_ends: Vec<usize>,
    /// Scalar, per-tensor, per-matrix and per-row nodes that kernels read, in the order of the
    /// kernels' scalar slots.
    pub kernel_scalars: Vec<NodeIndex>,
    /// Per-column nodes that kernels read, each from its buffer `col<i>` (slot i here).
    pub col_values: Vec<NodeIndex>,
    /// Scalar-state updates made by the host after the kernels ran.
    pub scalar_outputs: Vec<(Target, NodeIndex)>,
    /// The kernels, run in order.
    pub phases: Vec<Phase>,
    /// How many scratch buffers (`Buffer::Temp`) each tensor needs.
    pub temps: usize,
}

impl FusionPlan {
    /// The scalar-program nodes of stage `stage` (see [`FusionPlan::stage_ends`]).
    pub fn stage(&self, stage: usize) -> &[NodeIndex] {
        &self.scalar_program[self.stage_range(stage)]
    }

    /// The positions in [`FusionPlan::scalar_program`] of stage `stage`.
    pub fn stage_range(&self, stage: usize) -> std::ops::Range<usize> {
        stage.checked_sub(1).map_or(0, |s| self.stage_ends[s])..self.stage_ends[stage]
    }

    /// Every reduction of the step, in reduction-index order: the phases in order, then each
    /// phase's partial slots.
    pub fn reductions(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.phases
            .iter()
            .flat_map(|p| p.reductions.iter().copied())
    }

    /// The reduction index of phase `phase`'s first partial slot.
    pub fn first_reduction(&self, phase: usize) -> usize {
        self.phases[..phase]
            .iter()
            .map(|p| p.reductions.len())
            .sum()
    }

    /// Whether the host computes values per matrix, row or column (or reads a tensor's rank):
    /// it then needs the tensors' shapes, records never cross a row, and kernels read a row of
    /// scalars per row of each tensor.
    pub fn has_rows(&self) -> bool {
        self.scalar_program.iter().any(|&n| {
            let node = self.graph.node(n);
            matches!(node.class, Class::Matrix | Class::Row | Class::Col)
                || node.op == crate::Op::Input(crate::Input::Rank)
        })
    }

    /// Bytes moved per element over all phases (the static count of loads and stores).
    pub fn bytes_per_elem(&self) -> usize {
        let elem_bytes = self.graph.elem_dtype.size_bytes();
        self.phases
            .iter()
            .map(|p| p.bytes_per_elem(elem_bytes))
            .sum()
    }
}
