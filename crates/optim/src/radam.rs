//! RAdam (Adam with the variance of the adaptive learning rate rectified), as
//! `torch.optim.RAdam`.

use crate::spec::{KwargSpec, Resolved, Spec, flag, no_check};
use optjit_trace::{Definition, Domain, TraceError, Tracer, select};

pub(crate) const RADAM: Spec = Spec {
    name: "RAdam",
    reference: "torch.optim.RAdam",
    kwargs: &[
        KwargSpec::non_negative("lr", 1e-3),
        KwargSpec::betas(0.9, 0.999),
        KwargSpec::non_negative("eps", 1e-8),
        KwargSpec::non_negative("weight_decay", 0.0),
        KwargSpec::flag("decoupled_weight_decay", false),
        KwargSpec::flag("maximize", false),
    ],
    check: no_check,
    trace,
};

/// The update, in PyTorch's order (`_single_tensor_radam`): `g = ±grad`; decoupled decay
/// `param *= 1 - lr*wd` or L2 decay `g += wd*param` (neither when `wd` is 0); `m = lerp(m, g, 1-b1)`;
/// `v = b2*v + (1-b2)*g*g`; `m_hat = m / (1 - b1^step)`; `rho_inf = 2/(1-b2) - 1`;
/// `rho_t = rho_inf - 2*step*b2^step / (1 - b2^step)`; if `rho_t > 5` (a per-step scalar
/// choice): `rect = sqrt((rho_t-4)(rho_t-2)rho_inf / ((rho_inf-4)(rho_inf-2)rho_t))`,
/// `param -= m_hat * lr * sqrt(1 - b2^step)/(sqrt(v) + eps) * rect`; otherwise
/// `param -= m_hat * lr`.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("radam");
    let lr = t.hyper_in("lr", 1e-3, Domain::non_negative());
    let beta1 = t.hyper_in("beta1", 0.9, Domain::unit_half_open());
    let beta2 = t.hyper_in("beta2", 0.999, Domain::unit_half_open());
    let eps = t.hyper_in("eps", 1e-8, Domain::non_negative());
    let weight_decay = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
    let (exp_avg, exp_avg_sq) = (t.state("exp_avg", 0.0), t.state("exp_avg_sq", 0.0));
    let step = t.step();

    let mut param = t.param();
    let mut grad = if flag(r, "maximize") {
        -t.grad()
    } else {
        t.grad()
    };
    if flag(r, "decoupled_weight_decay") {
        param = &param * (1.0 - &lr * &weight_decay);
    } else {
        grad = crate::adam::l2_decay(&grad, &weight_decay, &param);
    }
    let m = crate::adam::lerp(&exp_avg, &grad, &(1.0 - &beta1));
    let v = &beta2 * &exp_avg_sq + (1.0 - &beta2) * (&grad * &grad);
    let bias_correction1 = 1.0 - beta1.pow(&step);
    let beta2_step = beta2.pow(&step);
    let bias_correction2 = 1.0 - &beta2_step;
    let rho_inf = 2.0 / (1.0 - &beta2) - 1.0;
    let rho_t = &rho_inf - 2.0 * &step * &beta2_step / &bias_correction2;
    let rectify = rho_t.gt(5.0);
    // Clamped so the branch not taken stays finite (its square root is NaN when rho_t < 4).
    let ratio =
        (&rho_t - 4.0) * (&rho_t - 2.0) * &rho_inf / ((&rho_inf - 4.0) * (&rho_inf - 2.0) * &rho_t);
    let rect = select(&rectify, ratio.max(0.0).sqrt(), 0.0);
    let adaptive = bias_correction2.sqrt() / (v.sqrt() + &eps);
    let scale = select(&rectify, &adaptive * &rect, 1.0);
    let step_size = &m / &bias_correction1 * &lr;
    t.set_param(&param - &step_size * &scale);
    t.set_state(&exp_avg, m);
    t.set_state(&exp_avg_sq, v);
    t.finish()
}
