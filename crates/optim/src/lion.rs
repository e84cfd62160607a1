//! Lion (sign of an interpolated momentum, decoupled weight decay), as `optax.lion`.

use crate::kwargs::Kwarg;
use crate::spec::{KwargKind, KwargSpec, Resolved, Spec, flag, no_check};
use optjit_trace::{Definition, Domain, TraceError, Tracer};

pub(crate) const LION: Spec = Spec {
    name: "Lion",
    reference: "optax.lion",
    kwargs: &[
        // optax's `learning_rate` (required there; 1e-4 is the paper's suggestion).
        KwargSpec::non_negative("lr", 1e-4),
        // optax's `b1`, `b2`.
        KwargSpec {
            name: "betas",
            kind: KwargKind::Pair(["beta1", "beta2"], Domain::unit_closed()),
            default: Kwarg::Pair(0.9, 0.99),
        },
        KwargSpec::non_negative("weight_decay", 1e-3),
        // optax's `mask` as a single boolean: False decays no parameter.
        KwargSpec::flag("mask", true),
    ],
    check: no_check,
    trace,
};

/// The update, in optax's order (`scale_by_lion`, `add_decayed_weights`,
/// `scale_by_learning_rate`): `u = sign(b1*m + (1-b1)*g)`; `m = b2*m + (1-b2)*g`;
/// `u += wd*param` (unless `mask` is False or `wd` is 0, as optax skips a zero decay);
/// `param -= lr*u`.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("lion");
    let lr = t.hyper_in("lr", 1e-4, Domain::non_negative());
    let beta1 = t.hyper_in("beta1", 0.9, Domain::unit_closed());
    let beta2 = t.hyper_in("beta2", 0.99, Domain::unit_closed());
    let weight_decay = t.hyper_in("weight_decay", 1e-3, Domain::non_negative());
    let exp_avg = t.state("exp_avg", 0.0);
    let (param, grad) = (t.param(), t.grad());

    let mut update = ((1.0 - &beta1) * &grad + &beta1 * &exp_avg).sign();
    let m = (1.0 - &beta2) * &grad + &beta2 * &exp_avg;
    if flag(r, "mask") {
        update = crate::adam::l2_decay(&update, &weight_decay, &param);
    }
    t.set_param(&param - &lr * &update);
    t.set_state(&exp_avg, m);
    t.finish()
}
