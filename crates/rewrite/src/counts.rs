//! Per-element op counts of a fusion-plan phase (what `optjit compile --stats` prints).

use optjit_ir::{Binary, FusionPlan, Graph, Op, Phase, Unary};
use std::fmt;
use std::ops::{Add, AddAssign};

/// The kinds of computing ops, as counted and as weighed by the cost model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum OpKind {
    Add,
    Sub,
    Mul,
    Div,
    Fma,
    Sqrt,
    Rsqrt,
    Exp,
    Log,
    Pow,
    Abs,
    Sign,
    Min,
    Max,
    Cmp,
    Select,
    Cast,
    Neg,
    Reduce,
    /// Scalar-only functions (`sin`, `cos`, `floor`).
    Other,
}

impl OpKind {
    /// Every kind, in the fixed order of `--stats`.
    pub(crate) const ALL: [OpKind; 20] = [
        OpKind::Add,
        OpKind::Sub,
        OpKind::Mul,
        OpKind::Div,
        OpKind::Fma,
        OpKind::Sqrt,
        OpKind::Rsqrt,
        OpKind::Exp,
        OpKind::Log,
        OpKind::Pow,
        OpKind::Abs,
        OpKind::Sign,
        OpKind::Min,
        OpKind::Max,
        OpKind::Cmp,
        OpKind::Select,
        OpKind::Cast,
        OpKind::Neg,
        OpKind::Reduce,
        OpKind::Other,
    ];

    /// The name printed by `--stats`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            OpKind::Add => "add",
            OpKind::Sub => "sub",
            OpKind::Mul => "mul",
            OpKind::Div => "div",
            OpKind::Fma => "fma",
            OpKind::Sqrt => "sqrt",
            OpKind::Rsqrt => "rsqrt",
            OpKind::Exp => "exp",
            OpKind::Log => "log",
            OpKind::Pow => "pow",
            OpKind::Abs => "abs",
            OpKind::Sign => "sign",
            OpKind::Min => "min",
            OpKind::Max => "max",
            OpKind::Cmp => "cmp",
            OpKind::Select => "select",
            OpKind::Cast => "cast",
            OpKind::Neg => "neg",
            OpKind::Reduce => "reduce",
            OpKind::Other => "other",
        }
    }

    /// The kind of `op`; `None` for inputs and constants, which compute nothing.
    pub(crate) fn of(op: &Op) -> Option<OpKind> {
        Some(match op {
            Op::Input(_) | Op::Const(_) => return None,
            Op::Unary(u) => match u {
                Unary::Neg => OpKind::Neg,
                Unary::Sqrt => OpKind::Sqrt,
                Unary::Rsqrt => OpKind::Rsqrt,
                Unary::Exp => OpKind::Exp,
                Unary::Log => OpKind::Log,
                Unary::Abs => OpKind::Abs,
                Unary::Sign => OpKind::Sign,
                Unary::Sin | Unary::Cos | Unary::Floor => OpKind::Other,
            },
            Op::Binary(b) => match b {
                Binary::Add => OpKind::Add,
                Binary::Sub => OpKind::Sub,
                Binary::Mul => OpKind::Mul,
                Binary::Div => OpKind::Div,
                Binary::Min => OpKind::Min,
                Binary::Max => OpKind::Max,
                Binary::Pow => OpKind::Pow,
            },
            Op::Fma => OpKind::Fma,
            Op::Cmp(_) => OpKind::Cmp,
            Op::Select => OpKind::Select,
            Op::Cast(_) => OpKind::Cast,
            Op::Reduce(_) => OpKind::Reduce,
        })
    }
}

/// How many ops of each kind a phase computes per element (inputs and constants excluded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpCounts {
    /// `add`
    pub add: usize,
    /// `sub`
    pub sub: usize,
    /// `mul`
    pub mul: usize,
    /// `div`
    pub div: usize,
    /// `fma`
    pub fma: usize,
    /// `sqrt`
    pub sqrt: usize,
    /// `rsqrt`
    pub rsqrt: usize,
    /// `exp`
    pub exp: usize,
    /// `log`
    pub log: usize,
    /// `pow`
    pub pow: usize,
    /// `abs`
    pub abs: usize,
    /// `sign`
    pub sign: usize,
    /// `min`
    pub min: usize,
    /// `max`
    pub max: usize,
    /// comparisons (`lt le gt ge eq ne`)
    pub cmp: usize,
    /// `select`
    pub select: usize,
    /// `cast`
    pub cast: usize,
    /// `neg`
    pub neg: usize,
    /// reductions (`norm sum mean max_abs global_norm`)
    pub reduce: usize,
    /// anything else (the scalar-only `sin cos floor`; zero in a valid plan)
    pub other: usize,
}

impl OpCounts {
    /// Every count with its name, in the fixed order of `--stats`.
    pub fn entries(&self) -> [(&'static str, usize); 20] {
        OpKind::ALL.map(|kind| (kind.name(), self.get(kind)))
    }

    /// The number of ops of all kinds.
    pub fn total(&self) -> usize {
        self.entries().iter().map(|(_, n)| n).sum()
    }

    fn get(&self, kind: OpKind) -> usize {
        let mut copy = *self;
        *copy.slot(kind)
    }

    fn slot(&mut self, kind: OpKind) -> &mut usize {
        match kind {
            OpKind::Add => &mut self.add,
            OpKind::Sub => &mut self.sub,
            OpKind::Mul => &mut self.mul,
            OpKind::Div => &mut self.div,
            OpKind::Fma => &mut self.fma,
            OpKind::Sqrt => &mut self.sqrt,
            OpKind::Rsqrt => &mut self.rsqrt,
            OpKind::Exp => &mut self.exp,
            OpKind::Log => &mut self.log,
            OpKind::Pow => &mut self.pow,
            OpKind::Abs => &mut self.abs,
            OpKind::Sign => &mut self.sign,
            OpKind::Min => &mut self.min,
            OpKind::Max => &mut self.max,
            OpKind::Cmp => &mut self.cmp,
            OpKind::Select => &mut self.select,
            OpKind::Cast => &mut self.cast,
            OpKind::Neg => &mut self.neg,
            OpKind::Reduce => &mut self.reduce,
            OpKind::Other => &mut self.other,
        }
    }

    /// Counts one more `op` (inputs and constants are not counted).
    pub fn record(&mut self, op: &Op) {
        if let Some(kind) = OpKind::of(op) {
            *self.slot(kind) += 1;
        }
    }
}

/// The ops `phase` computes per element, by kind; `graph` is the plan's graph. Each reduction
/// the phase folds counts one `reduce` per element.
pub fn count_elem_ops(graph: &Graph, phase: &Phase) -> OpCounts {
    let mut counts = OpCounts::default();
    for &node in phase.nodes.iter().chain(&phase.reductions) {
        counts.record(&graph.node(node).op);
    }
    counts
}

/// The machine-readable statistics of a plan (`optjit compile --stats`, and the end of the
/// `fuse` stage's text): one `phase=K kernels=1 bytes_per_elem=… <op>=<count> ...
/// bytes_read=… bytes_written=…` line per phase, every op kind with zeros included, then a
/// `total …` line of the same form.
pub fn plan_stats(plan: &FusionPlan) -> String {
    let elem_bytes = plan.graph.elem_dtype.size_bytes();
    let traffic = |phase: &Phase| {
        let reads = phase.buffers.iter().filter(|b| b.read).count();
        let writes = phase.buffers.iter().filter(|b| b.write).count();
        (reads * elem_bytes, writes * elem_bytes)
    };
    let mut total = OpCounts::default();
    let (mut total_read, mut total_written) = (0, 0);
    let mut out = String::new();
    for (k, phase) in plan.phases.iter().enumerate() {
        let counts = count_elem_ops(&plan.graph, phase);
        let (read, written) = traffic(phase);
        total += counts;
        total_read += read;
        total_written += written;
        out.push_str(&format!(
            "phase={k} kernels=1 bytes_per_elem={} {counts} bytes_read={read} bytes_written={written}\n",
            read + written
        ));
    }
    out.push_str(&format!(
        "total kernels={} bytes_per_elem={} {total} bytes_read={total_read} bytes_written={total_written}\n",
        plan.phases.len(),
        total_read + total_written
    ));
    out
}

impl AddAssign for OpCounts {
    fn add_assign(&mut self, other: OpCounts) {
        for kind in OpKind::ALL {
            *self.slot(kind) += other.get(kind);
        }
    }
}

impl Add for OpCounts {
    type Output = OpCounts;

    fn add(mut self, other: OpCounts) -> OpCounts {
        self += other;
        self
    }
}

impl fmt::Display for OpCounts {
    /// `add=1 sub=0 mul=3 ...`: every kind, zeros included, in the fixed order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, n)) in self.entries().iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{name}={n}")?;
        }
        Ok(())
    }
}
