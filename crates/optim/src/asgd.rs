//! ASGD (averaged SGD) with weight decay and maximize, as `torch.optim.ASGD`.

use crate::spec::{KwargSpec, Resolved, Spec, flag, no_check};
use optjit_trace::{Definition, Domain, TraceError, Tracer, select};

pub(crate) const ASGD: Spec = Spec {
    name: "ASGD",
    reference: "torch.optim.ASGD",
    kwargs: &[
        KwargSpec::non_negative("lr", 1e-2),
        KwargSpec::hyper("lambd", Domain::finite(), 1e-4),
        KwargSpec::hyper("alpha", Domain::finite(), 0.75),
        KwargSpec::hyper("t0", Domain::finite(), 1e6),
        KwargSpec::non_negative("weight_decay", 0.0),
        KwargSpec::flag("maximize", false),
    ],
    check: no_check,
    trace,
};

/// The update, in PyTorch's order, with the scalar states `eta` and `mu` as the previous step
/// left them (`eta = lr`, `mu = 1` before the first): `g = ±grad + wd*param` (no decay term
/// when `wd` is 0);
/// `param *= 1 - lambd*eta`; `param -= eta*g`; `ax += (param - ax)*mu` if `mu != 1`, else
/// `ax = param`; then, for the next step, `eta = lr / (1 + lambd*lr*step)^alpha` and
/// `mu = 1 / max(1, step - t0)`.
/// PyTorch sets `eta` to the group's `lr` when the state is created; here the scalar state starts
/// at 0 and step 1 reads `lr` in its place.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("asgd");
    let lr = t.hyper_in("lr", 1e-2, Domain::non_negative());
    let lambd = t.hyper("lambd", 1e-4);
    let alpha = t.hyper("alpha", 0.75);
    let t0 = t.hyper("t0", 1e6);
    let weight_decay = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
    let ax = t.state("ax", 0.0);
    let eta_state = t.scalar_state("eta", 0.0);
    let mu = t.scalar_state("mu", 1.0);
    let step = t.step();

    let param = t.param();
    let grad = if flag(r, "maximize") {
        -t.grad()
    } else {
        t.grad()
    };
    let g = crate::adam::l2_decay(&grad, &weight_decay, &param);
    let eta = select(&step.eq(1.0), &lr, &eta_state);
    let decayed = &param * (1.0 - &lambd * &eta);
    let new_param = &decayed - &eta * &g;
    let new_ax = select(&mu.ne(1.0), &ax + (&new_param - &ax) * &mu, &new_param);
    let new_eta = &lr / (1.0 + &lambd * &lr * &step).pow(&alpha);
    let new_mu = 1.0 / (&step - &t0).max(1.0);
    t.set_param(new_param);
    t.set_state(&ax, new_ax);
    t.set_state(&eta_state, new_eta);
    t.set_state(&mu, new_mu);
    t.finish()
}
