//! The transfer functions checked against arithmetic: every op on values from every atom (and
//! next to every landmark, subnormals, the largest floats), in f64 and in f32, gives a value
//! its range allows; and the facts the rules need are proven.

use super::*;
use optjit_ir::{Cmp, eval_op};

/// Values in every atom, near every landmark, in both formats.
const SAMPLES: &[f64] = &[
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -0.5,
    2.0,
    -2.0,
    3.0,
    -3.0,
    0.999,
    1.001,
    -0.999,
    -1.001,
    1.0 - f64::EPSILON / 2.0, // the f64 below 1 (1 in f32)
    1.0 + f64::EPSILON,
    -1.0 + f64::EPSILON / 2.0,
    1.0 - f32::EPSILON as f64 / 2.0, // the f32 below 1
    1.0 + f32::EPSILON as f64,
    1e-310, // f64 subnormal (0 in f32)
    -1e-310,
    1e-40, // f32 subnormal
    -1e-40,
    f64::MIN_POSITIVE,
    1e-30,
    -1e-30,
    1e30,
    -1e30,
    1e300,
    -1e300,
    f32::MAX as f64,
    f64::MAX,
    -f64::MAX,
];

/// The smaller pool for ops of three operands.
const FEW: &[f64] = &[
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -0.5,
    3.0,
    -3.0,
    1.0 - f64::EPSILON / 2.0,
    1e-310,
    1e-40,
    1e300,
    f64::MAX,
];

/// `op` in f32 on f32 operands, as a kernel computes it.
fn eval_f32(op: &Op, x: &[f32]) -> f32 {
    let arg = |i: usize| x.get(i).copied().unwrap_or(f32::NAN);
    let (a, b, c) = (arg(0), arg(1), arg(2));
    match op {
        Op::Unary(u) => match u {
            Unary::Neg => -a,
            Unary::Sqrt => a.sqrt(),
            Unary::Rsqrt => 1.0 / a.sqrt(),
            Unary::Exp => a.exp(),
            Unary::Log => a.ln(),
            Unary::Abs => a.abs(),
            Unary::Sin => a.sin(),
            Unary::Cos => a.cos(),
            Unary::Floor => a.floor(),
            Unary::Sign => eval_op(op, &[f64::from(a)]) as f32,
        },
        Op::Binary(bin) => match bin {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Pow => a.powf(b),
            // The result is one of the operands.
            Binary::Min | Binary::Max => eval_op(op, &[f64::from(a), f64::from(b)]) as f32,
        },
        Op::Fma => a.mul_add(b, c),
        other => eval_op(other, &[f64::from(a), f64::from(b), f64::from(c)]) as f32,
    }
}

/// `op`'s result as `torch.pow` gives it when `op` is `pow` (`x ^ 0.5` is `sqrt(x)`, `x ^ -0.5`
/// is `1 / sqrt(x)`), else its f64 result.
fn torch_pow(op: &Op, x: &[f64]) -> f64 {
    let (Op::Binary(Binary::Pow), &[a, b]) = (op, x) else {
        return eval_op(op, x);
    };
    if b == 0.5 {
        a.sqrt()
    } else if b == -0.5 {
        1.0 / a.sqrt()
    } else {
        eval_op(op, x)
    }
}

/// Checks `op` on every assignment of `pool` to its operands, in f64 and f32, each operand
/// given its constant range (or the square's, for a repeated first operand).
fn check(op: &Op, pool: &[f64]) -> usize {
    let mut all: Vec<Vec<f64>> = vec![Vec::new()];
    for _ in 0..op.arity() {
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
    let mut checked = 0;
    for values in all {
        let narrow: Vec<f64> = values.iter().map(|&x| f64::from(x as f32)).collect();
        for (values, result) in [
            (values.clone(), eval_op(op, &values)),
            (narrow.clone(), {
                let f: Vec<f32> = narrow.iter().map(|&x| x as f32).collect();
                f64::from(eval_f32(op, &f))
            }),
            // `torch.pow`'s exponents ±0.5, whichever `pow` the interpreter has.
            (values.clone(), torch_pow(op, &values)),
        ] {
            let ranges: Vec<ValueRange> = values.iter().map(|&x| ValueRange::constant(x)).collect();
            let same = values.len() >= 2 && values[0].to_bits() == values[1].to_bits();
            let range = ValueRange::of_op(op, &ranges, same);
            assert!(
                range.contains(result),
                "{op:?} of {values:?} is {result:e}, outside {range} (from {ranges:?})"
            );
            if same {
                // The general product must allow it too.
                let general = ValueRange::of_op(op, &ranges, false);
                assert!(general.contains(result), "{op:?} of {values:?}: {general}");
            }
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_unary_op_stays_in_its_range() {
    for &u in Unary::ALL {
        assert!(check(&Op::Unary(u), SAMPLES) >= 3 * SAMPLES.len());
    }
}

#[test]
fn every_binary_op_stays_in_its_range() {
    for &b in Binary::ALL {
        assert!(check(&Op::Binary(b), SAMPLES) >= 3 * SAMPLES.len().pow(2));
    }
    for &c in Cmp::ALL {
        check(&Op::Cmp(c), SAMPLES);
    }
}

#[test]
fn fma_select_and_casts_stay_in_their_ranges() {
    assert!(check(&Op::Fma, FEW) >= 3 * FEW.len().pow(3));
    check(&Op::Select, FEW);
    for d in [DType::F32, DType::F64, DType::F16, DType::BF16, DType::Bool] {
        check(&Op::Cast(d), SAMPLES);
    }
}

#[test]
fn a_host_value_rounded_for_a_kernel_stays_in_its_range() {
    for &x in SAMPLES {
        let r = ValueRange::constant(x).crossing(Class::Scalar, Class::Elem);
        assert!(
            r.contains(f64::from(x as f32)),
            "{x:e} in f32 is outside {r}"
        );
    }
}

#[test]
fn constants_and_domains() {
    assert_eq!(ValueRange::constant(0.5).to_string(), "(0, 1)");
    assert_eq!(ValueRange::constant(-0.0).to_string(), "[0, 0]");
    assert_eq!(ValueRange::constant(f64::NAN), ValueRange::NAN_ONLY);
    assert_eq!(
        ValueRange::between(0.0, true, 1.0, false).to_string(),
        "[0, 1)"
    );
    assert_eq!(
        ValueRange::between(0.0, false, 1.0, true).to_string(),
        "(0, 1]"
    );
    // The domain `a finite number >= 0`.
    let non_negative = ValueRange::between(0.0, true, f64::MAX, true);
    assert_eq!(non_negative.to_string(), "[0, inf)");
    assert!(non_negative.is_finite() && !non_negative.is_positive());
    assert!(ValueRange::between(1e-12, true, 5.0, true).is_positive());
    assert!(!ValueRange::between(f64::MIN, true, f64::MAX, true).is_non_negative());
    // Promises that cannot be kept prove nothing.
    assert_eq!(ValueRange::between(2.0, true, 1.0, true), ValueRange::ANY);
    assert_eq!(
        ValueRange::between(f64::NAN, true, 1.0, true),
        ValueRange::ANY
    );
    assert_eq!(ValueRange::between(1.0, false, 1.0, true), ValueRange::ANY);
    assert!(ValueRange::NAN_ONLY.contains(f64::NAN) && !ValueRange::NAN_ONLY.contains(0.0));
}

fn un(u: Unary, a: ValueRange) -> ValueRange {
    ValueRange::of_op(&Op::Unary(u), &[a], false)
}

fn bin(b: Binary, x: ValueRange, y: ValueRange) -> ValueRange {
    ValueRange::of_op(&Op::Binary(b), &[x, y], false)
}

#[test]
fn bias_corrections_of_a_beta_in_the_unit_interval_are_positive_and_finite() {
    let beta = ValueRange::between(0.0, true, 1.0, false);
    let step = ValueRange::of_input(&Input::Step, &BTreeMap::new());
    let power = bin(Binary::Pow, beta, step);
    assert_eq!(power.to_string(), "[0, 1)");
    let bias_correction = bin(Binary::Sub, ValueRange::constant(1.0), power);
    assert_eq!(bias_correction.to_string(), "(0, 1]");
    assert!(bias_correction.is_positive() && bias_correction.is_finite());
    // Its reciprocal is positive but may overflow; a scalar read by a kernel may round to 0.
    let reciprocal = bin(Binary::Div, ValueRange::constant(1.0), bias_correction);
    assert_eq!(reciprocal.to_string(), "[1, inf]");
    assert_eq!(
        bias_correction
            .crossing(Class::Scalar, Class::Elem)
            .to_string(),
        "[0, 1]"
    );
    // Without the domain nothing is proven: beta may be 3 (1 - 3^step < 0) or -1.
    let any_power = bin(Binary::Pow, ValueRange::ANY, step);
    assert!(!bin(Binary::Sub, ValueRange::constant(1.0), any_power).is_non_negative());
}

#[test]
fn sources_of_non_negative_values() {
    let any = ValueRange::ANY;
    let positive = ValueRange::between(0.0, false, f64::MAX, true);
    let non_negative = ValueRange::NON_NEGATIVE;
    assert!(un(Unary::Sqrt, any).is_non_negative());
    assert!(un(Unary::Exp, any).is_non_negative());
    assert!(un(Unary::Abs, any).is_non_negative());
    assert!(ValueRange::of_op(&Op::Binary(Binary::Mul), &[any, any], true).is_non_negative());
    assert!(!bin(Binary::Mul, any, any).is_non_negative());
    assert!(bin(Binary::Max, any, positive).is_positive());
    assert!(!bin(Binary::Min, any, positive).is_non_negative());
    assert!(bin(Binary::Add, non_negative, non_negative).is_non_negative());
    assert!(bin(Binary::Mul, non_negative, non_negative).is_non_negative());
    assert!(bin(Binary::Div, non_negative, positive).is_non_negative());
    // A sum with a positive term stays positive; a product of positives may underflow to 0.
    assert!(bin(Binary::Add, non_negative, positive).is_positive());
    assert!(!bin(Binary::Mul, positive, positive).is_positive());
    assert!(un(Unary::Sqrt, positive).is_positive());
    let fma = ValueRange::of_op(&Op::Fma, &[any, any, positive], true);
    assert!(fma.is_positive(), "{fma}");
    // -0 is non-negative but not positive, and 1 / -0 is -inf.
    assert!(ValueRange::constant(-0.0).is_non_negative());
    assert!(!ValueRange::constant(-0.0).is_positive());
    assert!(!un(Unary::Rsqrt, non_negative).is_non_negative());
    assert!(un(Unary::Rsqrt, positive).is_non_negative());
    // pow(-0, -1) is -inf; a positive base is safe under any exponent.
    assert!(!bin(Binary::Pow, non_negative, any).is_non_negative());
    assert!(bin(Binary::Pow, positive, any).is_non_negative());
    // pow(NaN, 0) and pow(1, NaN) are 1.
    let one = ValueRange::constant(1.0);
    assert!(bin(Binary::Pow, ValueRange::NAN_ONLY, ValueRange::constant(0.0)).contains(1.0));
    assert!(bin(Binary::Pow, one, ValueRange::NAN_ONLY).contains(1.0));
}
