//! LARS (layer-wise trust ratio, then heavy-ball momentum on the scaled update), as
//! `optax.lars`.

use crate::spec::{KwargSpec, Resolved, Spec, flag, no_check};
use optjit_trace::{Definition, Domain, TraceError, Tracer};

pub(crate) const LARS: Spec = Spec {
    name: "LARS",
    reference: "optax.lars",
    kwargs: &[
        // optax's `learning_rate` (required there).
        KwargSpec::non_negative("lr", 1e-3),
        KwargSpec::non_negative("weight_decay", 0.0),
        // optax's `weight_decay_mask` as a single boolean: False decays no parameter.
        KwargSpec::flag("weight_decay_mask", true),
        KwargSpec::non_negative("trust_coefficient", 1e-3),
        KwargSpec::non_negative("eps", 0.0),
        // optax's `trust_ratio_mask` as a single boolean: False scales no parameter.
        KwargSpec::flag("trust_ratio_mask", true),
        KwargSpec::non_negative("momentum", 0.9),
        KwargSpec::flag("nesterov", false),
    ],
    check: no_check,
    trace,
};

/// The update, in optax's order (`add_decayed_weights`, `scale_by_trust_ratio`,
/// `scale_by_learning_rate`, `trace`): `u = g + wd*param` (unless `weight_decay_mask` is
/// False or `wd` is 0); per tensor (unless `trust_ratio_mask` is False)
/// `u *= trust_coefficient*|param| / (|u| + eps)`, or `u` unchanged when either norm is zero;
/// `u = -lr*u`; `trace = u + momentum*trace`; `u = u + momentum*trace` (Nesterov) or
/// `u = trace`; `param += u`.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("lars");
    let lr = t.hyper_in("lr", 1e-3, Domain::non_negative());
    let weight_decay = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
    let trust_coefficient = t.hyper_in("trust_coefficient", 1e-3, Domain::non_negative());
    let eps = t.hyper_in("eps", 0.0, Domain::non_negative());
    let momentum = t.hyper_in("momentum", 0.9, Domain::non_negative());
    let trace = t.state("trace", 0.0);
    let (param, grad) = (t.param(), t.grad());

    let mut update = grad;
    if flag(r, "weight_decay_mask") {
        update = crate::adam::l2_decay(&update, &weight_decay, &param);
    }
    if flag(r, "trust_ratio_mask") {
        update = crate::lamb::trust_ratio(&param, &update, &trust_coefficient, &eps);
    }
    let update = -(&lr * &update);
    let new_trace = &update + &momentum * &trace;
    let update = if flag(r, "nesterov") {
        &update + &momentum * &new_trace
    } else {
        new_trace.clone()
    };
    t.set_param(&param + &update);
    t.set_state(&trace, new_trace);
    t.finish()
}
