//! The operations of the step graph: inputs, element-wise arithmetic, selects, casts, reductions.

use crate::dtype::{Class, DType};
use std::fmt;

/// A value read from outside the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Input {
    /// The parameter tensor being updated (per element).
    Param,
    /// Its gradient (per element).
    Grad,
    /// A per-element state buffer, by name (`exp_avg`).
    State(String),
    /// A per-row state, by name (Adafactor's `row_var`).
    RowState(String),
    /// A per-column state, by name (Adafactor's `col_var`).
    ColState(String),
    /// The tensor's number of dimensions (per tensor; PyTorch's `grad.dim()`).
    Rank,
    /// A per-group scalar state, by name (`mu_product`).
    ScalarState(String),
    /// A hyperparameter in force for the group, by name (`lr`).
    Hyper(String),
    /// The tensor's 1-based count of steps, including the one being taken (PyTorch's
    /// `state["step"]`): it does not advance on a step where the tensor has no gradient.
    Step,
    /// The optimizer's 1-based count of steps, including the one being taken, the same for
    /// every tensor (what a schedule counts: PyTorch's `last_epoch + 1`).
    OptimizerStep,
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Param => f.write_str("param"),
            Input::Grad => f.write_str("grad"),
            Input::State(n) => write!(f, "state {n}"),
            Input::RowState(n) => write!(f, "row_state {n}"),
            Input::ColState(n) => write!(f, "col_state {n}"),
            Input::Rank => f.write_str("rank"),
            Input::ScalarState(n) => write!(f, "scalar_state {n}"),
            Input::Hyper(n) => write!(f, "hyper {n}"),
            Input::Step => f.write_str("step"),
            Input::OptimizerStep => f.write_str("optimizer_step"),
        }
    }
}

/// Element-wise functions of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unary {
    /// `-x`
    Neg,
    /// `sqrt(x)`
    Sqrt,
    /// `1 / sqrt(x)`
    Rsqrt,
    /// `e^x`
    Exp,
    /// natural logarithm
    Log,
    /// `|x|`
    Abs,
    /// -1, 0 or 1 (NaN stays NaN, ±0 stays ±0), as `jnp.sign`. Not `torch.sign`, which gives 0
    /// for NaN and +0 for -0: that is `select(x > 0, 1, select(x < 0, -1, 0))` (Rprop's).
    Sign,
    /// `sin(x)` (scalar program only)
    Sin,
    /// `cos(x)` (scalar program only)
    Cos,
    /// `floor(x)` (scalar program only)
    Floor,
}

/// Element-wise functions of two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Binary {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `min(a, b)`, NaN-propagating as `torch.minimum`
    Min,
    /// `max(a, b)`, NaN-propagating as `torch.maximum`
    Max,
    /// `a ^ b` as `torch.pow` with a number exponent: C's `pow`, except that `a ^ 0.5` is
    /// `sqrt(a)` and `a ^ -0.5` is `1 / sqrt(a)` (ATen's special cases: `(-inf) ^ 0.5` is NaN)
    Pow,
}

/// Comparison predicates; a comparison yields a `Bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cmp {
    /// `a < b`
    Lt,
    /// `a <= b`
    Le,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
}

/// Reductions; each one is a phase boundary for the fusion planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reduction {
    /// L2 norm of this tensor.
    Norm,
    /// L2 norm over every tensor of every group (`clip_grad_norm_`).
    GlobalNorm,
    /// Sum of this tensor.
    Sum,
    /// Mean of this tensor.
    Mean,
    /// Largest absolute value of this tensor.
    MaxAbs,
    /// Mean of each row of each matrix (`(x * x).mean(dim=-1)` is `row_mean (x * x)`).
    RowMean,
    /// Mean of each column of each matrix (over dimension -2).
    ColMean,
    /// Mean of a per-row value over the rows of each matrix (computed by the host).
    RowsMean,
}

impl Reduction {
    /// The class of the operand the reduction takes.
    pub fn operand_class(self) -> Class {
        match self {
            Reduction::RowsMean => Class::Row,
            _ => Class::Elem,
        }
    }

    /// The class of the result.
    pub fn result_class(self) -> Class {
        match self {
            Reduction::GlobalNorm => Class::Scalar,
            Reduction::Norm | Reduction::Sum | Reduction::Mean | Reduction::MaxAbs => Class::Tensor,
            Reduction::RowMean => Class::Row,
            Reduction::ColMean => Class::Col,
            Reduction::RowsMean => Class::Matrix,
        }
    }

    /// Whether a kernel folds it (every reduction but `rows_mean`, which the host computes).
    pub fn in_kernel(self) -> bool {
        self.operand_class() == Class::Elem
    }
}

/// One operation. Operands live on the graph's edges, in position order.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A value from outside the graph (no operands).
    Input(Input),
    /// A literal (no operands). Stored as f64; per-element uses round it to the element dtype.
    Const(f64),
    /// One operand.
    Unary(Unary),
    /// Two operands.
    Binary(Binary),
    /// `a * b + c` with one rounding (three operands).
    Fma,
    /// Two operands; yields `Bool`.
    Cmp(Cmp),
    /// `cond ? a : b` (three operands; `cond` is `Bool`).
    Select,
    /// Conversion to a dtype (one operand).
    Cast(DType),
    /// A reduction of a per-element operand to one value per tensor (or one overall).
    Reduce(Reduction),
}

impl Op {
    /// How many operands the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input(_) | Op::Const(_) => 0,
            Op::Unary(_) | Op::Cast(_) | Op::Reduce(_) => 1,
            Op::Binary(_) | Op::Cmp(_) => 2,
            Op::Fma | Op::Select => 3,
        }
    }

    /// The mnemonic of the text form (inputs and constants print their own way).
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Const(_) => "const",
            Op::Unary(u) => u.mnemonic(),
            Op::Binary(b) => b.mnemonic(),
            Op::Fma => "fma",
            Op::Cmp(c) => c.mnemonic(),
            Op::Select => "select",
            Op::Cast(_) => "cast",
            Op::Reduce(r) => r.mnemonic(),
        }
    }

    /// A key that is equal for equal ops, for hash-consing (f64 compared by bits).
    pub fn key(&self) -> OpKey {
        match self {
            Op::Const(c) => OpKey::Const(c.to_bits()),
            other => OpKey::Other(format!("{other:?}")),
        }
    }
}

/// Hashable identity of an [`Op`], see [`Op::key`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpKey {
    /// A constant by its bit pattern.
    Const(u64),
    /// Any other op by its debug form (ops hold no floats besides constants).
    Other(String),
}

macro_rules! mnemonics {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];
            /// The mnemonic of the text form.
            pub fn mnemonic(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
            /// Parses a mnemonic of the text form.
            pub fn from_mnemonic(name: &str) -> Option<$ty> {
                match name { $($name => Some($ty::$variant),)* _ => None }
            }
        }
    };
}

mnemonics!(Unary { Neg => "neg", Sqrt => "sqrt", Rsqrt => "rsqrt", Exp => "exp", Log => "log",
    Abs => "abs", Sign => "sign", Sin => "sin", Cos => "cos", Floor => "floor" });
mnemonics!(Binary { Add => "add", Sub => "sub", Mul => "mul", Div => "div", Min => "min",
    Max => "max", Pow => "pow" });
mnemonics!(Cmp { Lt => "lt", Le => "le", Gt => "gt", Ge => "ge", Eq => "eq", Ne => "ne" });
mnemonics!(Reduction { Norm => "norm", GlobalNorm => "global_norm", Sum => "sum", Mean => "mean",
    MaxAbs => "max_abs", RowMean => "row_mean", ColMean => "col_mean", RowsMean => "rows_mean" });

impl Unary {
    /// Whether the op may only appear in the scalar program (no backend computes it per element).
    pub fn scalar_only(self) -> bool {
        matches!(self, Unary::Sin | Unary::Cos | Unary::Floor)
    }
}
