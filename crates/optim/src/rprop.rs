//! Rprop (resilient backpropagation) with maximize, as `torch.optim.Rprop`.

use crate::kwargs::Kwarg;
use crate::spec::{Conflict, KwargKind, KwargSpec, Resolved, Spec, flag};
use optjit_trace::{Definition, Domain, TraceError, Tracer, select};

/// `etaminus` lies in (0, 1).
const ETAMINUS: Domain = Domain {
    min_inclusive: false,
    max: 1.0,
    max_inclusive: false,
    ..Domain::non_negative()
};

/// `etaplus` exceeds 1.
const ETAPLUS: Domain = Domain {
    min: 1.0,
    min_inclusive: false,
    ..Domain::non_negative()
};

pub(crate) const RPROP: Spec = Spec {
    name: "Rprop",
    reference: "torch.optim.Rprop",
    kwargs: &[
        KwargSpec::non_negative("lr", 1e-2),
        KwargSpec {
            name: "etas",
            kind: KwargKind::Pair(
                ["etaminus", "etaplus"],
                Domain {
                    min_inclusive: false,
                    ..Domain::non_negative()
                },
            ),
            default: Kwarg::Pair(0.5, 1.2),
        },
        KwargSpec {
            name: "step_sizes",
            kind: KwargKind::Pair(["step_size_min", "step_size_max"], Domain::non_negative()),
            default: Kwarg::Pair(1e-6, 50.0),
        },
        KwargSpec::flag("maximize", false),
    ],
    check,
    trace,
};

/// PyTorch: "Invalid eta values" unless `0 < etaminus < 1 < etaplus`.
fn check(r: &Resolved) -> Result<(), Conflict> {
    match r.get("etas") {
        Some(&Kwarg::Pair(minus, plus)) if ETAMINUS.contains(minus) && ETAPLUS.contains(plus) => {
            Ok(())
        }
        other => Err((
            "etas",
            "(etaminus, etaplus) with 0 < etaminus < 1 < etaplus".into(),
            other.map_or_else(String::new, |v| v.to_string()),
        )),
    }
}

/// The update, in PyTorch's order: `g = ±grad`; `s = sign(g*prev)`; the factor is `etaplus`
/// where `s > 0`, `etaminus` where `s < 0`, 1 elsewhere (NaN included);
/// `step_size = clamp(step_size*factor, step_size_min, step_size_max)`; `g = 0` where the factor
/// is `etaminus` (exactly where `s < 0`, since `etaminus < 1 < etaplus`);
/// `param -= sign(g)*step_size` with `torch.sign`, which is 0 for NaN (a NaN gradient leaves
/// the parameter as it is, and is kept in `prev`); `prev = g`.
/// PyTorch fills `step_size` with the group's `lr` on the first step; here the buffer starts at 0
/// and step 1 reads `lr` in its place.
fn trace(r: &Resolved) -> Result<Definition, TraceError> {
    let t = Tracer::new("rprop");
    let lr = t.hyper_in("lr", 1e-2, Domain::non_negative());
    let etaminus = t.hyper_in("etaminus", 0.5, ETAMINUS);
    let etaplus = t.hyper_in("etaplus", 1.2, ETAPLUS);
    let step_size_min = t.hyper_in("step_size_min", 1e-6, Domain::non_negative());
    let step_size_max = t.hyper_in("step_size_max", 50.0, Domain::non_negative());
    let prev = t.state("prev", 0.0);
    let step_size = t.state("step_size", 0.0);
    let step = t.step();

    let param = t.param();
    let grad = if flag(r, "maximize") {
        -t.grad()
    } else {
        t.grad()
    };
    // Only the sign of the product is compared: the product itself gives the same choices
    // (a NaN is neither above nor below zero, as torch.sign's 0 is not).
    let s = &grad * &prev;
    let decrease = s.lt(0.0);
    let factor = select(&s.gt(0.0), &etaplus, select(&decrease, &etaminus, 1.0));
    let previous_size = select(&step.eq(1.0), &lr, &step_size);
    let new_size = (&previous_size * &factor).clamp(&step_size_min, &step_size_max);
    let g = select(&decrease, 0.0, &grad);
    // torch.sign(g): the IR's `sign` keeps a NaN (jnp.sign, which Lion needs), PyTorch's is 0.
    let direction = select(&g.gt(0.0), 1.0, select(&g.lt(0.0), -1.0, 0.0));
    t.set_param(&param - direction * &new_size);
    t.set_state(&prev, g);
    t.set_state(&step_size, new_size);
    t.finish()
}
