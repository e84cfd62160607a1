//! Differential tests: the compiled CPU step against the f64 reference interpreter running the
//! traced (unoptimized) graph, for every built-in variant, on sizes that cross vector, unroll
//! and chunk edges, over several steps.

mod common;

use optjit::ir::{Class, ScalarEnv, TensorValues, interpret};
use optjit::optim::{Adam, AdamW, Configured, Sgd};
use optjit::{Definition, Optimizer, Setup};
use std::collections::BTreeMap;

const SIZES: [usize; 8] = [1, 3, 15, 16, 17, 783, 4096, (1 << 16) + 7];
const STEPS: usize = 4;

/// Deterministic pseudo-random values in [-1, 1).
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

fn check(configured: Configured) {
    check_definition(&configured.definition, &configured.hypers);
}

fn check_definition(definition: &Definition, hypers: &BTreeMap<String, f64>) {
    let graph = &definition.graph;
    let shapes: Vec<Vec<usize>> = SIZES.iter().map(|&n| vec![n]).collect();
    let setup = Setup {
        shapes,
        hypers: hypers.clone(),
        threads: 2,
        ..Setup::default()
    };
    let mut opt = Optimizer::new(definition, setup).expect("compile");
    let mut params: Vec<Vec<f32>> = SIZES
        .iter()
        .enumerate()
        .map(|(t, &n)| values(t as u64 + 1, n))
        .collect();
    let mut reference: Vec<TensorValues> = params
        .iter()
        .map(|p| TensorValues {
            param: p.iter().map(|&x| x as f64).collect(),
            grad: Vec::new(),
            states: graph
                .states
                .iter()
                .filter(|s| s.class == Class::Elem)
                .map(|s| (s.name.clone(), vec![s.init; p.len()]))
                .collect(),
        })
        .collect();
    let mut scalar_states = BTreeMap::new();
    for step in 1..=STEPS {
        let grads: Vec<Vec<f32>> = SIZES
            .iter()
            .enumerate()
            .map(|(t, &n)| values(100 * step as u64 + t as u64, n))
            .collect();
        opt.step(&mut params, &grads).expect("step");
        for (r, g) in reference.iter_mut().zip(&grads) {
            r.grad = g.iter().map(|&x| x as f64).collect();
        }
        let env = ScalarEnv {
            hypers: hypers.clone(),
            step: step as f64,
            scalar_states: scalar_states.clone(),
        };
        let out = interpret(graph, &env, &reference).expect("interpret");
        reference = out.tensors;
        scalar_states = out.scalar_states;
        for (t, (got, want)) in params.iter().zip(&reference).enumerate() {
            for (i, (&g, &w)) in got.iter().zip(&want.param).enumerate() {
                let tol = 1e-5 + 1e-4 * w.abs();
                assert!(
                    (g as f64 - w).abs() <= tol,
                    "{}: step {step} tensor {t}[{i}]: got {g}, want {w}",
                    graph.name
                );
            }
            for (name, want_state) in &want.states {
                let got_state = opt.state(t, name).expect("state");
                for (i, (&g, &w)) in got_state.iter().zip(want_state).enumerate() {
                    let tol = 1e-6 + 1e-4 * w.abs();
                    assert!(
                        (g as f64 - w).abs() <= tol,
                        "{}: step {step} {name}[{t}][{i}]: got {g}, want {w}",
                        graph.name
                    );
                }
            }
        }
    }
}

#[test]
fn sgd_variants_match_the_interpreter() {
    check(Sgd::new().lr(0.1).build().expect("SGD"));
    check(
        Sgd::new()
            .lr(0.05)
            .momentum(0.9)
            .dampening(0.2)
            .weight_decay(0.01)
            .build()
            .expect("SGD"),
    );
    check(
        Sgd::new()
            .lr(0.05)
            .momentum(0.8)
            .nesterov(true)
            .maximize(true)
            .build()
            .expect("SGD"),
    );
}

#[test]
fn adam_variants_match_the_interpreter() {
    check(Adam::new().lr(0.01).build().expect("Adam"));
    check(
        Adam::new()
            .lr(0.01)
            .weight_decay(0.1)
            .amsgrad(true)
            .maximize(true)
            .build()
            .expect("Adam"),
    );
}

#[test]
fn adamw_variants_match_the_interpreter() {
    check(
        AdamW::new()
            .lr(0.01)
            .betas(0.8, 0.95)
            .eps(1e-6)
            .weight_decay(0.1)
            .build()
            .expect("AdamW"),
    );
    check(AdamW::new().lr(0.01).amsgrad(true).build().expect("AdamW"));
}

#[test]
fn clipped_steps_match_the_interpreter() {
    for configured in [
        AdamW::new().lr(0.01).build(),
        Sgd::new().lr(0.05).momentum(0.9).build(),
    ] {
        check(
            configured
                .and_then(|c| c.with_clip_grad_norm(5.0))
                .expect("clipped"),
        );
    }
}

#[test]
fn per_tensor_reductions_match_the_interpreter() {
    let definition = common::per_tensor_reductions();
    let hypers = [("lr".to_string(), 0.05), ("eps".to_string(), 1e-3)].into();
    check_definition(&definition, &hypers);
}

/// A `.step` rule, with its hyperparameters' defaults.
fn step_rule(source: &str) -> (Definition, BTreeMap<String, f64>) {
    let loaded = optjit::trace::step::load("test.step", source).unwrap_or_else(|e| panic!("{e}"));
    let definition = loaded.optimizer.expect("an optimizer block");
    let hypers = definition
        .graph
        .hypers
        .iter()
        .map(|h| (h.name.clone(), h.default))
        .collect();
    (definition, hypers)
}

#[test]
fn step_rules_with_sequential_assignment_match_the_interpreter() {
    // `param` assigned twice (the second reads the first), a state read after its update.
    let (definition, hypers) = step_rule(
        "optimizer sequential {
           hyper lr = 0.05
           hyper decay = 0.01
           state m = 0
           param = param * (1 - lr * decay)
           m = 0.9 * m + grad
           param = param - lr * m
         }",
    );
    check_definition(&definition, &hypers);
}

#[test]
fn step_rules_with_a_norm_of_an_updated_state_match_the_interpreter() {
    // LARS-like: the per-tensor norm of the new momentum scales the update.
    let (definition, hypers) = step_rule(
        "optimizer normalized_momentum {
           hyper lr = 0.05
           hyper eps = 1e-3
           state m = 0
           m = 0.9 * m + grad
           param = param - lr * norm(param) * m / (norm(m) + eps)
         }",
    );
    check_definition(&definition, &hypers);
}
