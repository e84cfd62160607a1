//! Every built-in variant at its analytic minimum of bytes and kernels (docs/fusion.md derives
//! each number), and the reduction path: a global norm that is deterministic across thread
//! counts and matches an f64 reference.

mod common;

use optjit::optim::AdamW;
use optjit::{CompileOptions, GRAD_NORM, Optimizer, Setup, compile};

/// (variant, bytes per element, kernels per step), as tabled in docs/fusion.md.
const MINIMUMS: [(&str, usize, usize); 21] = [
    ("sgd", 12, 1),
    ("sgd-momentum", 20, 1),
    ("sgd-nesterov-maximize", 20, 1),
    ("adam", 28, 1),
    ("adam-amsgrad-maximize", 36, 1),
    ("adamw", 28, 1),
    ("adamw-amsgrad", 36, 1),
    ("adagrad", 20, 1),
    ("rmsprop", 20, 1),
    ("rmsprop-centered-momentum", 36, 1),
    ("adadelta", 28, 1),
    ("adamax", 28, 1),
    ("rprop", 28, 1),
    ("asgd", 20, 1),
    ("nadam", 28, 1),
    ("radam", 28, 1),
    ("lion", 20, 1),
    // Norms of the update and of the parameter: the update is written to a scratch buffer in
    // phase 0 with the moments (16 read + 12 written) and read back with param (8 + 4).
    ("lamb", 40, 2),
    ("lars", 28, 2),
    ("adamw-clip", 32, 2),
    ("sgd-momentum-clip", 24, 2),
];

#[test]
fn every_builtin_variant_moves_its_minimum_bytes() {
    let variants = common::builtin_variants();
    assert_eq!(
        variants.len(),
        MINIMUMS.len(),
        "a variant without a minimum"
    );
    for (name, configured) in variants {
        let (_, bytes, kernels) = MINIMUMS
            .iter()
            .find(|(n, ..)| *n == name)
            .unwrap_or_else(|| panic!("no minimum tabled for {name}"));
        let compiled = compile(&configured.definition, &CompileOptions::default()).expect(name);
        let plan = &compiled.plan;
        assert_eq!(plan.bytes_per_elem(), *bytes, "{name}\n{plan}");
        assert_eq!(plan.phases.len(), *kernels, "{name}\n{plan}");
    }
}

/// Adafactor's steps: for matrices a column walk for the parameter's RMS and the row and column
/// means (param and grad, 8), a pass for the update's RMS (grad and the column values, 8) and
/// the update (param rw, grad, column values, 16); for vectors
/// the update's RMS with the parameter's (param, grad, variance: 12) and the update (param and
/// variance rw, grad: 20). The column values are one float per column (cached), counted per
/// element as every load is.
#[test]
fn adafactor_steps_move_their_minimum_bytes() {
    let minimums = [("adafactor", 32, 3), ("adafactor-1d", 32, 2)];
    for ((name, definition), (want_name, bytes, kernels)) in
        common::factored_cases().into_iter().zip(minimums)
    {
        assert_eq!(name, want_name);
        let compiled = compile(&definition, &CompileOptions::default()).expect(name);
        let plan = &compiled.plan;
        assert_eq!(plan.bytes_per_elem(), bytes, "{name}\n{plan}");
        assert_eq!(plan.phases.len(), kernels, "{name}\n{plan}");
    }
}

/// Gradients of a few tensors, several chunks long, so that threads split the work.
fn gradients(step: usize) -> Vec<Vec<f32>> {
    [70_000usize, 3, 150_001, 0, 4096]
        .iter()
        .enumerate()
        .map(|(t, &n)| {
            (0..n)
                .map(|i| (((i * 31 + t * 7 + step) % 1009) as f32 - 504.0) * 1e-3)
                .collect()
        })
        .collect()
}

fn run_clipped(threads: usize) -> (Vec<f64>, Vec<Vec<f32>>) {
    let configured = AdamW::new()
        .build()
        .and_then(|c| c.with_clip_grad_norm(1.0))
        .expect("AdamW with clipping");
    let shapes: Vec<Vec<usize>> = gradients(0).iter().map(|g| vec![g.len()]).collect();
    let setup = Setup {
        shapes,
        hypers: configured.hypers.clone(),
        threads,
        ..Setup::default()
    };
    let mut opt = Optimizer::new(&configured.definition, setup).expect("optimizer");
    let mut params: Vec<Vec<f32>> = gradients(99);
    let mut norms = Vec::new();
    for step in 0..3 {
        let grads = gradients(step);
        opt.step(&mut params, &grads).expect("step");
        norms.push(opt.scalar_state(0, GRAD_NORM).expect("grad_norm"));
        let want: f64 = grads
            .iter()
            .flatten()
            .map(|&g| f64::from(g) * f64::from(g))
            .sum::<f64>()
            .sqrt();
        let got = norms[step];
        assert!(
            (got - want).abs() <= 1e-6 * want,
            "step {step}: {got} vs {want}"
        );
    }
    (norms, params)
}

#[test]
fn the_global_norm_is_the_same_bits_for_any_thread_count() {
    let (norms_1, params_1) = run_clipped(1);
    let (norms_2, params_2) = run_clipped(2);
    let (norms_4, params_4) = run_clipped(4);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&norms_1), bits(&norms_2));
    assert_eq!(bits(&norms_1), bits(&norms_4));
    assert!(params_1 == params_2 && params_1 == params_4);
    // The norm is above max_norm = 1, so the gradients were scaled.
    assert!(norms_1.iter().all(|&n| n > 1.0), "{norms_1:?}");
}

/// Stores move to the first phase that can compute them when that moves fewer bytes: a later
/// phase then reads a stored value back from its buffer, and a value whose inputs were
/// overwritten from a scratch buffer.
#[test]
fn the_planner_materializes_when_it_moves_fewer_bytes() {
    let source = "optimizer normalized_momentum {
      hyper lr = 0.05
      hyper eps = 1e-3
      state m = 0
      m = 0.9 * m + grad
      param = param - lr * norm(param) * m / (norm(m) + eps)
    }";
    let definition = optjit::trace::step::load("nm.step", source)
        .expect("loads")
        .optimizer
        .expect("an optimizer");
    let plan = compile(&definition, &CompileOptions::default())
        .expect("compiles")
        .plan;
    // Recomputing the new m in phase 1 would be 12 + 20 = 32 bytes; storing m in phase 0 and
    // reading it back is 16 + 12.
    assert_eq!(plan.bytes_per_elem(), 28, "{plan}");
    assert_eq!(plan.temps, 0, "{plan}");
    assert_eq!(plan.phases[1].loads.len(), 1, "{plan}");
    assert_eq!(plan.phases[1].loads[0].0.name(), "m", "{plan}");

    // LAMB: the Adam update goes through a scratch buffer (16 + 12, then 8 + 4).
    let lamb = optjit::optim::Lamb::new().build().expect("LAMB");
    let plan = compile(&lamb.definition, &CompileOptions::default())
        .expect("compiles")
        .plan;
    assert_eq!((plan.bytes_per_elem(), plan.temps), (40, 1), "{plan}");
}
