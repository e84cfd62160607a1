//! The `fuse` stage, foundation version: one kernel phase for a graph without reductions.
//!
//! The scalar program gets every Scalar-class node that the step needs; the single phase gets
//! every Elem-class node, the buffers it loads or stores, and its stores. Phases around
//! reductions are a later stage of this planner.

use crate::error::RewriteError;
use optjit_ir::{Buffer, BufferUse, Class, FusionPlan, Graph, Input, NodeIndex, Op, Phase, Target};

/// The input that an output to `target` would leave unchanged.
fn own_input(target: &Target) -> Input {
    match target {
        Target::Param => Input::Param,
        Target::State(n) => Input::State(n.clone()),
        Target::ScalarState(n) => Input::ScalarState(n.clone()),
    }
}

fn bad_output(target: &Target, message: impl Into<String>) -> RewriteError {
    RewriteError::BadOutput {
        target: target.name().to_string(),
        message: message.into(),
    }
}

/// Stage `fuse`: splits `graph` (normally the extracted graph) into the host scalar program and
/// one kernel phase.
///
/// An output that assigns a value its own current value (`exp_avg = state exp_avg`) is neither
/// stored nor computed. A graph with a reduction is refused: phases around reductions are not
/// planned yet.
pub fn fuse(graph: &Graph) -> Result<FusionPlan, RewriteError> {
    // Stores (param first, then states in declaration order) and scalar-state updates.
    let mut param_store = None;
    let mut state_stores: Vec<(usize, NodeIndex)> = Vec::new();
    let mut scalar_outputs = Vec::new();
    for output in &graph.outputs {
        let target = &output.target;
        if !graph.contains(output.value) {
            return Err(bad_output(
                target,
                "refers to a node that is not in the graph",
            ));
        }
        let value = graph.node(output.value);
        if value.op == Op::Input(own_input(target)) {
            continue;
        }
        match target {
            Target::Param | Target::State(_) if value.class == Class::Tensor => {
                return Err(bad_output(
                    target,
                    "a per-tensor value cannot be stored per element",
                ));
            }
            Target::Param => param_store = Some(output.value),
            Target::State(name) => {
                let position = graph
                    .states
                    .iter()
                    .position(|s| &s.name == name && s.class == Class::Elem)
                    .ok_or_else(|| bad_output(target, "no per-element state of this name"))?;
                state_stores.push((position, output.value));
            }
            Target::ScalarState(name) => {
                if !graph
                    .states
                    .iter()
                    .any(|s| &s.name == name && s.class == Class::Scalar)
                {
                    return Err(bad_output(target, "no scalar state of this name"));
                }
                if value.class != Class::Scalar {
                    return Err(bad_output(
                        target,
                        format!("a scalar state cannot hold a {} value", value.class),
                    ));
                }
                scalar_outputs.push((target.clone(), output.value));
            }
        }
    }
    state_stores.sort_unstable_by_key(|&(position, _)| position);
    let stores: Vec<(Buffer, NodeIndex)> = param_store
        .map(|v| (Buffer::Param, v))
        .into_iter()
        .chain(
            state_stores
                .iter()
                .map(|&(s, v)| (Buffer::State(graph.states[s].name.clone()), v)),
        )
        .collect();

    // Everything the stores and the scalar-state updates depend on.
    let mut live = vec![false; graph.nodes().last().map_or(0, |n| n.index() + 1)];
    let mut stack: Vec<NodeIndex> = stores.iter().map(|&(_, v)| v).collect();
    stack.extend(scalar_outputs.iter().map(|&(_, v)| v));
    while let Some(n) = stack.pop() {
        if !std::mem::replace(&mut live[n.index()], true) {
            stack.extend(graph.operands(n));
        }
    }
    let live: Vec<NodeIndex> = graph
        .nodes()
        .into_iter()
        .filter(|n| live[n.index()])
        .collect();

    for &n in &live {
        let node = graph.node(n);
        match &node.op {
            Op::Reduce(_) => {
                return Err(RewriteError::Reduction {
                    node: optjit_ir::node_text(graph, n),
                });
            }
            Op::Unary(u) if u.scalar_only() && node.class != Class::Scalar => {
                return Err(RewriteError::ScalarOnlyPerElement {
                    node: optjit_ir::node_text(graph, n),
                });
            }
            _ => {}
        }
    }

    let of_class = |class: Class| -> Vec<NodeIndex> {
        live.iter()
            .copied()
            .filter(|&n| graph.node(n).class == class)
            .collect()
    };
    let scalar_program = of_class(Class::Scalar);
    let phase_nodes = of_class(Class::Elem);

    // Scalars a kernel reads: non-constant Scalar operands of per-element nodes, and Scalar
    // values stored into per-element buffers.
    let mut kernel_scalars: Vec<NodeIndex> = phase_nodes
        .iter()
        .flat_map(|&n| graph.operands(n))
        .chain(stores.iter().map(|&(_, v)| v))
        .filter(|&o| {
            let node = graph.node(o);
            node.class == Class::Scalar && !matches!(node.op, Op::Const(_))
        })
        .collect();
    kernel_scalars.sort_unstable();
    kernel_scalars.dedup();

    // Buffers in kernel-argument order: param, grad, then per-element states by declaration.
    let reads = |input: Input| {
        phase_nodes
            .iter()
            .any(|&n| graph.node(n).op == Op::Input(input.clone()))
    };
    let writes = |buffer: &Buffer| stores.iter().any(|(b, _)| b == buffer);
    let mut candidates = vec![(Buffer::Param, Input::Param), (Buffer::Grad, Input::Grad)];
    candidates.extend(
        graph
            .states
            .iter()
            .filter(|s| s.class == Class::Elem)
            .map(|s| (Buffer::State(s.name.clone()), Input::State(s.name.clone()))),
    );
    let buffers: Vec<BufferUse> = candidates
        .into_iter()
        .map(|(buffer, input)| BufferUse {
            read: reads(input),
            write: writes(&buffer),
            buffer,
        })
        .filter(|b| b.read || b.write)
        .collect();

    Ok(FusionPlan {
        graph: graph.clone(),
        scalar_program,
        kernel_scalars,
        scalar_outputs,
        phases: vec![Phase {
            nodes: phase_nodes,
            buffers,
            stores,
        }],
    })
}
