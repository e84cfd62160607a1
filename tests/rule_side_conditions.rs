//! Rewrite rules that hold only for some values of a scalar (a square root split over a
//! product or quotient needs the scalar positive) fire only where the e-graph proves the
//! condition: a `.step` program with a negative hyperparameter steps to the values it says.

use optjit::{Definition, Optimizer, Setup};

/// The `optimizer` block of `source`.
fn definition(source: &str) -> Definition {
    optjit::trace::step::load("side_conditions.step", source)
        .expect("the program loads")
        .optimizer
        .expect("an optimizer block")
}

/// One CPU step of `source` on the one tensor `param`, with gradient `grad`.
fn step_once(source: &str, param: &[f32], grad: &[f32]) -> Vec<f32> {
    let definition = definition(source);
    let setup = Setup {
        shapes: vec![vec![param.len()]],
        ..Setup::default()
    };
    let mut optimizer = Optimizer::new(&definition, setup).expect("compiles");
    let mut params = vec![param.to_vec()];
    optimizer
        .step(&mut params, &[grad.to_vec()])
        .expect("steps");
    params.remove(0)
}

#[test]
fn square_root_of_a_gradient_divided_by_a_negative_hyperparameter() {
    // The program: sqrt(grad / -1) of [-4, -1] is [2, 1]; splitting the root into
    // sqrt(grad) * rsqrt(k) gave NaN.
    let source = "optimizer s { hyper k = -1  param = sqrt(grad / k) }";
    assert_eq!(
        step_once(source, &[0.0, 0.0], &[-4.0, -1.0]),
        vec![2.0, 1.0]
    );
}

#[test]
fn square_root_of_a_gradient_times_a_negative_hyperparameter() {
    // The scaling by `lr` is what makes sqrt(grad) * (sqrt(k) * lr) the cheaper form.
    let source = "optimizer s { hyper k = -4  hyper lr = 0.5  param = lr * sqrt(grad * k) }";
    assert_eq!(
        step_once(source, &[0.0, 0.0], &[-4.0, -1.0]),
        vec![2.0, 1.0]
    );
}

#[test]
fn square_root_over_a_bias_correction_of_an_unchecked_beta() {
    // `1 - beta^step` is positive only for beta in [0, 1); a `.step` hyperparameter has no
    // domain, so beta = 3 must not be assumed away: 1 - 3 = -2 and sqrt(-8 / -2) = 2.
    let source = "optimizer s {
      hyper beta = 3
      param = sqrt(grad / (1 - pow(beta, step)))
    }";
    assert_eq!(step_once(source, &[0.0], &[-8.0]), vec![2.0]);
}
