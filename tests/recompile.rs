//! Changing a hyperparameter, for all groups or one, takes effect at the next step and never
//! recompiles.

use optjit::optim::{AdamW, Sgd};
use optjit::{Group, Optimizer, Setup};
use std::collections::BTreeMap;

fn two_groups() -> Vec<Group> {
    vec![
        Group {
            tensors: vec![0],
            hypers: BTreeMap::new(),
            rule: None,
        },
        Group {
            tensors: vec![1],
            hypers: BTreeMap::from([("lr".to_string(), 0.01)]),
            rule: None,
        },
    ]
}

#[test]
fn changing_lr_between_steps_never_recompiles_and_takes_effect() {
    let c = AdamW::new().lr(1e-3).build().expect("AdamW");
    let setup = Setup {
        shapes: vec![vec![5], vec![7]],
        groups: two_groups(),
        hypers: c.hypers.clone(),
        threads: 1,
        ..Setup::default()
    };
    let mut opt = Optimizer::new(&c.definition, setup.clone()).expect("compile");
    let mut params = vec![vec![1.0f32; 5], vec![-1.0f32; 7]];
    let grads = vec![vec![0.25f32; 5], vec![-0.5f32; 7]];
    let lrs = [1e-3, 3e-3, 0.0, 0.1, 2e-4];
    for (k, &lr) in lrs.iter().enumerate() {
        if k % 2 == 0 {
            opt.set_hyper(None, "lr", lr).expect("lr");
            assert_eq!(
                (
                    opt.hyper(0, "lr").expect("lr"),
                    opt.hyper(1, "lr").expect("lr")
                ),
                (lr, lr)
            );
        } else {
            let group0 = opt.hyper(0, "lr").expect("lr");
            opt.set_hyper(Some(1), "lr", lr * 2.0).expect("lr");
            assert_eq!(
                (
                    opt.hyper(0, "lr").expect("lr"),
                    opt.hyper(1, "lr").expect("lr")
                ),
                (group0, lr * 2.0)
            );
        }
        let before = params.clone();
        opt.step(&mut params, &grads).expect("step");
        if lr == 0.0 {
            assert_eq!(
                params, before,
                "lr=0 must leave parameters unchanged (wd is scaled by lr)"
            );
        } else {
            assert_ne!(params, before);
        }
    }
    assert_eq!(opt.stats().builds(), 1);
    assert_eq!(opt.stats().steps, lrs.len() as u64);
}

/// The value set at run time is the value used: a fresh optimizer built with it agrees bit
/// for bit.
#[test]
fn a_runtime_lr_matches_a_construction_time_lr() {
    let c = Sgd::new().lr(0.1).momentum(0.9).build().expect("SGD");
    let shapes = vec![vec![100]];
    let setup = |lr: f64| {
        let mut hypers = c.hypers.clone();
        hypers.insert("lr".into(), lr);
        Setup {
            shapes: shapes.clone(),
            hypers,
            threads: 1,
            ..Setup::default()
        }
    };
    let grads = vec![
        (0..100)
            .map(|i| (i as f32 * 0.37).sin())
            .collect::<Vec<f32>>(),
    ];
    let mut changed = Optimizer::new(&c.definition, setup(0.1)).expect("compile");
    let mut fresh = Optimizer::new(&c.definition, setup(0.05)).expect("compile");
    changed.set_hyper(None, "lr", 0.05).expect("lr");
    let (mut a, mut b) = (vec![vec![1.0f32; 100]], vec![vec![1.0f32; 100]]);
    for _ in 0..3 {
        changed.step(&mut a, &grads).expect("step");
        fresh.step(&mut b, &grads).expect("step");
    }
    assert_eq!(a, b);
    assert_eq!(changed.stats().builds(), 1);
}

/// Every built-in, plain, with a schedule on lr, and with clipping: 30 steps of changing
/// hyperparameters, one build each, and the scheduled lr really moving.
#[test]
fn every_builtin_with_a_schedule_or_clipping_compiles_once_over_30_steps() {
    use optjit::optim::{SchedulerArg, SchedulerConfig, builtins};
    use optjit::trace::step::in_force_state;
    let step_lr = SchedulerConfig::new(
        "StepLR",
        [
            ("step_size", SchedulerArg::Number(3.0)),
            ("gamma", SchedulerArg::Number(0.5)),
        ],
    );
    for spec in builtins() {
        let configured = spec.configure(&Default::default()).expect(spec.name);
        let plain = configured.definition.clone();
        let scheduled = step_lr.apply(&plain).expect("StepLR applies");
        let clipped = configured
            .clone()
            .with_clip_grad_norm(1.0)
            .expect("clipping")
            .definition;
        for (variant, definition) in [("plain", plain), ("StepLR", scheduled), ("clip", clipped)] {
            let mut hypers = configured.hypers.clone();
            if variant == "clip" {
                hypers.insert(optjit::MAX_NORM.to_string(), 1.0);
            }
            let setup = Setup {
                shapes: vec![vec![5], vec![2, 3]],
                hypers,
                threads: 1,
                ..Setup::default()
            };
            let mut opt = Optimizer::new(&definition, setup).expect(spec.name);
            let mut params = vec![vec![0.5f32; 5], vec![-0.5f32; 6]];
            let mut scheduled_lrs = Vec::new();
            for step in 0..30 {
                let grads = vec![vec![0.1 * (step % 5) as f32 - 0.2; 5], vec![0.3f32; 6]];
                let base = opt.hyper(0, "lr").expect("lr");
                opt.set_hyper(None, "lr", base * 0.99).expect("lr");
                if variant == "clip" {
                    let max_norm = 0.5 + (step % 3) as f64;
                    opt.set_hyper(None, optjit::MAX_NORM, max_norm)
                        .expect("max_norm");
                }
                opt.step(&mut params, &grads).expect("step");
                if let Some(lr) = opt.scalar_state(0, &in_force_state("lr")) {
                    scheduled_lrs.push(lr);
                }
            }
            // One build per kind of tensors: Adafactor steps its matrix and its vector with
            // two compiled steps, everything else with one.
            let stats = opt.stats();
            let kinds = opt.compiled_kinds().count();
            let expected = if spec.name == "Adafactor" { 2 } else { 1 };
            assert_eq!(kinds, expected, "{} {variant}", spec.name);
            assert_eq!(stats.builds(), kinds, "{} {variant}: {stats:?}", spec.name);
            assert_eq!(stats.steps, 30);
            assert!(
                params.iter().flatten().all(|p| p.is_finite()),
                "{} {variant}: {params:?}",
                spec.name
            );
            if variant == "StepLR" {
                assert_eq!(scheduled_lrs.len(), 30, "{}", spec.name);
                assert!(
                    scheduled_lrs[29] < scheduled_lrs[0] * 0.01,
                    "{}: {scheduled_lrs:?}",
                    spec.name
                );
            }
        }
    }
}
