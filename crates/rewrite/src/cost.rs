//! The cost model: per-element work dominates, by value class; never by tensor size.
//!
//! An op costs `weight(kind) * scale(class)`, where the class is the one the op runs at (the
//! largest class of its operands: a reduction of a per-element value costs a per-element pass)
//! and the scale is 1 for Scalar (once per group), 10 for Tensor (once per tensor) and 100 for
//! Elem (once per element). Inputs and constants cost nothing.

use crate::analysis::{OptEGraph, max_child_class};
use crate::counts::OpKind;
use crate::lang::OptLang;
use egg::{CostFunction, Id, Language};
use optjit_ir::{Class, Graph, NodeIndex};

/// Relative cost of one op of `kind`, independent of class.
pub(crate) fn weight(kind: OpKind) -> f64 {
    match kind {
        OpKind::Add
        | OpKind::Sub
        | OpKind::Mul
        | OpKind::Fma
        | OpKind::Neg
        | OpKind::Abs
        | OpKind::Sign
        | OpKind::Min
        | OpKind::Max
        | OpKind::Cmp
        | OpKind::Select
        | OpKind::Cast
        | OpKind::Reduce => 1.0,
        OpKind::Div | OpKind::Sqrt | OpKind::Rsqrt => 4.0,
        OpKind::Exp | OpKind::Log | OpKind::Pow => 8.0,
        OpKind::Other => 8.0,
    }
}

/// How many times per step a value of `class` is computed, relatively.
pub(crate) fn scale(class: Class) -> f64 {
    match class {
        Class::Scalar => 1.0,
        Class::Tensor => 10.0,
        Class::Matrix => 12.0,
        Class::Row | Class::Col => 30.0,
        Class::Elem => 100.0,
    }
}

/// Cost of one op of `kind` running at `class`; zero for leaves.
pub(crate) fn op_cost(kind: Option<OpKind>, class: Class) -> f64 {
    kind.map_or(0.0, |k| weight(k) * scale(class))
}

fn node_kind(node: &OptLang) -> Option<OpKind> {
    match node {
        OptLang::Num(_) | OptLang::In(_) => None,
        other => OpKind::of(&other.to_op()),
    }
}

/// Tie-breaker that puts the scalar operand of a commutative op on the right. Far below any op's
/// cost, so it only decides between forms that are otherwise equally cheap.
const NON_CANONICAL: f64 = 1e-3;

/// egg cost function: class-scaled op cost plus the children's (tree) costs.
pub(crate) struct ClassCost<'a> {
    /// The e-graph whose analysis gives each child's class.
    pub(crate) egraph: &'a OptEGraph,
}

impl CostFunction<OptLang> for ClassCost<'_> {
    type Cost = f64;

    fn cost<C: FnMut(Id) -> f64>(&mut self, node: &OptLang, mut costs: C) -> f64 {
        let mut own = op_cost(node_kind(node), max_child_class(self.egraph, node));
        if let OptLang::Add([a, b]) | OptLang::Mul([a, b]) = node {
            let class = |id: &Id| self.egraph[*id].data.class;
            if class(a) == Class::Scalar && class(b) != Class::Scalar {
                own += NON_CANONICAL; // prefer `e * s` over the equal `s * e`
            }
        }
        node.fold(own, |sum, id| sum + costs(id))
    }
}

/// Cost of a graph as a DAG: every node that an output depends on, counted once.
pub(crate) fn graph_cost(graph: &Graph) -> f64 {
    let mut seen = vec![false; graph.nodes().last().map_or(0, |n| n.index() + 1)];
    let mut stack: Vec<NodeIndex> = graph.outputs.iter().map(|o| o.value).collect();
    let mut total = 0.0;
    while let Some(n) = stack.pop() {
        if std::mem::replace(&mut seen[n.index()], true) {
            continue;
        }
        let operands = graph.operands(n);
        let class = Class::join_all(operands.iter().map(|&o| graph.node(o).class));
        total += op_cost(OpKind::of(&graph.node(n).op), class);
        stack.extend(operands);
    }
    total
}
