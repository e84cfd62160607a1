//! Scheduler arguments given one value per param group (`OneCycleLR(max_lr=[...])`): each
//! group follows its own bounds, in one compiled step, and bad lists are refused by name.

use optjit::optim::{AdamW, SchedulerArg, SchedulerConfig, Sgd};
use optjit::trace::step::in_force_state;
use optjit::{Group, Optimizer, Setup};
use std::collections::BTreeMap;

const SHAPES: [usize; 3] = [5, 8, 3];

fn one_cycle(max_lr: SchedulerArg, base_momentum: SchedulerArg) -> SchedulerConfig {
    SchedulerConfig::new(
        "OneCycleLR",
        [
            ("max_lr", max_lr),
            ("total_steps", SchedulerArg::Number(12.0)),
            ("pct_start", SchedulerArg::Number(0.25)),
            ("base_momentum", base_momentum),
        ],
    )
}

fn params() -> Vec<Vec<f32>> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(t, &n)| (0..n).map(|i| (i as f32 - 2.0) * 0.3 + t as f32).collect())
        .collect()
}

fn grads(step: usize) -> Vec<Vec<f32>> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(t, &n)| {
            (0..n)
                .map(|i| ((i * 7 + t * 3 + step * 5) % 11) as f32 * 0.1 - 0.5)
                .collect()
        })
        .collect()
}

/// Steps `config` on AdamW over `tensors` (one group each) for 12 steps: the parameters, and
/// each group's lr and beta1 in force at every step.
/// Per group, its (lr, beta1) in force at every step.
type InForce = Vec<Vec<(f64, f64)>>;

fn run(config: &SchedulerConfig, tensors: &[usize]) -> (Vec<Vec<f32>>, InForce) {
    let adamw = AdamW::new()
        .lr(1e-3)
        .weight_decay(0.01)
        .build()
        .expect("AdamW");
    let scheduled = config.apply(&adamw.definition).expect("applies");
    let groups = (0..tensors.len())
        .map(|local| Group {
            tensors: vec![local],
            hypers: BTreeMap::new(),
            rule: None,
        })
        .collect();
    let setup = Setup {
        shapes: tensors.iter().map(|&t| vec![SHAPES[t]]).collect(),
        groups,
        hypers: adamw.hypers.clone(),
        threads: 1,
        ..Setup::default()
    };
    let mut opt = Optimizer::new(&scheduled, setup).expect("compiles");
    let mut params: Vec<Vec<f32>> = tensors.iter().map(|&t| params()[t].clone()).collect();
    let mut in_force = vec![Vec::new(); tensors.len()];
    for step in 0..12 {
        let grads: Vec<Vec<f32>> = tensors.iter().map(|&t| grads(step)[t].clone()).collect();
        opt.step(&mut params, &grads).expect("step");
        for (g, seen) in in_force.iter_mut().enumerate() {
            let value = |h: &str| opt.scalar_state(g, &in_force_state(h)).expect("in force");
            seen.push((value("lr"), value("beta1")));
        }
    }
    assert_eq!(opt.stats().builds(), 1, "one compiled step for every group");
    (params, in_force)
}

/// Three groups with a list each go exactly as three optimizers with one number each.
#[test]
fn each_group_follows_its_own_bounds_as_a_separate_scheduler_would() {
    let (max_lrs, base_ms) = ([1e-3, 5e-3, 1e-2], [0.85, 0.8, 0.9]);
    let lists = one_cycle(
        SchedulerArg::Numbers(max_lrs.to_vec()),
        SchedulerArg::Numbers(base_ms.to_vec()),
    );
    let (together, in_force) = run(&lists, &[0, 1, 2]);
    for t in 0..3 {
        let alone = one_cycle(
            SchedulerArg::Number(max_lrs[t]),
            SchedulerArg::Number(base_ms[t]),
        );
        let (params, in_force_alone) = run(&alone, &[t]);
        assert_eq!(together[t], params[0], "tensor {t}");
        assert_eq!(in_force[t], in_force_alone[0], "group {t}");
    }
    // The groups did differ: the peak of each is its own max_lr.
    for (g, &max_lr) in max_lrs.iter().enumerate() {
        let peak = in_force[g].iter().map(|&(lr, _)| lr).fold(0.0, f64::max);
        assert!((peak - max_lr).abs() < 1e-12, "group {g}: peak {peak}");
    }
}

#[test]
fn a_list_of_the_wrong_length_names_the_scheduler_argument_and_counts() {
    let config = one_cycle(
        SchedulerArg::Numbers(vec![1e-3, 5e-3]),
        SchedulerArg::Number(0.85),
    );
    let adamw = AdamW::new().build().expect("AdamW");
    let scheduled = config.apply(&adamw.definition).expect("applies");
    let groups = (0..3)
        .map(|t| Group {
            tensors: vec![t],
            hypers: BTreeMap::new(),
            rule: None,
        })
        .collect();
    let setup = Setup {
        shapes: vec![vec![2]; 3],
        groups,
        ..Setup::default()
    };
    let err = Optimizer::new(&scheduled, setup)
        .err()
        .expect("2 values for 3 groups");
    let message = err.to_string();
    assert!(
        message.contains("OneCycleLR max_lr has 2 values")
            && message.contains("there are 3 param groups"),
        "{message}"
    );
}

#[test]
fn lists_that_cannot_be_taken_are_refused_by_name() {
    let sgd = Sgd::new().lr(0.1).momentum(0.9).build().expect("SGD");
    let cyclic = |base_lr: SchedulerArg| {
        SchedulerConfig::new(
            "CyclicLR",
            [("base_lr", base_lr), ("max_lr", SchedulerArg::Number(0.5))],
        )
    };
    let empty = cyclic(SchedulerArg::Numbers(vec![])).apply(&sgd.definition);
    let message = empty.expect_err("empty list").to_string();
    assert!(message.contains("base_lr"), "{message}");
    let nan = cyclic(SchedulerArg::Numbers(vec![0.1, f64::NAN])).apply(&sgd.definition);
    let message = nan.expect_err("NaN in the list").to_string();
    assert!(
        message.contains("base_lr") && message.contains("NaN"),
        "{message}"
    );
    // A list for an argument whose name the optimizer already uses as a hyperparameter.
    let source = "optimizer o {\n  hyper lr = 0.1\n  hyper min_lr = 0.0\n  param = param - lr * grad - min_lr\n}\n";
    let own = optjit::trace::step::load("o.step", source)
        .expect("parses")
        .optimizer
        .expect("optimizer");
    let plateau = SchedulerConfig::new(
        "ReduceLROnPlateau",
        [("min_lr", SchedulerArg::Numbers(vec![0.01, 0.02]))],
    );
    let message = plateau.apply(&own).expect_err("name taken").to_string();
    assert!(message.contains("min_lr"), "{message}");
    // Two children of one SequentialLR may not both give a list for the same argument.
    let child =
        |max_lr: Vec<f64>| one_cycle(SchedulerArg::Numbers(max_lr), SchedulerArg::Number(0.85));
    let sequential = SchedulerConfig::new(
        "SequentialLR",
        [
            (
                "schedulers",
                SchedulerArg::Schedulers(vec![child(vec![0.1, 0.2]), child(vec![0.3, 0.4])]),
            ),
            ("milestones", SchedulerArg::Numbers(vec![5.0])),
        ],
    );
    let adamw = AdamW::new().build().expect("AdamW");
    let message = sequential
        .apply(&adamw.definition)
        .expect_err("twice")
        .to_string();
    assert!(message.contains("max_lr"), "{message}");
}

/// A child of `SequentialLR` may take lists; after its milestone the next child runs.
#[test]
fn a_sequential_child_takes_lists() {
    let warmup = SchedulerConfig::new(
        "LinearLR",
        [
            ("start_factor", SchedulerArg::Number(0.5)),
            ("total_iters", SchedulerArg::Number(3.0)),
        ],
    );
    let cyclic = SchedulerConfig::new(
        "CyclicLR",
        [
            ("base_lr", SchedulerArg::Numbers(vec![0.01, 0.02])),
            ("max_lr", SchedulerArg::Numbers(vec![0.1, 0.3])),
            ("step_size_up", SchedulerArg::Number(2.0)),
            ("cycle_momentum", SchedulerArg::Bool(false)),
        ],
    );
    let sequential = SchedulerConfig::new(
        "SequentialLR",
        [
            ("schedulers", SchedulerArg::Schedulers(vec![warmup, cyclic])),
            ("milestones", SchedulerArg::Numbers(vec![3.0])),
        ],
    );
    let sgd = Sgd::new().lr(0.1).build().expect("SGD");
    let scheduled = sequential.apply(&sgd.definition).expect("applies");
    let setup = Setup {
        shapes: vec![vec![2], vec![2]],
        groups: (0..2)
            .map(|t| Group {
                tensors: vec![t],
                hypers: BTreeMap::new(),
                rule: None,
            })
            .collect(),
        hypers: sgd.hypers.clone(),
        ..Setup::default()
    };
    let mut opt = Optimizer::new(&scheduled, setup).expect("compiles");
    let mut params = vec![vec![0.0f32; 2]; 2];
    let grads = vec![vec![0.0f32; 2]; 2];
    let mut lrs = [Vec::new(), Vec::new()];
    for _ in 0..6 {
        opt.step(&mut params, &grads).expect("step");
        for (g, lrs) in lrs.iter_mut().enumerate() {
            lrs.push(opt.scalar_state(g, &in_force_state("lr")).expect("lr"));
        }
    }
    // Warm-up (t < 3) from the group's lr; then CyclicLR from each group's base_lr up to its
    // max_lr in 2 steps (t = 3, 4, 5: base, middle, max).
    let expected = [
        [
            0.05,
            0.1 * (0.5 + 0.5 / 3.0),
            0.1 * (0.5 + 1.0 / 3.0),
            0.01,
            0.055,
            0.1,
        ],
        [
            0.05,
            0.1 * (0.5 + 0.5 / 3.0),
            0.1 * (0.5 + 1.0 / 3.0),
            0.02,
            0.16,
            0.3,
        ],
    ];
    for g in 0..2 {
        for (t, (&got, &want)) in lrs[g].iter().zip(&expected[g]).enumerate() {
            assert!(
                (got - want).abs() < 1e-12,
                "group {g}, t={t}: {got} != {want}"
            );
        }
    }
}

/// `MultiStepLR(milestones=[])`, which PyTorch accepts, never decays the rate.
#[test]
fn multistep_without_milestones_keeps_the_rate() {
    let config = SchedulerConfig::new(
        "MultiStepLR",
        [("milestones", SchedulerArg::Numbers(vec![]))],
    );
    let sgd = Sgd::new().lr(0.1).build().expect("SGD");
    let scheduled = config
        .apply(&sgd.definition)
        .expect("empty milestones apply");
    let setup = Setup {
        shapes: vec![vec![1]],
        hypers: sgd.hypers.clone(),
        ..Setup::default()
    };
    let mut opt = Optimizer::new(&scheduled, setup).expect("compiles");
    let mut params = vec![vec![0.0f32]];
    for _ in 0..3 {
        opt.step(&mut params, &[vec![1.0f32]]).expect("step");
        assert_eq!(opt.scalar_state(0, &in_force_state("lr")), Some(0.1));
    }
}
