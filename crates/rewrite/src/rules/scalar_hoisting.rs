//! Scalar hoisting: regroup products, quotients and sums so that scalar-only subexpressions form
//! their own subtrees, which the scalar program computes once per group instead of once per
//! element. All reassociating (real-arithmetic identities; rounding and overflow may differ).
//!
//! Every rule is restricted by class: `?a`, `?b`, `?s` are Scalar, `?e`, `?x` are varying (Tensor
//! or Elem). There is no blanket associativity or commutativity on per-element values.

use super::Exactness::Reassociating;
use super::{Req, RuleDef, rule};

const AB: &[Req] = &[Req::Varying("?e"), Req::Scalar("?a"), Req::Scalar("?b")];
const XEA: &[Req] = &[Req::Varying("?x"), Req::Varying("?e"), Req::Scalar("?a")];
const EA: &[Req] = &[Req::Varying("?e"), Req::Scalar("?a")];
const EXAB: &[Req] = &[
    Req::Varying("?e"),
    Req::Varying("?x"),
    Req::Scalar("?a"),
    Req::Scalar("?b"),
];

/// The table.
#[rustfmt::skip]
pub(crate) const RULES: &[RuleDef] = &[
    // (e * a) * b = e * (a * b).
    rule("assoc-mul-scalar",  "(* (* ?e ?a) ?b)",  "(* ?e (* ?a ?b))", Reassociating, AB),
    // (e * a) / b = e * (a / b).
    rule("div-mul-scalar",    "(/ (* ?e ?a) ?b)",  "(* ?e (/ ?a ?b))", Reassociating, AB),
    // (e / a) * b = e * (b / a).
    rule("mul-div-scalar",    "(* (/ ?e ?a) ?b)",  "(* ?e (/ ?b ?a))", Reassociating, AB),
    // (e / a) / b = e / (a * b).
    rule("div-div-scalar",    "(/ (/ ?e ?a) ?b)",  "(/ ?e (* ?a ?b))", Reassociating, AB),
    // b / (e * a) = (b / a) / e.
    rule("scalar-div-mul",    "(/ ?b (* ?e ?a))",  "(/ (/ ?b ?a) ?e)", Reassociating, AB),
    // x * (e * a) = (x * e) * a: pull a scalar factor out of a per-element product.
    rule("pull-mul-scalar",   "(* ?x (* ?e ?a))",  "(* (* ?x ?e) ?a)", Reassociating, XEA),
    // (e * a) / x = (e / x) * a.
    rule("pull-div-scalar",   "(/ (* ?e ?a) ?x)",  "(* (/ ?e ?x) ?a)", Reassociating, XEA),
    // (e * a) * (x * b) = (e * x) * (a * b): the product of two scaled values scales their
    // product (a clipped gradient squared: `(g * c) * (g * c)` = `(g * g) * (c * c)`).
    rule("mul-scaled-pair",   "(* (* ?e ?a) (* ?x ?b))", "(* (* ?e ?x) (* ?a ?b))", Reassociating, EXAB),
    // (e + a) + b = e + (a + b).
    rule("assoc-add-scalar",  "(+ (+ ?e ?a) ?b)",  "(+ ?e (+ ?a ?b))", Reassociating, AB),
    // (e - a) + b = e + (b - a).
    rule("add-sub-scalar",    "(+ (- ?e ?a) ?b)",  "(+ ?e (- ?b ?a))", Reassociating, AB),
    // (e + a) - b = e + (a - b).
    rule("sub-add-scalar",    "(- (+ ?e ?a) ?b)",  "(+ ?e (- ?a ?b))", Reassociating, AB),
    // (e - a) - b = e - (a + b).
    rule("sub-sub-scalar",    "(- (- ?e ?a) ?b)",  "(- ?e (+ ?a ?b))", Reassociating, AB),
    // e * a + e * b = e * (a + b).
    rule("factor-add-scalar", "(+ (* ?e ?a) (* ?e ?b))", "(* ?e (+ ?a ?b))", Reassociating, AB),
    // e * a - e * b = e * (a - b).
    rule("factor-sub-scalar", "(- (* ?e ?a) (* ?e ?b))", "(* ?e (- ?a ?b))", Reassociating, AB),
    // e - e * a = e * (1 - a) (decoupled weight decay written as `p - lr * wd * p`).
    rule("factor-sub-one",    "(- ?e (* ?e ?a))",  "(* ?e (- 1 ?a))",  Reassociating, EA),
    // e + e * a = e * (1 + a).
    rule("factor-add-one",    "(+ ?e (* ?e ?a))",  "(* ?e (+ 1 ?a))",  Reassociating, EA),
];
