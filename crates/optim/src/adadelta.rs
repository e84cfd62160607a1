//! Adadelta with weight decay and maximize, as `torch.optim.Adadelta`.

use crate::spec::{KwargSpec, Resolved, Spec, flag, no_check};
use optjit_trace::{Definition, Domain, TraceError, Tracer};

pub(crate) const ADADELTA: Spec = Spec {
    name: "Adadelta",
    reference: "torch.optim.Adadelta",
    kwargs: &[
        KwargSpec::non_negative("lr", 1.0),
        KwargSpec::hyper("rho", Domain::unit_closed(), 0.9),
        KwargSpec::non_negative("eps", 1e-6),
        KwargSpec::non_negative("weight_decay", 0.0),
        KwargSpec::flag("maximize", false),
    ],
    check: no_check,
    trace,
};

/// The update, in PyTorch's order: `g = ±grad + wd*param` (no decay term when `wd` is 0);
/// `square_avg = rho*square_avg + (1-rho)*g*g`;
/// `delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g`;
/// `acc_delta = rho*acc_delta + (1-rho)*delta*delta`; `param -= lr*delta`.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("adadelta");
    let lr = t.hyper_in("lr", 1.0, Domain::non_negative());
    let rho = t.hyper_in("rho", 0.9, Domain::unit_closed());
    let eps = t.hyper_in("eps", 1e-6, Domain::non_negative());
    let weight_decay = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
    let square_avg = t.state("square_avg", 0.0);
    let acc_delta = t.state("acc_delta", 0.0);

    let param = t.param();
    let grad = if flag(r, "maximize") {
        -t.grad()
    } else {
        t.grad()
    };
    let g = crate::adam::l2_decay(&grad, &weight_decay, &param);
    let new_square_avg = &rho * &square_avg + (1.0 - &rho) * (&g * &g);
    let std = (&new_square_avg + &eps).sqrt();
    let delta = (&acc_delta + &eps).sqrt() / &std * &g;
    let new_acc_delta = &rho * &acc_delta + (1.0 - &rho) * (&delta * &delta);
    t.set_param(&param - &lr * &delta);
    t.set_state(&square_avg, new_square_avg);
    t.set_state(&acc_delta, new_acc_delta);
    t.finish()
}
