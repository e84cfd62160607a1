//! Every class of `.step` error a user can make, with the message it gets: where
//! (`file:line:col`), the offending text, and what was expected.

use optjit_trace::Tracer;
use optjit_trace::step::{StepError, load};

/// The error of loading `source` as `t.step` (and applying its schedule to a plain SGD).
fn error(source: &str) -> StepError {
    let loaded = match load("t.step", source) {
        Err(e) => return e,
        Ok(loaded) => loaded,
    };
    let t = Tracer::new("sgd");
    let lr = t.hyper("lr", 0.1);
    let momentum = t.hyper("momentum", 0.9);
    let (param, grad) = (t.param(), t.grad());
    t.set_param(&param - &lr * &momentum * &grad);
    let sgd = t.finish().expect("traces");
    match loaded.schedules.first().map(|s| s.apply(&sgd)) {
        Some(Err(e)) => e,
        _ => panic!("no error for:\n{source}"),
    }
}

/// Checks the error's place, offending text and message.
fn check(source: &str, line: u32, col: u32, text: &str, message: &str) {
    let e = error(source);
    assert_eq!(
        (e.span.line, e.span.col, e.text.as_str()),
        (line, col, text),
        "{e}"
    );
    assert_eq!(e.message, message, "{e}");
}

fn optimizer(body: &str) -> String {
    format!("optimizer o {{\n  hyper lr = 0.1\n  state m = 0\n{body}\n}}\n")
}

#[test]
fn unknown_names_come_with_a_suggestion() {
    check(
        &optimizer("  param = param - lr * gard"),
        4,
        24,
        "gard",
        "unknown name 'gard'; did you mean 'grad'?",
    );
    check(
        &optimizer("  param = param - lr * sgin(grad)"),
        4,
        24,
        "sgin",
        "unknown function 'sgin'; did you mean 'sign'?",
    );
    check(
        &optimizer("  param = param - lr * velocity"),
        4,
        24,
        "velocity",
        "unknown name 'velocity'",
    );
}

#[test]
fn assignments_need_a_declared_target() {
    check(
        &optimizer("  exp_avg = grad\n  param = param - lr * exp_avg"),
        4,
        3,
        "exp_avg",
        "assignment to undeclared state 'exp_avg'; declare it first: `state exp_avg = 0`",
    );
    check(
        &optimizer("  lr = 0.5\n  param = param - lr * grad"),
        4,
        3,
        "lr",
        "'lr' is a hyperparameter, read-only in an optimizer (a schedule sets it)",
    );
    check(
        "optimizer o {\n  hyper lr = 0.1\n  let u = lr * grad\n}\n",
        1,
        11,
        "o",
        "optimizer 'o' never assigns param",
    );
}

#[test]
fn names_are_used_after_their_definition() {
    check(
        &optimizer("  let a = b * grad\n  let b = 2\n  param = param - a"),
        4,
        11,
        "b",
        "'b' is used before its definition at 5:7",
    );
    check(
        &optimizer("  param = param - lr * t * grad"),
        4,
        24,
        "t",
        "'t' is a schedule's step index; an optimizer reads `step`, the tensor's own count",
    );
}

#[test]
fn declarations_are_unique_and_not_reserved() {
    check(
        &optimizer("  hyper lr = 0.2\n  param = param - lr * grad"),
        4,
        9,
        "lr",
        "'lr' is already declared at 2:9",
    );
    check(
        &optimizer("  state grad = 0\n  param = param - lr * grad"),
        4,
        9,
        "grad",
        "'grad' is reserved (an input)",
    );
    check(
        &optimizer("  hyper sqrt = 1\n  param = param - lr * grad"),
        4,
        9,
        "sqrt",
        "'sqrt' is a function name",
    );
    check(
        &optimizer("  hyper eps = lr * 2\n  param = param - lr * grad"),
        4,
        15,
        "lr",
        "expected a constant (a number, `pi`, or arithmetic on them)",
    );
}

#[test]
fn types_and_shapes_are_checked() {
    check(
        &optimizer("  param = param * (grad < 0)"),
        4,
        19,
        "(grad < 0)",
        "a comparison result cannot be used as a number; use where(condition, a, b)",
    );
    check(
        &optimizer("  param = grad > 0"),
        4,
        11,
        "grad > 0",
        "a comparison result cannot be assigned; use where(condition, a, b)",
    );
    check(
        &optimizer("  param = where(grad, 1, 2)"),
        4,
        17,
        "grad",
        "where's first argument must be a comparison (`a < b`, ...)",
    );
    check(
        &optimizer("  param = sqrt(param, grad)"),
        4,
        11,
        "sqrt",
        "sqrt takes 1 argument, got 2",
    );
    check(
        &optimizer("  param = param - cos(grad)"),
        4,
        19,
        "cos(grad)",
        "cos runs only on scalars (hyperparameters, step, scalar states), not on per-element or per-tensor values",
    );
    check(
        &optimizer("  param = param - norm(lr)"),
        4,
        24,
        "lr",
        "norm reduces a per-element value; this one is not per element",
    );
    check(
        "optimizer o {\n  state s: scalar = 0\n  s = grad\n  param = param - s\n}\n",
        3,
        3,
        "s",
        "scalar state 's' cannot hold a per-element value; it takes scalar values only \
         (hyperparameters, step, scalar states)",
    );
}

#[test]
fn schedules_set_hyperparameters_without_reductions() {
    check(
        "schedule s {\n  lr = lr * norm(lr)\n}\n",
        2,
        13,
        "norm",
        "reductions are not available in a schedule",
    );
    check(
        "schedule s {\n  lrr = 0.1\n}\n",
        2,
        3,
        "lrr",
        "'lrr' is not a hyperparameter of optimizer 'sgd' (it has lr, momentum); did you mean 'lr'?",
    );
    check(
        "schedule s {\n  state n = 0\n  lr = lr\n}\n",
        2,
        9,
        "n",
        "a schedule keeps scalar state only: `state n: scalar = ...`",
    );
    check(
        "schedule s {\n  lr = lr * grad\n}\n",
        2,
        13,
        "grad",
        "unknown name 'grad'",
    );
    check(
        "schedule s {\n  lr = lr * step\n}\n",
        2,
        13,
        "step",
        "a schedule reads `t`, the 0-based index of the step about to be taken",
    );
    check(
        &optimizer("  param = param - lr * metric * grad"),
        4,
        24,
        "metric",
        "`metric` is read by a schedule (ReduceLROnPlateau-style), not by an optimizer",
    );
    check(
        "schedule s {\n  hyper momentum = 0.5\n  lr = lr\n}\n",
        2,
        9,
        "momentum",
        "'momentum' is already defined (by a `let`, or as the optimizer's hyperparameter)",
    );
}

#[test]
fn errors_print_the_place_the_line_and_a_caret() {
    let e = error(&optimizer("  param = param - lr * gard"));
    assert_eq!(
        e.to_string(),
        "t.step:4:24: unknown name 'gard'; did you mean 'grad'?\n\
         \x20     param = param - lr * gard\n\
         \x20                          ^^^^"
    );
}

#[test]
fn alias_statements_name_a_tensor_state_once() {
    let body = |alias: &str| optimizer(&format!("  {alias}\n  param = param - lr * grad"));
    check(
        &body("alias v = w when rank < 2"),
        4,
        13,
        "w",
        "'w' is not a per-element, row or column state declared above",
    );
    check(
        &body("alias m = m when rank < 2"),
        4,
        9,
        "m",
        "'m' is already declared at 3:9",
    );
    check(
        &body("alias v = m when size < 2"),
        4,
        20,
        "size",
        "expected `rank` (alias NAME = STATE when rank < N), found `size`",
    );
    check(
        &body("alias v = m when rank < 0.5"),
        4,
        27,
        "0.5",
        "expected a whole number of dimensions from 1 to 64, found `0.5`",
    );
    check(
        "schedule s {\n  alias v = lr when rank < 2\n  lr = lr\n}\n",
        2,
        9,
        "v",
        "a schedule keeps no tensor state to alias",
    );
}
