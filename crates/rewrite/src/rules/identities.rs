//! Identities with a neutral or repeated operand; all exact.

use super::Exactness::Exact;
use super::{Req, RuleDef, rule};

/// The table. Each identity holds for every input, NaN, ±inf, ±0 and subnormals included.
#[rustfmt::skip]
pub(crate) const RULES: &[RuleDef] = &[
    // x * 1 = x: multiplying by one is exact, keeps the sign of zero and NaN-ness.
    rule("mul-one",        "(* ?x 1)",          "?x", Exact, &[]),
    // 1 * x = x (for scalar x, which is not commuted; see comm-mul-scalar).
    rule("one-mul",        "(* 1 ?x)",          "?x", Exact, &[]),
    // x / 1 = x.
    rule("div-one",        "(/ ?x 1)",          "?x", Exact, &[]),
    // x - (+0) = x, also for x = -0 (-0 - +0 = -0). Not `x + 0`: -0 + +0 = +0.
    rule("sub-zero",       "(- ?x 0)",          "?x", Exact, &[]),
    // x + (-0) = x, also for x = +0 (+0 + -0 = +0) and x = -0.
    rule("add-neg-zero",   "(+ ?x -0.0)",       "?x", Exact, &[]),
    // (-0) + x = x.
    rule("neg-zero-add",   "(+ -0.0 ?x)",       "?x", Exact, &[]),
    // pow(x, 1) = x for every x (C99/IEEE pow: pow(x, 1) returns x, NaN included).
    rule("pow-one",        "(pow ?x 1)",        "?x", Exact, &[]),
    // min(x, x) = x; also NaN for NaN.
    rule("min-self",       "(min ?x ?x)",       "?x", Exact, &[]),
    // max(x, x) = x.
    rule("max-self",       "(max ?x ?x)",       "?x", Exact, &[]),
    // c ? x : x = x, when c is computed no more often than x (the class must not change).
    rule("select-same",    "(select ?c ?x ?x)", "?x", Exact, &[Req::ClassAtMost("?c", "?x")]),
    // |-x| = |x|.
    rule("abs-neg",        "(abs (neg ?x))",    "(abs ?x)", Exact, &[]),
    // ||x|| = |x|.
    rule("abs-abs",        "(abs (abs ?x))",    "(abs ?x)", Exact, &[]),
    // a * e = e * a with the scalar on the right: IEEE multiplication is commutative. Only for a
    // Scalar and e varying, so that scalar factors end on one canonical side and per-element
    // products are never commuted (which would blow up the e-graph).
    rule("comm-mul-scalar", "(* ?a ?e)",        "(* ?e ?a)", Exact, &[Req::Scalar("?a"), Req::Varying("?e")]),
    // a + e = e + a with the scalar on the right (IEEE addition is commutative, signed zeros
    // included: +0 + -0 = -0 + +0 = +0).
    rule("comm-add-scalar", "(+ ?a ?e)",        "(+ ?e ?a)", Exact, &[Req::Scalar("?a"), Req::Varying("?e")]),
];
