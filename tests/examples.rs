//! The `.step` files of `examples/` against hand-written f64 references: each compiled step
//! must follow its reference within f32 rounding over several steps.

use optjit::optim::Sgd;
use optjit::trace::step::{Loaded, in_force_state, load};
use optjit::{Definition, Optimizer, Setup};
use std::collections::BTreeMap;
use std::path::Path;

const SIZES: [usize; 3] = [1, 37, 4099];
const STEPS: usize = 6;

fn example(name: &str) -> Loaded {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let source = std::fs::read_to_string(&path).expect("example file");
    load(name, &source).unwrap_or_else(|e| panic!("{e}"))
}

/// Deterministic values in [-1, 1), a different stream per seed.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn grads(step: usize) -> Vec<Vec<f32>> {
    SIZES
        .iter()
        .enumerate()
        .map(|(t, &n)| values(1000 * step as u64 + t as u64 + 1, n))
        .collect()
}

/// Runs `definition` with `hypers` for `STEPS` steps and checks every parameter after every
/// step against `reference(step, param, grad, state)`, which updates one element in f64
/// (`state` is the element's own reference state, starting at zeros).
fn check(
    definition: &Definition,
    hypers: &[(&str, f64)],
    n_states: usize,
    reference: impl Fn(usize, &mut f64, f64, &mut [f64]),
) -> Optimizer {
    let hypers: BTreeMap<String, f64> = hypers.iter().map(|&(k, v)| (k.to_string(), v)).collect();
    let setup = Setup {
        shapes: SIZES.iter().map(|&n| vec![n]).collect(),
        hypers,
        ..Setup::default()
    };
    let mut opt = Optimizer::new(definition, setup).expect("compiles");
    let mut params: Vec<Vec<f32>> = SIZES
        .iter()
        .enumerate()
        .map(|(t, &n)| values(7 + t as u64, n))
        .collect();
    let mut want: Vec<Vec<f64>> = params
        .iter()
        .map(|p| p.iter().map(|&x| f64::from(x)).collect())
        .collect();
    let mut states: Vec<Vec<Vec<f64>>> = SIZES
        .iter()
        .map(|&n| vec![vec![0.0; n_states]; n])
        .collect();
    for step in 1..=STEPS {
        let grads = grads(step);
        opt.step(&mut params, &grads).expect("step");
        for t in 0..SIZES.len() {
            for i in 0..SIZES[t] {
                let g = f64::from(grads[t][i]);
                reference(step, &mut want[t][i], g, &mut states[t][i]);
                let (got, w) = (f64::from(params[t][i]), want[t][i]);
                assert!(
                    (got - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                    "{}: step {step}, tensor {t}[{i}]: got {got}, want {w}",
                    definition.graph.name
                );
            }
        }
    }
    opt
}

#[test]
fn lion_follows_its_reference() {
    let lion = example("lion.step").optimizer.expect("an optimizer");
    let (lr, beta1, beta2, wd) = (1e-3, 0.9, 0.99, 0.1);
    let hypers = [
        ("lr", lr),
        ("beta1", beta1),
        ("beta2", beta2),
        ("weight_decay", wd),
    ];
    check(&lion, &hypers, 1, |_, p, g, s| {
        let c = beta1 * s[0] + (1.0 - beta1) * g;
        let sign = if c > 0.0 {
            1.0
        } else if c < 0.0 {
            -1.0
        } else {
            0.0
        };
        *p = *p * (1.0 - lr * wd) - lr * sign;
        s[0] = beta2 * s[0] + (1.0 - beta2) * g;
    });
}

#[test]
fn adabelief_follows_its_reference() {
    let adabelief = example("adabelief.step").optimizer.expect("an optimizer");
    let (lr, beta1, beta2, eps, wd) = (1e-2, 0.9, 0.999, 1e-8, 0.01);
    let hypers = [
        ("lr", lr),
        ("beta1", beta1),
        ("beta2", beta2),
        ("eps", eps),
        ("weight_decay", wd),
    ];
    check(&adabelief, &hypers, 2, |step, p, g, s| {
        let k = step as i32;
        s[0] = beta1 * s[0] + (1.0 - beta1) * g;
        s[1] = beta2 * s[1] + (1.0 - beta2) * (g - s[0]) * (g - s[0]) + eps;
        let m_hat = s[0] / (1.0 - beta1.powi(k));
        let s_hat = s[1] / (1.0 - beta2.powi(k));
        *p = *p * (1.0 - lr * wd) - lr * m_hat / (s_hat.sqrt() + eps);
    });
}

#[test]
fn adan_follows_its_reference() {
    let adan = example("adan.step").optimizer.expect("an optimizer");
    let (lr, b1, b2, b3, eps, wd) = (1e-2, 0.98, 0.92, 0.99, 1e-8, 0.02);
    let hypers = [
        ("lr", lr),
        ("beta1", b1),
        ("beta2", b2),
        ("beta3", b3),
        ("eps", eps),
        ("weight_decay", wd),
    ];
    // State: exp_avg, exp_avg_diff, exp_avg_sq, prev_grad.
    check(&adan, &hypers, 4, |step, p, g, s| {
        let k = step as i32;
        let diff = if step > 1 { g - s[3] } else { 0.0 };
        s[0] = b1 * s[0] + (1.0 - b1) * g;
        s[1] = b2 * s[1] + (1.0 - b2) * diff;
        let u = g + b2 * diff;
        s[2] = b3 * s[2] + (1.0 - b3) * u * u;
        let denom = s[2].sqrt() / (1.0 - b3.powi(k)).sqrt() + eps;
        let update = (s[0] / (1.0 - b1.powi(k)) + b2 * s[1] / (1.0 - b2.powi(k))) / denom;
        *p = *p * (1.0 - lr * wd) - lr * update;
        s[3] = g;
    });
}

#[test]
fn warmup_cosine_schedules_sgd_like_its_reference() {
    let schedule = example("warmup_cosine.step")
        .schedules
        .into_iter()
        .next()
        .expect("a schedule");
    let sgd = Sgd::new().lr(0.1).momentum(0.9).build().expect("SGD");
    let scheduled = schedule
        .apply(&sgd.definition)
        .unwrap_or_else(|e| panic!("{e}"));
    let (base, warmup, total, min_ratio) = (0.1, 2.0, 5.0, 0.1);
    let lr_at = |t: f64| {
        let progress = ((t - warmup) / (total - warmup).max(1.0)).clamp(0.0, 1.0);
        let cosine =
            min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        base * if t < warmup { t / warmup } else { cosine }
    };
    let hypers = [
        ("lr", base),
        ("momentum", 0.9),
        ("warmup", warmup),
        ("total", total),
        ("min_ratio", min_ratio),
    ];
    let opt = check(&scheduled, &hypers, 1, |step, p, g, s| {
        // PyTorch SGD: the first step's buffer is the gradient itself.
        s[0] = if step == 1 { g } else { 0.9 * s[0] + g };
        *p -= lr_at((step - 1) as f64) * s[0];
    });
    let in_force = opt
        .scalar_state(0, &in_force_state("lr"))
        .expect("lr in force");
    let want = lr_at((STEPS - 1) as f64);
    assert!((in_force - want).abs() <= 1e-12, "{in_force} vs {want}");
    assert_eq!(
        opt.hyper(0, "lr").expect("lr"),
        base,
        "the base value stays"
    );
    assert_eq!(opt.stats().builds(), 1);
}

#[test]
fn plateau_replays_pytorchs_reduce_lr_on_plateau() {
    // The recorded ReduceLROnPlateau(factor=0.5, patience=2) run, with the schedule written in
    // .step: same metrics, same lr in force at every step, same parameters.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sched-plateau.json");
    let text = std::fs::read_to_string(path).expect("golden file");
    let mut case: serde_json::Value = serde_json::from_str(&text).expect("json");
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plateau.step"),
    )
    .expect("example");
    case["schedule"] = serde_json::json!({
        "name": "custom",
        "step": source,
        "kwargs": {"factor": 0.5, "patience": 2},
    });
    let backend = optjit_cli::stepper::Backend::Cpu { threads: 1 };
    let result = optjit_cli::golden::run_case(&case, &backend).expect("runs");
    println!("{result}");
    assert!(result.passed(), "{result}");

    // A metric reported to an optimizer without a metric-driven schedule is an error.
    let lion = example("lion.step").optimizer.expect("an optimizer");
    let setup = Setup {
        shapes: vec![vec![3]],
        ..Setup::default()
    };
    let mut opt = Optimizer::new(&lion, setup).expect("compiles");
    let err = opt.report_metric(1.0).expect_err("no metric schedule");
    assert!(
        err.to_string()
            .contains("no schedule of this optimizer reads `metric`"),
        "{err}"
    );
}

#[test]
fn a_step_file_and_the_tracing_api_give_the_same_compiled_step() {
    // The README's Lion, traced in Rust, against examples/lion.step.
    use optjit::{CompileOptions, Domain, Stage, Tracer, compile};
    let t = Tracer::new("lion");
    let lr = t.hyper_in("lr", 1e-4, Domain::non_negative());
    let (beta1, beta2) = (t.hyper("beta1", 0.9), t.hyper("beta2", 0.99));
    let wd = t.hyper("weight_decay", 0.0);
    let (param, grad, exp_avg) = (t.param(), t.grad(), t.state("exp_avg", 0.0));
    let update = (&beta1 * &exp_avg + (1.0 - &beta1) * &grad).sign();
    t.set_param(&param * (1.0 - &lr * &wd) - &lr * update);
    t.set_state(&exp_avg, &beta2 * &exp_avg + (1.0 - &beta2) * &grad);
    let traced = t.finish().expect("traces");
    let from_file = example("lion.step").optimizer.expect("an optimizer");
    let options = CompileOptions {
        keep_texts: true,
        ..CompileOptions::default()
    };
    let text = |d: &Definition, stage| {
        let compiled = compile(d, &options).expect("compiles");
        compiled.text(stage).expect("text").to_string()
    };
    for stage in [Stage::Extract, Stage::Fuse, Stage::Lower] {
        assert_eq!(text(&traced, stage), text(&from_file, stage), "{stage}");
    }
}

#[test]
fn a_schedule_sets_several_hyperparameters_per_group_from_their_base_values() {
    let source = "schedule ramp {
      hyper warmup = 4
      let f = min(1, (t + 1) / warmup)
      lr = lr * f
      momentum = momentum * (1 - 0.5 * (1 - f))
    }";
    let loaded = load("ramp.step", source).unwrap_or_else(|e| panic!("{e}"));
    let sgd = Sgd::new().lr(0.1).momentum(0.9).build().expect("SGD");
    let scheduled = loaded.schedules[0]
        .apply(&sgd.definition)
        .unwrap_or_else(|e| panic!("{e}"));
    let groups = vec![
        optjit::Group {
            tensors: vec![0],
            hypers: BTreeMap::new(),
            rule: None,
        },
        optjit::Group {
            tensors: vec![1],
            hypers: BTreeMap::from([("lr".to_string(), 0.02), ("momentum".to_string(), 0.5)]),
            rule: None,
        },
    ];
    let mut hypers = sgd.hypers.clone();
    hypers.insert("warmup".into(), 4.0);
    let setup = Setup {
        shapes: vec![vec![5], vec![3]],
        groups,
        hypers,
        ..Setup::default()
    };
    let mut opt = Optimizer::new(&scheduled, setup).expect("compiles");
    let mut params = vec![vec![1.0f32; 5], vec![1.0f32; 3]];
    let grads = vec![vec![0.5f32; 5], vec![0.5f32; 3]];
    for step in 0..6 {
        opt.step(&mut params, &grads).expect("step");
        let f = (f64::from(step + 1) / 4.0).min(1.0);
        for (g, (lr, momentum)) in [(0.1, 0.9), (0.02, 0.5)].into_iter().enumerate() {
            let got_lr = opt.scalar_state(g, &in_force_state("lr")).expect("lr");
            let got_m = opt
                .scalar_state(g, &in_force_state("momentum"))
                .expect("momentum");
            assert!(
                (got_lr - lr * f).abs() < 1e-15,
                "group {g} step {step}: lr {got_lr}"
            );
            let want_m = momentum * (1.0 - 0.5 * (1.0 - f));
            assert!(
                (got_m - want_m).abs() < 1e-15,
                "group {g} step {step}: momentum {got_m}"
            );
        }
    }
    assert_eq!(opt.stats().builds(), 1);
}

#[test]
fn warm_restarts_restart_exactly_at_every_cycle_boundary() {
    // T_0 = 1, T_mult = 3: cycles start at t = 0, 1, 4, 13, 40, 121 (where a logarithm alone
    // lands just below the integer), with lr back at its base value there.
    use optjit::optim::{SchedulerArg, SchedulerConfig};
    let config = SchedulerConfig::new(
        "CosineAnnealingWarmRestarts",
        [
            ("T_0", SchedulerArg::Number(1.0)),
            ("T_mult", SchedulerArg::Number(3.0)),
            ("eta_min", SchedulerArg::Number(0.001)),
        ],
    );
    let sgd = Sgd::new().lr(0.1).build().expect("SGD");
    let scheduled = config.apply(&sgd.definition).expect("applies");
    let setup = Setup {
        shapes: vec![vec![2]],
        hypers: sgd.hypers.clone(),
        ..Setup::default()
    };
    let mut opt = Optimizer::new(&scheduled, setup).expect("compiles");
    let mut params = vec![vec![1.0f32; 2]];
    let grads = vec![vec![0.0f32; 2]];
    for t in 0..=130u32 {
        opt.step(&mut params, &grads).expect("step");
        let lr = opt.scalar_state(0, &in_force_state("lr")).expect("lr");
        if [0, 1, 4, 13, 40, 121].contains(&t) {
            assert!((lr - 0.1).abs() < 1e-12, "t={t}: lr {lr}");
        } else {
            assert!(lr < 0.1, "t={t}: lr {lr}");
        }
    }
    // Zero-length periods are refused, as PyTorch refuses them.
    let bad = SchedulerConfig::new("StepLR", [("step_size", SchedulerArg::Number(0.0))]);
    let err = bad.apply(&sgd.definition).expect_err("step_size 0");
    assert!(
        err.to_string()
            .contains("step_size must be a number > 0, got 0"),
        "{err}"
    );
}

#[test]
fn a_schedule_cannot_set_what_a_structural_choice_left_out() {
    // SGD with momentum 0 has no momentum buffer: CyclicLR's momentum cycling would silently do
    // nothing here while PyTorch would step with momentum, so it is refused.
    use optjit::optim::{SchedulerArg, SchedulerConfig};
    let cyclic = SchedulerConfig::new(
        "CyclicLR",
        [
            ("base_lr", SchedulerArg::Number(0.01)),
            ("max_lr", SchedulerArg::Number(0.1)),
        ],
    );
    let plain = Sgd::new().lr(0.1).build().expect("SGD");
    let err = cyclic.apply(&plain.definition).expect_err("momentum 0");
    assert!(err.to_string().contains("does not use 'momentum'"), "{err}");
    let with_momentum = Sgd::new().lr(0.1).momentum(0.9).build().expect("SGD");
    cyclic
        .apply(&with_momentum.definition)
        .expect("momentum > 0");
}

/// `examples/adafactor.step` against the built-in Adafactor on matrices, a 3-d tensor, a vector
/// and a 0-d tensor: the same compiled steps, so the same bits.
#[test]
fn adafactor_step_file_matches_the_built_in() {
    let file = example("adafactor.step")
        .optimizer
        .expect("an optimizer block");
    let built_in = optjit::optim::Adafactor::new().build().expect("Adafactor");
    let shapes: Vec<Vec<usize>> = vec![vec![20, 30], vec![30], vec![2, 3, 4], vec![]];
    let run = |definition: &Definition| {
        let setup = Setup {
            shapes: shapes.clone(),
            hypers: built_in.hypers.clone(),
            ..Setup::default()
        };
        let mut opt = Optimizer::new(definition, setup).expect("compiles");
        assert_eq!(opt.compiled_kinds().count(), 3, "matrices, vectors, 0-d");
        let lens: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        let mut params: Vec<Vec<f32>> = lens
            .iter()
            .enumerate()
            .map(|(t, &n)| values(77 + t as u64, n))
            .collect();
        for step in 0..STEPS {
            let grads: Vec<Vec<f32>> = lens
                .iter()
                .enumerate()
                .map(|(t, &n)| values(1000 * step as u64 + t as u64 + 1, n))
                .collect();
            opt.step(&mut params, &grads).expect("step");
        }
        let cols = opt.state(0, "col_var").expect("col_var").to_vec();
        // PyTorch's name for a vector's second moment, in both.
        let variance = opt.state(1, "variance").expect("variance").to_vec();
        (params, cols, variance)
    };
    let (from_file, from_built_in) = (run(&file), run(&built_in.definition));
    let bits = |v: &[Vec<f32>]| -> Vec<u32> { v.iter().flatten().map(|x| x.to_bits()).collect() };
    assert_eq!(bits(&from_file.0), bits(&from_built_in.0));
    assert_eq!(from_file.1, from_built_in.1);
    assert_eq!(from_file.2, from_built_in.2);
    assert_eq!(from_file.2.len(), 30);
}
