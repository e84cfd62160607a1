//! Negations: cancelling them and moving them onto scalars; all exact (round-to-nearest is
//! symmetric under sign changes).

use super::Exactness::Exact;
use super::{Req, RuleDef, rule};

/// The table.
#[rustfmt::skip]
pub(crate) const RULES: &[RuleDef] = &[
    // -(-x) = x.
    rule("neg-neg",          "(neg (neg ?x))",     "?x",             Exact, &[]),
    // x * -1 = -x (a sign flip, exact for zeros, infinities and NaN).
    rule("mul-neg-one",      "(* ?x -1)",          "(neg ?x)",       Exact, &[]),
    // x / -1 = -x.
    rule("div-neg-one",      "(/ ?x -1)",          "(neg ?x)",       Exact, &[]),
    // a - (-b) = a + b: IEEE defines subtraction as addition of the negation.
    rule("sub-neg",          "(- ?a (neg ?b))",    "(+ ?a ?b)",      Exact, &[]),
    // a + (-b) = a - b.
    rule("add-neg",          "(+ ?a (neg ?b))",    "(- ?a ?b)",      Exact, &[]),
    // (-e) * a = e * (-a): the negation moves to the scalar program. a Scalar, e varying.
    rule("mul-neg-scalar",   "(* (neg ?e) ?a)",    "(* ?e (neg ?a))", Exact, &[Req::Scalar("?a"), Req::Varying("?e")]),
    // -(e * a) = e * (-a). a Scalar, e varying.
    rule("neg-mul-scalar",   "(neg (* ?e ?a))",    "(* ?e (neg ?a))", Exact, &[Req::Scalar("?a"), Req::Varying("?e")]),
    // (-e) / a = e / (-a). a Scalar, e varying.
    rule("div-neg-scalar",   "(/ (neg ?e) ?a)",    "(/ ?e (neg ?a))", Exact, &[Req::Scalar("?a"), Req::Varying("?e")]),
    // -(e / a) = e / (-a). a Scalar, e varying.
    rule("neg-div-scalar",   "(neg (/ ?e ?a))",    "(/ ?e (neg ?a))", Exact, &[Req::Scalar("?a"), Req::Varying("?e")]),
];
