//! The e-class analysis: value class (as the IR infers it), f64 constant folding, and the
//! value range proven for the class (`value_range.rs`), which rule side conditions read.

use crate::lang::{Konst, OptLang};
use crate::value_range::ValueRange;
use egg::{Analysis, DidMerge, EGraph, Id, Language};
use optjit_ir::{Class, Input};
use std::collections::BTreeMap;

/// The e-graph type the rewriter works on.
pub(crate) type OptEGraph = EGraph<OptLang, ClassAnalysis>;

/// What the analysis knows about an e-class.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Data {
    /// How often the value is computed; every member of a class agrees.
    pub(crate) class: Class,
    /// The value, when it is a Scalar-class constant (never NaN).
    pub(crate) konst: Option<f64>,
    /// What is proven about the class's non-NaN values. Every member's range is proven for
    /// that member and the class keeps their meet: exact for exact rules; after a reassociating
    /// rule, members agree only up to rounding, and so may the range.
    pub(crate) range: ValueRange,
}

/// Value classes, constant folding and value ranges.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClassAnalysis {
    /// What the caller guarantees about each hyperparameter (its domain); others may be anything.
    pub(crate) hyper_ranges: BTreeMap<String, ValueRange>,
}

/// The class of an input, as `Graph` infers it.
pub(crate) fn input_class(input: &Input) -> Class {
    match input {
        Input::Param | Input::Grad | Input::State(_) => Class::Elem,
        Input::RowState(_) => Class::Row,
        Input::ColState(_) => Class::Col,
        Input::Rank => Class::Tensor,
        Input::ScalarState(_) | Input::Hyper(_) | Input::Step | Input::OptimizerStep => {
            Class::Scalar
        }
    }
}

/// The class of an e-node whose children have the classes `egraph` knows: leaves by kind,
/// reductions by scope, everything else the largest class of its operands.
pub(crate) fn node_class(egraph: &OptEGraph, node: &OptLang) -> Class {
    match node {
        OptLang::Num(_) => Class::Scalar,
        OptLang::In(leaf) => input_class(&leaf.0),
        _ => match node.to_op() {
            optjit_ir::Op::Reduce(r) => r.result_class(),
            _ => max_child_class(egraph, node),
        },
    }
}

/// The join of the children's classes (Scalar for a leaf): where the op itself runs.
pub(crate) fn max_child_class(egraph: &OptEGraph, node: &OptLang) -> Class {
    Class::join_all(node.children().iter().map(|&c| egraph[c].data.class))
}

/// Folds `node` in f64, as the host's scalar program would compute it, when every operand is a
/// known constant and the result is finite. Ops whose host result is not pinned down (±0 ties of
/// min/max, casts to half types, comparisons) are left alone.
fn fold(egraph: &OptEGraph, node: &OptLang) -> Option<f64> {
    use OptLang as L;
    let c = |id: &Id| egraph[*id].data.konst;
    let value = match node {
        L::Num(k) => k.value(),
        L::Add([a, b]) => c(a)? + c(b)?,
        L::Sub([a, b]) => c(a)? - c(b)?,
        L::Mul([a, b]) => c(a)? * c(b)?,
        L::Div([a, b]) => c(a)? / c(b)?,
        L::Min([a, b]) | L::Max([a, b]) => {
            let (x, y) = (c(a)?, c(b)?);
            if x == y && x.to_bits() != y.to_bits() {
                return None; // min(0, -0): the host's choice of zero is unspecified
            }
            if matches!(node, L::Min(_)) {
                x.min(y)
            } else {
                x.max(y)
            }
        }
        // The host's `pow` (its special exponents included).
        L::Pow([a, b]) => optjit_ir::eval_op(&node.to_op(), &[c(a)?, c(b)?]),
        L::Fma([a, b, d]) => c(a)?.mul_add(c(b)?, c(d)?),
        L::Neg(a) => -c(a)?,
        L::Sqrt(a) => c(a)?.sqrt(),
        L::Rsqrt(a) => 1.0 / c(a)?.sqrt(),
        L::Exp(a) => c(a)?.exp(),
        L::Log(a) => c(a)?.ln(),
        L::Abs(a) => c(a)?.abs(),
        L::Sign(a) => {
            let x = c(a)?;
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }
        L::Sin(a) => c(a)?.sin(),
        L::Cos(a) => c(a)?.cos(),
        L::Floor(a) => c(a)?.floor(),
        L::CastF32(a) => c(a)? as f32 as f64,
        L::CastF64(a) => c(a)?,
        L::Select([cond, a, b]) => {
            if c(cond)? != 0.0 {
                c(a)?
            } else {
                c(b)?
            }
        }
        _ => return None,
    };
    // A NaN literal is no constant to fold through; infinite literals are kept as such.
    let literal = matches!(node, L::Num(_));
    (value.is_finite() || (literal && !value.is_nan())).then_some(value)
}

/// The range of `node`'s value from its children's (each rounded to `class`'s precision when
/// its class differs) or, for a leaf, from the hyperparameter ranges.
fn node_range(egraph: &OptEGraph, node: &OptLang, class: Class) -> ValueRange {
    if let OptLang::In(leaf) = node {
        return ValueRange::of_input(&leaf.0, &egraph.analysis.hyper_ranges);
    }
    let operands: Vec<ValueRange> = node
        .children()
        .iter()
        .map(|&c| {
            let data = &egraph[c].data;
            data.range.crossing(data.class, class)
        })
        .collect();
    let children = node.children();
    let first_two_same =
        children.len() >= 2 && egraph.find(children[0]) == egraph.find(children[1]);
    ValueRange::of_op(&node.to_op(), &operands, first_two_same)
}

impl Analysis<OptLang> for ClassAnalysis {
    type Data = Data;

    fn make(egraph: &mut OptEGraph, node: &OptLang, _id: Id) -> Data {
        let class = node_class(egraph, node);
        let konst = if class == Class::Scalar {
            fold(egraph, node)
        } else {
            None
        };
        let range = node_range(egraph, node, class);
        Data {
            class,
            konst,
            range,
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        debug_assert_eq!(
            a.class, b.class,
            "a rule merged values of different classes"
        );
        let class_changed = b.class > a.class;
        a.class = a.class.max(b.class);
        let konst = match (a.konst, b.konst) {
            (None, Some(_)) => {
                a.konst = b.konst;
                DidMerge(true, false)
            }
            (Some(_), None) => DidMerge(false, true),
            // Two constants in one class only arise from a reassociating rule; keep the first.
            (Some(x), Some(y)) => DidMerge(false, x.to_bits() != y.to_bits()),
            (None, None) => DidMerge(false, false),
        };
        // Both ranges hold for the class's value. Disjoint ones (only possible when members
        // differ by rounding) keep the first, so the range only ever shrinks.
        let meet = a.range.meet(b.range);
        let range = if meet.is_nan_only() && !a.range.is_nan_only() && !b.range.is_nan_only() {
            DidMerge(false, a.range != b.range)
        } else {
            let merged = DidMerge(meet != a.range, meet != b.range);
            a.range = meet;
            merged
        };
        DidMerge(konst.0 || class_changed || range.0, konst.1 || range.1)
    }

    fn modify(egraph: &mut OptEGraph, id: Id) {
        if let Some(value) = egraph[id].data.konst {
            let literal = egraph.add(OptLang::Num(Konst::new(value)));
            egraph.union(id, literal);
        }
    }
}
