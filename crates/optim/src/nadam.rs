//! NAdam (Adam with Nesterov momentum and a momentum-decay schedule), as `torch.optim.NAdam`.

use crate::spec::{KwargSpec, Resolved, Spec, flag, no_check};
use optjit_trace::{Definition, Domain, TraceError, Tracer};

pub(crate) const NADAM: Spec = Spec {
    name: "NAdam",
    reference: "torch.optim.NAdam",
    kwargs: &[
        KwargSpec::non_negative("lr", 2e-3),
        KwargSpec::betas(0.9, 0.999),
        KwargSpec::non_negative("eps", 1e-8),
        KwargSpec::non_negative("weight_decay", 0.0),
        KwargSpec::non_negative("momentum_decay", 4e-3),
        KwargSpec::flag("decoupled_weight_decay", false),
        KwargSpec::flag("maximize", false),
    ],
    check: no_check,
    trace,
};

/// The update, in PyTorch's order (`_single_tensor_nadam`): `g = ±grad`; decoupled decay
/// `param *= 1 - lr*wd` or L2 decay `g += wd*param` (neither when `wd` is 0);
/// `mu = b1*(1 - 0.5*0.96^(step*momentum_decay))`,
/// `mu_next = b1*(1 - 0.5*0.96^((step+1)*momentum_decay))`; `mu_product *= mu` (a per-group
/// scalar state, starting at 1); `m = lerp(m, g, 1-b1)`; `v = b2*v + (1-b2)*g*g`;
/// `denom = sqrt(v / (1 - b2^step)) + eps`;
/// `param -= lr*(1-mu)/(1-mu_product) * g/denom`;
/// `param -= lr*mu_next/(1 - mu_product*mu_next) * m/denom`.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("nadam");
    let lr = t.hyper_in("lr", 2e-3, Domain::non_negative());
    let beta1 = t.hyper_in("beta1", 0.9, Domain::unit_half_open());
    let beta2 = t.hyper_in("beta2", 0.999, Domain::unit_half_open());
    let eps = t.hyper_in("eps", 1e-8, Domain::non_negative());
    let weight_decay = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
    let momentum_decay = t.hyper_in("momentum_decay", 4e-3, Domain::non_negative());
    let (exp_avg, exp_avg_sq) = (t.state("exp_avg", 0.0), t.state("exp_avg_sq", 0.0));
    let mu_product = t.scalar_state("mu_product", 1.0);
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
    let bias_correction2 = 1.0 - beta2.pow(&step);
    let decay = t.constant(0.96);
    let mu = &beta1 * (1.0 - 0.5 * decay.pow(&step * &momentum_decay));
    let mu_next = &beta1 * (1.0 - 0.5 * decay.pow((&step + 1.0) * &momentum_decay));
    let new_mu_product = &mu_product * &mu;
    let m = crate::adam::lerp(&exp_avg, &grad, &(1.0 - &beta1));
    let v = &beta2 * &exp_avg_sq + (1.0 - &beta2) * (&grad * &grad);
    let denom = (&v / &bias_correction2).sqrt() + &eps;
    let grad_coef = &lr * (1.0 - &mu) / (1.0 - &new_mu_product);
    let avg_coef = &lr * &mu_next / (1.0 - &new_mu_product * &mu_next);
    let param = &param - &grad_coef * (&grad / &denom);
    t.set_param(&param - &avg_coef * (&m / &denom));
    t.set_state(&exp_avg, m);
    t.set_state(&exp_avg_sq, v);
    t.set_state(&mu_product, new_mu_product);
    t.finish()
}
