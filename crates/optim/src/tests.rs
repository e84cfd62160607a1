//! Unit tests of the built-in table: construction, PyTorch's refusals, structural options.

use crate::{
    Adadelta, Adagrad, Adamax, Asgd, Kwarg, Kwargs, OptimError, RmsProp, Rprop, builtins, find,
};

#[test]
fn every_builtin_builds_with_pytorch_defaults() {
    let names: Vec<_> = builtins().iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "SGD",
            "Adam",
            "AdamW",
            "Adagrad",
            "RMSprop",
            "Adadelta",
            "Adamax",
            "NAdam",
            "RAdam",
            "Rprop",
            "ASGD",
            "Adafactor",
            "Lion",
            "LAMB",
            "LARS"
        ]
    );
    for spec in builtins() {
        let configured = spec.configure(&Kwargs::new()).unwrap();
        assert!(configured.hypers.contains_key("lr"), "{}", spec.name);
    }
    assert_eq!(Adagrad::new().build().unwrap().hypers["eps"], 1e-10);
    assert_eq!(RmsProp::new().build().unwrap().hypers["alpha"], 0.99);
    assert_eq!(Adadelta::new().build().unwrap().hypers["rho"], 0.9);
    assert_eq!(Adamax::new().build().unwrap().hypers["lr"], 2e-3);
    let rprop = Rprop::new().etas(0.4, 1.3).step_sizes(1e-5, 10.0).build();
    let rprop = rprop.unwrap();
    assert_eq!(rprop.hypers["etaminus"], 0.4);
    assert_eq!(rprop.hypers["step_size_max"], 10.0);
    assert_eq!(Asgd::new().build().unwrap().hypers["t0"], 1e6);
    assert_eq!(find("rmsprop").unwrap().name, "RMSprop");
}

#[test]
fn states_follow_pytorch_names_and_structure() {
    let states = |c: crate::Configured| -> Vec<String> {
        c.definition
            .graph
            .states
            .iter()
            .map(|s| s.name.clone())
            .collect()
    };
    assert_eq!(states(RmsProp::new().build().unwrap()), ["square_avg"]);
    assert_eq!(
        states(RmsProp::new().momentum(0.9).centered(true).build().unwrap()),
        ["square_avg", "grad_avg", "momentum_buffer"]
    );
    assert_eq!(states(Rprop::new().build().unwrap()), ["prev", "step_size"]);
    assert_eq!(states(Asgd::new().build().unwrap()), ["ax", "eta", "mu"]);
}

#[test]
fn pytorch_refusals_name_the_option() {
    let err = Rprop::new().etas(1.5, 1.2).build().unwrap_err();
    assert!(err.to_string().contains("etas"), "{err}");
    let err = RmsProp::new().momentum(-0.1).build().unwrap_err();
    assert!(err.to_string().contains("momentum"), "{err}");
    let err = Adadelta::new().rho(1.5).build().unwrap_err();
    assert!(err.to_string().contains("rho"), "{err}");
    let err = Adamax::new().betas(0.9, 1.0).build().unwrap_err();
    assert!(err.to_string().contains("betas"), "{err}");
    let err = Adagrad::new().initial_accumulator_value(-1.0).build();
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("initial_accumulator_value")
    );
}

#[test]
fn group_overrides_respect_structure_and_traced_domains() {
    let rmsprop = RmsProp::new().build().unwrap();
    let mut kwargs = Kwargs::new();
    kwargs.insert("momentum".into(), Kwarg::Number(0.9));
    assert!(matches!(
        rmsprop.group_hypers(1, &kwargs),
        Err(OptimError::StructuralOverride { .. })
    ));
    let rprop = Rprop::new().build().unwrap();
    let mut kwargs = Kwargs::new();
    kwargs.insert("etas".into(), Kwarg::Pair(0.5, 0.9));
    let err = rprop.group_hypers(1, &kwargs).unwrap_err();
    assert!(err.to_string().contains("etaplus"), "{err}");
    kwargs.insert("etas".into(), Kwarg::Pair(0.3, 1.5));
    assert_eq!(rprop.group_hypers(1, &kwargs).unwrap()["etaplus"], 1.5);
}

/// Adafactor's `eps=(None, x)`: None is f32's machine epsilon, as in PyTorch; other pairs
/// refuse None.
#[test]
fn adafactor_eps1_none_is_f32_epsilon() {
    let spec = find("Adafactor").unwrap();
    let defaults = spec.configure(&Kwargs::new()).unwrap();
    assert_eq!(defaults.hypers["eps1"], f32::EPSILON as f64);
    assert_eq!(defaults.kwargs["eps"].to_string(), "(None, 0.001)");
    let mut kwargs = Kwargs::new();
    kwargs.insert("eps".into(), Kwarg::NoneFirst(0.01));
    let c = spec.configure(&kwargs).unwrap();
    assert_eq!(
        (c.hypers["eps1"], c.hypers["eps2"]),
        (f32::EPSILON as f64, 0.01)
    );
    kwargs.insert("eps".into(), Kwarg::Pair(1e-30, 0.01));
    assert_eq!(spec.configure(&kwargs).unwrap().hypers["eps1"], 1e-30);
    let mut betas = Kwargs::new();
    betas.insert("betas".into(), Kwarg::NoneFirst(0.9));
    let err = find("AdamW").unwrap().configure(&betas).unwrap_err();
    assert!(err.to_string().contains("a pair of numbers"), "{err}");
}

/// A `max_norm` outside `[0, inf)` is the user's error, named as such (the check lives in
/// `optjit_trace::clip_grad_norm`).
#[test]
fn clip_grad_norm_refuses_a_negative_max_norm() {
    let adamw = find("AdamW").unwrap().configure(&Kwargs::new()).unwrap();
    let err = adamw.clone().with_clip_grad_norm(-1.0).unwrap_err();
    assert!(matches!(err, OptimError::BadValue { .. }), "{err:?}");
    assert!(err.to_string().contains("clip_grad_norm max_norm"), "{err}");
    assert!(adamw.with_clip_grad_norm(0.5).is_ok());
}

/// Each built-in declares every hyperparameter twice, in its keyword table and in its trace:
/// the two must agree. With PyTorch's defaults, the traced graph declares exactly the
/// hyperparameters the keywords give values to, with the same defaults, and each traced
/// domain lies within its keyword's (it may be narrower, as Rprop's etas are).
#[test]
fn every_builtin_traces_the_hyperparameters_of_its_keywords() {
    use crate::spec::KwargKind;
    use optjit_trace::Domain;
    let within = |inner: Domain, outer: Domain| {
        let low = inner.min > outer.min
            || (inner.min == outer.min && (outer.min_inclusive || !inner.min_inclusive));
        let high = inner.max < outer.max
            || (inner.max == outer.max && (outer.max_inclusive || !inner.max_inclusive));
        low && high
    };
    for spec in builtins() {
        let configured = spec.configure(&Kwargs::new()).unwrap();
        let graph = &configured.definition.graph;
        let traced: std::collections::BTreeMap<&str, f64> = (graph.hypers.iter())
            .map(|h| (h.name.as_str(), h.default))
            .collect();
        let given: std::collections::BTreeMap<&str, f64> = (configured.hypers.iter())
            .map(|(name, &value)| (name.as_str(), value))
            .collect();
        assert_eq!(
            traced, given,
            "{}: traced defaults vs keyword defaults",
            spec.name
        );
        for kwarg in spec.kwargs {
            let (names, domain): (&[&str], Domain) = match &kwarg.kind {
                KwargKind::Hyper(d) => (std::slice::from_ref(&kwarg.name), *d),
                KwargKind::Pair(names, d) | KwargKind::PairNoneFirst(names, d, _) => (names, *d),
                KwargKind::Flag | KwargKind::Ignored => continue,
            };
            for name in names {
                let traced = configured.definition.domain(name);
                assert!(
                    within(traced, domain),
                    "{}: {name} traced as {traced}, keyword {} allows {domain}",
                    spec.name,
                    kwarg.name
                );
            }
        }
    }
}
