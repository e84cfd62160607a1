//! The rule tables checked numerically: exact rules bit for bit on special values in f32 and
//! f64, reassociating rules to rounding on ordinary values.

use super::{Exactness, POSITIVE_SCALAR_ONLY, RuleDef, all_rules, build, rule};
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

/// Every assignment of `pool` values to `n` variables.
fn assignments(pool: &[f64], n: usize) -> Vec<Vec<f64>> {
    let mut all = vec![Vec::new()];
    for _ in 0..n {
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
        let lhs: Pattern<OptLang> = def.lhs.parse().unwrap();
        let rhs: Pattern<OptLang> = def.rhs.parse().unwrap();
        let names = vars(&lhs);
        for values in assignments(pool, names.len()) {
            let values: Vec<F> = values.into_iter().map(F::of).collect();
            let (l, r) = (eval(&lhs, &names, &values), eval(&rhs, &names, &values));
            let ok = match exactness {
                Exactness::Exact => l.same(r),
                Exactness::Reassociating => l.close(r),
            };
            if !ok {
                return Err(format!(
                    "{} ({}): {values:?} gives {l:?} and {r:?}",
                    def.name, def.lhs
                ));
            }
            checked += 1;
        }
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

#[test]
fn reassociating_rules_hold_in_real_arithmetic() {
    let ordinary = [1.5, -2.25, 0.75, 3.0, -0.3];
    let (signed, positive_only): (Vec<RuleDef>, Vec<RuleDef>) = all_rules()
        .into_iter()
        .filter(|d| d.exactness == Exactness::Reassociating)
        .partition(|d| !POSITIVE_SCALAR_ONLY.contains(&d.name));
    for result in [
        check_defs::<f64>(&signed, Exactness::Reassociating, &ordinary),
        check_defs::<f32>(&signed, Exactness::Reassociating, &ordinary),
    ] {
        assert!(result.unwrap_or_else(|e| panic!("{e}")) > 100);
    }
    // The square-root rules on positive values, and their documented limit on negative ones.
    assert_eq!(positive_only.len(), POSITIVE_SCALAR_ONLY.len());
    let positive = [1.5, 0.75, 3.0, 0.3, 1e-3];
    for def in &positive_only {
        let one = std::slice::from_ref(def);
        check_defs::<f64>(one, Exactness::Reassociating, &positive).unwrap();
        check_defs::<f32>(one, Exactness::Reassociating, &positive).unwrap();
        assert!(check_defs::<f64>(one, Exactness::Reassociating, &[-2.0, -0.5]).is_err());
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
