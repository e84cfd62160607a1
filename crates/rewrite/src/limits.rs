//! Size limits of the rewrite stages: what `simplify` and `fuse` refuse, and why.
//!
//! Every stage of the compiler is linear (or `n log n`) in the size of the step graph, apart
//! from the code generators, whose register allocation grows faster with the number of values
//! live in one kernel. These limits keep a compile within seconds whatever the program; the
//! built-ins are far below them (at most 67 nodes, 3 phases and 5 buffers in a kernel;
//! `tests/compile_time.rs`). docs/perf.md ("Large programs") has the measured times.

use crate::error::RewriteError;
use optjit_ir::Graph;

/// The most nodes a step graph may have (those an output depends on), in `simplify` and `fuse`.
///
/// A chain of 10 000 `.step` lines (`let x1 = x0 + grad`, ...) has about 10 000. In release, a
/// graph at the limit compiles in well under a second when its values are mostly shared, and in
/// about two seconds (mostly Cranelift's register allocation) when each op brings its own
/// constant; twice as many such nodes took 116 s to load.
pub const MAX_GRAPH_NODES: usize = 10_000;

/// The most kernel phases a fusion plan may have. A phase is one pass over every element of
/// every tensor and one kernel launch (with a host round trip between two); built-ins need at
/// most 3 (Adafactor). Past this (a chain of reductions, each of the one before: `x = x / norm(x)`
/// repeated), compile time grows with phases × graph size and a step would be mostly launches.
pub const MAX_PHASES: usize = 32;

/// The most buffers one kernel phase may read or write: param, grad, per-element states,
/// scratch buffers and column values. Built-ins use at most 5. A kernel keeps a value of every
/// buffer live at once in its unrolled loop, and register allocation slows down sharply with
/// their number: 5 000 states took 19 s to load, 2 000 took 2 s, 62 take 6 ms.
pub const MAX_KERNEL_BUFFERS: usize = 64;

/// The error for `size` things of `what` over `limit`, the constant `name`.
pub(crate) fn too_large(
    what: &'static str,
    size: usize,
    limit: usize,
    name: &'static str,
) -> RewriteError {
    RewriteError::TooLarge {
        what,
        size,
        limit,
        name,
    }
}

/// Refuses a graph with more than [`MAX_GRAPH_NODES`] nodes that an output depends on.
pub(crate) fn check_graph_size(graph: &Graph) -> Result<(), RewriteError> {
    // Counting the live nodes costs a walk; a graph with few nodes in all needs none.
    if graph.len() <= MAX_GRAPH_NODES {
        return Ok(());
    }
    let mut live = vec![false; graph.nodes().last().map_or(0, |n| n.index() + 1)];
    let mut stack: Vec<_> = graph
        .outputs
        .iter()
        .map(|o| o.value)
        .filter(|&v| graph.contains(v))
        .collect();
    let mut count = 0;
    while let Some(n) = stack.pop() {
        if !std::mem::replace(&mut live[n.index()], true) {
            count += 1;
            stack.extend(graph.operands(n));
        }
    }
    if count > MAX_GRAPH_NODES {
        return Err(too_large(
            "nodes in the step graph",
            count,
            MAX_GRAPH_NODES,
            "MAX_GRAPH_NODES",
        ));
    }
    Ok(())
}
