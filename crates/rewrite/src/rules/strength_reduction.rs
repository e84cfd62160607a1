//! Strength reduction: dear per-element operations replaced by cheap ones, with the dear part
//! moved onto a scalar that the scalar program computes once per group. All reassociating.
//!
//! `?e` is varying (Tensor or Elem), `?s` is Scalar (for `div-to-mul-scalar`: computed less
//! often than `?e`). `pow(x, 0.5)` is not `sqrt(x)` (they
//! differ at -0 and -inf), and `pow(x, 0)` is 1 even for NaN but would turn a per-element value
//! into a scalar one, so neither is here.

use super::Exactness::Reassociating;
use super::{Req, RuleDef, rule};

const ES: &[Req] = &[Req::Varying("?e"), Req::Scalar("?s")];

/// The rules of the table that hold only where their scalar `?s` is positive (see each one).
#[cfg(test)]
pub(crate) const POSITIVE_SCALAR_ONLY: &[&str] = &["sqrt-mul-scalar", "sqrt-div-scalar"];

/// The table.
#[rustfmt::skip]
pub(crate) const RULES: &[RuleDef] = &[
    // e / s = e * (1 / s): a per-element division becomes a multiplication by a reciprocal
    // computed once per group (or per tensor, for a per-tensor divisor) (not exact: 1/s is
    // rounded before the product).
    rule("div-to-mul-scalar", "(/ ?e ?s)",         "(* ?e (/ 1 ?s))",       Reassociating, &[Req::ClassBelow("?s", "?e")]),
    // pow(x, 2) = x * x in value and at every special input, but libm's pow is not always
    // correctly rounded (x * x is), so the last bit may differ.
    rule("pow-two",           "(pow ?x 2)",        "(* ?x ?x)",             Reassociating, &[]),
    // pow(x, -1) = 1 / x, special values included (pow(-0, -1) = -inf = 1 / -0); rounding of
    // pow may differ from the correctly rounded division.
    rule("pow-neg-one",       "(pow ?x -1)",       "(/ 1 ?x)",              Reassociating, &[]),
    // sqrt(e * s) = sqrt(e) * sqrt(s), the scalar root hoisted (`sqrt(v * (1 / bc2))` of a
    // naive Adam). Holds for s >= 0, which every scalar under a step's square root is (bias
    // corrections, `1 - beta2^t`); for s < 0 and e < 0 the right side is NaN where the left is
    // a number.
    rule("sqrt-mul-scalar",   "(sqrt (* ?e ?s))",  "(* (sqrt ?e) (sqrt ?s))", Reassociating, ES),
    // sqrt(e / s) = sqrt(e) * rsqrt(s), with the same condition s > 0.
    rule("sqrt-div-scalar",   "(sqrt (/ ?e ?s))",  "(* (sqrt ?e) (rsqrt ?s))", Reassociating, ES),
];
