//! The `fuse` stage: the fewest kernel phases the reductions force, each one pass over every
//! element of every tensor, and the host scalar program in stages between them.
//!
//! A node's *level* is the number of reductions on its longest path from the inputs: a
//! reduction of a level-L value is computed (as per-chunk partials) by phase L and is known to
//! the scalar program from stage L + 1 on. Every store goes in the last phase, so that no phase
//! reads a buffer an earlier phase has overwritten; a per-element value an earlier phase also
//! needed is recomputed there from the buffers rather than written out and read back:
//! recomputing costs the loads of inputs the last phase does not load anyway (none, when the
//! reduced value is a function of the gradient, as for clipping), materializing costs a store
//! and a load (8 bytes per element). Choosing materialization where it is cheaper (LAMB's
//! update) is not done yet.
//!
//! Scalar-class nodes (once per group) and Tensor-class nodes (once per tensor, from per-tensor
//! reductions) form the host scalar program; the ones kernels read are the kernel scalars.

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
/// kernel phases, one per level of reduction (at least one).
///
/// An output that assigns a value its own current value (`exp_avg = state exp_avg`) is neither
/// stored nor computed. A reduction must reduce a per-element value.
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

    let mut level = vec![0usize; live.last().map_or(0, |n| n.index() + 1)];
    for &n in &live {
        let node = graph.node(n);
        let operands = graph.operands(n);
        let deepest = operands.iter().map(|o| level[o.index()]).max().unwrap_or(0);
        level[n.index()] = match &node.op {
            Op::Reduce(_) => {
                if graph.node(operands[0]).class != Class::Elem {
                    return Err(RewriteError::Reduction {
                        node: optjit_ir::node_text(graph, n),
                        reason: "it reduces a value that is not per element".into(),
                    });
                }
                deepest + 1
            }
            Op::Unary(u) if u.scalar_only() && node.class != Class::Scalar => {
                return Err(RewriteError::ScalarOnlyPerElement {
                    node: optjit_ir::node_text(graph, n),
                });
            }
            _ => deepest,
        };
    }
    let reductions: Vec<NodeIndex> = live
        .iter()
        .copied()
        .filter(|&n| matches!(graph.node(n).op, Op::Reduce(_)))
        .collect();
    // Phases: one per level of a reduced value or a stored one, at least one.
    let n_phases = reductions
        .iter()
        .map(|&r| level[r.index()])
        .chain(stores.iter().map(|&(_, v)| level[v.index()] + 1))
        .max()
        .unwrap_or(1)
        .max(1);

    // The scalar program: every live Scalar and Tensor node (the host computes them, once per
    // group or once per tensor), by stage (its level), then topologically.
    let mut scalar_program: Vec<NodeIndex> = live
        .iter()
        .copied()
        .filter(|&n| graph.node(n).class != Class::Elem)
        .collect();
    scalar_program.sort_by_key(|&n| (level[n.index()], n));
    let stage_ends: Vec<usize> = (0..=n_phases)
        .map(|k| {
            scalar_program
                .iter()
                .take_while(|&&n| level[n.index()] <= k)
                .count()
        })
        .collect();

    let mut phases = Vec::with_capacity(n_phases);
    for k in 0..n_phases {
        let phase_reductions: Vec<NodeIndex> = reductions
            .iter()
            .copied()
            .filter(|&r| level[r.index()] == k + 1)
            .collect();
        let phase_stores: &[(Buffer, NodeIndex)] = match k + 1 == n_phases {
            true => &stores,
            false => &[],
        };
        let roots: Vec<NodeIndex> = phase_reductions
            .iter()
            .map(|&r| graph.operands(r)[0])
            .chain(phase_stores.iter().map(|&(_, v)| v))
            .collect();
        phases.push(phase(graph, roots, phase_stores, phase_reductions));
    }

    // Scalars a kernel reads: non-constant Scalar and Tensor operands of per-element nodes, and
    // such values stored into per-element buffers; every one is known before its first phase.
    let mut kernel_scalars: Vec<NodeIndex> = phases
        .iter()
        .flat_map(|p| {
            p.nodes
                .iter()
                .flat_map(|&n| graph.operands(n))
                .chain(p.stores.iter().map(|&(_, v)| v))
        })
        .filter(|&o| {
            let node = graph.node(o);
            node.class != Class::Elem && !matches!(node.op, Op::Const(_))
        })
        .collect();
    kernel_scalars.sort_unstable();
    kernel_scalars.dedup();

    Ok(FusionPlan {
        graph: graph.clone(),
        scalar_program,
        stage_ends,
        kernel_scalars,
        scalar_outputs,
        phases,
    })
}

/// One phase: the per-element nodes `roots` depend on (in topological order), the buffers they
/// load and the phase stores, and the reductions whose partials it computes.
fn phase(
    graph: &Graph,
    roots: Vec<NodeIndex>,
    stores: &[(Buffer, NodeIndex)],
    reductions: Vec<NodeIndex>,
) -> Phase {
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = roots;
    while let Some(n) = stack.pop() {
        if graph.node(n).class == Class::Elem && seen.insert(n) {
            stack.extend(graph.operands(n));
        }
    }
    let phase_nodes: Vec<NodeIndex> = seen.into_iter().collect();

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
    Phase {
        nodes: phase_nodes,
        buffers,
        stores: stores.to_vec(),
        reductions,
    }
}
