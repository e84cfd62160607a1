//! Adamax (Adam with the infinity norm) with weight decay and maximize, as
//! `torch.optim.Adamax`.

use crate::spec::{KwargSpec, Resolved, Spec, flag, no_check};
use optjit_trace::{Definition, Domain, TraceError, Tracer};

pub(crate) const ADAMAX: Spec = Spec {
    name: "Adamax",
    reference: "torch.optim.Adamax",
    kwargs: &[
        KwargSpec::non_negative("lr", 2e-3),
        KwargSpec::betas(0.9, 0.999),
        KwargSpec::non_negative("eps", 1e-8),
        KwargSpec::non_negative("weight_decay", 0.0),
        KwargSpec::flag("maximize", false),
    ],
    check: no_check,
    trace,
};

/// The update, in PyTorch's order: `g = ±grad + wd*param` (no decay term when `wd` is 0);
/// `exp_avg = lerp(exp_avg, g, 1-b1)`; `exp_inf = max(b2*exp_inf, |g| + eps)`;
/// `param -= lr / (1 - b1^step) * exp_avg / exp_inf`.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("adamax");
    let lr = t.hyper_in("lr", 2e-3, Domain::non_negative());
    let beta1 = t.hyper_in("beta1", 0.9, Domain::unit_half_open());
    let beta2 = t.hyper_in("beta2", 0.999, Domain::unit_half_open());
    let eps = t.hyper_in("eps", 1e-8, Domain::non_negative());
    let weight_decay = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
    let exp_avg = t.state("exp_avg", 0.0);
    let exp_inf = t.state("exp_inf", 0.0);
    let step = t.step();

    let param = t.param();
    let grad = if flag(r, "maximize") {
        -t.grad()
    } else {
        t.grad()
    };
    let g = crate::adam::l2_decay(&grad, &weight_decay, &param);
    let m = crate::adam::lerp(&exp_avg, &g, &(1.0 - &beta1));
    let u = (&beta2 * &exp_inf).max(g.abs() + &eps);
    let clr = &lr / (1.0 - beta1.pow(&step));
    t.set_param(&param - &clr * (&m / &u));
    t.set_state(&exp_avg, m);
    t.set_state(&exp_inf, u);
    t.finish()
}
