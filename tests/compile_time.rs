//! Compile time is bounded whatever the program's size (issue 19, item 8): a `.step` chain of
//! `let` lines at the size limit compiles through every stage in bounded time and runs, a
//! 20 000-line one (35 s to 4 min to compile before) is refused at once, at the line that
//! crosses the limit, and a traced graph past it is refused by the `simplify` stage.
//! docs/perf.md ("Large programs") has the times.

mod common;

use optjit::rewrite::{MAX_GRAPH_NODES, MAX_KERNEL_BUFFERS, MAX_PHASES, extract, fuse, simplify};
use optjit::trace::step::{self, load};
use optjit::{CompileOptions, Definition, Optimizer, Setup, Stage, Tracer, compile};
use std::time::{Duration, Instant};

/// The bound for compiling a program at the size limit in a debug build. It takes about a
/// second; the quadratic extraction and fusion walks took minutes on such programs (a release
/// build: 28 s at 10 000 lines, 90 s for the fusion walk alone at 20 000 lines with a norm), so a
/// bound this loose tells them apart even on a slow, shared machine.
const GENEROUS: Duration = Duration::from_secs(60);

/// A chain of `lines` `let`s, each scaling the one before and adding the gradient, divided by
/// the gradient's norm at the end (a second phase that recomputes the chain).
fn let_chain(lines: usize) -> String {
    let mut source = String::from("optimizer chain {\n  hyper lr = 0.01\n  let x0 = grad\n");
    for i in 1..lines {
        source.push_str(&format!("  let x{i} = x{} * 0.5 + grad\n", i - 1));
    }
    source.push_str(&format!(
        "  param = param - lr * x{} / norm(grad)\n}}\n",
        lines - 1
    ));
    source
}

#[test]
fn the_front_end_and_the_compiler_share_the_node_limit() {
    assert_eq!(step::MAX_GRAPH_NODES, MAX_GRAPH_NODES);
}

/// Every built-in variant and every example stays far within the limits: a tenth of the nodes,
/// a quarter of the phases and of the buffers of one kernel.
#[test]
fn the_builtins_and_examples_are_far_within_the_limits() {
    let mut rules: Vec<(String, Definition)> = common::builtin_variants()
        .into_iter()
        .map(|(name, configured)| (name.to_string(), configured.definition))
        .collect();
    for example in ["adabelief", "adafactor", "adan", "lion"] {
        let path = format!("{}/examples/{example}.step", env!("CARGO_MANIFEST_DIR"));
        let source = std::fs::read_to_string(&path).expect("example file");
        let optimizer = load(&path, &source).unwrap().optimizer.unwrap();
        rules.push((example.to_string(), optimizer));
    }
    for (name, definition) in rules {
        let graph = &definition.graph;
        let plan = fuse(&extract(&simplify(graph, &Default::default()).unwrap())).unwrap();
        let buffers = plan.phases.iter().map(|p| p.buffers.len()).max().unwrap();
        let sizes = (graph.len(), plan.phases.len(), buffers);
        assert!(
            sizes.0 * 10 <= MAX_GRAPH_NODES
                && sizes.1 * 4 <= MAX_PHASES
                && sizes.2 * 4 <= MAX_KERNEL_BUFFERS,
            "{name}: (nodes, phases, buffers) = {sizes:?}"
        );
    }
}

#[test]
fn a_chain_at_the_size_limit_compiles_in_bounded_time_and_runs() {
    // Two nodes a line: 4 990 lines is just under the limit.
    let definition = load("chain.step", &let_chain(4_990))
        .unwrap_or_else(|e| panic!("{e}"))
        .optimizer
        .unwrap();
    assert!(definition.graph.len() > MAX_GRAPH_NODES - 30);
    let started = Instant::now();
    let compiled = compile(&definition, &CompileOptions::default()).unwrap();
    let took = started.elapsed();
    assert!(took < GENEROUS, "{took:?}");
    assert_eq!(compiled.plan.phases.len(), 2);
    // And it computes the chain: x = 2 g (1 - 2^-n) for n halvings, about 2 g.
    let setup = Setup {
        shapes: vec![vec![4]],
        ..Setup::default()
    };
    let mut optimizer = Optimizer::new(&definition, setup).unwrap();
    let mut params = vec![vec![1.0f32; 4]];
    let grads = vec![vec![0.5f32; 4]];
    optimizer.step(&mut params, &grads).unwrap();
    // param - lr * 2 g / |g| with |g| = 1: 1 - 0.01 * 1 = 0.99.
    for &p in &params[0] {
        assert!((p - 0.99).abs() < 1e-6, "{p}");
    }
}

#[test]
fn a_20k_line_program_is_refused_at_once() {
    let source = let_chain(20_000);
    let started = Instant::now();
    let error = load("chain.step", &source).unwrap_err();
    assert!(started.elapsed() < GENEROUS);
    assert!(
        error.to_string().starts_with("chain.step:50"),
        "refused where the graph fills, near line 5 000: {error}"
    );
    assert!(
        error
            .message
            .contains(&format!("past {MAX_GRAPH_NODES} nodes")),
        "{error}"
    );
}

#[test]
fn a_traced_graph_past_the_limit_is_refused_by_simplify() {
    let t = Tracer::new("traced");
    let lr = t.hyper("lr", 0.01);
    let grad = t.grad();
    let mut x = grad.clone();
    for _ in 0..MAX_GRAPH_NODES {
        x = &x + &grad;
    }
    t.set_param(t.param() - &lr * &x);
    let definition = t.finish().unwrap();
    let Err(error) = compile(&definition, &CompileOptions::default()) else {
        panic!("compiled a graph past the limit");
    };
    assert_eq!(error.stage, Stage::Simplify);
    assert!(
        error.message.contains(&format!(
            "more than the limit of {MAX_GRAPH_NODES} (optjit_rewrite::MAX_GRAPH_NODES"
        )),
        "{error}"
    );
}
