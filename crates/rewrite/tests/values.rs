//! Property: simplify + extract never changes what a graph computes. Random small expression
//! graphs over per-element inputs and scalar hyperparameters are evaluated in f64 before and
//! after; bit for bit with `exact_only`, to rounding with every rule.

mod common;

use common::{B, Env, eval};
use optjit_ir::{Binary, Cmp, Graph, NodeIndex, Op, Target, Unary};
use optjit_rewrite::{SimplifyOptions, extract, simplify};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

#[derive(Clone, Debug)]
enum E {
    /// param, grad, state a, state b
    Elem(usize),
    /// hyper h0, h1, h2, step
    Scalar(usize),
    Const(f64),
    Un(Unary, Box<E>),
    Bin(Binary, Box<E>, Box<E>),
    /// `pow(x, k)` for a constant k
    PowK(Box<E>, f64),
    /// `select(a < b, c, d)`
    Select(Box<E>, Box<E>, Box<E>, Box<E>),
}

const CONSTS: &[f64] = &[0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 3.0, 1e-8];
const HYPERS: &[&str] = &["h0", "h1", "h2"];

fn expr(elem_leaves: bool) -> impl Strategy<Value = E> {
    let scalar_leaf = prop_oneof![
        (0..4usize).prop_map(E::Scalar),
        prop::sample::select(CONSTS).prop_map(E::Const),
    ];
    let leaf = if elem_leaves {
        prop_oneof![2 => (0..4usize).prop_map(E::Elem), 3 => scalar_leaf].boxed()
    } else {
        scalar_leaf.boxed()
    };
    leaf.prop_recursive(5, 32, 4, |inner| {
        prop_oneof![
            4 => (
                prop::sample::select(&[Binary::Add, Binary::Sub, Binary::Mul, Binary::Div][..]),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, a, b)| E::Bin(op, Box::new(a), Box::new(b))),
            1 => (prop::sample::select(&[Binary::Min, Binary::Max][..]), inner.clone(), inner.clone())
                .prop_map(|(op, a, b)| E::Bin(op, Box::new(a), Box::new(b))),
            2 => (prop::sample::select(&[Unary::Neg, Unary::Abs, Unary::Sqrt][..]), inner.clone())
                .prop_map(|(op, a)| E::Un(op, Box::new(a))),
            1 => (inner.clone(), prop::sample::select(&[1.0, 2.0, -1.0, 0.5][..]))
                .prop_map(|(a, k)| E::PowK(Box::new(a), k)),
            1 => (inner.clone(), inner.clone(), inner.clone(), inner)
                .prop_map(|(a, b, c, d)| E::Select(Box::new(a), Box::new(b), Box::new(c), Box::new(d))),
        ]
    })
}

fn build(b: &mut B, e: &E) -> NodeIndex {
    match e {
        E::Elem(0) => b.param(),
        E::Elem(1) => b.grad(),
        E::Elem(i) => b.state(["a", "b"][i - 2]),
        E::Scalar(3) => b.step(),
        E::Scalar(i) => b.hyper(HYPERS[*i], 1.0),
        E::Const(c) => b.c(*c),
        E::Un(op, a) => {
            let a = build(b, a);
            b.un(*op, a)
        }
        E::Bin(op, x, y) => {
            let (x, y) = (build(b, x), build(b, y));
            b.bin(*op, x, y)
        }
        E::PowK(a, k) => {
            let a = build(b, a);
            let k = b.c(*k);
            b.pow(a, k)
        }
        E::Select(x, y, t, f) => {
            let (x, y) = (build(b, x), build(b, y));
            let cond = b.g.add(Op::Cmp(Cmp::Lt), &[x, y]);
            let (t, f) = (build(b, t), build(b, f));
            b.g.add(Op::Select, &[cond, t, f])
        }
    }
}

fn graph(param: &E, state: &E, scalar: &E) -> Graph {
    let mut b = B::new("random");
    // Declare everything up front so that every graph has the same declarations.
    for h in HYPERS {
        b.hyper(h, 1.0);
    }
    b.state("a");
    b.state("b");
    b.scalar_state("acc", 0.0);
    let p = build(&mut b, param);
    let s = build(&mut b, state);
    let acc_in = b.g.input(optjit_ir::Input::ScalarState("acc".into()));
    let acc = build(&mut b, scalar);
    let acc = b.add(acc_in, acc);
    b.g.set_output(Target::Param, p);
    b.g.set_output(Target::State("a".into()), s);
    b.g.set_output(Target::ScalarState("acc".into()), acc);
    b.g
}

fn magnitude() -> impl Strategy<Value = f64> {
    (0.25..4.0f64, any::<bool>()).prop_map(|(x, neg)| if neg { -x } else { x })
}

fn env() -> impl Strategy<Value = Env> {
    (
        prop::array::uniform4(magnitude()),
        prop::array::uniform3(magnitude()),
        1..50u32,
        magnitude(),
    )
        .prop_map(|(elems, hypers, step, acc)| {
            let mut env = Env {
                param: elems[0],
                grad: elems[1],
                step: f64::from(step),
                ..Env::default()
            };
            env.states.insert("a".into(), elems[2]);
            env.states.insert("b".into(), elems[3]);
            env.scalar_states.insert("acc".into(), acc);
            for (h, v) in HYPERS.iter().zip(hypers) {
                env.hypers.insert(h.to_string(), v);
            }
            env
        })
}

fn config() -> Config {
    Config {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x0971_e417),
        failure_persistence: None,
        ..Config::default()
    }
}

fn same(want: f64, got: f64) -> bool {
    (want.is_nan() && got.is_nan()) || want.to_bits() == got.to_bits()
}

fn close(want: f64, got: f64) -> bool {
    // Reassociating rules may change rounding and where overflow happens; a finite result must
    // stay close to the original.
    !want.is_finite()
        || same(want, got)
        || (want - got).abs() <= 1e-9 * want.abs().max(got.abs()).max(1.0)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn all_rules_preserve_values_to_rounding(
        param in expr(true), state in expr(true), scalar in expr(false), env in env()
    ) {
        let g = graph(&param, &state, &scalar);
        prop_assert_eq!(optjit_ir::verify(&g), Ok(()));
        let out = extract(&simplify(&g, &SimplifyOptions::default()).unwrap());
        prop_assert!(optjit_ir::verify(&out).is_ok(), "{:?}\n{}", optjit_ir::verify(&out), out);
        for ((t, want), (_, got)) in eval(&g, &env).into_iter().zip(eval(&out, &env)) {
            prop_assert!(close(want, got), "{t:?}: {want} became {got}\n{g}\n{out}");
        }
    }

    #[test]
    fn exact_rules_preserve_values_bit_for_bit(
        param in expr(true), state in expr(true), scalar in expr(false), env in env()
    ) {
        let g = graph(&param, &state, &scalar);
        let options = SimplifyOptions { exact_only: true, ..SimplifyOptions::default() };
        let out = extract(&simplify(&g, &options).unwrap());
        prop_assert!(optjit_ir::verify(&out).is_ok(), "{:?}\n{}", optjit_ir::verify(&out), out);
        for ((t, want), (_, got)) in eval(&g, &env).into_iter().zip(eval(&out, &env)) {
            prop_assert!(same(want, got), "{t:?}: {want} became {got}\n{g}\n{out}");
        }
    }
}
