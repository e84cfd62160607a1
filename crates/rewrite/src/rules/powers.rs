//! Powers with small constant exponents.
//!
//! `pow(x, 0.5)` is not `sqrt(x)` (they differ at -0 and -inf), and `pow(x, 0)` is 1 even for
//! NaN but would turn a per-element value into a scalar one, so neither is here.

use super::Exactness::{Exact, Reassociating};
use super::{RuleDef, rule};

/// The table.
#[rustfmt::skip]
pub(crate) const RULES: &[RuleDef] = &[
    // pow(x, 1) = x for every x (C99/IEEE pow: pow(x, 1) returns x, NaN included).
    rule("pow-one",     "(pow ?x 1)",  "?x",        Exact,         &[]),
    // pow(x, 2) = x * x in value and at every special input, but libm's pow is not always
    // correctly rounded (x * x is), so the last bit may differ.
    rule("pow-two",     "(pow ?x 2)",  "(* ?x ?x)", Reassociating, &[]),
    // pow(x, -1) = 1 / x, special values included (pow(-0, -1) = -inf = 1 / -0); rounding of
    // pow may differ from the correctly rounded division.
    rule("pow-neg-one", "(pow ?x -1)", "(/ 1 ?x)",  Reassociating, &[]),
];
