//! Specializing a graph to the tensors of fewer than two dimensions: seen as one row, their
//! per-column values are per-element values, computed in kernels instead of on the host.

use crate::dtype::{Class, DType};
use crate::graph::{Graph, StateDecl};
use crate::interp::eval_op;
use crate::op::{Input, Op, Reduction};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

/// Whether `graph` computes per-column values or reads the rank: then tensors of two or more
/// dimensions and tensors of fewer need different steps (see [`specialize_one_row`]).
pub fn depends_on_rank(graph: &Graph) -> bool {
    graph.nodes().into_iter().any(|n| {
        let node = graph.node(n);
        node.class == Class::Col || node.op == Op::Input(Input::Rank)
    })
}

/// The step of `graph` for tensors of `rank` dimensions, `rank < 2`: each is one matrix of one
/// row, so a column is an element. Column states become per-element states, `col_mean x` is
/// `x` itself (the mean of one value), the rank is the constant `rank`, and a `select` whose
/// condition compares constants takes its branch. A row state that no other output reads any
/// more is dropped with its update (as PyTorch keeps no row factor for a vector). Everything
/// else is unchanged.
pub fn specialize_one_row(graph: &Graph, rank: usize) -> Graph {
    let mut out = graph.clone_decls();
    out.states = graph
        .states
        .iter()
        .map(|s| StateDecl {
            class: match s.class {
                Class::Col => Class::Elem,
                other => other,
            },
            ..s.clone()
        })
        .collect();
    let mut map: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    for n in graph.nodes() {
        let operands: Vec<NodeIndex> = graph.operands(n).iter().map(|o| map[o]).collect();
        let mapped = match &graph.node(n).op {
            Op::Input(Input::ColState(name)) => out.input(Input::State(name.clone())),
            Op::Input(Input::Rank) => out.constant(rank as f64),
            Op::Reduce(Reduction::ColMean) => operands[0],
            Op::Select => match constant_condition(&out, operands[0]) {
                Some(true) => operands[1],
                Some(false) => operands[2],
                None => out.add(Op::Select, &operands),
            },
            op => out.add(op.clone(), &operands),
        };
        map.insert(n, mapped);
    }
    for output in &graph.outputs {
        out.set_output(output.target.clone(), map[&output.value]);
    }
    for name in unread_row_states(&out) {
        out.outputs.retain(|o| o.target.name() != name);
        out.states.retain(|s| s.name != name);
    }
    out.prune();
    out
}

/// The row states that only their own update reads.
fn unread_row_states(graph: &Graph) -> Vec<String> {
    let row_states = graph.states.iter().filter(|s| s.class == Class::Row);
    row_states
        .filter(|s| {
            let input = Op::Input(Input::RowState(s.name.clone()));
            let mut seen = std::collections::HashSet::new();
            let mut stack: Vec<NodeIndex> = graph
                .outputs
                .iter()
                .filter(|o| o.target.name() != s.name)
                .map(|o| o.value)
                .collect();
            while let Some(n) = stack.pop() {
                if graph.node(n).op == input {
                    return false;
                }
                if seen.insert(n) {
                    stack.extend(graph.operands(n));
                }
            }
            true
        })
        .map(|s| s.name.clone())
        .collect()
}

/// The value of a comparison of two constants, if `cond` is one.
fn constant_condition(graph: &Graph, cond: NodeIndex) -> Option<bool> {
    let node = graph.node(cond);
    if node.dtype != DType::Bool || !matches!(node.op, Op::Cmp(_)) {
        return None;
    }
    let values: Vec<f64> = graph
        .operands(cond)
        .iter()
        .map(|&o| match graph.node(o).op {
            Op::Const(c) => Some(c),
            _ => None,
        })
        .collect::<Option<_>>()?;
    Some(eval_op(&node.op, &values) != 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify;

    #[test]
    fn one_row_tensors_get_per_element_columns_and_a_constant_rank() {
        let g = crate::parse::tests::factored();
        verify(&g).expect("factored graph");
        assert!(depends_on_rank(&g));

        let flat = specialize_one_row(&g, 1);
        verify(&flat).unwrap_or_else(|e| panic!("{e}\n{flat}"));
        assert!(!depends_on_rank(&flat), "{flat}");
        assert_eq!(flat.state("col_var").map(|s| s.class), Some(Class::Elem));
        let text = flat.to_string();
        // The column mean is gone, the select took its `1` branch: var = 1 * new_col.
        assert!(
            !text.contains("col_mean") && !text.contains("select"),
            "{text}"
        );
        // Only row_var's own update read it: dropped, with the row mean.
        assert!(
            !text.contains("row_mean") && flat.state("row_var").is_none(),
            "{text}"
        );
    }
}
