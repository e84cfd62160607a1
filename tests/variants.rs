//! Param groups that follow rules of their own (`Group::rule`): another optimizer, or the
//! optimizer's with other structural options. One optimizer steps them all, one compiled step
//! per rule, exactly as separate optimizers would; hyperparameters, scalar states and
//! checkpoints are each group's own.

use optjit::optim::{Adam, AdamW, Sgd};
use optjit::{Checkpoint, Definition, Group, Optimizer, Setup};
use std::collections::BTreeMap;

const SHAPES: [usize; 4] = [7, 15, 33, 24];

fn tensor(t: usize, seed: usize) -> Vec<f32> {
    (0..SHAPES[t])
        .map(|i| (((i * 13 + t * 7 + seed * 5) % 17) as f32 - 8.0) * 0.05)
        .collect()
}

fn group(tensors: Vec<usize>, hypers: &[(&str, f64)], rule: Option<&Definition>) -> Group {
    Group {
        tensors,
        hypers: hypers.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
        rule: rule.cloned(),
    }
}

/// Steps an optimizer over tensors `tensors` of `SHAPES` for 10 steps; returns the parameters.
fn train(opt: &mut Optimizer, tensors: &[usize]) -> Vec<Vec<f32>> {
    let mut params: Vec<Vec<f32>> = tensors.iter().map(|&t| tensor(t, 0)).collect();
    for step in 1..=10 {
        let grads: Vec<Vec<f32>> = tensors.iter().map(|&t| tensor(t, step)).collect();
        opt.step(&mut params, &grads).expect("step");
    }
    params
}

/// AdamW for tensors 1 and 3, SGD with Nesterov momentum for 0 and 2.
fn mixed() -> (
    Definition,
    BTreeMap<String, f64>,
    Definition,
    BTreeMap<String, f64>,
) {
    let adamw = AdamW::new()
        .lr(3e-3)
        .weight_decay(0.1)
        .build()
        .expect("AdamW");
    let sgd = (Sgd::new().lr(0.05).momentum(0.9).nesterov(true))
        .build()
        .expect("SGD");
    (adamw.definition, adamw.hypers, sgd.definition, sgd.hypers)
}

fn mixed_setup() -> Setup {
    let (_, adamw_hypers, sgd, sgd_hypers) = mixed();
    let sgd_hypers: Vec<(&str, f64)> = sgd_hypers.iter().map(|(k, &v)| (k.as_str(), v)).collect();
    Setup {
        shapes: SHAPES.iter().map(|&n| vec![n]).collect(),
        groups: vec![
            group(vec![1, 3], &[], None),
            group(vec![0, 2], &sgd_hypers, Some(&sgd)),
        ],
        hypers: adamw_hypers,
        threads: 2,
        ..Setup::default()
    }
}

#[test]
fn groups_with_another_optimizer_step_as_separate_optimizers_would() {
    let (adamw, adamw_hypers, sgd, sgd_hypers) = mixed();
    let mut together = Optimizer::new(&adamw, mixed_setup()).expect("mixed");
    let stats = together.stats();
    assert_eq!(
        (stats.kernels_per_step, stats.builds()),
        (2, 2),
        "one kernel per rule"
    );
    let got = train(&mut together, &[0, 1, 2, 3]);

    let alone = |definition: &Definition, hypers: &BTreeMap<String, f64>, tensors: &[usize]| {
        let setup = Setup {
            shapes: tensors.iter().map(|&t| vec![SHAPES[t]]).collect(),
            hypers: hypers.clone(),
            ..Setup::default()
        };
        let mut opt = Optimizer::new(definition, setup).expect("alone");
        train(&mut opt, tensors)
    };
    let by_adamw = alone(&adamw, &adamw_hypers, &[1, 3]);
    let by_sgd = alone(&sgd, &sgd_hypers, &[0, 2]);
    assert_eq!(got[1], by_adamw[0]);
    assert_eq!(got[3], by_adamw[1]);
    assert_eq!(got[0], by_sgd[0]);
    assert_eq!(got[2], by_sgd[1]);
    // Each tensor holds its own rule's states.
    assert!(together.state(1, "exp_avg_sq").is_some());
    assert!(together.state(0, "momentum_buffer").is_some());
    assert!(together.state(0, "exp_avg").is_none());
}

#[test]
fn a_structural_option_in_one_group_is_that_groups_own() {
    // amsgrad and maximize in group 1 only, as torch.optim.Adam takes them per group.
    let plain = Adam::new().lr(5e-3).build().expect("Adam");
    let own = (Adam::new().lr(5e-3).amsgrad(true).maximize(true))
        .build()
        .expect("Adam amsgrad");
    let setup = Setup {
        shapes: SHAPES.iter().map(|&n| vec![n]).collect(),
        groups: vec![
            group(vec![0, 1], &[], None),
            group(vec![2, 3], &[("lr", 1e-2)], Some(&own.definition)),
        ],
        hypers: plain.hypers.clone(),
        ..Setup::default()
    };
    let mut together = Optimizer::new(&plain.definition, setup).expect("per-group amsgrad");
    let got = train(&mut together, &[0, 1, 2, 3]);
    assert!(together.state(2, "max_exp_avg_sq").is_some());
    assert!(together.state(0, "max_exp_avg_sq").is_none());

    let mut hypers = own.hypers.clone();
    hypers.insert("lr".into(), 1e-2);
    let setup = Setup {
        shapes: vec![vec![SHAPES[2]], vec![SHAPES[3]]],
        hypers,
        ..Setup::default()
    };
    let mut alone = Optimizer::new(&own.definition, setup).expect("alone");
    let want = train(&mut alone, &[2, 3]);
    assert_eq!((&got[2], &got[3]), (&want[0], &want[1]));
}

#[test]
fn hyperparameters_go_to_the_groups_whose_rule_has_them() {
    let (adamw, ..) = mixed();
    let mut opt = Optimizer::new(&adamw, mixed_setup()).expect("mixed");
    assert_eq!(opt.hyper(1, "momentum").expect("SGD's"), 0.9);
    let err = opt.hyper(0, "momentum").expect_err("AdamW has none");
    assert!(err.to_string().contains("momentum"), "{err}");
    // For every group: only those whose rule has it.
    opt.set_hyper(None, "momentum", 0.5).expect("SGD groups");
    assert_eq!(opt.hyper(1, "momentum").expect("set"), 0.5);
    opt.set_hyper(None, "lr", 0.01).expect("both rules have lr");
    assert_eq!(
        (opt.hyper(0, "lr").unwrap(), opt.hyper(1, "lr").unwrap()),
        (0.01, 0.01)
    );
    // A name no rule has, or a value outside the domain, changes nothing.
    let err = opt
        .set_hyper(None, "bogus", 1.0)
        .expect_err("no rule has it");
    assert!(err.to_string().contains("bogus"), "{err}");
    let err = opt.set_hyper(None, "momentum", -1.0).expect_err("negative");
    assert!(err.to_string().contains("momentum"), "{err}");
    assert_eq!(opt.hyper(1, "momentum").expect("unchanged"), 0.5);
    let err = opt.set_hyper(Some(0), "beta1", 2.0).expect_err("beta1 < 1");
    assert!(err.to_string().contains("param group 0"), "{err}");
}

#[test]
fn bad_group_rules_are_refused_by_group() {
    let (adamw, adamw_hypers, sgd, _) = mixed();
    // A hyperparameter the group's rule does not have.
    let setup = Setup {
        groups: vec![
            group(vec![1, 3], &[], None),
            group(vec![0, 2], &[("beta1", 0.9)], Some(&sgd)),
        ],
        ..mixed_setup()
    };
    let err = Optimizer::new(&adamw, setup)
        .err()
        .expect("SGD has no beta1");
    let message = err.to_string();
    assert!(
        message.contains("beta1")
            && message.contains("param group 1")
            && message.starts_with("sgd"),
        "{message}"
    );
    // Clipping in one rule and not the other: one norm could not cover every tensor.
    let clipped = optjit::clip_grad_norm(&adamw, 1.0).expect("clip");
    let mut hypers = adamw_hypers.clone();
    hypers.insert(optjit::MAX_NORM.into(), 1.0);
    let setup = Setup {
        hypers,
        ..mixed_setup()
    };
    let err = Optimizer::new(&clipped, setup)
        .err()
        .expect("only one rule clips");
    assert!(err.to_string().contains("every rule"), "{err}");
}

#[test]
fn checkpoints_hold_each_groups_rule() {
    let (adamw, ..) = mixed();
    let mut first = Optimizer::new(&adamw, mixed_setup()).expect("mixed");
    train(&mut first, &[0, 1, 2, 3]);
    let bytes = first.checkpoint().to_bytes();
    let checkpoint = Checkpoint::from_bytes(&bytes).expect("reads");
    assert_eq!(checkpoint.hyper(1, "momentum"), Some(0.9));
    assert_eq!(checkpoint.hyper(0, "momentum"), None);
    let mut resumed = Optimizer::new(&adamw, mixed_setup()).expect("mixed");
    resumed.restore(&checkpoint).expect("same rules");
    assert_eq!(
        resumed.state(2, "momentum_buffer"),
        first.state(2, "momentum_buffer")
    );
    // The same groups, but group 1 on AdamW: its states and hyperparameters differ.
    let all_adamw = Setup {
        groups: vec![group(vec![1, 3], &[], None), group(vec![0, 2], &[], None)],
        ..mixed_setup()
    };
    let mut other = Optimizer::new(&adamw, all_adamw).expect("AdamW");
    let err = other
        .restore(&checkpoint)
        .expect_err("another rule in group 1");
    assert!(err.to_string().contains("param group 1"), "{err}");
}
