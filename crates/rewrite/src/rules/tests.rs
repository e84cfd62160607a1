//! The rule tables checked numerically: exact rules bit for bit on special values in f32 and
//! f64, reassociating rules to rounding on ordinary values, and rules with a value condition
//! on special values where it holds and shown wrong where it does not.

use super::{Exactness, Req, RuleDef, all_rules, build, rule};
use crate::lang::OptLang;
use egg::{ENodeOrVar, Pattern, Var};
use std::collections::BTreeSet;

/// The float operations the rules use, for f32 and f64.
trait Float: Copy + std::fmt::Debug {
    fn of(x: f64) -> Self;
    fn same(self, other: Self) -> bool;
    fn close(self, other: Self) -> bool;
    fn eval(node: &OptLang, args: &[Self]) -> Self;
}

macro_rules! float {
    ($t:ty) => {
        impl Float for $t {
            fn of(x: f64) -> Self {
                x as $t
            }
            fn same(self, other: Self) -> bool {
                (self.is_nan() && other.is_nan()) || self.to_bits() == other.to_bits()
            }
            fn close(self, other: Self) -> bool {
                let scale = self.abs().max(other.abs()).max(1.0);
                self.same(other) || (self - other).abs() <= 1e-5 * scale
            }
            fn eval(node: &OptLang, a: &[Self]) -> Self {
                use OptLang as L;
                match node {
                    L::Add(_) => a[0] + a[1],
                    L::Sub(_) => a[0] - a[1],
                    L::Mul(_) => a[0] * a[1],
                    L::Div(_) => a[0] / a[1],
                    L::Min(_) | L::Max(_) if a[0].is_nan() || a[1].is_nan() => <$t>::NAN,
                    L::Min(_) => a[0].min(a[1]),
                    L::Max(_) => a[0].max(a[1]),
                    L::Pow(_) => a[0].powf(a[1]),
                    L::Neg(_) => -a[0],
                    L::Abs(_) => a[0].abs(),
                    L::Sqrt(_) => a[0].sqrt(),
                    L::Rsqrt(_) => 1.0 / a[0].sqrt(),
                    L::Select(_) => {
                        if a[0] != 0.0 {
                            a[1]
                        } else {
                            a[2]
                        }
                    }
                    L::Num(k) => k.value() as $t,
                    other => panic!("the rule test does not evaluate {other}"),
                }
            }
        }
    };
}
float!(f32);
float!(f64);

fn vars(p: &Pattern<OptLang>) -> Vec<Var> {
    p.ast
        .as_ref()
        .iter()
        .filter_map(|n| match n {
            ENodeOrVar::Var(v) => Some(*v),
            ENodeOrVar::ENode(_) => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn eval<F: Float>(p: &Pattern<OptLang>, names: &[Var], values: &[F]) -> F {
    let mut out: Vec<F> = Vec::new();
    for n in p.ast.as_ref() {
        let v = match n {
            ENodeOrVar::Var(v) => values[names.iter().position(|w| w == v).unwrap()],
            ENodeOrVar::ENode(node) => {
                let args: Vec<F> = node
                    .children()
                    .iter()
                    .map(|&c| out[usize::from(c)])
                    .collect();
                F::eval(node, &args)
            }
        };
        out.push(v);
    }
    *out.last().unwrap()
}

/// Every assignment of `pools[i]` values to variable `i`.
fn assignments_from(pools: &[&[f64]]) -> Vec<Vec<f64>> {
    let mut all = vec![Vec::new()];
    for pool in pools {
        all = all
            .into_iter()
            .flat_map(|prefix| {
                pool.iter().map(move |&x| {
                    let mut next = prefix.clone();
                    next.push(x);
                    next
                })
            })
            .collect();
    }
    all
}

use egg::Language;

/// Evaluates both sides of every rule of `defs` on every assignment from `pool`; the number of
/// evaluations, or the first counterexample.
fn check_defs<F: Float>(
    defs: &[RuleDef],
    exactness: Exactness,
    pool: &[f64],
) -> Result<usize, String> {
    let mut checked = 0;
    for def in defs {
        checked += check_rule::<F>(def, exactness, |_| pool)?;
    }
    Ok(checked)
}

/// Evaluates both sides of `def` on every assignment of `pool(variable)` values to each
/// variable; the number of evaluations, or the first counterexample.
fn check_rule<'a, F: Float>(
    def: &RuleDef,
    exactness: Exactness,
    pool: impl Fn(&str) -> &'a [f64],
) -> Result<usize, String> {
    let lhs: Pattern<OptLang> = def.lhs.parse().unwrap();
    let rhs: Pattern<OptLang> = def.rhs.parse().unwrap();
    let names = vars(&lhs);
    let pools: Vec<&[f64]> = names.iter().map(|v| pool(&v.to_string())).collect();
    let mut checked = 0;
    for values in assignments_from(&pools) {
        let values: Vec<F> = values.into_iter().map(F::of).collect();
        let (l, r) = (eval(&lhs, &names, &values), eval(&rhs, &names, &values));
        let ok = match exactness {
            Exactness::Exact => l.same(r),
            Exactness::Reassociating => l.close(r),
        };
        if !ok {
            return Err(format!(
                "{} ({}): {names:?} = {values:?} gives {l:?} and {r:?}",
                def.name, def.lhs
            ));
        }
        checked += 1;
    }
    Ok(checked)
}

fn check<F: Float>(exactness: Exactness, pool: &[f64]) -> usize {
    let defs: Vec<RuleDef> = all_rules()
        .into_iter()
        .filter(|d| d.exactness == exactness)
        .collect();
    check_defs::<F>(&defs, exactness, pool).unwrap_or_else(|e| panic!("{e}"))
}

const SPECIAL: &[f64] = &[
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -3.0,
    2.0,
    1e-310,  // f64 subnormal
    -1e-310, // (0 in f32)
    1e-40,   // f32 subnormal
    -1e-40,
    f64::MAX,
    f64::MIN_POSITIVE,
];

#[test]
fn exact_rules_hold_on_special_values_f64() {
    assert!(check::<f64>(Exactness::Exact, SPECIAL) > 1000);
}

#[test]
fn exact_rules_hold_on_special_values_f32() {
    assert!(check::<f32>(Exactness::Exact, SPECIAL) > 1000);
}

/// The rule's conditions on values, by variable.
fn value_conditions(def: &RuleDef) -> Vec<Req> {
    def.requires
        .iter()
        .copied()
        .filter(|r| r.on_values())
        .collect()
}

#[test]
fn reassociating_rules_hold_in_real_arithmetic() {
    let ordinary = [1.5, -2.25, 0.75, 3.0, -0.3];
    let unconditional: Vec<RuleDef> = all_rules()
        .into_iter()
        .filter(|d| d.exactness == Exactness::Reassociating && value_conditions(d).is_empty())
        .collect();
    for result in [
        check_defs::<f64>(&unconditional, Exactness::Reassociating, &ordinary),
        check_defs::<f32>(&unconditional, Exactness::Reassociating, &ordinary),
    ] {
        assert!(result.unwrap_or_else(|e| panic!("{e}")) > 100);
    }
}

/// Values of a variable that satisfy `req`: NaN always does (a range never rules it out).
fn satisfying(req: Req) -> &'static [f64] {
    match req {
        Req::Positive(_) => &[1.5, 0.75, 3.0, 0.3, 1e-3, f64::INFINITY, f64::NAN],
        Req::PositiveFinite(_) => &[1.5, 0.75, 3.0, 0.3, 1e-3, f64::NAN],
        other => panic!("{other:?} is not a condition on values"),
    }
}

/// Values of a variable that violate `req`.
fn violating(req: Req) -> &'static [f64] {
    match req {
        Req::Positive(_) => &[-2.0, -0.5, -1e-3, -0.0, 0.0, f64::NEG_INFINITY],
        Req::PositiveFinite(_) => &[
            -2.0,
            -0.5,
            -1e-3,
            -0.0,
            0.0,
            f64::NEG_INFINITY,
            f64::INFINITY,
        ],
        other => panic!("{other:?} is not a condition on values"),
    }
}

fn guarded_variable(req: Req) -> &'static str {
    match req {
        Req::Positive(v) | Req::PositiveFinite(v) => v,
        other => panic!("{other:?} is not a condition on values"),
    }
}

#[test]
fn rules_with_a_value_condition_hold_where_it_does_on_special_values() {
    // The unguarded variables take special values too (no under- or overflow, which any
    // reassociating rule may change).
    let others: &[f64] = &[
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -3.0,
        2.25,
    ];
    let guarded: Vec<RuleDef> = all_rules()
        .into_iter()
        .filter(|d| !value_conditions(d).is_empty())
        .collect();
    assert!(guarded.len() >= 2, "the square-root rules are guarded");
    for def in &guarded {
        let conditions = value_conditions(def);
        let pool = |v: &str| {
            conditions
                .iter()
                .find(|&&r| guarded_variable(r) == v)
                .map_or(others, |&r| satisfying(r))
        };
        let n64 = check_rule::<f64>(def, def.exactness, pool).unwrap_or_else(|e| panic!("{e}"));
        let n32 = check_rule::<f32>(def, def.exactness, pool).unwrap_or_else(|e| panic!("{e}"));
        assert!(n64 >= 50 && n32 == n64, "{}: {n64} cases", def.name);
    }
}

#[test]
fn rules_with_a_value_condition_are_wrong_where_it_fails() {
    // A condition that is not needed would be a missed optimization; one that is needed is
    // shown here: every violating value of the guarded variable has a counterexample (the
    // condition is on ranges, which cannot tell +0 from -0, so a zero counts if either does).
    let others: &[f64] = &[-1.0, 1.0, -0.0, 4.0, f64::NEG_INFINITY];
    for def in all_rules() {
        for req in value_conditions(&def) {
            let v = guarded_variable(req);
            let wrong_for = |x: &'static [f64]| {
                check_rule::<f64>(&def, def.exactness, |w| if w == v { x } else { others }).is_err()
            };
            for x in violating(req) {
                let wrong = if *x == 0.0 {
                    wrong_for(&[0.0]) || wrong_for(&[-0.0])
                } else {
                    wrong_for(std::slice::from_ref(x))
                };
                assert!(
                    wrong,
                    "{} holds for {v} = {x}: its condition {req:?} is too strong",
                    def.name
                );
            }
        }
    }
}

#[test]
fn every_rule_builds_and_names_are_unique_kebab_case() {
    let defs = all_rules();
    let mut names = BTreeSet::new();
    for def in &defs {
        build(def).unwrap_or_else(|e| panic!("{e}"));
        assert!(names.insert(def.name), "duplicate rule name {}", def.name);
        assert!(
            def.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{} is not kebab-case",
            def.name
        );
    }
    assert_eq!(
        super::rule_set(true).unwrap().len(),
        defs.iter()
            .filter(|d| d.exactness == Exactness::Exact)
            .count()
    );
}

#[test]
fn the_check_catches_identities_that_are_not_exact() {
    // Each of these holds for ordinary numbers but not for a special value.
    let wrong = [
        rule("add-zero", "(+ ?x 0)", "?x", Exactness::Exact, &[]),
        rule("zero-sub", "(- 0 ?x)", "(neg ?x)", Exactness::Exact, &[]),
        rule("mul-zero", "(* ?x 0)", "0", Exactness::Exact, &[]),
        rule(
            "pow-half",
            "(pow ?x 0.5)",
            "(sqrt ?x)",
            Exactness::Exact,
            &[],
        ),
        rule("sub-self", "(- ?x ?x)", "0", Exactness::Exact, &[]),
        rule("div-self", "(/ ?x ?x)", "1", Exactness::Exact, &[]),
    ];
    for def in wrong {
        assert!(
            check_defs::<f64>(&[def], Exactness::Exact, SPECIAL).is_err(),
            "{}",
            def.name
        );
        assert!(
            check_defs::<f32>(&[def], Exactness::Exact, SPECIAL).is_err(),
            "{}",
            def.name
        );
        assert!(
            check_defs::<f64>(&[def], Exactness::Reassociating, &[1.5, -2.0]).is_ok(),
            "{}",
            def.name
        );
    }
}
