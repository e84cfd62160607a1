//! The rewrite stages' size limits: graphs at a limit go through simplify → extract → fuse in
//! bounded time, graphs past one are refused with an error naming the limit and the size.

use optjit_ir::{Binary, Class, Graph, Input, NodeIndex, Op, Reduction, Target};
use optjit_rewrite::{
    MAX_GRAPH_NODES, MAX_KERNEL_BUFFERS, MAX_PHASES, RewriteError, extract, fuse, simplify,
};
use std::time::{Duration, Instant};

/// How long the stages may take on a graph at the node limit in a debug build. They take well
/// under a second (docs/perf.md, "Large programs"); the quadratic extraction and fusion walks
/// this replaces took minutes on these graphs, so a bound this loose still tells the two apart
/// on a slow, busy machine.
const GENEROUS: Duration = Duration::from_secs(30);

/// `param = param - lr * x` where `x` is a chain of `links` dependent per-element adds of the
/// gradient (what a chain of `let x1 = x0 + grad` lines builds), divided by the gradient's norm
/// when `reduce` (a value the second phase needs and recomputes).
fn chain(links: usize, reduce: bool) -> Graph {
    let mut g = Graph::new("chain");
    g.declare_hyper("lr", 0.01);
    let lr = g.input(Input::Hyper("lr".into()));
    let param = g.input(Input::Param);
    let grad = g.input(Input::Grad);
    let mut x = grad;
    for _ in 0..links {
        x = g.add(Op::Binary(Binary::Add), &[x, grad]);
    }
    if reduce {
        let norm = g.add(Op::Reduce(Reduction::Norm), &[grad]);
        x = g.add(Op::Binary(Binary::Div), &[x, norm]);
    }
    let step = g.add(Op::Binary(Binary::Mul), &[lr, x]);
    let new = g.add(Op::Binary(Binary::Sub), &[param, step]);
    g.set_output(Target::Param, new);
    g
}

fn too_large(error: RewriteError) -> (usize, usize, &'static str) {
    match error {
        RewriteError::TooLarge {
            size, limit, name, ..
        } => (size, limit, name),
        other => panic!("not a size error: {other}"),
    }
}

#[test]
fn graphs_at_the_node_limit_go_through_every_stage() {
    for reduce in [false, true] {
        let graph = chain(MAX_GRAPH_NODES - 8, reduce);
        assert!(graph.len() <= MAX_GRAPH_NODES);
        let started = Instant::now();
        let simplified = simplify(&graph, &Default::default()).unwrap();
        let extracted = extract(&simplified);
        let plan = fuse(&extracted).unwrap();
        let took = started.elapsed();
        assert_eq!(plan.phases.len(), 1 + usize::from(reduce));
        // The chain is computed by the last phase, whatever the first did.
        let last = plan.phases.last().unwrap();
        assert!(
            last.nodes.len() >= MAX_GRAPH_NODES - 8,
            "{}",
            last.nodes.len()
        );
        assert!(took < GENEROUS, "{took:?} (reduce: {reduce})");
    }
}

#[test]
fn graphs_past_the_node_limit_are_refused() {
    let graph = chain(MAX_GRAPH_NODES, false);
    let error = simplify(&graph, &Default::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "too large: {} nodes in the step graph, more than the limit of {MAX_GRAPH_NODES} \
             (optjit_rewrite::MAX_GRAPH_NODES; docs/perf.md, \"Large programs\")",
            MAX_GRAPH_NODES + 5
        )
    );
    assert_eq!(
        too_large(fuse(&graph).unwrap_err()),
        (MAX_GRAPH_NODES + 5, MAX_GRAPH_NODES, "MAX_GRAPH_NODES")
    );
    // Nodes no output depends on do not count.
    let mut graph = chain(100, false);
    let mut dead = graph.input(Input::Grad);
    for _ in 0..MAX_GRAPH_NODES {
        dead = graph.add(Op::Unary(optjit_ir::Unary::Neg), &[dead]);
    }
    assert!(graph.len() > MAX_GRAPH_NODES);
    assert!(simplify(&graph, &Default::default()).is_ok());
}

/// `x = x / norm(x)`, `levels` times: every level of reduction is a phase.
fn reductions(levels: usize) -> Graph {
    let mut g = Graph::new("normalized");
    let param = g.input(Input::Param);
    let mut x = g.input(Input::Grad);
    for _ in 0..levels {
        let norm = g.add(Op::Reduce(Reduction::Norm), &[x]);
        x = g.add(Op::Binary(Binary::Div), &[x, norm]);
    }
    let new = g.add(Op::Binary(Binary::Sub), &[param, x]);
    g.set_output(Target::Param, new);
    g
}

#[test]
fn plans_of_more_than_max_phases_are_refused() {
    let plan = fuse(&reductions(MAX_PHASES - 1)).unwrap();
    assert_eq!(plan.phases.len(), MAX_PHASES);
    let error = fuse(&reductions(MAX_PHASES)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "too large: {} kernel phases (levels of reduction), more than the limit of \
             {MAX_PHASES} (optjit_rewrite::MAX_PHASES; docs/perf.md, \"Large programs\")",
            MAX_PHASES + 1
        )
    );
}

/// Param and grad, and `states` per-element states, each updated from the gradient.
fn states(states: usize) -> Graph {
    let mut g = Graph::new("states");
    let param = g.input(Input::Param);
    let grad = g.input(Input::Grad);
    let mut sum: NodeIndex = grad;
    for i in 0..states {
        let name = format!("s{i}");
        g.declare_state(&name, 0.0, Class::Elem);
        let s = g.input(Input::State(name.clone()));
        let new = g.add(Op::Binary(Binary::Add), &[s, grad]);
        g.set_output(Target::State(name), new);
        sum = g.add(Op::Binary(Binary::Add), &[sum, s]);
    }
    let new = g.add(Op::Binary(Binary::Sub), &[param, sum]);
    g.set_output(Target::Param, new);
    g
}

#[test]
fn kernels_of_more_than_max_kernel_buffers_are_refused() {
    let plan = fuse(&states(MAX_KERNEL_BUFFERS - 2)).unwrap();
    assert_eq!(plan.phases[0].buffers.len(), MAX_KERNEL_BUFFERS);
    assert_eq!(
        too_large(fuse(&states(MAX_KERNEL_BUFFERS)).unwrap_err()),
        (
            MAX_KERNEL_BUFFERS + 2,
            MAX_KERNEL_BUFFERS,
            "MAX_KERNEL_BUFFERS"
        )
    );
    // 3 000 states (about 8 s to load before) are refused in the planner, at once.
    assert_eq!(too_large(fuse(&states(3_000)).unwrap_err()).0, 3_002);
}
