//! Which states never become negative: the value-range analysis run over a step graph, each
//! state assumed non-negative if it starts so and kept only while the step provably keeps it
//! so. A planner asks this before storing a state in an unsigned format.

use crate::value_range::ValueRange;
use optjit_ir::{Graph, Input, NodeIndex, Op, Target};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The states of `graph` (per-element, per-row, per-column and scalar) that are provably
/// non-negative after every step: every value `>= 0` (`-0.0` included) or NaN, given that
/// hyperparameters stay in `hyper_ranges` (as [`crate::SimplifyOptions::hyper_ranges`]).
///
/// The proof is by induction over steps: a state qualifies when its initial value is `>= 0`
/// and the step's new value for it is non-negative whenever the qualifying states' old values
/// are (a state the step does not assign keeps its value). Rounding a non-negative value to its
/// storage format keeps it non-negative. It holds for states that only the step writes: values
/// restored from elsewhere (a checkpoint) must be non-negative too.
///
/// ```
/// use optjit_ir::{Binary, Class, Graph, Input, Op, Target};
/// use std::collections::BTreeMap;
/// // v = beta * v + g * g: non-negative for beta >= 0, not for any beta.
/// let mut g = Graph::new("second_moment");
/// g.declare_hyper("beta", 0.9);
/// g.declare_state("v", 0.0, Class::Elem);
/// let beta = g.input(Input::Hyper("beta".into()));
/// let v = g.input(Input::State("v".into()));
/// let grad = g.input(Input::Grad);
/// let decayed = g.add(Op::Binary(Binary::Mul), &[beta, v]);
/// let square = g.add(Op::Binary(Binary::Mul), &[grad, grad]);
/// let v_new = g.add(Op::Binary(Binary::Add), &[decayed, square]);
/// g.set_output(Target::State("v".into()), v_new);
///
/// let unit = optjit_rewrite::ValueRange::between(0.0, true, 1.0, false);
/// let ranges = BTreeMap::from([("beta".to_string(), unit)]);
/// assert!(optjit_rewrite::non_negative_states(&g, &ranges).contains("v"));
/// assert!(optjit_rewrite::non_negative_states(&g, &BTreeMap::new()).is_empty());
/// ```
pub fn non_negative_states(
    graph: &Graph,
    hyper_ranges: &BTreeMap<String, ValueRange>,
) -> BTreeSet<String> {
    let mut assumed: BTreeSet<String> = graph
        .states
        .iter()
        .filter(|s| s.init >= 0.0)
        .map(|s| s.name.clone())
        .collect();
    // Each round drops the states whose new value is not proven non-negative from the others;
    // the set only shrinks, so this ends.
    loop {
        let ranges = node_ranges(graph, hyper_ranges, &assumed);
        let kept: BTreeSet<String> = assumed
            .iter()
            .filter(|name| {
                graph.outputs.iter().all(|o| match &o.target {
                    Target::State(n) | Target::ScalarState(n) if n == *name => {
                        ranges[&o.value].is_non_negative()
                    }
                    _ => true,
                })
            })
            .cloned()
            .collect();
        if kept == assumed {
            return kept;
        }
        assumed = kept;
    }
}

/// The range of every node of `graph`, the states in `assumed` taken as non-negative.
fn node_ranges(
    graph: &Graph,
    hyper_ranges: &BTreeMap<String, ValueRange>,
    assumed: &BTreeSet<String>,
) -> HashMap<NodeIndex, ValueRange> {
    let mut ranges: HashMap<NodeIndex, ValueRange> = HashMap::new();
    for n in graph.nodes() {
        let node = graph.node(n);
        let range = match &node.op {
            Op::Input(
                Input::State(s) | Input::RowState(s) | Input::ColState(s) | Input::ScalarState(s),
            ) if assumed.contains(s) => ValueRange::NON_NEGATIVE,
            Op::Input(input) => ValueRange::of_input(input, hyper_ranges),
            op => {
                let operand_nodes = graph.operands(n);
                let operands: Vec<ValueRange> = operand_nodes
                    .iter()
                    .map(|o| ranges[o].crossing(graph.node(*o).class, node.class))
                    .collect();
                let first_two_same =
                    operand_nodes.len() >= 2 && operand_nodes[0] == operand_nodes[1];
                ValueRange::of_op(op, &operands, first_two_same)
            }
        };
        ranges.insert(n, range);
    }
    ranges
}
