//! Bad input gives a typed error naming the value, what was expected and where; a rejected
//! step modifies nothing.

use optjit::optim::{AdamW, OptimError, Sgd, find};
use optjit::{Group, Optimizer, OptimizerError, Setup};
use std::collections::BTreeMap;

fn adamw(shapes: Vec<Vec<usize>>) -> Optimizer {
    let c = AdamW::new().build().expect("AdamW");
    Optimizer::new(
        &c.definition,
        Setup {
            shapes,
            hypers: c.hypers.clone(),
            ..Setup::default()
        },
    )
    .expect("compile")
}

#[test]
fn mismatched_tensor_count_and_length_are_rejected_without_effect() {
    let mut opt = adamw(vec![vec![2, 2], vec![3]]);
    let mut params = vec![vec![1.0f32; 4], vec![2.0f32; 3]];
    let grads = vec![vec![0.5f32; 4], vec![0.5f32; 3]];
    opt.step(&mut params, &grads).expect("valid step");
    let (before, m_before) = (
        params.clone(),
        opt.state(0, "exp_avg").expect("state").to_vec(),
    );

    let err = opt.step(&mut params, &grads[..1]).unwrap_err();
    assert!(
        matches!(
            err,
            OptimizerError::TensorCount {
                what: "grad",
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "adamw: step expects 2 grad tensors, got 1");

    let short = vec![vec![0.5f32; 4], vec![0.5f32; 2]];
    let err = opt.step(&mut params, &short).unwrap_err();
    assert!(
        matches!(
            err,
            OptimizerError::TensorLength {
                tensor: 1,
                got: 2,
                expected: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("grad tensor 1 has 2 elements, expected 3 (shape [3])"),
        "{err}"
    );

    let mut wrong_params = vec![vec![1.0f32; 5], vec![2.0f32; 3]];
    let err = opt.step(&mut wrong_params, &grads).unwrap_err();
    assert!(
        matches!(
            err,
            OptimizerError::TensorLength {
                what: "param",
                tensor: 0,
                ..
            }
        ),
        "{err}"
    );

    assert_eq!(params, before, "a rejected step changed parameters");
    assert_eq!(
        opt.state(0, "exp_avg").expect("state"),
        m_before.as_slice(),
        "a rejected step changed state"
    );
    assert_eq!(opt.steps(), 1, "a rejected step counted");
}

#[test]
fn bad_learning_rates_are_rejected_everywhere() {
    for lr in [-1e-3, f64::NAN, f64::INFINITY] {
        let err = AdamW::new().lr(lr).build().unwrap_err();
        let OptimError::BadValue { name, expected, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            (name.as_str(), expected.as_str()),
            ("lr", "a finite number >= 0")
        );
        assert!(
            err.to_string()
                .starts_with(&format!("AdamW: lr must be a finite number >= 0, got {lr}")),
            "{err}"
        );
    }
    let mut opt = adamw(vec![vec![4]]);
    let err = opt.set_hyper(Some(0), "lr", -0.5).unwrap_err();
    assert_eq!(
        err.to_string(),
        "adamw: lr must be a finite number >= 0, got -0.5 in param group 0"
    );
    let err = opt.set_hyper(None, "lr", f64::NAN).unwrap_err();
    assert!(matches!(err, OptimizerError::BadHyper { .. }), "{err}");
    assert_eq!(
        opt.hyper(0, "lr").expect("lr"),
        1e-3,
        "a rejected set_hyper changed the value"
    );
}

#[test]
fn betas_outside_the_unit_interval_are_rejected() {
    for betas in [(1.0, 0.999), (0.9, -0.1), (0.9, 1.5)] {
        let err = AdamW::new().betas(betas.0, betas.1).build().unwrap_err();
        assert!(
            err.to_string()
                .contains("betas must be a pair of numbers, each a number in [0, 1)"),
            "{err}"
        );
    }
    let mut opt = adamw(vec![vec![4]]);
    let err = opt.set_hyper(None, "beta2", 1.0).unwrap_err();
    assert!(
        err.to_string()
            .contains("beta2 must be a number in [0, 1), got 1"),
        "{err}"
    );
}

#[test]
fn unknown_optimizer_and_kwarg_names_suggest_the_right_one() {
    let err = find("adamv").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown optimizer 'adamv'; did you mean 'Adam'? (available: SGD, Adam, AdamW, Adagrad, RMSprop, Adadelta, Adamax, NAdam, RAdam, Rprop, ASGD, Adafactor, Lion, LAMB, LARS)"
    );
    let spec = find("SGD").expect("SGD");
    let kwargs = BTreeMap::from([("momentun".to_string(), optjit::optim::Kwarg::Number(0.9))]);
    let err = spec.configure(&kwargs).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("SGD: unknown keyword argument 'momentun'; did you mean 'momentum'?"),
        "{err}"
    );
    let mut opt = adamw(vec![vec![4]]);
    let err = opt.set_hyper(None, "learning_rate", 0.1).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown hyperparameter 'learning_rate'"),
        "{err}"
    );
}

#[test]
fn pytorch_cross_checks_and_group_errors() {
    let err = Sgd::new().nesterov(true).build().unwrap_err();
    assert!(
        err.to_string()
            .contains("nesterov must be used with momentum > 0 and dampening = 0"),
        "{err}"
    );
    let c = AdamW::new().build().expect("AdamW");
    let groups = vec![Group {
        tensors: vec![0],
        hypers: BTreeMap::new(),
        rule: None,
    }];
    let setup = Setup {
        shapes: vec![vec![2], vec![2]],
        groups,
        hypers: c.hypers.clone(),
        ..Setup::default()
    };
    let err = Optimizer::new(&c.definition, setup)
        .err()
        .expect("tensor 1 is in no group");
    assert!(err.to_string().contains("tensor 1 is in no group"), "{err}");
    let overrides = BTreeMap::from([("amsgrad".to_string(), optjit::optim::Kwarg::Bool(true))]);
    let err = c.group_hypers(1, &overrides).unwrap_err();
    assert!(
        err.to_string().contains("amsgrad=True in param group 1"),
        "{err}"
    );
}

#[test]
fn sgd_momentum_cannot_cross_zero_at_run_time() {
    let plain = Sgd::new().lr(0.1).build().expect("SGD");
    let setup = |hypers: &BTreeMap<String, f64>| Setup {
        shapes: vec![vec![4]],
        hypers: hypers.clone(),
        ..Setup::default()
    };
    let mut opt = Optimizer::new(&plain.definition, setup(&plain.hypers)).expect("compile");
    let err = opt.set_hyper(None, "momentum", 0.9).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sgd: momentum must be exactly 0 (momentum 0 or not is chosen when the optimizer is \
         built: build one with momentum > 0 to use momentum), got 0.9"
    );
    let with = Sgd::new().lr(0.1).momentum(0.9).build().expect("SGD");
    let mut opt = Optimizer::new(&with.definition, setup(&with.hypers)).expect("compile");
    let err = opt.set_hyper(None, "momentum", 0.0).unwrap_err();
    assert!(
        err.to_string().contains(
            "momentum must be a finite number > 0 (momentum 0 or not is chosen when the \
             optimizer is built: build one with momentum 0 to leave it out), got 0"
        ),
        "{err}"
    );
    opt.set_hyper(None, "momentum", 0.5)
        .expect("a nonzero momentum stays in the same variant");
}

#[test]
fn shapes_too_large_to_hold_are_rejected() {
    let c = AdamW::new().build().expect("AdamW");
    let setup = Setup {
        shapes: vec![vec![4], vec![1 << 40, 1 << 40]],
        hypers: c.hypers.clone(),
        ..Setup::default()
    };
    let err = Optimizer::new(&c.definition, setup)
        .err()
        .expect("overflowing shape");
    assert!(
        matches!(err, OptimizerError::BadShape { tensor: 1, .. }),
        "{err}"
    );
}

#[test]
fn half_precision_tensors_are_refused_on_the_cpu() {
    let c = AdamW::new().build().expect("AdamW");
    for dtype in [optjit::ir::DType::BF16, optjit::ir::DType::F16] {
        let setup = Setup {
            shapes: vec![vec![4]],
            hypers: c.hypers.clone(),
            dtype,
            ..Setup::default()
        };
        let err = Optimizer::new(&c.definition, setup)
            .err()
            .expect("half precision on the CPU");
        assert!(
            matches!(&err, OptimizerError::NotOnTarget { target: "cpu", .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("{dtype} tensors")), "{text}");
    }
}

/// Shapes with a zero dimension may have very many rows or columns: Adafactor's per-row and
/// per-column states of `[1 << 40, 0]` (4 TB) or a count past `usize` are errors, not an abort
/// or a panic.
#[test]
fn shapes_with_more_rows_than_memory_are_refused() {
    let adafactor = optjit::optim::Adafactor::new().build().expect("Adafactor");
    for shape in [
        vec![1usize << 40, 0],
        vec![usize::MAX, 0],
        vec![1 << 33, 1 << 33, 0, 5],
        vec![0, usize::MAX],
    ] {
        let setup = Setup {
            shapes: vec![shape.clone(), vec![3]],
            hypers: adafactor.hypers.clone(),
            ..Setup::default()
        };
        let err = Optimizer::new(&adafactor.definition, setup)
            .err()
            .unwrap_or_else(|| panic!("{shape:?} accepted"));
        let message = err.to_string();
        assert!(
            message.contains("tensor 0") && message.contains("memory"),
            "{shape:?}: {message}"
        );
    }
}
