//! Property: a rule with a side condition on values (the square-root rules need a positive
//! scalar) fires only where the e-graph proves the condition. Random graphs take square roots
//! of per-element values multiplied or divided by scalar expressions; the scalars'
//! hyperparameters take values that break the conditions (negative, ±0, ±inf, NaN) unless a
//! range is declared for them, values in the range otherwise; the simplified graph must compute
//! what the original computes (`optjit_ir::interpret`, in f64) wherever that is a number.

mod common;

use common::B;
use optjit_ir::{
    Binary, Class, Graph, NodeIndex, Op, ScalarEnv, Target, TensorValues, Unary, interpret,
};
use optjit_rewrite::{SimplifyOptions, ValueRange, extract, simplify};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::collections::BTreeMap;

/// A scalar expression over the hyperparameters `h0..h3` and the step.
#[derive(Clone, Debug)]
enum S {
    Hyper(usize),
    Const(f64),
    Step,
    /// `1 - pow(x, step)`: a bias correction.
    BiasCorrection(Box<S>),
    Un(Unary, Box<S>),
    Bin(Binary, Box<S>, Box<S>),
    /// `x * x`
    Square(Box<S>),
}

/// A per-element expression: `grad`, `param`, `state a`, `-grad`, `grad * grad`, `grad - param`.
#[derive(Clone, Copy, Debug)]
struct E(usize);

/// `sqrt(e * s)`, `sqrt(s * e)` or `sqrt(e / s)`, and a scalar divisor outside the root
/// (`sqrt(e / s) / t`) for the rules to regroup.
#[derive(Clone, Debug)]
struct Root {
    e: E,
    op: usize,
    s: S,
    outer: Option<S>,
}

const HYPERS: &[&str] = &["h0", "h1", "h2", "h3"];
const CONSTS: &[f64] = &[-1.0, -0.0, 0.0, 0.5, 2.0, 1e-8];

fn scalar() -> impl Strategy<Value = S> {
    let leaf = prop_oneof![
        4 => (0..HYPERS.len()).prop_map(S::Hyper),
        1 => prop::sample::select(CONSTS).prop_map(S::Const),
        1 => Just(S::Step),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            2 => inner.clone().prop_map(|x| S::BiasCorrection(Box::new(x))),
            2 => (
                prop::sample::select(&[Unary::Neg, Unary::Sqrt, Unary::Abs, Unary::Exp][..]),
                inner.clone()
            )
                .prop_map(|(op, x)| S::Un(op, Box::new(x))),
            3 => (
                prop::sample::select(
                    &[Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Max][..]
                ),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, x, y)| S::Bin(op, Box::new(x), Box::new(y))),
            1 => inner.prop_map(|x| S::Square(Box::new(x))),
        ]
    })
}

fn root() -> impl Strategy<Value = Root> {
    (
        (0..6usize).prop_map(E),
        0..3usize,
        scalar(),
        prop::option::of(scalar()),
    )
        .prop_map(|(e, op, s, outer)| Root { e, op, s, outer })
}

fn build_scalar(b: &mut B, s: &S) -> NodeIndex {
    match s {
        S::Hyper(i) => b.hyper(HYPERS[*i], 1.0),
        S::Const(c) => b.c(*c),
        S::Step => b.step(),
        S::BiasCorrection(x) => {
            let x = build_scalar(b, x);
            let step = b.step();
            let power = b.pow(x, step);
            b.one_minus(power)
        }
        S::Un(op, x) => {
            let x = build_scalar(b, x);
            b.un(*op, x)
        }
        S::Bin(op, x, y) => {
            let (x, y) = (build_scalar(b, x), build_scalar(b, y));
            b.bin(*op, x, y)
        }
        S::Square(x) => {
            let x = build_scalar(b, x);
            b.mul(x, x)
        }
    }
}

fn build_elem(b: &mut B, e: E) -> NodeIndex {
    let (g, p) = (b.grad(), b.param());
    match e.0 {
        0 => g,
        1 => p,
        2 => b.state("a"),
        3 => b.un(Unary::Neg, g),
        4 => b.mul(g, g),
        _ => b.sub(g, p),
    }
}

fn build_root(b: &mut B, r: &Root) -> NodeIndex {
    let e = build_elem(b, r.e);
    let s = build_scalar(b, &r.s);
    let inner = match r.op {
        0 => b.mul(e, s),
        1 => b.mul(s, e),
        _ => b.div(e, s),
    };
    let root = b.sqrt(inner);
    match &r.outer {
        Some(t) => {
            let t = build_scalar(b, t);
            b.div(root, t)
        }
        None => root,
    }
}

fn graph(param: &Root, state: &Root) -> Graph {
    let mut b = B::new("roots");
    for h in HYPERS {
        b.hyper(h, 1.0);
    }
    b.state("a");
    let p = build_root(&mut b, param);
    let a = build_root(&mut b, state);
    b.g.set_output(Target::Param, p);
    b.g.set_output(Target::State("a".into()), a);
    b.g
}

/// Per-element values on both sides of every landmark, with the special ones.
const ELEMS: &[f64] = &[
    -4.0,
    -1.0,
    -0.25,
    -0.0,
    0.0,
    0.25,
    2.0,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
];

/// Values of hyperparameters with no declared range: every one that breaks a condition.
const UNCHECKED: &[f64] = &[
    -2.0,
    -0.5,
    -0.0,
    0.0,
    0.5,
    3.0,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
];

/// Runs one step of `g` in f64 on the element values of [`ELEMS`] (param, grad and the state
/// in different orders).
fn run(g: &Graph, hypers: &BTreeMap<String, f64>, step: f64) -> Vec<(String, Vec<f64>)> {
    let shift = |k: usize| -> Vec<f64> {
        (0..ELEMS.len())
            .map(|i| ELEMS[(i + k) % ELEMS.len()])
            .collect()
    };
    let tensor = TensorValues::new(shift(3), shift(0)).with_state("a", shift(7));
    let env = ScalarEnv {
        hypers: hypers.clone(),
        step,
        ..ScalarEnv::default()
    };
    let out = interpret(g, &env, &[tensor]).expect("interprets");
    let t = &out.tensors[0];
    vec![
        ("param".into(), t.param.clone()),
        ("a".into(), t.states["a"].clone()),
    ]
}

/// Where the original computes a number, the rewritten graph computes it too (to rounding:
/// other rules reassociate).
fn agrees(want: f64, got: f64) -> bool {
    !want.is_finite()
        || (got.is_finite() && (want - got).abs() <= 1e-9 * want.abs().max(got.abs()).max(1.0))
}

/// Simplifies `g` with `ranges` and compares both on `hypers`.
fn check(
    g: &Graph,
    ranges: &BTreeMap<String, ValueRange>,
    hypers: &BTreeMap<String, f64>,
    step: f64,
) -> Result<(), TestCaseError> {
    let options = SimplifyOptions {
        hyper_ranges: ranges.clone(),
        ..SimplifyOptions::default()
    };
    let out = extract(&simplify(g, &options).expect("simplifies"));
    let (want, got) = (run(g, hypers, step), run(&out, hypers, step));
    for ((name, want), (_, got)) in want.iter().zip(&got) {
        for (i, (&w, &o)) in want.iter().zip(got).enumerate() {
            prop_assert!(
                agrees(w, o),
                "{name}[{i}]: {w} became {o} with {hypers:?}, step {step}\n{g}\n{out}"
            );
        }
    }
    Ok(())
}

fn config() -> Config {
    Config {
        cases: 384,
        rng_seed: RngSeed::Fixed(0x5167_0519),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn conditions_are_never_assumed_for_unchecked_hyperparameters(
        param in root(),
        state in root(),
        values in prop::array::uniform4(prop::sample::select(UNCHECKED)),
        step in 1..6u32,
    ) {
        let g = graph(&param, &state);
        let hypers = HYPERS.iter().map(|h| h.to_string()).zip(values).collect();
        check(&g, &BTreeMap::new(), &hypers, f64::from(step))?;
    }

    #[test]
    fn conditions_proven_from_declared_ranges_hold(
        param in root(),
        state in root(),
        beta in prop::sample::select(&[0.0, 0.5, 0.9, 0.999][..]),
        rate in prop::sample::select(&[0.0, 0.25, 2.0, 1e3][..]),
        eps in prop::sample::select(&[1e-3, 1.0, 5.0][..]),
        unchecked in prop::sample::select(UNCHECKED),
        step in 1..6u32,
    ) {
        // h0 a beta in [0, 1), h1 a rate >= 0, h2 a positive eps; h3 has no declared range.
        let g = graph(&param, &state);
        let ranges = BTreeMap::from([
            ("h0".to_string(), ValueRange::between(0.0, true, 1.0, false)),
            ("h1".to_string(), ValueRange::between(0.0, true, f64::MAX, true)),
            ("h2".to_string(), ValueRange::between(0.0, false, f64::MAX, true)),
        ]);
        let hypers = BTreeMap::from([
            ("h0".to_string(), beta),
            ("h1".to_string(), rate),
            ("h2".to_string(), eps),
            ("h3".to_string(), unchecked),
        ]);
        check(&g, &ranges, &hypers, f64::from(step))?;
    }
}

/// `sqrt(v / (1 - beta2^step)) + eps`, the second moment of a naive Adam.
fn adam_denominator() -> Graph {
    let mut b = B::new("denominator");
    let beta2 = b.hyper("beta2", 0.999);
    let eps = b.hyper("eps", 1e-8);
    let v = b.state("exp_avg_sq");
    let step = b.step();
    let power = b.pow(beta2, step);
    let bias_correction = b.one_minus(power);
    let v_hat = b.div(v, bias_correction);
    let root = b.sqrt(v_hat);
    let denominator = b.add(root, eps);
    b.g.set_output(Target::Param, denominator);
    b.g
}

/// Whether the per-element square root of the extracted `g` applies directly to a state, the
/// scalar factor moved out of it.
fn root_hoisted(g: &Graph) -> bool {
    let roots: Vec<NodeIndex> = g
        .nodes()
        .into_iter()
        .filter(|&n| g.node(n).op == Op::Unary(Unary::Sqrt) && g.node(n).class == Class::Elem)
        .collect();
    assert_eq!(roots.len(), 1, "one per-element square root\n{g}");
    let operand = g.operands(roots[0])[0];
    matches!(g.node(operand).op, Op::Input(_))
}

#[test]
fn a_bias_correction_is_taken_out_of_the_root_only_for_a_beta_in_the_unit_interval() {
    let g = adam_denominator();
    let beta2 = ValueRange::between(0.0, true, 1.0, false);
    let proven = SimplifyOptions {
        hyper_ranges: BTreeMap::from([("beta2".to_string(), beta2)]),
        ..SimplifyOptions::default()
    };
    let hoisted = extract(&simplify(&g, &proven).unwrap());
    assert!(root_hoisted(&hoisted), "{hoisted}");
    // beta2 = 3 would make the bias correction negative.
    let unknown = extract(&simplify(&g, &SimplifyOptions::default()).unwrap());
    assert!(!root_hoisted(&unknown), "{unknown}");
    // A range that allows 1 allows a zero bias correction: not proven either.
    let closed = SimplifyOptions {
        hyper_ranges: BTreeMap::from([(
            "beta2".to_string(),
            ValueRange::between(0.0, true, 1.0, true),
        )]),
        ..SimplifyOptions::default()
    };
    let kept = extract(&simplify(&g, &closed).unwrap());
    assert!(!root_hoisted(&kept), "{kept}");
}
