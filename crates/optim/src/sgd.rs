//! SGD with momentum, dampening, Nesterov momentum, weight decay and maximize, as
//! `torch.optim.SGD`.

use crate::spec::{Conflict, KwargSpec, Resolved, Spec, flag, number};
use optjit_trace::{Definition, Domain, TraceError, Tracer};

pub(crate) const SGD: Spec = Spec {
    name: "SGD",
    reference: "torch.optim.SGD",
    kwargs: &[
        KwargSpec::non_negative("lr", 1e-3),
        KwargSpec::non_negative("momentum", 0.0),
        KwargSpec::hyper("dampening", Domain::finite(), 0.0),
        KwargSpec::non_negative("weight_decay", 0.0),
        KwargSpec::flag("nesterov", false),
        KwargSpec::flag("maximize", false),
    ],
    check,
    trace,
};

/// PyTorch: "Nesterov momentum requires a momentum and zero dampening".
fn check(r: &Resolved) -> Result<(), Conflict> {
    if flag(r, "nesterov") && (number(r, "momentum") <= 0.0 || number(r, "dampening") != 0.0) {
        let got = format!(
            "True with momentum={} dampening={}",
            number(r, "momentum"),
            number(r, "dampening")
        );
        return Err((
            "nesterov",
            "used with momentum > 0 and dampening = 0".into(),
            got,
        ));
    }
    Ok(())
}

/// The update, in PyTorch's order:
/// `d = ±grad + wd*param` (no decay term when `wd` is 0); `buf = momentum*buf + (1-dampening)*d` (the first step takes `d`
/// undampened); `d = d + momentum*buf` (Nesterov) or `d = buf`; `param -= lr*d`.
/// A momentum of exactly 0 selects the buffer-free variant (PyTorch makes the same choice per
/// step). The choice is structural here: the traced momentum's domain excludes crossing zero, so
/// `set_hyper` or a group override that would switch variants is refused, never silently wrong.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("sgd");
    let lr = t.hyper_in("lr", 1e-3, Domain::non_negative());
    let configured_momentum = number(r, "momentum");
    let momentum_domain = if configured_momentum == 0.0 {
        Domain {
            max: 0.0,
            ..Domain::non_negative()
        }
        .with_note(
            "momentum 0 or not is chosen when the optimizer is built: build one with momentum > 0 to use momentum",
        )
    } else {
        Domain {
            min_inclusive: false,
            ..Domain::non_negative()
        }
        .with_note(
            "momentum 0 or not is chosen when the optimizer is built: build one with momentum 0 to leave it out",
        )
    };
    let momentum = t.hyper_in("momentum", configured_momentum, momentum_domain);
    let dampening = t.hyper("dampening", 0.0);
    let weight_decay = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
    let param = t.param();
    let grad = if flag(r, "maximize") {
        -t.grad()
    } else {
        t.grad()
    };

    let mut d = crate::adam::l2_decay(&grad, &weight_decay, &param);
    if configured_momentum != 0.0 {
        let buf = t.state("momentum_buffer", 0.0);
        // On the first step PyTorch sets buf = d; with buf starting at 0 these coefficients give
        // exactly that, and the choice is made once per step in the scalar program.
        let first = t.step().eq(1.0);
        let keep = optjit_trace::select(&first, 0.0, &momentum);
        let take = optjit_trace::select(&first, 1.0, 1.0 - &dampening);
        let new_buf = &keep * &buf + &take * &d;
        d = if flag(r, "nesterov") {
            &d + &momentum * &new_buf
        } else {
            new_buf.clone()
        };
        t.set_state(&buf, new_buf);
    }
    t.set_param(&param - &lr * &d);
    t.finish()
}
