//! LAMB (Adam moments scaled per tensor by a trust ratio), as `optax.lamb`.

use crate::spec::{KwargSpec, Resolved, Spec, flag, no_check};
use optjit_trace::{Definition, Domain, TraceError, Tracer, Value, select};

pub(crate) const LAMB: Spec = Spec {
    name: "LAMB",
    reference: "optax.lamb",
    kwargs: &[
        // optax's `learning_rate` (required there).
        KwargSpec::non_negative("lr", 1e-3),
        // optax's `b1`, `b2`.
        KwargSpec::betas(0.9, 0.999),
        KwargSpec::non_negative("eps", 1e-6),
        KwargSpec::non_negative("eps_root", 0.0),
        KwargSpec::non_negative("weight_decay", 0.0),
        // optax's `mask` as a single boolean: False decays no parameter.
        KwargSpec::flag("mask", true),
    ],
    check: no_check,
    trace,
};

/// optax's `scale_by_trust_ratio` with `min_norm = 0`: `u * coefficient*|param|/(|u| + eps)`,
/// or `u` itself when either norm is zero (per tensor).
pub(crate) fn trust_ratio(
    param: &Value,
    update: &Value,
    coefficient: &Value,
    eps: &Value,
) -> Value {
    let (param_norm, update_norm) = (param.norm(), update.norm());
    let ratio = coefficient * &param_norm / (&update_norm + eps);
    let safe = select(
        &param_norm.eq(0.0),
        1.0,
        select(&update_norm.eq(0.0), 1.0, &ratio),
    );
    update * safe
}

/// The update, in optax's order (`scale_by_adam`, `add_decayed_weights`,
/// `scale_by_trust_ratio`, `scale_by_learning_rate`): `m = b1*m + (1-b1)*g`;
/// `v = b2*v + (1-b2)*g*g`; `u = (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step) + eps_root) + eps)`;
/// `u += wd*param` (unless `mask` is False or `wd` is 0); per tensor, `trust = |param| / |u|`, or 1 when
/// either norm is zero; `param -= lr * trust * u`.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("lamb");
    let lr = t.hyper_in("lr", 1e-3, Domain::non_negative());
    let beta1 = t.hyper_in("beta1", 0.9, Domain::unit_half_open());
    let beta2 = t.hyper_in("beta2", 0.999, Domain::unit_half_open());
    let eps = t.hyper_in("eps", 1e-6, Domain::non_negative());
    let eps_root = t.hyper_in("eps_root", 0.0, Domain::non_negative());
    let weight_decay = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
    let (exp_avg, exp_avg_sq) = (t.state("exp_avg", 0.0), t.state("exp_avg_sq", 0.0));
    let (param, grad, step) = (t.param(), t.grad(), t.step());

    let m = (1.0 - &beta1) * &grad + &beta1 * &exp_avg;
    let v = (1.0 - &beta2) * (&grad * &grad) + &beta2 * &exp_avg_sq;
    let m_hat = &m / (1.0 - beta1.pow(&step));
    let v_hat = &v / (1.0 - beta2.pow(&step));
    let mut update = &m_hat / ((&v_hat + &eps_root).sqrt() + &eps);
    if flag(r, "mask") {
        update = crate::adam::l2_decay(&update, &weight_decay, &param);
    }
    let one = t.constant(1.0);
    let zero = t.constant(0.0);
    let update = trust_ratio(&param, &update, &one, &zero);
    t.set_param(&param - &lr * &update);
    t.set_state(&exp_avg, m);
    t.set_state(&exp_avg_sq, v);
    t.finish()
}
