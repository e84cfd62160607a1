//! simplify → extract → fuse on whole update rules: op counts, bytes, classes, determinism.

mod common;

use common::{B, Env, adamw_naive, eval, pipeline, sgd, sgd_momentum};
use optjit_ir::{Binary, Class, Graph, Op, Reduction, Target, Unary};
use optjit_rewrite::{RewriteError, SimplifyOptions, count_elem_ops, extract, fuse, simplify};

fn adamw_env() -> Env {
    let mut env = Env {
        param: 0.75,
        grad: -0.125,
        step: 3.0,
        ..Env::default()
    };
    for (h, v) in [
        ("lr", 1e-3),
        ("beta1", 0.9),
        ("beta2", 0.999),
        ("eps", 1e-8),
        ("weight_decay", 1e-2),
    ] {
        env.hypers.insert(h.into(), v);
    }
    env.states.insert("exp_avg".into(), 0.01);
    env.states.insert("exp_avg_sq".into(), 0.0004);
    env
}

#[test]
fn adamw_naive_hoists_bias_corrections() {
    let graph = adamw_naive();
    let (simplified, extracted, plan) = pipeline(&graph);
    println!("{}\n{extracted}\n{plan}", simplified.report);
    assert_eq!(plan.phases.len(), 1);
    let counts = count_elem_ops(&plan.graph, &plan.phases[0]);
    println!("{counts}");
    assert!(counts.div <= 1, "{counts}\n{plan}");
    assert!(counts.sqrt <= 1, "{counts}\n{plan}");
    assert_eq!(counts.pow, 0, "{counts}\n{plan}");
    assert_eq!(plan.bytes_per_elem(), 28, "{plan}");
    // Every pow, and everything computed from the step alone, is in the scalar program.
    for n in extracted.nodes() {
        let node = extracted.node(n);
        if node.op == Op::Binary(Binary::Pow) {
            assert_eq!(node.class, Class::Scalar, "{extracted}");
        }
    }
    assert!(simplified.report.cost_after < simplified.report.cost_before);
    // Same values, to rounding.
    let env = adamw_env();
    for ((t, want), (u, got)) in eval(&graph, &env).into_iter().zip(eval(&extracted, &env)) {
        assert_eq!(t, u);
        assert!(
            (want - got).abs() <= 1e-12 * want.abs().max(1e-300),
            "{t:?}: {want} vs {got}"
        );
    }
}

#[test]
fn sgd_and_momentum_bytes() {
    let (_, _, plan) = pipeline(&sgd());
    assert_eq!(plan.bytes_per_elem(), 12, "{plan}");
    let counts = count_elem_ops(&plan.graph, &plan.phases[0]);
    assert_eq!(
        (counts.mul, counts.sub, counts.total()),
        (1, 1, 2),
        "{plan}"
    );

    let (_, _, plan) = pipeline(&sgd_momentum());
    assert_eq!(plan.bytes_per_elem(), 20, "{plan}");
    let buffers: Vec<String> = plan.phases[0]
        .buffers
        .iter()
        .map(|b| b.buffer.to_string())
        .collect();
    assert_eq!(buffers, ["param", "grad", "momentum_buffer"]);
    let stores: Vec<String> = plan.phases[0]
        .stores
        .iter()
        .map(|(b, _)| b.to_string())
        .collect();
    assert_eq!(stores, ["param", "momentum_buffer"]);
}

fn texts(graph: &Graph, options: &SimplifyOptions) -> (String, String, String) {
    let simplified = simplify(graph, options).unwrap();
    let extracted = extract(&simplified);
    let plan = fuse(&extracted).unwrap();
    (
        simplified.report.to_string(),
        extracted.to_string(),
        plan.to_string(),
    )
}

#[test]
fn deterministic_text() {
    for options in [
        SimplifyOptions::default(),
        SimplifyOptions {
            exact_only: true,
            ..SimplifyOptions::default()
        },
    ] {
        let first = texts(&adamw_naive(), &options);
        for _ in 0..3 {
            assert_eq!(first, texts(&adamw_naive(), &options));
        }
    }
}

#[test]
fn report_has_one_line_per_field() {
    let (simplified, _, _) = pipeline(&adamw_naive());
    let text = simplified.report.to_string();
    let keys: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "iterations",
            "egraph_nodes",
            "egraph_classes",
            "stop_reason",
            "cost_before",
            "cost_after",
            "rules"
        ]
    );
    assert!(text.contains("stop_reason: saturated"), "{text}");
}

#[test]
fn exact_only_keeps_values_bit_for_bit() {
    let graph = adamw_naive();
    let options = SimplifyOptions {
        exact_only: true,
        ..SimplifyOptions::default()
    };
    let simplified = simplify(&graph, &options).unwrap();
    let all = simplify(&graph, &SimplifyOptions::default()).unwrap();
    assert!(simplified.report.rules < all.report.rules);
    let extracted = extract(&simplified);
    let env = adamw_env();
    for ((_, want), (_, got)) in eval(&graph, &env).into_iter().zip(eval(&extracted, &env)) {
        assert_eq!(want.to_bits(), got.to_bits());
    }
}

#[test]
fn unchanged_state_is_not_stored() {
    let mut b = B::new("sgd_keep");
    let lr = b.hyper("lr", 0.1);
    let m = b.state("exp_avg");
    let p = b.param();
    let g = b.grad();
    let u = b.mul(lr, g);
    let p_new = b.sub(p, u);
    b.g.set_output(Target::Param, p_new);
    b.g.set_output(Target::State("exp_avg".into()), m);
    let (_, _, plan) = pipeline(&b.g);
    assert_eq!(plan.bytes_per_elem(), 12, "{plan}");
    assert_eq!(plan.phases[0].stores.len(), 1);
}

#[test]
fn scalar_states_update_on_the_host() {
    let mut b = B::new("nadam_like");
    let beta = b.hyper("beta1", 0.9);
    let lr = b.hyper("lr", 0.1);
    let mu = b.scalar_state("mu_product", 1.0);
    let mu_new = b.mul(mu, beta);
    let p = b.param();
    let g = b.grad();
    let scale = b.div(lr, mu_new);
    let u = b.mul(g, scale);
    let p_new = b.sub(p, u);
    b.g.set_output(Target::Param, p_new);
    b.g.set_output(Target::ScalarState("mu_product".into()), mu_new);
    let (_, extracted, plan) = pipeline(&b.g);
    assert_eq!(plan.scalar_outputs.len(), 1, "{plan}");
    assert_eq!(
        plan.scalar_outputs[0].0,
        Target::ScalarState("mu_product".into())
    );
    assert_eq!(plan.bytes_per_elem(), 12);
    assert_eq!(plan.kernel_scalars.len(), 1, "{plan}");
    assert_eq!(extracted.node(plan.kernel_scalars[0]).class, Class::Scalar);
    // Everything in the scalar program is scalar; everything in the phase per element.
    assert!(
        plan.scalar_program
            .iter()
            .all(|&n| extracted.node(n).class == Class::Scalar)
    );
    assert!(
        plan.phases[0]
            .nodes
            .iter()
            .all(|&n| extracted.node(n).class == Class::Elem)
    );
}

#[test]
fn constants_fold_and_identities_vanish() {
    // param - lr * ((grad * (3 - 2)) / 1) + -0.0  ==  param - lr * grad
    let mut b = B::new("folded");
    let lr = b.hyper("lr", 0.1);
    let p = b.param();
    let g = b.grad();
    let (three, two, one, nz) = (b.c(3.0), b.c(2.0), b.c(1.0), b.c(-0.0));
    let k = b.sub(three, two);
    let gk = b.mul(g, k);
    let gk = b.div(gk, one);
    let u = b.mul(lr, gk);
    let p_new = b.sub(p, u);
    let p_new = b.add(p_new, nz);
    b.g.set_output(Target::Param, p_new);
    let (_, extracted, plan) = pipeline(&b.g);
    let counts = count_elem_ops(&plan.graph, &plan.phases[0]);
    assert_eq!(
        (counts.mul, counts.sub, counts.total()),
        (1, 1, 2),
        "{extracted}"
    );
    assert!(
        plan.kernel_scalars
            .iter()
            .all(|&n| !matches!(extracted.node(n).op, Op::Const(_)))
    );
}

#[test]
fn plus_zero_is_kept_because_of_negative_zero() {
    let mut b = B::new("plus_zero");
    let p = b.param();
    let z = b.c(0.0);
    let p_new = b.add(p, z);
    b.g.set_output(Target::Param, p_new);
    let (_, extracted, plan) = pipeline(&b.g);
    let counts = count_elem_ops(&plan.graph, &plan.phases[0]);
    assert_eq!(counts.add, 1, "{extracted}");
}

#[test]
fn nan_and_infinite_constants_do_not_panic() {
    let mut b = B::new("specials");
    let p = b.param();
    let g = b.grad();
    let (nan, inf, zero) = (b.c(f64::NAN), b.c(f64::INFINITY), b.c(0.0));
    let nan2 = b.mul(nan, zero); // NaN * 0 must not fold
    let inv = b.div(zero, inf); // 0 / inf = 0 folds
    let x = b.mul(g, nan2);
    let y = b.mul(p, inv);
    let z = b.add(x, y);
    let w = b.mul(z, inf);
    b.g.set_output(Target::Param, w);
    let (_, extracted, _) = pipeline(&b.g);
    let env = Env {
        param: 1.0,
        grad: 2.0,
        ..Env::default()
    };
    let got = eval(&extracted, &env)[0].1;
    assert!(got.is_nan(), "{extracted}");
    assert!(extracted.to_string().contains("NaN"), "{extracted}");
}

#[test]
fn per_tensor_reductions_get_their_own_phase_and_a_per_tensor_reciprocal() {
    // p - g / norm(g): phase 0 reduces the gradient, phase 1 updates with 1 / norm per tensor.
    let mut b = B::new("normalized");
    let g = b.grad();
    let p = b.param();
    let norm = b.g.add(Op::Reduce(Reduction::Norm), &[g]);
    let gn = b.div(g, norm);
    let p_new = b.sub(p, gn);
    b.g.set_output(Target::Param, p_new);
    let (_, _, plan) = pipeline(&b.g);
    assert_eq!(plan.phases.len(), 2, "{plan}");
    assert_eq!(plan.phases[0].reductions.len(), 1, "{plan}");
    assert_eq!(plan.bytes_per_elem(), 4 + 12, "{plan}");
    let counts = count_elem_ops(&plan.graph, &plan.phases[1]);
    assert_eq!((counts.div, counts.mul, counts.sub), (0, 1, 1), "{plan}");
    let reciprocal = plan.kernel_scalars[0];
    assert_eq!(plan.graph.node(reciprocal).class, Class::Tensor, "{plan}");

    // A reduction of a value that is not per element is refused, naming the node.
    let mut b = B::new("bad");
    let lr = b.hyper("lr", 0.1);
    let p = b.param();
    let norm = b.g.add(Op::Reduce(Reduction::Norm), &[lr]);
    let p_new = b.mul(p, norm);
    b.g.set_output(Target::Param, p_new);
    match fuse(&b.g) {
        Err(e @ RewriteError::Reduction { .. }) => {
            let text = e.to_string();
            assert!(text.contains("norm"), "{text}");
            assert!(text.contains("not per element"), "{text}");
        }
        other => panic!("expected a reduction error, got {other:?}"),
    }
}

#[test]
fn per_element_value_into_scalar_state_is_an_error() {
    let mut b = B::new("bad");
    b.scalar_state("s", 0.0);
    let g = b.grad();
    b.g.set_output(Target::ScalarState("s".into()), g);
    let extracted = extract(&simplify(&b.g, &SimplifyOptions::default()).unwrap());
    let err = fuse(&extracted).unwrap_err();
    assert!(matches!(err, RewriteError::BadOutput { .. }), "{err}");
}

#[test]
fn scalar_only_ops_stay_scalar() {
    // param - lr * cos(step) * grad: cos runs on the host.
    let mut b = B::new("cosine");
    let lr = b.hyper("lr", 0.1);
    let step = b.step();
    let c = b.un(Unary::Cos, step);
    let p = b.param();
    let g = b.grad();
    let s = b.mul(lr, c);
    let u = b.mul(s, g);
    let p_new = b.sub(p, u);
    b.g.set_output(Target::Param, p_new);
    let (_, _, plan) = pipeline(&b.g);
    let counts = count_elem_ops(&plan.graph, &plan.phases[0]);
    assert_eq!(counts.other, 0);
    assert_eq!(counts.total(), 2, "{plan}");
}

#[test]
fn timing_adamw_release() {
    // Prints (never asserts) the time of simplify + extract + fuse for the naive AdamW.
    let graph = adamw_naive();
    let runs = 200;
    let start = std::time::Instant::now();
    for _ in 0..runs {
        std::hint::black_box(pipeline(std::hint::black_box(&graph)));
    }
    let per_run = start.elapsed().as_secs_f64() * 1e3 / runs as f64;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("naive AdamW simplify+extract+fuse: {per_run:.3} ms per run ({profile})");
}
