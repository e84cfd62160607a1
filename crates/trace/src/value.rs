//! Symbolic values: handles into the graph being traced, with arithmetic operators.

use crate::error::TraceError;
use optjit_ir::{Binary, Cmp, DType, Graph, NodeIndex, Op, Reduction, Unary};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::rc::Rc;

pub(crate) struct TraceState {
    pub(crate) graph: Graph,
    pub(crate) errors: Vec<TraceError>,
    pub(crate) domains: BTreeMap<String, crate::Domain>,
    pub(crate) aliases: Vec<crate::StateAlias>,
}

pub(crate) type Shared = Rc<RefCell<TraceState>>;

/// A value of the step being traced: a parameter, a state, a hyperparameter, or any expression
/// of them. Cloning is cheap; arithmetic records a node.
#[derive(Clone)]
pub struct Value {
    state: Shared,
    node: NodeIndex,
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.borrow();
        write!(
            f,
            "Value({:?} in {})",
            s.graph.node(self.node).op,
            s.graph.name
        )
    }
}

/// Something that can stand for an operand: a [`Value`] or a literal.
pub trait Operand {
    /// The node for this operand in `value`'s graph.
    fn node_in(self, value: &Value) -> NodeIndex;
}

impl Operand for f64 {
    fn node_in(self, value: &Value) -> NodeIndex {
        value.state.borrow_mut().graph.constant(self)
    }
}

impl Operand for &Value {
    fn node_in(self, value: &Value) -> NodeIndex {
        if Rc::ptr_eq(&self.state, &value.state) {
            return self.node;
        }
        // Combining values of two tracers: record the mistake, keep tracing with a placeholder.
        let other = self.state.borrow().graph.name.clone();
        let mut s = value.state.borrow_mut();
        let optimizer = s.graph.name.clone();
        s.errors.push(TraceError::ForeignValue { optimizer, other });
        s.graph.constant(f64::NAN)
    }
}

impl Operand for Value {
    fn node_in(self, value: &Value) -> NodeIndex {
        (&self).node_in(value)
    }
}

impl Value {
    pub(crate) fn new(state: Shared, node: NodeIndex) -> Value {
        Value { state, node }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.state
    }

    /// The node this handle refers to.
    pub fn node(&self) -> NodeIndex {
        self.node
    }

    fn apply(&self, op: Op, operands: &[NodeIndex]) -> Value {
        let node = self.state.borrow_mut().graph.add(op, operands);
        Value {
            state: self.state.clone(),
            node,
        }
    }

    fn unary(&self, op: Unary) -> Value {
        self.apply(Op::Unary(op), &[self.node])
    }

    fn binary(&self, op: Binary, rhs: impl Operand) -> Value {
        let rhs = rhs.node_in(self);
        self.apply(Op::Binary(op), &[self.node, rhs])
    }

    fn compare(&self, op: Cmp, rhs: impl Operand) -> Value {
        let rhs = rhs.node_in(self);
        self.apply(Op::Cmp(op), &[self.node, rhs])
    }

    fn reduce(&self, op: Reduction) -> Value {
        self.apply(Op::Reduce(op), &[self.node])
    }

    /// `sqrt(self)`
    pub fn sqrt(&self) -> Value {
        self.unary(Unary::Sqrt)
    }
    /// `1 / sqrt(self)`
    pub fn rsqrt(&self) -> Value {
        self.unary(Unary::Rsqrt)
    }
    /// `e^self`
    pub fn exp(&self) -> Value {
        self.unary(Unary::Exp)
    }
    /// natural logarithm
    pub fn log(&self) -> Value {
        self.unary(Unary::Log)
    }
    /// `|self|`
    pub fn abs(&self) -> Value {
        self.unary(Unary::Abs)
    }
    /// -1, 0 or 1, as `torch.sign`
    pub fn sign(&self) -> Value {
        self.unary(Unary::Sign)
    }
    /// `sin(self)` (scalars only)
    pub fn sin(&self) -> Value {
        self.unary(Unary::Sin)
    }
    /// `cos(self)` (scalars only)
    pub fn cos(&self) -> Value {
        self.unary(Unary::Cos)
    }
    /// `floor(self)` (scalars only)
    pub fn floor(&self) -> Value {
        self.unary(Unary::Floor)
    }
    /// `min(self, rhs)`, NaN-propagating as `torch.minimum`
    pub fn min(&self, rhs: impl Operand) -> Value {
        self.binary(Binary::Min, rhs)
    }
    /// `max(self, rhs)`, NaN-propagating as `torch.maximum`
    pub fn max(&self, rhs: impl Operand) -> Value {
        self.binary(Binary::Max, rhs)
    }
    /// `self ^ rhs`
    pub fn pow(&self, rhs: impl Operand) -> Value {
        self.binary(Binary::Pow, rhs)
    }
    /// `min(max(self, lo), hi)`
    pub fn clamp(&self, lo: impl Operand, hi: impl Operand) -> Value {
        self.max(lo).min(hi)
    }
    /// `self * b + c` with one rounding
    pub fn fma(&self, b: impl Operand, c: impl Operand) -> Value {
        let (b, c) = (b.node_in(self), c.node_in(self));
        self.apply(Op::Fma, &[self.node, b, c])
    }
    /// Conversion to `dtype`.
    pub fn cast(&self, dtype: DType) -> Value {
        self.apply(Op::Cast(dtype), &[self.node])
    }
    /// `self < rhs`
    pub fn lt(&self, rhs: impl Operand) -> Value {
        self.compare(Cmp::Lt, rhs)
    }
    /// `self <= rhs`
    pub fn le(&self, rhs: impl Operand) -> Value {
        self.compare(Cmp::Le, rhs)
    }
    /// `self > rhs`
    pub fn gt(&self, rhs: impl Operand) -> Value {
        self.compare(Cmp::Gt, rhs)
    }
    /// `self >= rhs`
    pub fn ge(&self, rhs: impl Operand) -> Value {
        self.compare(Cmp::Ge, rhs)
    }
    /// `self == rhs`
    pub fn eq(&self, rhs: impl Operand) -> Value {
        self.compare(Cmp::Eq, rhs)
    }
    /// `self != rhs`
    pub fn ne(&self, rhs: impl Operand) -> Value {
        self.compare(Cmp::Ne, rhs)
    }
    /// L2 norm of this tensor.
    pub fn norm(&self) -> Value {
        self.reduce(Reduction::Norm)
    }
    /// L2 norm over every tensor the optimizer updates.
    pub fn global_norm(&self) -> Value {
        self.reduce(Reduction::GlobalNorm)
    }
    /// Sum of this tensor.
    pub fn sum(&self) -> Value {
        self.reduce(Reduction::Sum)
    }
    /// Mean of this tensor.
    pub fn mean(&self) -> Value {
        self.reduce(Reduction::Mean)
    }
    /// Largest absolute value of this tensor.
    pub fn max_abs(&self) -> Value {
        self.reduce(Reduction::MaxAbs)
    }
    /// Mean of each row of each matrix (over the last dimension; see [`Tracer::row_state`]).
    ///
    /// [`Tracer::row_state`]: crate::Tracer::row_state
    pub fn row_mean(&self) -> Value {
        self.reduce(Reduction::RowMean)
    }
    /// Mean of each column of each matrix (over dimension -2).
    pub fn col_mean(&self) -> Value {
        self.reduce(Reduction::ColMean)
    }
    /// Mean of a per-row value over the rows of each matrix (PyTorch's `.mean(dim=-2)` of a
    /// row factor).
    pub fn rows_mean(&self) -> Value {
        self.reduce(Reduction::RowsMean)
    }
}

/// `cond ? if_true : if_false`, element-wise (`where` in the .step language).
pub fn select(cond: &Value, if_true: impl Operand, if_false: impl Operand) -> Value {
    let (t, f) = (if_true.node_in(cond), if_false.node_in(cond));
    cond.apply(Op::Select, &[cond.node, t, f])
}

impl From<&Value> for Value {
    fn from(v: &Value) -> Value {
        v.clone()
    }
}

impl Neg for &Value {
    type Output = Value;
    fn neg(self) -> Value {
        self.unary(Unary::Neg)
    }
}

impl Neg for Value {
    type Output = Value;
    fn neg(self) -> Value {
        self.unary(Unary::Neg)
    }
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $op:expr) => {
        impl<R: Operand> $trait<R> for &Value {
            type Output = Value;
            fn $method(self, rhs: R) -> Value {
                self.binary($op, rhs)
            }
        }
        impl<R: Operand> $trait<R> for Value {
            type Output = Value;
            fn $method(self, rhs: R) -> Value {
                self.binary($op, rhs)
            }
        }
        impl $trait<&Value> for f64 {
            type Output = Value;
            fn $method(self, rhs: &Value) -> Value {
                let lhs = self.node_in(rhs);
                rhs.apply(Op::Binary($op), &[lhs, rhs.node])
            }
        }
        impl $trait<Value> for f64 {
            type Output = Value;
            fn $method(self, rhs: Value) -> Value {
                self.$method(&rhs)
            }
        }
    };
}

binary_operator!(Add, add, Binary::Add);
binary_operator!(Sub, sub, Binary::Sub);
binary_operator!(Mul, mul, Binary::Mul);
binary_operator!(Div, div, Binary::Div);
