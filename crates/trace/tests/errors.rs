//! Every tracing mistake is reported by `finish` with a message naming what was wrong.

use optjit_trace::{Domain, TraceError, Tracer};

fn finish_err(t: Tracer) -> TraceError {
    t.finish().expect_err("tracing should have failed")
}

#[test]
fn duplicate_and_reserved_names() {
    let t = Tracer::new("opt");
    t.hyper("lr", 0.1);
    t.hyper("lr", 0.2);
    t.set_param(t.param());
    let err = finish_err(t);
    assert_eq!(
        err.to_string(),
        "hyper 'lr' is declared twice in optimizer 'opt'"
    );

    let t = Tracer::new("opt");
    t.state("grad", 0.0);
    t.set_param(t.param());
    assert!(matches!(finish_err(t), TraceError::Reserved { name, .. } if name == "grad"));
}

#[test]
fn assigning_something_that_is_not_a_state() {
    let t = Tracer::new("opt");
    let lr = t.hyper("lr", 0.1);
    t.set_state(&lr, t.grad());
    t.set_param(t.param());
    let err = finish_err(t);
    assert!(
        err.to_string().contains(
            "expects a handle returned by state() or scalar_state(), got a 'input' value"
        ),
        "{err}"
    );
}

#[test]
fn values_of_another_tracer_and_missing_param_update() {
    let a = Tracer::new("a");
    let b = Tracer::new("b");
    a.set_param(a.param() - b.grad());
    assert_eq!(
        finish_err(a).to_string(),
        "a value of optimizer 'b' was used while tracing optimizer 'a'"
    );

    let t = Tracer::new("lazy");
    t.hyper("lr", 0.1);
    assert_eq!(
        finish_err(t).to_string(),
        "optimizer 'lazy' never assigns param (call set_param)"
    );
}

#[test]
fn defaults_outside_their_domain_and_invalid_graphs() {
    let t = Tracer::new("opt");
    t.hyper_in("beta", 1.5, Domain::unit_half_open());
    t.set_param(t.param());
    let err = finish_err(t);
    assert_eq!(
        err.to_string(),
        "hyper 'beta' of optimizer 'opt' has default 1.5, expected a number in [0, 1)"
    );

    // sin is scalar-only: applying it per element fails verification with the node named.
    let t = Tracer::new("opt");
    t.set_param(t.param().sin());
    let err = finish_err(t);
    assert!(matches!(err, TraceError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("sin"), "{err}");
}

#[test]
fn sequential_assignment_keeps_the_last_value() {
    let t = Tracer::new("twice");
    let p = t.param();
    t.set_param(&p - 1.0);
    t.set_param(&p * 2.0);
    let def = t.finish().expect("valid");
    let text = def.graph.to_string();
    assert!(
        text.contains("mul %0, %1") && text.contains("param = %2"),
        "{text}"
    );
    assert!(
        !text.contains("sub"),
        "the overwritten assignment should be pruned:\n{text}"
    );
}
