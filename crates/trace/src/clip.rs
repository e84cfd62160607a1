//! `clip_grad_norm`: any update rule, with its gradients first scaled as PyTorch's
//! `torch.nn.utils.clip_grad_norm_(params, max_norm)` scales them.

use crate::definition::{Definition, Domain};
use crate::error::TraceError;
use optjit_ir::{Binary, Class, Graph, Input, Op, Reduction, Target};
use std::collections::HashMap;

/// The hyperparameter that holds `max_norm` (a runtime value: changing it never recompiles).
pub const MAX_NORM: &str = "max_norm";

/// The scalar state that holds the total gradient norm of the last step (before clipping), as
/// `clip_grad_norm_` returns it; the same in every group.
pub const GRAD_NORM: &str = "grad_norm";

/// `definition` with gradient clipping in front: `total = global_norm(grad)` over every tensor
/// of every group, `coef = min(max_norm / (total + 1e-6), 1)`, and every read of `grad`
/// replaced by `grad * coef`. `max_norm` becomes a hyperparameter (default `max_norm`,
/// `>= 0`), and the scalar state [`GRAD_NORM`] receives `total` each step.
///
/// Fails if the rule already declares a hyperparameter `max_norm` or a state `grad_norm`, or if
/// `max_norm` is not a finite number `>= 0`.
pub fn clip_grad_norm(definition: &Definition, max_norm: f64) -> Result<Definition, TraceError> {
    let source = &definition.graph;
    let rule = source.name.clone();
    for (what, taken) in [
        ("hyper", source.hyper(MAX_NORM).is_some()),
        ("state", source.state(GRAD_NORM).is_some()),
    ] {
        if taken {
            let name = if what == "hyper" { MAX_NORM } else { GRAD_NORM };
            return Err(TraceError::Duplicate {
                what,
                name: name.to_string(),
                optimizer: rule,
            });
        }
    }
    let domain = Domain::non_negative();
    if !domain.contains(max_norm) {
        return Err(TraceError::BadMaxNorm {
            value: max_norm,
            expected: domain.to_string(),
        });
    }

    let mut graph = Graph::new(rule);
    graph.elem_dtype = source.elem_dtype;
    graph.hypers = source.hypers.clone();
    graph.states = source.states.clone();
    graph.declare_hyper(MAX_NORM, max_norm);
    graph.declare_state(GRAD_NORM, 0.0, Class::Scalar);

    let grad = graph.input(Input::Grad);
    let total = graph.add(Op::Reduce(Reduction::GlobalNorm), &[grad]);
    let eps = graph.constant(1e-6);
    let denominator = graph.add(Op::Binary(Binary::Add), &[total, eps]);
    let limit = graph.input(Input::Hyper(MAX_NORM.to_string()));
    let ratio = graph.add(Op::Binary(Binary::Div), &[limit, denominator]);
    let one = graph.constant(1.0);
    let coef = graph.add(Op::Binary(Binary::Min), &[ratio, one]);
    let clipped = graph.add(Op::Binary(Binary::Mul), &[grad, coef]);

    let mut renamed = HashMap::new();
    for n in source.nodes() {
        let op = source.node(n).op.clone();
        let copy = match op {
            Op::Input(Input::Grad) => clipped,
            op => {
                let operands: Vec<_> = source.operands(n).iter().map(|o| renamed[o]).collect();
                graph.add(op, &operands)
            }
        };
        renamed.insert(n, copy);
    }
    for output in &source.outputs {
        graph.set_output(output.target.clone(), renamed[&output.value]);
    }
    graph.set_output(Target::ScalarState(GRAD_NORM.to_string()), total);
    graph.prune();
    optjit_ir::verify(&graph).map_err(|e| TraceError::Invalid {
        optimizer: graph.name.clone(),
        message: e.to_string(),
    })?;

    let mut domains = definition.domains.clone();
    domains.insert(MAX_NORM.to_string(), domain);
    Ok(Definition {
        graph,
        domains,
        on_metric: definition.on_metric.clone(),
        state_aliases: definition.state_aliases.clone(),
        per_group: definition.per_group.clone(),
        group_states: {
            let mut states = definition.group_states.clone();
            states.insert(GRAD_NORM.to_string());
            states
        },
    })
}
