//! The `fuse` stage: the fewest kernel phases the reductions force, each one pass over every
//! element of every tensor, and the host scalar program in stages between them.
//!
//! A node's *level* is the number of reductions on its longest path from the inputs: a
//! reduction of a level-L value is computed (as per-chunk partials) by phase L and is known to
//! the scalar program from stage L + 1 on.
//!
//! Stores are placed in one of two layouts, whichever moves fewer bytes: all in the last phase
//! (values an earlier phase computed are recomputed there), or each in the first phase that can
//! compute it (a later phase reads a stored value back from its buffer, and a value whose
//! inputs were overwritten from a scratch buffer `tmp<i>` written by the phase that computed it).
//!
//! Scalar-class nodes (once per group) and Tensor-class nodes (once per tensor, from per-tensor
//! reductions) form the host scalar program; the ones kernels read are the kernel scalars. So
//! do per-matrix, per-row and per-column nodes (Adafactor's factors): kernels read per-row and
//! per-matrix values as kernel scalars (a row of scalars per row) and per-column values from
//! host-filled buffers `col<i>`, and a phase with column means walks columns
//! (`split_column_walks`).

use crate::error::RewriteError;
use crate::limits::{MAX_KERNEL_BUFFERS, MAX_PHASES, check_graph_size, too_large};
use optjit_ir::{
    Buffer, BufferUse, Class, FusionPlan, Graph, Input, NodeIndex, Op, Phase, Reduction, Target,
    Walk,
};
use std::collections::{BTreeSet, HashMap, HashSet};

/// The declared states, looked up by name without walking the list each time.
struct StateIndex<'g> {
    /// The class of the first state of each name (what `Graph::state` finds).
    class: HashMap<&'g str, Class>,
    /// The position in `graph.states` of the first state of each name and class.
    position: HashMap<(&'g str, Class), usize>,
}

impl<'g> StateIndex<'g> {
    fn new(graph: &'g Graph) -> Self {
        let mut index = StateIndex {
            class: HashMap::new(),
            position: HashMap::new(),
        };
        for (i, s) in graph.states.iter().enumerate() {
            index.class.entry(s.name.as_str()).or_insert(s.class);
            index
                .position
                .entry((s.name.as_str(), s.class))
                .or_insert(i);
        }
        index
    }
}

/// The input that an output to `target` would leave unchanged.
fn own_input(states: &StateIndex<'_>, target: &Target) -> Input {
    match target {
        Target::Param => Input::Param,
        Target::State(n) => match states.class.get(n.as_str()) {
            Some(Class::Row) => Input::RowState(n.clone()),
            Some(Class::Col) => Input::ColState(n.clone()),
            _ => Input::State(n.clone()),
        },
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
    check_graph_size(graph)?;
    let states = StateIndex::new(graph);
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
        if value.op == Op::Input(own_input(&states, target)) {
            continue;
        }
        let factor_state = match target {
            Target::State(name) => states
                .class
                .get(name.as_str())
                .is_some_and(|class| matches!(class, Class::Row | Class::Col)),
            _ => false,
        };
        match target {
            Target::Param => param_store = Some(output.value),
            // A per-row or per-column state is the host's, as a scalar state is.
            Target::State(_) if factor_state => {
                scalar_outputs.push((target.clone(), output.value));
            }
            Target::State(name) => {
                let position = *states
                    .position
                    .get(&(name.as_str(), Class::Elem))
                    .ok_or_else(|| bad_output(target, "no per-element state of this name"))?;
                state_stores.push((position, output.value));
            }
            Target::ScalarState(name) => {
                if !states
                    .position
                    .contains_key(&(name.as_str(), Class::Scalar))
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
            // The host takes the mean of per-row values itself.
            Op::Reduce(r) if !r.in_kernel() => deepest,
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
        .filter(|&n| matches!(graph.node(n).op, Op::Reduce(r) if r.in_kernel()))
        .collect();
    // Phases: one per level of a reduced value or a stored one, at least one.
    let n_phases = reductions
        .iter()
        .map(|&r| level[r.index()])
        .chain(stores.iter().map(|&(_, v)| level[v.index()] + 1))
        .max()
        .unwrap_or(1)
        .max(1);
    if n_phases > MAX_PHASES {
        return Err(too_large(
            "kernel phases (levels of reduction)",
            n_phases,
            MAX_PHASES,
            "MAX_PHASES",
        ));
    }

    // The scalar program: every live Scalar and Tensor node (the host computes them, once per
    // group or once per tensor), by stage (its level), then topologically.
    let mut scalar_program: Vec<NodeIndex> = live
        .iter()
        .copied()
        .filter(|&n| graph.node(n).class != Class::Elem)
        .collect();
    scalar_program.sort_by_key(|&n| (level[n.index()], n));

    // Per-column values kernels read: loaded from a buffer the host fills, one per value.
    let col_values: Vec<NodeIndex> = {
        let mut values: Vec<NodeIndex> = live
            .iter()
            .filter(|&&n| graph.node(n).class == Class::Elem)
            .flat_map(|&n| graph.operands(n))
            .chain(stores.iter().map(|&(_, v)| v))
            .filter(|&o| graph.node(o).class == Class::Col)
            .collect();
        values.sort_unstable();
        values.dedup();
        values
    };
    let col_loads: Vec<(Buffer, NodeIndex)> = col_values
        .iter()
        .enumerate()
        .map(|(i, &n)| (Buffer::ColValue(i), n))
        .collect();

    // Two layouts, the one that moves fewer bytes wins (recomputing on a tie).
    let recomputing = late_stores(graph, &reductions, &stores, &level, n_phases, &col_loads);
    let materializing = early_stores(graph, &reductions, &stores, &level, n_phases, &col_loads);
    let elem_bytes = graph.elem_dtype.size_bytes();
    let bytes =
        |phases: &[Phase]| -> usize { phases.iter().map(|p| p.bytes_per_elem(elem_bytes)).sum() };
    let (phases, temps) = match bytes(&materializing.0) < bytes(&recomputing) {
        true => materializing,
        false => (recomputing, 0),
    };
    let (mut phases, phase_levels) = split_column_walks(graph, phases, temps)?;
    if phases.len() > MAX_PHASES {
        return Err(too_large(
            "kernel phases (with the column walks)",
            phases.len(),
            MAX_PHASES,
            "MAX_PHASES",
        ));
    }
    if let Some(widest) = phases.iter().map(|p| p.buffers.len()).max()
        && widest > MAX_KERNEL_BUFFERS
    {
        return Err(too_large(
            "buffers in one kernel phase",
            widest,
            MAX_KERNEL_BUFFERS,
            "MAX_KERNEL_BUFFERS",
        ));
    }
    for (phase, &level) in phases.iter_mut().zip(&phase_levels) {
        phase.level = level;
    }
    // Stage p runs before phase p: every host node of the phase's level or below.
    let stage_ends: Vec<usize> = phase_levels
        .iter()
        .map(|&k| {
            scalar_program
                .iter()
                .take_while(|&&n| level[n.index()] <= k)
                .count()
        })
        .chain([scalar_program.len()])
        .collect();

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
            !matches!(node.class, Class::Elem | Class::Col) && !matches!(node.op, Op::Const(_))
        })
        .collect();
    kernel_scalars.sort_unstable();
    kernel_scalars.dedup();

    Ok(FusionPlan {
        graph: graph.clone(),
        scalar_program,
        stage_ends,
        kernel_scalars,
        col_values,
        scalar_outputs,
        phases,
        temps,
    })
}

/// The reductions that phase `k` folds (those of level `k + 1`).
fn reductions_of(reductions: &[NodeIndex], level: &[usize], k: usize) -> Vec<NodeIndex> {
    reductions
        .iter()
        .copied()
        .filter(|&r| level[r.index()] == k + 1)
        .collect()
}

/// Every store in the last phase, every value an earlier phase needed computed again there:
/// no phase reads a buffer an earlier one overwrote.
fn late_stores(
    graph: &Graph,
    reductions: &[NodeIndex],
    stores: &[(Buffer, NodeIndex)],
    level: &[usize],
    n_phases: usize,
    col_loads: &[(Buffer, NodeIndex)],
) -> Vec<Phase> {
    (0..n_phases)
        .map(|k| {
            let phase_reductions = reductions_of(reductions, level, k);
            let phase_stores: &[(Buffer, NodeIndex)] = match k + 1 == n_phases {
                true => stores,
                false => &[],
            };
            let roots: Vec<NodeIndex> = phase_reductions
                .iter()
                .map(|&r| graph.operands(r)[0])
                .chain(phase_stores.iter().map(|&(_, v)| v))
                .collect();
            phase(
                graph,
                &roots,
                phase_stores.to_vec(),
                phase_reductions,
                col_loads.to_vec(),
                0,
            )
        })
        .collect()
}

/// Every store in the first phase that can compute it. A later phase reads a stored value back
/// from its buffer; another value it needs whose inputs an earlier phase overwrote is written
/// to a scratch buffer (`tmp<i>`) by the phase that computes it and loaded back. Returns the phases and the number of scratch buffers.
fn early_stores(
    graph: &Graph,
    reductions: &[NodeIndex],
    stores: &[(Buffer, NodeIndex)],
    level: &[usize],
    n_phases: usize,
    col_loads: &[(Buffer, NodeIndex)],
) -> (Vec<Phase>, usize) {
    // The phase each buffer is overwritten in.
    let mut stored_in: HashMap<Input, usize> = HashMap::new();
    for (buffer, value) in stores {
        if let Some(input) = buffer_input(buffer) {
            let at = level[value.index()];
            stored_in
                .entry(input)
                .and_modify(|s| *s = (*s).min(at))
                .or_insert(at);
        }
    }
    // Whether each node's value reads a buffer overwritten before phase `k`: per-element nodes
    // that are such an input or have such an operand, in one pass in topological order
    // (ascending index), computed once per phase.
    let stale_before = |k: usize| -> HashSet<NodeIndex> {
        let mut stale = HashSet::new();
        for n in graph.nodes() {
            let node = graph.node(n);
            if node.class != Class::Elem {
                continue;
            }
            let reads_overwritten = match &node.op {
                Op::Input(input) => stored_in.get(input).is_some_and(|&s| s < k),
                _ => false,
            };
            if reads_overwritten || graph.operands(n).iter().any(|o| stale.contains(o)) {
                stale.insert(n);
            }
        }
        stale
    };
    let mut roots: Vec<Vec<NodeIndex>> = vec![Vec::new(); n_phases];
    let mut phase_stores: Vec<Vec<(Buffer, NodeIndex)>> = vec![Vec::new(); n_phases];
    for (buffer, value) in stores {
        let k = level[value.index()].min(n_phases - 1);
        roots[k].push(*value);
        phase_stores[k].push((buffer.clone(), *value));
    }
    // The buffer and phase of each stored value (the first store of it, by phase then order).
    let mut stored: HashMap<NodeIndex, (usize, Buffer)> = HashMap::new();
    for (k, list) in phase_stores.iter().enumerate() {
        for (buffer, value) in list {
            stored.entry(*value).or_insert((k, buffer.clone()));
        }
    }
    for (k, phase_roots) in roots.iter_mut().enumerate() {
        phase_roots.extend(
            reductions_of(reductions, level, k)
                .iter()
                .map(|&r| graph.operands(r)[0]),
        );
    }
    // From the last phase back: what a phase needs but cannot compute is materialized by the
    // phase of its level (which may in turn need earlier values).
    let mut temps: Vec<NodeIndex> = Vec::new();
    let mut temp_slot: HashMap<NodeIndex, usize> = HashMap::new();
    let mut loads: Vec<Vec<(Buffer, NodeIndex)>> = vec![col_loads.to_vec(); n_phases];
    for k in (0..n_phases).rev() {
        let stale = if k > 0 {
            stale_before(k)
        } else {
            HashSet::new()
        };
        let mut stack = roots[k].clone();
        let mut seen = HashSet::new();
        while let Some(n) = stack.pop() {
            if graph.node(n).class != Class::Elem || !seen.insert(n) {
                continue;
            }
            let at = level[n.index()];
            // A value stored by an earlier phase is read back from its own buffer.
            if let Some((_, buffer)) = stored.get(&n).filter(|(s, _)| *s < k) {
                loads[k].push((buffer.clone(), n));
                continue;
            }
            if at < k && stale.contains(&n) {
                let slot = *temp_slot.entry(n).or_insert_with(|| {
                    temps.push(n);
                    roots[at].push(n);
                    phase_stores[at].push((Buffer::Temp(temps.len() - 1), n));
                    temps.len() - 1
                });
                loads[k].push((Buffer::Temp(slot), n));
                continue;
            }
            stack.extend(graph.operands(n));
        }
    }
    let phases = (0..n_phases)
        .map(|k| {
            phase(
                graph,
                &roots[k],
                phase_stores[k].clone(),
                reductions_of(reductions, level, k),
                loads[k].clone(),
                temps.len(),
            )
        })
        .collect();
    (phases, temps.len())
}

/// One phase: the per-element nodes `roots` depend on (in topological order; a value in
/// `loads` is loaded, so neither it nor what only it needed is computed), the buffers they load
/// (the `loads` they need) and the phase stores (`temps` scratch buffers exist), and the
/// reductions it folds.
fn phase(
    graph: &Graph,
    roots: &[NodeIndex],
    stores: Vec<(Buffer, NodeIndex)>,
    reductions: Vec<NodeIndex>,
    loads: Vec<(Buffer, NodeIndex)>,
    temps: usize,
) -> Phase {
    let loaded: HashSet<NodeIndex> = loads.iter().map(|&(_, n)| n).collect();
    let nodes = computed_nodes(graph, roots, &loaded);
    let needed: HashSet<NodeIndex> = roots
        .iter()
        .copied()
        .chain(nodes.iter().flat_map(|&m| graph.operands(m)))
        .collect();
    let loads: Vec<(Buffer, NodeIndex)> = loads
        .into_iter()
        .filter(|(_, n)| needed.contains(n))
        .collect();
    let buffers = buffer_uses(graph, &nodes, &stores, &loads, temps);
    Phase {
        walk: Walk::Elements,
        level: 0,
        nodes,
        buffers,
        stores,
        reductions,
        loads,
    }
}

/// The graph input a buffer holds at the start of the step (none for a scratch buffer).
fn buffer_input(buffer: &Buffer) -> Option<Input> {
    match buffer {
        Buffer::Param => Some(Input::Param),
        Buffer::Grad => Some(Input::Grad),
        Buffer::State(n) => Some(Input::State(n.clone())),
        Buffer::Temp(_) | Buffer::ColValue(_) => None,
    }
}

/// The per-element nodes `roots` depend on, ascending, not descending past `loaded` values
/// (which are loaded, not computed).
fn computed_nodes(
    graph: &Graph,
    roots: &[NodeIndex],
    loaded: &HashSet<NodeIndex>,
) -> Vec<NodeIndex> {
    let mut seen = BTreeSet::new();
    let mut stack = roots.to_vec();
    while let Some(n) = stack.pop() {
        if graph.node(n).class == Class::Elem && !loaded.contains(&n) && seen.insert(n) {
            stack.extend(graph.operands(n));
        }
    }
    seen.into_iter().collect()
}

/// The buffers a phase touches in kernel-argument order: param, grad, per-element states by
/// declaration, scratch buffers `tmp0..tmp<temps>`, then the column values it loads.
fn buffer_uses(
    graph: &Graph,
    nodes: &[NodeIndex],
    stores: &[(Buffer, NodeIndex)],
    loads: &[(Buffer, NodeIndex)],
    temps: usize,
) -> Vec<BufferUse> {
    let inputs: HashSet<&Input> = nodes
        .iter()
        .filter_map(|&n| match &graph.node(n).op {
            Op::Input(input) => Some(input),
            _ => None,
        })
        .collect();
    let loaded: HashSet<&Buffer> = loads.iter().map(|(b, _)| b).collect();
    let stored: HashSet<&Buffer> = stores.iter().map(|(b, _)| b).collect();
    let reads = |buffer: &Buffer| {
        loaded.contains(buffer) || buffer_input(buffer).is_some_and(|i| inputs.contains(&i))
    };
    let writes = |buffer: &Buffer| stored.contains(buffer);
    let mut candidates = vec![Buffer::Param, Buffer::Grad];
    candidates.extend(
        graph
            .states
            .iter()
            .filter(|s| s.class == Class::Elem)
            .map(|s| Buffer::State(s.name.clone())),
    );
    candidates.extend((0..temps).map(Buffer::Temp));
    candidates.extend(
        loads
            .iter()
            .filter(|(b, _)| matches!(b, Buffer::ColValue(_)))
            .map(|(b, _)| b.clone()),
    );
    candidates
        .into_iter()
        .map(|buffer| BufferUse {
            read: reads(&buffer),
            write: writes(&buffer),
            buffer,
        })
        .filter(|b| b.read || b.write)
        .collect()
}

/// Makes each phase with column means walk columns: the whole phase when it stores nothing and
/// none of its values changes along a column (a column walk folds row means, column means and
/// whole-tensor reductions alike, see `ChunkAbi`); otherwise its column means move into a
/// column walk of their own, run just before it (it stores nothing, so it reads what that
/// phase reads). Returns the phases and the level of each (the stage before a phase holds the
/// host nodes up to its level).
fn split_column_walks(
    graph: &Graph,
    phases: Vec<Phase>,
    temps: usize,
) -> Result<(Vec<Phase>, Vec<usize>), RewriteError> {
    let mut out = Vec::with_capacity(phases.len());
    let mut levels = Vec::with_capacity(phases.len());
    let is_col_mean = |n: &NodeIndex| graph.node(*n).op == Op::Reduce(Reduction::ColMean);
    for (k, mut row_phase) in phases.into_iter().enumerate() {
        let (col_means, others): (Vec<NodeIndex>, Vec<NodeIndex>) =
            row_phase.reductions.iter().partition(|n| is_col_mean(n));
        if !col_means.is_empty()
            && row_phase.stores.is_empty()
            && varying_along_columns(graph, &row_phase).is_none()
        {
            row_phase.walk = Walk::Columns;
            out.push(row_phase);
            levels.push(k);
            continue;
        }
        if !col_means.is_empty() {
            let roots: Vec<NodeIndex> = col_means.iter().map(|&r| graph.operands(r)[0]).collect();
            let mut walk = phase(
                graph,
                &roots,
                Vec::new(),
                col_means.clone(),
                row_phase.loads.clone(),
                0,
            );
            if let Some(o) = varying_along_columns(graph, &walk) {
                return Err(RewriteError::Reduction {
                    node: optjit_ir::node_text(graph, col_means[0]),
                    reason: format!(
                        "a column mean of a value that depends on {} (per matrix, row or column, or loaded back) is not supported",
                        optjit_ir::node_text(graph, o)
                    ),
                });
            }
            walk.walk = Walk::Columns;
            out.push(walk);
            levels.push(k);
            row_phase.reductions = others;
            let still_needed = !row_phase.reductions.is_empty() || !row_phase.stores.is_empty();
            if !still_needed {
                continue;
            }
            let roots: Vec<NodeIndex> = row_phase
                .reductions
                .iter()
                .map(|&r| graph.operands(r)[0])
                .chain(row_phase.stores.iter().map(|&(_, v)| v))
                .collect();
            row_phase = phase(
                graph,
                &roots,
                row_phase.stores,
                row_phase.reductions,
                row_phase.loads,
                temps,
            );
        }
        out.push(row_phase);
        levels.push(k);
    }
    Ok((out, levels))
}

/// A value `phase` reads that a column walk cannot give it, if any: along a column, per-row
/// values change and per-column ones do not, so neither fits the kernel's scalar row or its
/// element-wise loads (and a loaded-back value lies by elements).
fn varying_along_columns(graph: &Graph, phase: &Phase) -> Option<NodeIndex> {
    let varying = phase
        .nodes
        .iter()
        .flat_map(|&n| graph.operands(n))
        .find(|&o| matches!(graph.node(o).class, Class::Matrix | Class::Row | Class::Col));
    varying.or(phase.loads.first().map(|&(_, n)| n))
}
