//! Adagrad with learning-rate decay, weight decay, an initial accumulator value and maximize, as
//! `torch.optim.Adagrad`.

use crate::spec::{KwargSpec, Resolved, Spec, flag, no_check};
use optjit_trace::{Definition, Domain, TraceError, Tracer};

pub(crate) const ADAGRAD: Spec = Spec {
    name: "Adagrad",
    reference: "torch.optim.Adagrad",
    kwargs: &[
        KwargSpec::non_negative("lr", 1e-2),
        KwargSpec::non_negative("lr_decay", 0.0),
        KwargSpec::non_negative("weight_decay", 0.0),
        KwargSpec::non_negative("initial_accumulator_value", 0.0),
        KwargSpec::non_negative("eps", 1e-10),
        KwargSpec::flag("maximize", false),
    ],
    check: no_check,
    trace,
};

/// The update, in PyTorch's order: `g = ±grad + wd*param` (no decay term when `wd` is 0);
/// `clr = lr / (1 + (step-1)*lr_decay)`; `sum += g*g`; `param -= clr * g / (sqrt(sum) + eps)`.
/// PyTorch fills `sum` with the group's `initial_accumulator_value` when the optimizer is built;
/// here the buffer starts at 0 and step 1 reads the hyperparameter in its place, so a param
/// group's own value is honoured.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("adagrad");
    let lr = t.hyper_in("lr", 1e-2, Domain::non_negative());
    let lr_decay = t.hyper_in("lr_decay", 0.0, Domain::non_negative());
    let weight_decay = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
    let initial = t.hyper_in("initial_accumulator_value", 0.0, Domain::non_negative());
    let eps = t.hyper_in("eps", 1e-10, Domain::non_negative());
    let sum = t.state("sum", 0.0);
    let step = t.step();

    let param = t.param();
    let grad = if flag(r, "maximize") {
        -t.grad()
    } else {
        t.grad()
    };
    let g = crate::adam::l2_decay(&grad, &weight_decay, &param);
    let clr = &lr / (1.0 + (&step - 1.0) * &lr_decay);
    let previous = optjit_trace::select(&step.eq(1.0), &initial, &sum);
    let new_sum = &previous + &g * &g;
    let std = new_sum.sqrt() + &eps;
    t.set_param(&param - &clr * (&g / &std));
    t.set_state(&sum, new_sum);
    t.finish()
}
