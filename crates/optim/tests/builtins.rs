//! The built-ins beyond SGD and Adam: names, defaults, options and refusals.

use optjit_optim::{Kwarg, Kwargs, Lamb, Lars, Lion, NAdam, RAdam, find};

#[test]
fn new_builtins_build_with_their_references_defaults() {
    let nadam = NAdam::new().build().unwrap();
    assert_eq!(nadam.hypers["lr"], 2e-3);
    assert_eq!(nadam.hypers["momentum_decay"], 4e-3);
    assert!(nadam.definition.graph.state("mu_product").is_some());

    let radam = RAdam::new().build().unwrap();
    assert_eq!(radam.hypers["lr"], 1e-3);
    assert_eq!(radam.hypers["beta2"], 0.999);

    // optax's lion decays weights by default.
    let lion = Lion::new().build().unwrap();
    assert_eq!(lion.hypers["weight_decay"], 1e-3);
    assert_eq!(lion.hypers["beta2"], 0.99);

    let lamb = Lamb::new().build().unwrap();
    assert_eq!(lamb.hypers["eps"], 1e-6);
    assert_eq!(lamb.hypers["eps_root"], 0.0);

    let lars = Lars::new().build().unwrap();
    assert_eq!(lars.hypers["trust_coefficient"], 1e-3);
    assert_eq!(lars.hypers["momentum"], 0.9);
}

#[test]
fn every_option_traces() {
    for flags in [false, true] {
        NAdam::new()
            .weight_decay(0.1)
            .decoupled_weight_decay(flags)
            .maximize(flags)
            .build()
            .unwrap();
        RAdam::new()
            .weight_decay(0.1)
            .decoupled_weight_decay(flags)
            .maximize(flags)
            .build()
            .unwrap();
        Lion::new().mask(flags).build().unwrap();
        Lamb::new().mask(flags).weight_decay(0.1).build().unwrap();
        Lars::new()
            .nesterov(flags)
            .weight_decay_mask(flags)
            .trust_ratio_mask(!flags)
            .build()
            .unwrap();
    }
}

#[test]
fn names_are_case_insensitive_and_optax_names_are_refused_by_name() {
    assert_eq!(find("lamb").unwrap().name, "LAMB");
    assert_eq!(find("nadam").unwrap().name, "NAdam");
    let kwargs = Kwargs::from([("learning_rate".to_string(), Kwarg::Number(0.1))]);
    let err = find("Lion").unwrap().configure(&kwargs).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Lion: unknown keyword argument 'learning_rate'"),
        "{err}"
    );
    let kwargs = Kwargs::from([("mu_dtype".to_string(), Kwarg::Bool(true))]);
    let err = find("Lion").unwrap().configure(&kwargs).unwrap_err();
    assert!(err.to_string().contains("'mu_dtype'"), "{err}");
}

#[test]
fn out_of_range_values_are_refused() {
    let err = NAdam::new().momentum_decay(-1.0).build().unwrap_err();
    assert!(err.to_string().contains("momentum_decay"), "{err}");
    let err = RAdam::new().betas(0.9, 1.0).build().unwrap_err();
    assert!(err.to_string().contains("betas"), "{err}");
    let err = Lars::new().trust_coefficient(-1.0).build().unwrap_err();
    assert!(err.to_string().contains("trust_coefficient"), "{err}");
}
