//! Adafactor (factored second moment for tensors of two or more dimensions), as
//! `torch.optim.Adafactor`.

use crate::adam::lerp;
use crate::kwargs::Kwarg;
use crate::spec::{KwargKind, KwargSpec, Resolved, Spec, flag, no_check};
use optjit_trace::{Definition, Domain, TraceError, Tracer, Value, select};

/// `beta2_decay <= 0`.
const NON_POSITIVE: Domain = Domain {
    max: 0.0,
    ..Domain::finite()
};

/// `d >= 1`.
const AT_LEAST_ONE: Domain = Domain {
    min: 1.0,
    ..Domain::non_negative()
};

/// PyTorch's `eps1 = None`: the machine epsilon of f32 parameters.
const F32_EPS: f64 = f32::EPSILON as f64;

pub(crate) const ADAFACTOR: Spec = Spec {
    name: "Adafactor",
    reference: "torch.optim.Adafactor",
    kwargs: &[
        KwargSpec::non_negative("lr", 1e-2),
        KwargSpec::hyper("beta2_decay", NON_POSITIVE, -0.8),
        // PyTorch's default `(None, 1e-3)`: None is f32's machine epsilon, 2^-23.
        KwargSpec {
            name: "eps",
            kind: KwargKind::PairNoneFirst(["eps1", "eps2"], Domain::non_negative(), F32_EPS),
            default: Kwarg::NoneFirst(1e-3),
        },
        KwargSpec::hyper("d", AT_LEAST_ONE, 1.0),
        KwargSpec::non_negative("weight_decay", 0.0),
        KwargSpec::flag("maximize", false),
    ],
    check: no_check,
    trace,
};

/// The update, in PyTorch's order, per tensor seen as matrices (the last two dimensions; a
/// tensor of fewer dimensions is one row):
/// `g = ±grad`; `w = step^beta2_decay`; `rho = min(lr, 1/sqrt(step))`;
/// `alpha = max(eps2, rms(param)) * rho` (Python's `max`: eps2 when the rms is NaN);
/// `param *= 1 - lr*weight_decay`;
/// `row_var = lerp(row_var, row_mean(g*g), w)`; `col_var = lerp(col_var, col_mean(g*g), w)`;
/// with two or more dimensions `var = row_var * col_var / max(rows_mean(row_var), eps1)`,
/// otherwise `var = col_var` (PyTorch's `variance`: the tensor's one row is itself);
/// `u = g * rsqrt(max(var, eps1^2))`; `param -= alpha / max(1, rms(u)/d) * u` (Python's `max`
/// again: 1 when the rms is NaN, so a NaN gradient element spoils only its own parameter).
/// The lerps are `torch.lerp`'s (see [`lerp`]): with `w = 1` on the first step an infinite
/// mean square gives a NaN variance.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("adafactor");
    let lr = t.hyper_in("lr", 1e-2, Domain::non_negative());
    let beta2_decay = t.hyper_in("beta2_decay", -0.8, NON_POSITIVE);
    let eps1 = t.hyper_in("eps1", F32_EPS, Domain::non_negative());
    let eps2 = t.hyper_in("eps2", 1e-3, Domain::non_negative());
    let d = t.hyper_in("d", 1.0, AT_LEAST_ONE);
    let weight_decay = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
    let row_var = t.row_state("row_var", 0.0);
    let col_var = t.col_state("col_var", 0.0);
    t.alias_state("variance", &col_var, 2);
    let (param, step) = (t.param(), t.step());
    let grad = if flag(r, "maximize") {
        -t.grad()
    } else {
        t.grad()
    };

    let weight = step.pow(&beta2_decay);
    let rho = lr.min(1.0 / step.sqrt());
    let alpha = python_max(&eps2, &(&param * &param).mean().sqrt()) * &rho;
    let decayed = &param * (1.0 - &lr * &weight_decay);
    let squared = &grad * &grad;
    let new_row_var = lerp(&row_var, &squared.row_mean(), &weight);
    let new_col_var = lerp(&col_var, &squared.col_mean(), &weight);
    let factored = t.rank().gt(1.0);
    let row_scale = select(
        &factored,
        &new_row_var / new_row_var.rows_mean().max(&eps1),
        1.0,
    );
    let variance = row_scale * &new_col_var;
    let update = &grad * variance.max(&eps1 * &eps1).rsqrt();
    let one = t.constant(1.0);
    let denom = python_max(&one, &((&update * &update).mean().sqrt() / &d));
    t.set_param(decayed - &alpha / denom * update);
    t.set_state(&row_var, new_row_var);
    t.set_state(&col_var, new_col_var);
    t.finish()
}

/// Python's `max(a, b)` on floats: `b` if `b > a`, else `a` (so `a` when `b` is NaN), as
/// PyTorch's Adafactor computes its per-tensor scalars with `.item()`.
fn python_max(a: &Value, b: &Value) -> Value {
    select(&b.gt(a), b, a)
}
