//! RMSprop with momentum, centering, weight decay and maximize, as `torch.optim.RMSprop`.

use crate::spec::{KwargSpec, Resolved, Spec, flag, no_check, number};
use optjit_trace::{Definition, Domain, TraceError, Tracer};

pub(crate) const RMSPROP: Spec = Spec {
    name: "RMSprop",
    reference: "torch.optim.RMSprop",
    kwargs: &[
        KwargSpec::non_negative("lr", 1e-2),
        KwargSpec::non_negative("alpha", 0.99),
        KwargSpec::non_negative("eps", 1e-8),
        KwargSpec::non_negative("weight_decay", 0.0),
        KwargSpec::non_negative("momentum", 0.0),
        KwargSpec::flag("centered", false),
        KwargSpec::flag("maximize", false),
    ],
    check: no_check,
    trace,
};

/// The update, in PyTorch's order: `g = ±grad + wd*param` (no decay term when `wd` is 0);
/// `square_avg = alpha*square_avg + (1-alpha)*g*g`; centered:
/// `grad_avg = lerp(grad_avg, g, 1-alpha)`, `avg = sqrt(square_avg - grad_avg^2) + eps`,
/// otherwise `avg = sqrt(square_avg) + eps`; with momentum
/// `buf = momentum*buf + g/avg; param -= lr*buf`, otherwise `param -= lr * g/avg`.
/// As for SGD, momentum > 0 versus 0 is structural (PyTorch keeps `momentum_buffer` only when
/// momentum > 0): the traced momentum's domain keeps it on its side of zero.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("rmsprop");
    let lr = t.hyper_in("lr", 1e-2, Domain::non_negative());
    let alpha = t.hyper_in("alpha", 0.99, Domain::non_negative());
    let eps = t.hyper_in("eps", 1e-8, Domain::non_negative());
    let weight_decay = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
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
    let square_avg = t.state("square_avg", 0.0);

    let param = t.param();
    let grad = if flag(r, "maximize") {
        -t.grad()
    } else {
        t.grad()
    };
    let g = crate::adam::l2_decay(&grad, &weight_decay, &param);
    let new_square_avg = &alpha * &square_avg + (1.0 - &alpha) * (&g * &g);
    let avg = if flag(r, "centered") {
        let grad_avg = t.state("grad_avg", 0.0);
        let new_grad_avg = crate::adam::lerp(&grad_avg, &g, &(1.0 - &alpha));
        let avg = (&new_square_avg - &new_grad_avg * &new_grad_avg).sqrt();
        t.set_state(&grad_avg, new_grad_avg);
        avg
    } else {
        new_square_avg.sqrt()
    } + &eps;
    if configured_momentum != 0.0 {
        let buf = t.state("momentum_buffer", 0.0);
        let new_buf = &momentum * &buf + &g / &avg;
        t.set_param(&param - &lr * &new_buf);
        t.set_state(&buf, new_buf);
    } else {
        t.set_param(&param - &lr * (&g / &avg));
    }
    t.set_state(&square_avg, new_square_avg);
    t.finish()
}
