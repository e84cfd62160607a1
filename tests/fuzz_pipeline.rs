//! Differential fuzzing of the whole pipeline: random `.step` optimizer programs (every element
//! op of the language, hyperparameters with and without domains, per-element and scalar states,
//! `step`, the reductions `norm`, `sum`, `mean`, `max_abs` and `global_norm`, and
//! `clip_grad_norm` around some of them), on random tensors (empty ones, odd lengths, several
//! tensors, one or two param groups with their own hyperparameter values), run for several
//! steps through the CPU `Optimizer` with the e-graph as by default and in exact-only mode, and
//! through `CudaOptimizer` on the PTX interpreter (`common/sim_gpu.rs`), each against the f64
//! reference interpreter (`ir::interpret`) on the traced, unoptimized graph.
//!
//! The generator (`common/fuzz_gen.rs`) keeps values where an f32 and an f64 run can be
//! compared: inputs in [-2, 2] on a grid of 1/1024, values bounded (large ones squashed by
//! `x / (abs(x) + 1)`), denominators at least 1/32, `sqrt`, `log` and `pow` on arguments bounded
//! away from 0, comparisons, `sign` and `floor` only of values computed exactly in both
//! precisions (so that no branch flips on a rounding), and a few programs that take `sqrt` of
//! possibly negative exact values, whose NaNs must be NaN on both sides. A result matches when
//! NaN is NaN, an infinity the same infinity, and a finite value is within `RTOL` of
//! `max(1, the largest finite |value| of the tensor)` (the inputs' scale).
//!
//! Program `i` of a test is generated from seed `OPTJIT_FUZZ_SEED + i` (by default a fixed
//! seed), so that a run is deterministic; a mismatch prints the seed, the program, the setup and
//! the command that replays it alone. By default the CPU tests run 2000 programs each and the
//! simulated GPU 500 (half with the e-graph as by default, half exact-only: by the seed's
//! parity); `OPTJIT_FUZZ_PROGRAMS=N` runs N programs through each CPU pipeline and N / 4
//! through the simulator (at least one), the long mode, e.g.
//! `OPTJIT_FUZZ_PROGRAMS=100000 cargo test --release --test fuzz_pipeline`.

#[path = "common/fuzz_gen.rs"]
mod fuzz_gen;
#[path = "common/sim_gpu.rs"]
mod sim_gpu;

use fuzz_gen::{Case, generate};
use optjit::ir::{Class, ScalarEnv, TensorValues, interpret};
use optjit::rewrite::SimplifyOptions;
use optjit::{CacheOptions, CompileOptions, CudaOptimizer, Optimizer, Target};
use sim_gpu::SimGpu;
use std::collections::BTreeMap;

/// Steps each program runs.
const STEPS: usize = 4;
/// Largest difference allowed, as a fraction of `max(1, the tensor's largest |value|)`.
const RTOL: f64 = 1e-5;
/// Programs per CPU pipeline, and through the simulator, unless `OPTJIT_FUZZ_PROGRAMS` says.
const CPU_PROGRAMS: u64 = 2000;
const SIM_PROGRAMS: u64 = 500;
/// The first seed, unless `OPTJIT_FUZZ_SEED` says.
const SEED: u64 = 0x0f_f1_7e_57;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text}: expected a number")))
}

/// The seeds of the programs a test runs.
fn seeds(default_count: u64, divisor: u64) -> std::ops::Range<u64> {
    let count = match env_u64("OPTJIT_FUZZ_PROGRAMS") {
        Some(n) => (n / divisor).max(1),
        None => default_count,
    };
    let first = env_u64("OPTJIT_FUZZ_SEED").unwrap_or(SEED);
    first..first + count
}

/// Where a pipeline runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Pipeline {
    Cpu { exact_only: bool },
    Sim { exact_only: bool },
}

fn options(pipeline: Pipeline) -> CompileOptions {
    let (exact_only, target) = match pipeline {
        Pipeline::Cpu { exact_only } => (exact_only, Target::Cpu),
        Pipeline::Sim { exact_only } => (exact_only, Target::cuda()),
    };
    CompileOptions {
        simplify: SimplifyOptions {
            exact_only,
            ..SimplifyOptions::default()
        },
        target,
        cache: CacheOptions::off(),
        ..CompileOptions::default()
    }
}

/// One step's results from a pipeline: each tensor's param and per-element states, and each
/// group's scalar states.
struct Results {
    params: Vec<Vec<f32>>,
    states: Vec<BTreeMap<String, Vec<f32>>>,
    scalar_states: Vec<BTreeMap<String, f64>>,
}

/// Runs the pipeline on `case`, giving its results after every step.
trait Runner {
    fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>]) -> Result<(), String>;
    fn state(&self, tensor: usize, name: &str) -> Option<Vec<f32>>;
    fn scalar_state(&self, group: usize, name: &str) -> Option<f64>;
}

impl Runner for Optimizer {
    fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>]) -> Result<(), String> {
        Optimizer::step(self, params, grads).map_err(|e| e.to_string())
    }
    fn state(&self, tensor: usize, name: &str) -> Option<Vec<f32>> {
        Optimizer::state(self, tensor, name).map(<[f32]>::to_vec)
    }
    fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        Optimizer::scalar_state(self, group, name)
    }
}

impl Runner for CudaOptimizer<SimGpu> {
    fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>]) -> Result<(), String> {
        self.step_host(params, grads).map_err(|e| e.to_string())
    }
    fn state(&self, tensor: usize, name: &str) -> Option<Vec<f32>> {
        CudaOptimizer::state(self, tensor, name).expect("reading a state")
    }
    fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        CudaOptimizer::scalar_state(self, group, name)
    }
}

/// `got` against `want`: NaN is NaN, an infinity the same infinity, and a finite value within
/// `RTOL` of `max(1, the largest finite |want|)`. Gives the largest difference as a fraction of
/// that scale; the error is the first element out.
fn compare(what: &str, got: &[f32], want: &[f64]) -> Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, want {}", got.len(), want.len()));
    }
    let finite = want.iter().filter(|w| w.is_finite());
    let scale = finite.fold(1.0, |m: f64, w| m.max(w.abs()));
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(g);
        let ok = match (g.is_nan(), w.is_nan()) {
            (true, true) => true,
            (false, false) if w.is_infinite() || g.is_infinite() => g == w,
            (false, false) => (g - w).abs() <= RTOL * scale,
            _ => false,
        };
        let err = (g - w).abs() / scale;
        if err.is_finite() {
            worst = worst.max(err);
        }
        if !ok {
            return Err(format!(
                "{what}[{i}]: got {g:e}, want {w:e} ({err:.2e} of the scale {scale:e})"
            ));
        }
    }
    Ok(worst)
}

/// A scalar state: as a tensor of one value.
fn compare_scalar(what: &str, got: Option<f64>, want: f64) -> Result<f64, String> {
    let got = got.ok_or_else(|| format!("{what}: missing"))?;
    compare(what, &[got as f32], &[want])
}

/// The reference step for every group. A group's tensors are interpreted with the group's
/// scalars, together with the other groups' tensors so that `global_norm` covers them all
/// (the generator only takes `global_norm` of values that no group's hyperparameters or scalar
/// states change; the other groups' results are dropped).
fn reference_step(
    case: &Case,
    step: usize,
    tensors: &mut [TensorValues],
    scalar_states: &mut [BTreeMap<String, f64>],
) -> Result<(), String> {
    let graph = &case.definition.graph;
    let mut next = tensors.to_vec();
    for (g, members) in case.groups.iter().enumerate() {
        let env = ScalarEnv {
            hypers: case.group_hypers(g),
            step: step as f64,
            scalar_states: scalar_states[g].clone(),
        };
        let out = interpret(graph, &env, tensors).map_err(|e| format!("interpret: {e}"))?;
        for &t in members {
            next[t] = out.tensors[t].clone();
        }
        scalar_states[g] = out.scalar_states;
    }
    tensors.clone_from_slice(&next);
    Ok(())
}

/// Runs `case` for `STEPS` steps through `runner` and the reference, comparing after each;
/// gives the largest difference (a fraction of the scale).
fn run_case(case: &Case, runner: &mut dyn Runner) -> Result<f64, String> {
    let mut worst = 0.0f64;
    let graph = &case.definition.graph;
    let mut params = case.initial_params();
    let mut reference: Vec<TensorValues> = params
        .iter()
        .map(|p| TensorValues {
            param: p.iter().map(|&x| f64::from(x)).collect(),
            grad: Vec::new(),
            states: (graph.states.iter())
                .filter(|s| s.class == Class::Elem)
                .map(|s| (s.name.clone(), vec![s.init; p.len()]))
                .collect(),
        })
        .collect();
    let mut scalar_states = vec![BTreeMap::new(); case.groups.len()];
    for step in 1..=STEPS {
        let grads = case.grads(step);
        for (r, g) in reference.iter_mut().zip(&grads) {
            r.grad = g.iter().map(|&x| f64::from(x)).collect();
        }
        runner.step(&mut params, &grads)?;
        reference_step(case, step, &mut reference, &mut scalar_states)?;
        let results = Results {
            params: params.clone(),
            states: (0..params.len())
                .map(|t| {
                    (reference[t].states.keys())
                        .map(|name| (name.clone(), runner.state(t, name).unwrap_or_default()))
                        .collect()
                })
                .collect(),
            scalar_states: (0..case.groups.len())
                .map(|g| {
                    (scalar_states[g].keys())
                        .filter_map(|name| Some((name.clone(), runner.scalar_state(g, name)?)))
                        .collect()
                })
                .collect(),
        };
        for (t, want) in reference.iter().enumerate() {
            let at = |what: &str| format!("step {step}: tensor {t}: {what}");
            worst = worst.max(compare(&at("param"), &results.params[t], &want.param)?);
            for (name, values) in &want.states {
                worst = worst.max(compare(&at(name), &results.states[t][name], values)?);
            }
        }
        for (g, want) in scalar_states.iter().enumerate() {
            for (name, &value) in want {
                let what = format!("step {step}: group {g}: scalar state {name}");
                let got = results.scalar_states[g].get(name).copied();
                worst = worst.max(compare_scalar(&what, got, value)?);
            }
        }
    }
    Ok(worst)
}

/// Builds the pipeline's optimizer for `case` and runs it against the reference.
fn check(case: &Case, pipeline: Pipeline) -> Result<f64, String> {
    let setup = case.setup();
    let definition = &case.definition;
    let compile_options = options(pipeline);
    match pipeline {
        Pipeline::Cpu { .. } => {
            let mut opt = Optimizer::with_options(definition, setup, &compile_options)
                .map_err(|e| format!("compile: {e}"))?;
            run_case(case, &mut opt)
        }
        Pipeline::Sim { .. } => {
            let gpu = SimGpu::new();
            let mut opt = CudaOptimizer::with_options(definition, setup, gpu, &compile_options)
                .map_err(|e| format!("compile: {e}"))?;
            run_case(case, &mut opt)
        }
    }
}

/// Runs every seed of the test through `pipeline` and panics with every failure's replay.
/// `pipeline`: `None` for the simulated GPU, in exact-only mode for odd seeds.
fn fuzz(test: &str, pipeline: Option<Pipeline>, seeds: std::ops::Range<u64>) {
    let count = seeds.end - seeds.start;
    let mut failures = Vec::new();
    let mut worst = (0.0f64, 0);
    for seed in seeds {
        let pipeline = pipeline.unwrap_or(Pipeline::Sim {
            exact_only: seed % 2 == 1,
        });
        let gpu = match pipeline {
            Pipeline::Cpu { .. } => None,
            Pipeline::Sim { exact_only } => Some(exact_only),
        };
        let case = generate(seed, gpu);
        match check(&case, pipeline) {
            Ok(err) if err > worst.0 => worst = (err, seed),
            Ok(_) => {}
            Err(message) => {
                failures.push(format!(
                "seed {seed} ({pipeline:?}): {message}\n{case}\nreplay: \
                 OPTJIT_FUZZ_SEED={seed} OPTJIT_FUZZ_PROGRAMS=1 cargo test --test fuzz_pipeline {test}\n"
            ));
                if failures.len() >= 5 {
                    break;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} programs do not match the reference:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "{test}: {count} programs match the reference; largest difference {:.2e} of the \
         scale (seed {}), tolerance {RTOL:e}",
        worst.0, worst.1
    );
}

#[test]
fn cpu_pipeline_matches_the_interpreter() {
    let pipeline = Pipeline::Cpu { exact_only: false };
    fuzz(
        "cpu_pipeline_matches",
        Some(pipeline),
        seeds(CPU_PROGRAMS, 1),
    );
}

#[test]
fn cpu_pipeline_exact_only_matches_the_interpreter() {
    let pipeline = Pipeline::Cpu { exact_only: true };
    fuzz(
        "cpu_pipeline_exact_only",
        Some(pipeline),
        seeds(CPU_PROGRAMS, 1),
    );
}

#[test]
fn simulated_gpu_pipeline_matches_the_interpreter() {
    // Even seeds with the e-graph as by default, odd ones in exact-only mode.
    fuzz("simulated_gpu", None, seeds(SIM_PROGRAMS, 4));
}
