//! `non_negative_states`: which states a planner may store unsigned. A state qualifies when it
//! starts non-negative and the step keeps it so, given the other qualifying states and the
//! hyperparameters' ranges.

mod common;

use common::B;
use optjit_ir::{Binary, Class, Input, Target};
use optjit_rewrite::{ValueRange, non_negative_states};
use std::collections::{BTreeMap, BTreeSet};

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn unit_beta() -> BTreeMap<String, ValueRange> {
    BTreeMap::from([(
        "beta2".to_string(),
        ValueRange::between(0.0, true, 1.0, false),
    )])
}

/// Adam's moments with amsgrad: `m = b1*m + (1-b1)*g`, `v = b2*v + (1-b2)*(g*g)`,
/// `vmax = max(vmax, v)`.
fn adam_moments() -> optjit_ir::Graph {
    let mut b = B::new("moments");
    let beta1 = b.hyper("beta1", 0.9);
    let beta2 = b.hyper("beta2", 0.999);
    let (m, v, vmax) = (b.state("m"), b.state("v"), b.state("vmax"));
    let g = b.grad();
    let decayed_m = b.mul(beta1, m);
    let one_b1 = b.one_minus(beta1);
    let new_grad = b.mul(one_b1, g);
    let m_new = b.add(decayed_m, new_grad);
    let decayed_v = b.mul(beta2, v);
    let one_b2 = b.one_minus(beta2);
    let square = b.mul(g, g);
    let new_square = b.mul(one_b2, square);
    let v_new = b.add(decayed_v, new_square);
    let vmax_new = b.bin(Binary::Max, vmax, v_new);
    b.g.set_output(Target::State("m".into()), m_new);
    b.g.set_output(Target::State("v".into()), v_new);
    b.g.set_output(Target::State("vmax".into()), vmax_new);
    b.g
}

#[test]
fn second_moments_are_non_negative_for_a_beta_in_the_unit_interval() {
    let g = adam_moments();
    assert_eq!(non_negative_states(&g, &unit_beta()), set(&["v", "vmax"]));
    // beta2 = -1 alternates the sign of v; vmax = max(vmax, v) never drops below its old value.
    assert_eq!(non_negative_states(&g, &BTreeMap::new()), set(&["vmax"]));
}

#[test]
fn a_state_that_starts_negative_does_not_qualify() {
    let mut g = adam_moments();
    g.declare_state("v", -1.0, Class::Elem);
    assert_eq!(non_negative_states(&g, &unit_beta()), set(&["vmax"]));
}

#[test]
fn qualifying_depends_on_the_other_states() {
    // a = b, b = a * a: each keeps the other non-negative.
    let mut b = B::new("pair");
    let (a, s) = (b.state("a"), b.state("b"));
    let square = b.mul(a, a);
    b.g.set_output(Target::State("a".into()), s);
    b.g.set_output(Target::State("b".into()), square);
    assert_eq!(
        non_negative_states(&b.g, &BTreeMap::new()),
        set(&["a", "b"])
    );

    // a = b, b = -a, c = sqrt(a) + c: b fails first, then a, which c does not need.
    let mut b = B::new("flip");
    let (a, s, c) = (b.state("a"), b.state("b"), b.state("c"));
    let minus_a = b.un(optjit_ir::Unary::Neg, a);
    let root = b.sqrt(a);
    let c_new = b.add(root, c);
    b.g.set_output(Target::State("a".into()), s);
    b.g.set_output(Target::State("b".into()), minus_a);
    b.g.set_output(Target::State("c".into()), c_new);
    assert_eq!(non_negative_states(&b.g, &BTreeMap::new()), set(&["c"]));
}

#[test]
fn scalar_states_and_unassigned_states_count() {
    // A step counter `n = n + 1` and a state the step only reads.
    let mut b = B::new("counter");
    let n = b.scalar_state("n", 0.0);
    let one = b.c(1.0);
    let n_new = b.add(n, one);
    b.state("frozen");
    let p = b.param();
    let frozen = b.g.input(Input::State("frozen".into()));
    let p_new = b.mul(p, frozen);
    b.g.set_output(Target::ScalarState("n".into()), n_new);
    b.g.set_output(Target::Param, p_new);
    assert_eq!(
        non_negative_states(&b.g, &BTreeMap::new()),
        set(&["frozen", "n"])
    );
}
