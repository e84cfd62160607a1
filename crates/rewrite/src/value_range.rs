//! Value ranges: what is proven about the values an expression can take (its sign, whether it
//! stays within one, whether it is finite), for the side conditions of rewrite rules (a square
//! root split over a quotient needs a positive divisor) and for planners (a state that is never
//! negative can be stored in an unsigned format).
//!
//! # What a range claims
//!
//! A [`ValueRange`] bounds every value of an expression **that is not NaN**; NaN is never ruled
//! out. So `sqrt(x)` is non-negative for every `x`: each of its values is `>= 0` or NaN. A rule
//! guarded by a range must therefore also hold when the guarded value is NaN (both sides NaN).
//!
//! The sign of zero is not tracked: `-0.0` is zero, so a non-negative value may be `-0.0`
//! (`sqrt(-0.0)` is `-0.0`), and a positive value is neither `+0.0` nor `-0.0`.
//!
//! The bounds are the five landmarks `-inf, -1, 0, 1, +inf`, each included or not; between them
//! lie the open cells `(-inf, -1)`, `(-1, 0)`, `(0, 1)` and `(1, +inf)`. Every float format holds
//! the landmarks exactly, so rounding to nearest (which is monotone) never carries a value past
//! one: a rounded result may land *on* a landmark next to the cell of the exact result
//! (underflow to 0, overflow to inf, `1 - tiny` to 1), which the transfer functions allow for,
//! except where an op cannot (a sum of two floats is zero only when it is exactly zero).
//!
//! A range holds for the value as the stage that computes it does: in f64 on the host for the
//! scalar program, in f32 in kernels, where an operand of another class (a host scalar read by
//! a per-element op) has been rounded to f32 first ([`ValueRange::crossing`]). The transfer
//! functions assume IEEE arithmetic with subnormals, correctly rounded `+ - * / sqrt` (both
//! targets), a faithful `pow` (within one ulp, as the C libraries' are) and `min`/`max` that
//! propagate NaN ([`optjit_ir::eval_op`]); `exp`, `log`, `sin` and `cos` are trusted for their
//! sign and their bounds only, since the GPU's are approximations.

use optjit_ir::{Binary, Class, DType, Input, Op, Reduction, Unary};
use std::collections::BTreeMap;
use std::fmt;

/// The landmarks; atom `2 * i` is the landmark `LANDMARKS[i]`, atom `2 * i + 1` the open cell
/// between `LANDMARKS[i]` and `LANDMARKS[i + 1]`.
const LANDMARKS: [f64; 5] = [f64::NEG_INFINITY, -1.0, 0.0, 1.0, f64::INFINITY];
/// The atom of `-inf`.
const NEG_INF: u8 = 0;
/// The atom of `-1`.
const NEG_ONE: u8 = 2;
/// The atom of `±0`.
const ZERO: u8 = 4;
/// The atom of the open cell `(0, 1)`.
const ZERO_ONE: u8 = 5;
/// The atom of `1`.
const ONE: u8 = 6;
/// The atom of the open cell `(1, +inf)`.
const ABOVE_ONE: u8 = 7;
/// The atom of `+inf`.
const POS_INF: u8 = 8;

/// What is proven about the non-NaN values of an expression: an interval whose ends are the
/// landmarks `-inf, -1, 0, 1, +inf`, included or not (see the module documentation).
///
/// ```
/// use optjit_rewrite::ValueRange;
/// let beta = ValueRange::between(0.0, true, 1.0, false); // [0, 1)
/// assert!(beta.is_non_negative() && !beta.is_positive() && beta.is_finite());
/// assert_eq!(beta.to_string(), "[0, 1)");
/// assert!(ValueRange::between(1e-8, true, f64::MAX, true).is_positive());
/// assert!(!ValueRange::ANY.is_non_negative());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueRange {
    /// The lowest atom a value may lie in.
    lo: u8,
    /// The highest atom; below `lo` when no value but NaN is possible.
    hi: u8,
}

impl ValueRange {
    /// Nothing is known: any value.
    pub const ANY: ValueRange = ValueRange {
        lo: NEG_INF,
        hi: POS_INF,
    };

    /// Every value `>= 0` (`-0.0` included), `+inf` or NaN.
    pub const NON_NEGATIVE: ValueRange = ValueRange {
        lo: ZERO,
        hi: POS_INF,
    };

    /// No value but NaN (an expression that is always NaN).
    pub const NAN_ONLY: ValueRange = ValueRange { lo: 1, hi: 0 };

    /// The atoms `lo ..= hi`, or [`ValueRange::NAN_ONLY`] when `lo > hi`.
    const fn atoms(lo: u8, hi: u8) -> ValueRange {
        if lo > hi {
            ValueRange::NAN_ONLY
        } else {
            ValueRange { lo, hi }
        }
    }

    /// The one atom `a`.
    const fn atom(a: u8) -> ValueRange {
        ValueRange { lo: a, hi: a }
    }

    /// The range of the constant `x`: its landmark or cell (NaN: [`ValueRange::NAN_ONLY`]).
    pub fn constant(x: f64) -> ValueRange {
        match atom_of(x) {
            Some(a) => ValueRange::atom(a),
            None => ValueRange::NAN_ONLY,
        }
    }

    /// The smallest range holding every `x` with `min <= x` (`min < x` when not
    /// `min_inclusive`) and `x <= max` (`x < max`): a hyperparameter's domain. Bounds that are
    /// NaN, or that leave no value, give [`ValueRange::ANY`] (a promise that cannot be kept
    /// proves nothing).
    pub fn between(min: f64, min_inclusive: bool, max: f64, max_inclusive: bool) -> ValueRange {
        let (Some(a), Some(b)) = (atom_of(min), atom_of(max)) else {
            return ValueRange::ANY;
        };
        // An excluded landmark leaves its neighbouring cell; an excluded point inside a cell
        // leaves the cell.
        let lo = i32::from(a) + i32::from(!min_inclusive && a % 2 == 0);
        let hi = i32::from(b) - i32::from(!max_inclusive && b % 2 == 0);
        if lo > hi || min > max {
            return ValueRange::ANY;
        }
        ValueRange::atoms(lo as u8, hi as u8)
    }

    /// Whether `x` is a value the range allows (NaN always is).
    pub fn contains(self, x: f64) -> bool {
        atom_of(x).is_none_or(|a| self.lo <= a && a <= self.hi)
    }

    /// Whether every non-NaN value is `>= 0` (`-0.0` included).
    pub fn is_non_negative(self) -> bool {
        self.lo >= ZERO
    }

    /// Whether every non-NaN value is `> 0` (neither zero).
    pub fn is_positive(self) -> bool {
        self.lo > ZERO
    }

    /// Whether every non-NaN value is finite.
    pub fn is_finite(self) -> bool {
        self.lo > NEG_INF && self.hi < POS_INF
    }

    /// Whether atom `a` is in the range.
    fn has_atom(self, a: u8) -> bool {
        self.lo <= a && a <= self.hi
    }

    /// Whether no value but NaN is possible.
    pub fn is_nan_only(self) -> bool {
        self.lo > self.hi
    }

    /// The smallest range holding both.
    pub(crate) fn hull(self, other: ValueRange) -> ValueRange {
        match (self.is_nan_only(), other.is_nan_only()) {
            (true, _) => other,
            (_, true) => self,
            _ => ValueRange::atoms(self.lo.min(other.lo), self.hi.max(other.hi)),
        }
    }

    /// What both say about one value (NaN only where they contradict each other).
    pub(crate) fn meet(self, other: ValueRange) -> ValueRange {
        ValueRange::atoms(self.lo.max(other.lo), self.hi.min(other.hi))
    }

    /// After rounding to nearest in any format: an end in an open cell may land on the
    /// cell's landmark on that side.
    fn rounded(self) -> ValueRange {
        if self.is_nan_only() {
            return self;
        }
        ValueRange::atoms(self.lo - self.lo % 2, self.hi + self.hi % 2)
    }

    /// The range of a value of class `from` as an op of class `to` reads it: rounded when the
    /// classes differ (a host value in f64 becomes an f32 kernel operand).
    pub(crate) fn crossing(self, from: Class, to: Class) -> ValueRange {
        if from == to { self } else { self.rounded() }
    }

    /// The range of an input: a hyperparameter's from `hypers` (none: any value), the step
    /// count `[1, +inf)`, the rank `[0, +inf)`; nothing is known of tensors and states.
    pub(crate) fn of_input(input: &Input, hypers: &BTreeMap<String, ValueRange>) -> ValueRange {
        match input {
            Input::Hyper(name) => hypers.get(name).copied().unwrap_or(ValueRange::ANY),
            Input::Step => ValueRange::atoms(ONE, ABOVE_ONE),
            Input::Rank => ValueRange::atoms(ZERO, ABOVE_ONE),
            _ => ValueRange::ANY,
        }
    }

    /// The range of `op`'s result from its operands' ranges (rounded to the op's precision by
    /// the caller, see [`ValueRange::crossing`]); `first_two_same` says that the first two
    /// operands are one value (`x * x` is a square, never negative). Inputs are
    /// [`ValueRange::of_input`]'s.
    pub(crate) fn of_op(op: &Op, x: &[ValueRange], first_two_same: bool) -> ValueRange {
        let arg = |i: usize| x.get(i).copied().unwrap_or(ValueRange::ANY);
        let (a, b, c) = (arg(0), arg(1), arg(2));
        let product_of_first_two = || match first_two_same {
            true => each_atom(a, |p| product(p, p, false)).rounded(),
            false => each_pair(a, b, |p, q| product(p, q, false)).rounded(),
        };
        match op {
            Op::Input(_) => ValueRange::ANY,
            Op::Const(k) => ValueRange::constant(*k),
            Op::Unary(u) => unary(*u, a),
            Op::Binary(Binary::Add) => sum(a, b),
            Op::Binary(Binary::Sub) => sum(a, unary(Unary::Neg, b)),
            Op::Binary(Binary::Mul) => product_of_first_two(),
            Op::Binary(Binary::Div) => each_pair(a, b, |p, q| product(p, q, true)).rounded(),
            // NaN-propagating: a non-NaN result has two non-NaN operands, and both functions
            // are monotone in each.
            Op::Binary(Binary::Min) if !a.is_nan_only() && !b.is_nan_only() => {
                ValueRange::atoms(a.lo.min(b.lo), a.hi.min(b.hi))
            }
            Op::Binary(Binary::Max) if !a.is_nan_only() && !b.is_nan_only() => {
                ValueRange::atoms(a.lo.max(b.lo), a.hi.max(b.hi))
            }
            Op::Binary(Binary::Min | Binary::Max) => ValueRange::NAN_ONLY,
            Op::Binary(Binary::Pow) => power(a, b),
            // One rounding of the exact `a * b + c`: within the sum of the rounded product and
            // `c` (the product's rounding only widens it).
            Op::Fma => sum(product_of_first_two(), c),
            // 0 or 1, also for NaN operands.
            Op::Cmp(_) => ValueRange::atoms(ZERO, ONE),
            // Either branch, whatever the condition (a NaN condition picks the first).
            Op::Select => b.hull(c),
            Op::Cast(DType::Bool) => ValueRange::ANY,
            Op::Cast(_) => a.rounded(),
            Op::Reduce(r) => reduction(*r, a),
        }
    }
}

impl fmt::Debug for ValueRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueRange({self})")
    }
}

/// `[0, 1)`, `(0, inf]`, `any`, `NaN only`.
impl fmt::Display for ValueRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_nan_only() {
            return f.write_str("NaN only");
        }
        if *self == ValueRange::ANY {
            return f.write_str("any");
        }
        let name = |i: u8| match LANDMARKS[usize::from(i / 2)] {
            x if x == f64::INFINITY => "inf".to_string(),
            x if x == f64::NEG_INFINITY => "-inf".to_string(),
            x => format!("{x}"),
        };
        let (open, lo) = match self.lo % 2 {
            0 => ('[', name(self.lo)),
            _ => ('(', name(self.lo - 1)),
        };
        let (close, hi) = match self.hi % 2 {
            0 => (']', name(self.hi)),
            _ => (')', name(self.hi + 1)),
        };
        write!(f, "{open}{lo}, {hi}{close}")
    }
}

/// The atom of a non-NaN `x`.
fn atom_of(x: f64) -> Option<u8> {
    if x.is_nan() {
        return None;
    }
    let mut atom = 0;
    for (i, &l) in LANDMARKS.iter().enumerate() {
        if x == l {
            return Some(2 * i as u8);
        }
        if x > l {
            atom = 2 * i as u8 + 1;
        }
    }
    Some(atom)
}

/// The smallest range holding the reals between `lo` and `hi` (each excluded when open).
fn real_interval(lo: f64, lo_open: bool, hi: f64, hi_open: bool) -> ValueRange {
    let (Some(a), Some(b)) = (atom_of(lo), atom_of(hi)) else {
        return ValueRange::ANY;
    };
    let lo = i32::from(a) + i32::from(lo_open && a % 2 == 0);
    let hi = i32::from(b) - i32::from(hi_open && b % 2 == 0);
    if lo > hi {
        ValueRange::NAN_ONLY
    } else {
        ValueRange::atoms(lo as u8, hi as u8)
    }
}

/// The hull of `f(atom)` over the atoms of `r`.
fn each_atom(r: ValueRange, f: impl Fn(u8) -> ValueRange) -> ValueRange {
    (r.lo..=r.hi).fold(ValueRange::NAN_ONLY, |acc, a| acc.hull(f(a)))
}

/// The hull of `f(p, q)` over the atoms `p` of `a` and `q` of `b`.
fn each_pair(a: ValueRange, b: ValueRange, f: impl Fn(u8, u8) -> ValueRange) -> ValueRange {
    each_atom(a, |p| each_atom(b, |q| f(p, q)))
}

/// The result of a unary op.
fn unary(op: Unary, a: ValueRange) -> ValueRange {
    let r = ValueRange::atoms;
    match op {
        // Exact.
        Unary::Neg => each_atom(a, |x| ValueRange::atom(POS_INF - x)),
        Unary::Abs => each_atom(a, |x| ValueRange::atom(x.max(POS_INF - x))),
        Unary::Floor => each_atom(a, |x| match x {
            // floor((-1, 0)) = -1, floor((0, 1)) = +0, floor(-0) = -0, floor((1, inf)) >= 1.
            3 => ValueRange::atom(NEG_ONE),
            ZERO_ONE => ValueRange::atom(ZERO),
            ABOVE_ONE => r(ONE, ABOVE_ONE),
            x => ValueRange::atom(x),
        }),
        // Correctly rounded: never below 0 but sqrt(-0) = -0; sqrt((0, 1)) stays in (0, 1)
        // (no underflow; just below 1 it rounds down), sqrt((1, inf)) may round to 1.
        Unary::Sqrt => each_atom(a, |x| match x {
            x if x < ZERO => ValueRange::NAN_ONLY,
            ABOVE_ONE => r(ONE, ABOVE_ONE),
            x => ValueRange::atom(x),
        }),
        // 1 / sqrt(x): 1 / sqrt(±0) is ±inf.
        Unary::Rsqrt => each_atom(a, |x| match x {
            x if x < ZERO => ValueRange::NAN_ONLY,
            ZERO => ValueRange::ANY,
            ZERO_ONE => r(ONE, POS_INF),
            ONE => ValueRange::atom(ONE),
            ABOVE_ONE => r(ZERO, ONE),
            _ => ValueRange::atom(ZERO),
        }),
        // Approximate on the GPU: only the sign is trusted.
        Unary::Exp => each_atom(a, |x| match x {
            NEG_INF => ValueRange::atom(ZERO),
            POS_INF => ValueRange::atom(POS_INF),
            _ => r(ZERO, POS_INF),
        }),
        Unary::Log => ValueRange::ANY,
        Unary::Sin | Unary::Cos => each_atom(a, |x| match x {
            NEG_INF | POS_INF => ValueRange::NAN_ONLY,
            _ => r(NEG_ONE, ONE),
        }),
        // -1, ±0 or 1 (NaN stays NaN, as `jnp.sign`); 0 is allowed for every operand so that
        // the range also holds if NaN ever maps to 0, as `torch.sign` does.
        Unary::Sign => each_atom(a, |x| match x {
            x if x < ZERO => ValueRange::atom(NEG_ONE),
            ZERO => ValueRange::atom(ZERO),
            _ => ValueRange::atom(ONE),
        })
        .hull(ValueRange::atom(ZERO)),
    }
}

/// A sum: the exact sums of the atoms, rounded, where a result that is not zero stays off
/// zero (with subnormals, `x + y == 0` only when `x == -y`).
fn sum(a: ValueRange, b: ValueRange) -> ValueRange {
    let exact = each_pair(a, b, |p, q| match (p, q) {
        (NEG_INF, POS_INF) | (POS_INF, NEG_INF) => ValueRange::NAN_ONLY,
        (POS_INF, _) | (_, POS_INF) => ValueRange::atom(POS_INF),
        (NEG_INF, _) | (_, NEG_INF) => ValueRange::atom(NEG_INF),
        _ => {
            let ((p_lo, p_hi), (q_lo, q_hi)) = (cell(p), cell(q));
            let (p_open, q_open) = (p % 2 == 1, q % 2 == 1);
            real_interval(p_lo + q_lo, p_open || q_open, p_hi + q_hi, p_open || q_open)
        }
    });
    if exact.is_nan_only() {
        return exact;
    }
    let lo = if exact.lo == ZERO_ONE {
        exact.lo
    } else {
        exact.lo - exact.lo % 2
    };
    let hi = if exact.hi == ZERO - 1 {
        exact.hi
    } else {
        exact.hi + exact.hi % 2
    };
    ValueRange::atoms(lo, hi)
}

/// The ends of an atom as reals (equal for a landmark).
fn cell(a: u8) -> (f64, f64) {
    let i = usize::from(a / 2);
    match a % 2 {
        0 => (LANDMARKS[i], LANDMARKS[i]),
        _ => (LANDMARKS[i], LANDMARKS[i + 1]),
    }
}

/// Magnitudes of the atoms: 0, (0, 1), 1, (1, inf), inf.
const MAG_ZERO: u8 = 0;
/// `MAG_PRODUCT[m][n]`: the magnitudes of a product of magnitudes `m` and `n` (exact), as an
/// inclusive span, or `None` for NaN (`0 * inf`).
const MAG_PRODUCT: [[Option<(u8, u8)>; 5]; 5] = {
    let z = Some((0, 0));
    let s = Some((1, 1));
    let o = Some((2, 2));
    let b = Some((3, 3));
    let i = Some((4, 4));
    let any_finite = Some((1, 3));
    [
        [z, z, z, z, None],
        [z, s, s, any_finite, i],
        [z, s, o, b, i],
        [z, any_finite, b, b, i],
        [None, i, i, i, i],
    ]
};
/// `MAG_QUOTIENT[m][n]`: the magnitudes of `m / n` (exact), `None` for NaN (`0/0`, `inf/inf`).
const MAG_QUOTIENT: [[Option<(u8, u8)>; 5]; 5] = {
    let z = Some((0, 0));
    let s = Some((1, 1));
    let o = Some((2, 2));
    let b = Some((3, 3));
    let i = Some((4, 4));
    let any_finite = Some((1, 3));
    [
        [None, z, z, z, z],
        [i, any_finite, s, s, z],
        [i, b, o, s, z],
        [i, b, b, any_finite, z],
        [i, i, i, i, None],
    ]
};

/// The exact product (or quotient) of a value of atom `p` and one of atom `q`, by sign and
/// magnitude. Dividing by zero gives an infinity of either sign: the zero's sign is unknown.
fn product(p: u8, q: u8, divide: bool) -> ValueRange {
    let split = |a: u8| (i32::from(a) - i32::from(ZERO)).signum();
    let magnitude = |a: u8| a.abs_diff(ZERO);
    let (m, n) = (usize::from(magnitude(p)), usize::from(magnitude(q)));
    let table = if divide { &MAG_QUOTIENT } else { &MAG_PRODUCT };
    let Some((lo, hi)) = table[m][n] else {
        return ValueRange::NAN_ONLY;
    };
    if hi == MAG_ZERO {
        return ValueRange::atom(ZERO);
    }
    let positive = ValueRange::atoms(ZERO + lo, ZERO + hi);
    let negative = ValueRange::atoms(ZERO - hi, ZERO - lo);
    if divide && n == usize::from(MAG_ZERO) {
        return positive.hull(negative);
    }
    match split(p) * split(q) {
        1 => positive,
        -1 => negative,
        _ => positive.hull(negative),
    }
}

/// `pow(a, b)`, C's `pow` or `torch.pow` (`x ^ 0.5` as `sqrt(x)`, `x ^ -0.5` as `1 / sqrt(x)`:
/// the cases below hold for both). `pow(1, y)` and `pow(x, ±0)` are 1 even for a NaN `y` or `x`. A base in
/// `[0, 1)` and an exponent `>= 1` stay in `[0, 1)`: `x^y <= x` exactly, and a faithful result
/// cannot round past the float `x`. A positive base (or a non-negative one under a non-negative
/// exponent: `pow(-0, 3)` is `-0`) gives a non-negative result; a base that may be `-0` under a
/// negative exponent may give `-inf`.
fn power(a: ValueRange, b: ValueRange) -> ValueRange {
    let pairs = each_pair(a, b, |x, y| {
        if x == ONE || y == ZERO {
            ValueRange::atom(ONE)
        } else if (ZERO..=ZERO_ONE).contains(&x) && y >= ONE {
            ValueRange::atoms(ZERO, ZERO_ONE)
        } else if (ZERO..=ONE).contains(&x) && y >= ZERO {
            ValueRange::atoms(ZERO, ONE)
        } else if (x >= ZERO && y >= ZERO) || x > ZERO {
            ValueRange::atoms(ZERO, POS_INF)
        } else {
            ValueRange::ANY
        }
    });
    if a.has_atom(ONE) || b.has_atom(ZERO) {
        pairs.hull(ValueRange::atom(ONE))
    } else {
        pairs
    }
}

/// A reduction: norms and largest magnitudes are non-negative; sums and means keep a sign
/// that every element has.
fn reduction(r: Reduction, a: ValueRange) -> ValueRange {
    match r {
        Reduction::Norm | Reduction::GlobalNorm | Reduction::MaxAbs => {
            ValueRange::atoms(ZERO, POS_INF)
        }
        Reduction::Sum
        | Reduction::Mean
        | Reduction::RowMean
        | Reduction::ColMean
        | Reduction::RowsMean => {
            if a.is_non_negative() {
                ValueRange::atoms(ZERO, POS_INF)
            } else if a.hi <= ZERO {
                ValueRange::atoms(NEG_INF, ZERO)
            } else {
                ValueRange::ANY
            }
        }
    }
}

#[cfg(test)]
mod tests;
