//! LARS (layer-wise trust ratio, then heavy-ball momentum on the scaled update), as
//! `optax.lars`.

use crate::kwargs::Kwarg;
use crate::spec::{Conflict, KwargKind, KwargSpec, Resolved, Spec, flag};
use optjit_trace::{Definition, Domain, TraceError, Tracer};

pub(crate) const LARS: Spec = Spec {
    name: "LARS",
    reference: "optax.lars",
    kwargs: &[
        // optax's `learning_rate` (required there).
        KwargSpec {
            name: "lr",
            kind: KwargKind::Hyper(Domain::non_negative()),
            default: Kwarg::Number(1e-3),
        },
        KwargSpec {
            name: "weight_decay",
            kind: KwargKind::Hyper(Domain::non_negative()),
            default: Kwarg::Number(0.0),
        },
        // optax's `weight_decay_mask` as a single boolean: False decays no parameter.
        KwargSpec {
            name: "weight_decay_mask",
            kind: KwargKind::Flag,
            default: Kwarg::Bool(true),
        },
        KwargSpec {
            name: "trust_coefficient",
            kind: KwargKind::Hyper(Domain::non_negative()),
            default: Kwarg::Number(1e-3),
        },
        KwargSpec {
            name: "eps",
            kind: KwargKind::Hyper(Domain::non_negative()),
            default: Kwarg::Number(0.0),
        },
        // optax's `trust_ratio_mask` as a single boolean: False scales no parameter.
        KwargSpec {
            name: "trust_ratio_mask",
            kind: KwargKind::Flag,
            default: Kwarg::Bool(true),
        },
        KwargSpec {
            name: "momentum",
            kind: KwargKind::Hyper(Domain::non_negative()),
            default: Kwarg::Number(0.9),
        },
        KwargSpec {
            name: "nesterov",
            kind: KwargKind::Flag,
            default: Kwarg::Bool(false),
        },
    ],
    check: no_check,
    trace,
};

fn no_check(_: &Resolved) -> Result<(), Conflict> {
    Ok(())
}

/// The update, in optax's order (`add_decayed_weights`, `scale_by_trust_ratio`,
/// `scale_by_learning_rate`, `trace`): `u = g + wd*param` (unless `weight_decay_mask` is
/// False); per tensor (unless `trust_ratio_mask` is False)
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
        update = &update + &weight_decay * &param;
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
