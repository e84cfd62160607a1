//! Adam (L2 weight decay or decoupled), AdamW, with amsgrad and maximize, as `torch.optim.Adam`
//! and `torch.optim.AdamW`.

use crate::spec::{KwargSpec, Resolved, Spec, flag, no_check};
use optjit_trace::{Definition, Domain, TraceError, Tracer, Value, select};

/// L2 weight decay, `grad + weight_decay * param`, skipped when `weight_decay` is 0 as PyTorch
/// (`if weight_decay != 0`) and optax (`add_decayed_weights`) skip it: `0 * param` is NaN for
/// an infinite parameter. The choice is a select on the group's scalar, made per step, so
/// changing `weight_decay` never recompiles.
pub(crate) fn l2_decay(grad: &Value, weight_decay: &Value, param: &Value) -> Value {
    select(&weight_decay.ne(0.0), grad + weight_decay * param, grad)
}

/// `torch.lerp(start, end, weight)` as ATen computes it: `start + weight * (end - start)` when
/// `|weight| < 0.5`, else `end + (weight - 1) * (end - start)`. The two differ on infinite
/// inputs (the first is NaN where `start` is infinite, the second where `end` is), so an
/// infinite moment followed by a finite gradient gives NaN or keeps the infinity as PyTorch
/// does. `weight` is one value per group, row or column: the choice costs one select per
/// element.
pub(crate) fn lerp(start: &Value, end: &Value, weight: &Value) -> Value {
    let small = weight.abs().lt(0.5);
    let coefficient = select(&small, weight, weight - 1.0);
    let base = select(&small, start, end);
    base + coefficient * (end - start)
}

macro_rules! adam_kwargs {
    ($weight_decay:expr, $decoupled:expr) => {
        &[
            KwargSpec::non_negative("lr", 1e-3),
            KwargSpec::betas(0.9, 0.999),
            KwargSpec::non_negative("eps", 1e-8),
            KwargSpec::non_negative("weight_decay", $weight_decay),
            KwargSpec::flag("amsgrad", false),
            KwargSpec::flag("maximize", false),
            KwargSpec::flag("decoupled_weight_decay", $decoupled),
        ]
    };
}

pub(crate) const ADAM: Spec = Spec {
    name: "Adam",
    reference: "torch.optim.Adam",
    kwargs: adam_kwargs!(0.0, false),
    check: no_check,
    trace: |r| {
        trace(
            if flag(r, "decoupled_weight_decay") {
                "adamw"
            } else {
                "adam"
            },
            0.0,
            r,
        )
    },
};

pub(crate) const ADAMW: Spec = Spec {
    name: "AdamW",
    reference: "torch.optim.AdamW",
    kwargs: adam_kwargs!(1e-2, true),
    check: |r| match flag(r, "decoupled_weight_decay") {
        true => Ok(()),
        false => Err((
            "decoupled_weight_decay",
            "True for AdamW (use Adam for L2 decay)".into(),
            "False".into(),
        )),
    },
    trace: |r| trace("adamw", 1e-2, r),
};

/// The update, in PyTorch's order: decoupled decay `param *= 1 - lr*wd` (AdamW) or L2 decay
/// `g += wd*param` (Adam; neither when `wd` is 0); `m = lerp(m, g, 1-b1)`;
/// `v = b2*v + (1-b2)*g*g`; with amsgrad
/// `vmax = max(vmax, v)`; `denom = sqrt(v or vmax) / sqrt(1 - b2^step) + eps`;
/// `param -= lr / (1 - b1^step) * m / denom`.
fn trace(name: &str, default_weight_decay: f64, r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new(name);
    let lr = t.hyper_in("lr", 1e-3, Domain::non_negative());
    let beta1 = t.hyper_in("beta1", 0.9, Domain::unit_half_open());
    let beta2 = t.hyper_in("beta2", 0.999, Domain::unit_half_open());
    let eps = t.hyper_in("eps", 1e-8, Domain::non_negative());
    let decoupled = flag(r, "decoupled_weight_decay");
    let weight_decay = t.hyper_in("weight_decay", default_weight_decay, Domain::non_negative());
    let (exp_avg, exp_avg_sq) = (t.state("exp_avg", 0.0), t.state("exp_avg_sq", 0.0));
    let step = t.step();

    let mut param = t.param();
    let mut grad = if flag(r, "maximize") {
        -t.grad()
    } else {
        t.grad()
    };
    if decoupled {
        param = &param * (1.0 - &lr * &weight_decay);
    } else {
        grad = l2_decay(&grad, &weight_decay, &param);
    }
    let m = lerp(&exp_avg, &grad, &(1.0 - &beta1));
    let v = &beta2 * &exp_avg_sq + (1.0 - &beta2) * (&grad * &grad);
    let bias_correction1 = 1.0 - beta1.pow(&step);
    let bias_correction2_sqrt = (1.0 - beta2.pow(&step)).sqrt();
    let step_size = &lr / &bias_correction1;
    let second_moment = if flag(r, "amsgrad") {
        let max_exp_avg_sq = t.state("max_exp_avg_sq", 0.0);
        let vmax = max_exp_avg_sq.max(&v);
        t.set_state(&max_exp_avg_sq, &vmax);
        vmax
    } else {
        v.clone()
    };
    let denom = second_moment.sqrt() / &bias_correction2_sqrt + &eps;
    t.set_param(&param - &step_size * (&m / &denom));
    t.set_state(&exp_avg, m);
    t.set_state(&exp_avg_sq, v);
    t.finish()
}
