//! Strength reduction: dear per-element operations replaced by cheap ones, with the dear part
//! moved onto a scalar that the scalar program computes once per group. All reassociating.
//!
//! `?e` is varying (Tensor or Elem), `?s` is Scalar (for `div-to-mul-scalar`: computed less
//! often than `?e`). The square-root rules hold only for a positive `?s` and fire only where the
//! analysis proves it (a bias correction `1 - beta2^step` with `beta2` in `[0, 1)`), never for a
//! hyperparameter that may be negative. `pow(x, 0.5)` is not `sqrt(x)` (they
//! differ at -0 and -inf), and `pow(x, 0)` is 1 even for NaN but would turn a per-element value
//! into a scalar one, so neither is here.

use super::Exactness::Reassociating;
use super::{Req, RuleDef, rule};

/// `?e` varying, `?s` a proven positive scalar.
const E_POSITIVE_S: &[Req] = &[Req::Varying("?e"), Req::Scalar("?s"), Req::Positive("?s")];
/// `?e` varying, `?s` a proven positive and finite scalar.
const E_POSITIVE_FINITE_S: &[Req] = &[
    Req::Varying("?e"),
    Req::Scalar("?s"),
    Req::PositiveFinite("?s"),
];

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
    // naive Adam). Only for s > 0 (+inf and NaN included: both sides agree there): for s < 0
    // and e < 0, and for s = ±0 and e < 0, the right side is NaN where the left is a number.
    rule("sqrt-mul-scalar",   "(sqrt (* ?e ?s))",  "(* (sqrt ?e) (sqrt ?s))", Reassociating, E_POSITIVE_S),
    // sqrt(e / s) = sqrt(e) * rsqrt(s), for s > 0 and finite: sqrt(-1 / +inf) is -0 but
    // sqrt(-1) * rsqrt(+inf) is NaN.
    rule("sqrt-div-scalar",   "(sqrt (/ ?e ?s))",  "(* (sqrt ?e) (rsqrt ?s))", Reassociating, E_POSITIVE_FINITE_S),
];
