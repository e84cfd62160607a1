//! GPU execution: every built-in's PTX step agrees with the CPU step, the golden cases pass on
//! the device, hyperparameter changes never recompile, and bad input is refused with nothing
//! modified. Without a CUDA device each test prints `skipped: no CUDA device` and returns.
//! The tests that take host tensors also run `CudaOptimizer` on the PTX interpreter
//! (`*_in_the_simulator`, `common::sim_gpu`), which runs everywhere: the same tables, copies,
//! launches and graph replays, with the kernels interpreted instead of run on a GPU.

mod common;

use common::sim_gpu::SimGpu;
use optjit::cudarc::driver::{CudaSlice, DevicePtr};
use optjit::ir::DType;
use optjit::{
    CompileOptions, CudaDevice, CudaOptimizer, Definition, Gpu, Optimizer, OptimizerError, Setup,
};
use optjit_cli::golden::run_file;
use optjit_cli::stepper::Backend;
use std::collections::BTreeMap;
use std::sync::Arc;

fn device() -> Option<Arc<CudaDevice>> {
    match CudaDevice::open(0) {
        Ok(device) => Some(device),
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            None
        }
    }
}

/// `$check` as two tests: `$gpu` on the CUDA device (skipped without one) and `$sim` on the
/// simulated GPU.
macro_rules! twins {
    ($gpu:ident, $sim:ident, $check:ident) => {
        #[test]
        fn $gpu() {
            let Some(device) = device() else { return };
            $check(&device);
        }

        #[test]
        fn $sim() {
            $check(&SimGpu::new());
        }
    };
}

/// Sizes that exercise the vector loop, the scalar tail, several chunk records per tensor and
/// empty tensors.
const SIZES: [usize; 7] = [1, 3, 4, 37, 4096, 70_001, 0];

fn data(seed: u32) -> Vec<Vec<f32>> {
    SIZES
        .iter()
        .enumerate()
        .map(|(t, &n)| {
            (0..n)
                .map(|i| {
                    let x = (i as u32)
                        .wrapping_mul(2_654_435_761)
                        .wrapping_add(seed.wrapping_mul(40_503) + t as u32);
                    (x % 2001) as f32 / 1000.0 - 1.0
                })
                .collect()
        })
        .collect()
}

/// `|x - y|`, 0 when both are NaN and infinite when only one is (so that a NaN on one side
/// fails every tolerance: `f64::max` would drop it).
fn diff(x: f32, y: f32) -> f64 {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => 0.0,
        (false, false) => f64::from((x - y).abs()),
        _ => f64::INFINITY,
    }
}

/// Largest `|a - b| / (1e-6 + |b|)` over every element (tensors of equal lengths).
fn max_rel(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let lens = |t: &[Vec<f32>]| t.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(lens(a), lens(b), "tensor lengths differ");
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(&x, &y)| diff(x, y) / (1e-6 + f64::from(y.abs())))
        .fold(0.0, f64::max)
}

/// Largest `max |a - b| / max |b|` over the tensors: differences against each tensor's scale,
/// for results that agree to rounding. An element near zero that comes from cancelling terms
/// can differ from the CPU's by a large fraction of itself while both are right to within an
/// ulp of the terms (measured in the simulator: 1.2e-7 apart at 1.2e-5, on parameters of
/// magnitude 1).
fn max_scaled(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    assert_eq!(a.len(), b.len(), "tensor counts differ");
    (a.iter().zip(b))
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "tensor lengths differ");
            let worst = (x.iter().zip(y)).fold(0.0, |m, (&p, &q)| f64::max(m, diff(p, q)));
            let finite = y.iter().filter(|q| q.is_finite());
            let scale = finite.fold(0.0, |m, &q| f64::max(m, f64::from(q.abs())));
            if worst == 0.0 {
                0.0
            } else {
                worst / scale.max(f64::MIN_POSITIVE)
            }
        })
        .fold(0.0, f64::max)
}

/// Whether every element has the same bits.
fn bit_identical(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

/// Vectors of `sizes` with these hyperparameters.
fn vectors(sizes: &[usize], hypers: &BTreeMap<String, f64>) -> Setup {
    Setup {
        shapes: sizes.iter().map(|&n| vec![n]).collect(),
        hypers: hypers.clone(),
        ..Setup::default()
    }
}

/// The CPU step compiled with FMA contraction, as the GPU always is, so that both run the
/// same kernel IR.
fn cpu_like_gpu(definition: &Definition, setup: Setup) -> Optimizer {
    let same_kernels = CompileOptions {
        fma: Some(true),
        ..CompileOptions::default()
    };
    Optimizer::with_options(definition, setup, &same_kernels).expect("cpu")
}

twins!(
    every_builtin_matches_the_cpu_on_the_gpu,
    every_builtin_matches_the_cpu_in_the_simulator,
    every_builtin_matches_the_cpu
);

/// The CPU compiled with FMA contraction (as the GPU always is) runs the same kernel IR; no
/// built-in uses exp or log, so the two must agree bit for bit. Except with a reduction: the
/// GPU folds a chunk in another order than the CPU (both fixed), so a clipped step agrees to
/// rounding (1e-5 of each tensor's scale), and its gradient norm to 1e-6.
fn every_builtin_matches_the_cpu<G: Gpu>(device: &Arc<G>) {
    for (case, configured) in common::builtin_variants() {
        let setup = vectors(&SIZES, &configured.hypers);
        let mut cpu = cpu_like_gpu(&configured.definition, setup.clone());
        let mut gpu =
            CudaOptimizer::new(&configured.definition, setup, device.clone()).expect(case);
        let reduces = cpu
            .compiled()
            .plan
            .phases
            .iter()
            .any(|p| !p.reductions.is_empty());
        let (mut p_cpu, mut p_gpu) = (data(1), data(1));
        for step in 0..6 {
            let grads = data(step + 2);
            if step == 3 {
                cpu.set_hyper(None, "lr", 0.05).expect("lr");
                gpu.set_hyper(None, "lr", 0.05).expect("lr");
            }
            cpu.step(&mut p_cpu, &grads).expect("cpu step");
            gpu.step_host(&mut p_gpu, &grads).expect("gpu step");
            let norms = (
                cpu.scalar_state(0, optjit::GRAD_NORM),
                gpu.scalar_state(0, optjit::GRAD_NORM),
            );
            if let (Some(want), Some(got)) = norms {
                assert!(
                    (got - want).abs() <= 1e-6 * want,
                    "{case}: norm {got} vs {want}"
                );
            }
        }
        let err = max_scaled(&p_gpu, &p_cpu);
        println!("{case}: largest difference GPU vs CPU {err:.3e} of the tensor's scale");
        match reduces {
            false => assert!(
                bit_identical(&p_gpu, &p_cpu),
                "{case}: GPU differs from CPU by {err:e}"
            ),
            true => assert!(err < 1e-5, "{case}: GPU differs from CPU by {err:e}"),
        }
        for state in &configured.definition.graph.states {
            for t in 0..SIZES.len() {
                let Some(want) = cpu.state(t, &state.name) else {
                    continue;
                };
                let got = gpu.state(t, &state.name).expect("read").expect("state");
                let err = max_scaled(&[got], &[want.to_vec()]);
                assert!(
                    err < 1e-5,
                    "{case}: state {} of tensor {t}: {err:e}",
                    state.name
                );
            }
        }
        assert_eq!(gpu.stats().builds(), 1);
        assert_eq!(gpu.steps(), 6);
    }
}

twins!(
    per_tensor_reductions_match_the_cpu_on_the_gpu,
    per_tensor_reductions_match_the_cpu_in_the_simulator,
    per_tensor_reductions_match_the_cpu
);

/// Per-tensor reductions (norm, mean, max_abs, sum) on the GPU agree with the CPU to rounding.
fn per_tensor_reductions_match_the_cpu<G: Gpu>(device: &Arc<G>) {
    let definition = common::per_tensor_reductions();
    let setup = vectors(&SIZES, &BTreeMap::new());
    let mut cpu = Optimizer::new(&definition, setup.clone()).expect("cpu");
    let mut gpu = CudaOptimizer::new(&definition, setup, device.clone()).expect("gpu");
    let (mut p_cpu, mut p_gpu) = (data(1), data(1));
    for step in 0..3 {
        let grads = data(step + 2);
        cpu.step(&mut p_cpu, &grads).expect("cpu step");
        gpu.step_host(&mut p_gpu, &grads).expect("gpu step");
    }
    let err = max_rel(&p_gpu, &p_cpu);
    println!("per-tensor reductions: max relative difference GPU vs CPU {err:.3e}");
    assert!(err < 1e-4, "GPU differs from CPU by {err:e}");
}

twins!(
    the_gpu_global_norm_is_the_same_bits_run_to_run,
    the_global_norm_is_the_same_bits_run_to_run_in_the_simulator,
    global_norm_is_the_same_bits_run_to_run
);

/// Two runs of a clipped step give the same gradient norms and parameters, bit for bit.
fn global_norm_is_the_same_bits_run_to_run<G: Gpu>(device: &Arc<G>) {
    let configured = optjit::optim::AdamW::new()
        .build()
        .and_then(|c| c.with_clip_grad_norm(1.0))
        .expect("AdamW with clipping");
    let run = || {
        let setup = vectors(&SIZES, &configured.hypers);
        let mut gpu =
            CudaOptimizer::new(&configured.definition, setup, device.clone()).expect("gpu");
        let mut params = data(1);
        let mut norms = Vec::new();
        for step in 0..3 {
            gpu.step_host(&mut params, &data(step + 2)).expect("step");
            norms.push(
                gpu.scalar_state(0, optjit::GRAD_NORM)
                    .expect("norm")
                    .to_bits(),
            );
        }
        (norms, params)
    };
    let (norms, params) = run();
    let (norms_again, params_again) = run();
    assert_eq!(norms, norms_again);
    assert!(bit_identical(&params, &params_again));
}

twins!(
    adafactor_matches_the_cpu_on_the_gpu,
    adafactor_matches_the_cpu_in_the_simulator,
    adafactor_matches_the_cpu
);

/// Adafactor (column walks, per-row scalars, column values, one step per kind of tensor) on
/// shapes that need several column-walk records per matrix, rows wider than a block, several
/// matrices per tensor, a vector and a 0-d tensor, clipped so that the kinds add up a global
/// norm: the GPU agrees with the CPU to rounding (its column sums are f64, the CPU's f32), in
/// the parameters and in every factored state; stored as bf16 or f16, one step is the CPU's
/// f32 step rounded.
fn adafactor_matches_the_cpu<G: Gpu>(device: &Arc<G>) {
    let configured = optjit::optim::Adafactor::new()
        .lr(0.01)
        .build()
        .and_then(|c| c.with_clip_grad_norm(1.0))
        .expect("Adafactor with clipping");
    let shapes: Vec<Vec<usize>> = vec![
        vec![5000, 20],
        vec![3, 40, 50],
        vec![70, 700],
        vec![70_001],
        vec![],
        vec![0, 8],
    ];
    let values = |seed: u32| -> Vec<Vec<f32>> {
        let data = data(seed);
        let source = &data[5];
        (shapes.iter())
            .map(|s| {
                let n: usize = s.iter().product();
                (0..n).map(|i| source[i % source.len()]).collect()
            })
            .collect()
    };
    let setup = Setup {
        shapes: shapes.clone(),
        hypers: configured.hypers.clone(),
        ..Setup::default()
    };
    let mut cpu = cpu_like_gpu(&configured.definition, setup.clone());
    let mut gpu =
        CudaOptimizer::new(&configured.definition, setup.clone(), device.clone()).expect("gpu");
    assert_eq!(gpu.stats().builds(), 3, "matrices, vectors and 0-d tensors");
    let (mut p_cpu, mut p_gpu) = (values(1), values(1));
    for step in 0..4 {
        let grads = values(step + 2);
        cpu.step(&mut p_cpu, &grads).expect("cpu step");
        gpu.step_host(&mut p_gpu, &grads).expect("gpu step");
        let norm = |n: Option<f64>| n.expect("a gradient norm");
        let want = norm(cpu.scalar_state(0, optjit::GRAD_NORM));
        let got = norm(gpu.scalar_state(0, optjit::GRAD_NORM));
        assert!((got - want).abs() <= 1e-6 * want, "norm {got} vs {want}");
    }
    let err = max_scaled(&p_gpu, &p_cpu);
    println!("adafactor: largest difference GPU vs CPU {err:.3e} of the tensor's scale");
    assert!(err < 1e-5, "GPU differs from CPU by {err:e}");
    for t in 0..shapes.len() {
        for name in ["row_var", "col_var", "variance"] {
            let Some(want) = cpu.state(t, name) else {
                continue;
            };
            let got = gpu.state(t, name).expect("read").expect("state");
            let err = max_scaled(&[got], &[want.to_vec()]);
            assert!(err < 1e-4, "state {name} of tensor {t}: {err:e}");
        }
    }
    // Stored as bf16 or f16 (column walks over 2-byte elements): one step from the stored
    // values is the CPU's f32 step on them, rounded, to two rounding steps (the column sums
    // differ in their last bits).
    for (dtype, tolerance) in [(DType::BF16, 2f64.powi(-7)), (DType::F16, 2f64.powi(-10))] {
        let stored_values = |seed: u32| round(dtype, &values(seed));
        let mut cpu = cpu_like_gpu(&configured.definition, setup.clone());
        let mut want = stored_values(1);
        cpu.step(&mut want, &stored_values(2)).expect("cpu step");
        let half = Setup {
            dtype,
            ..setup.clone()
        };
        let mut gpu =
            CudaOptimizer::new(&configured.definition, half, device.clone()).expect("gpu");
        let mut got = stored_values(1);
        gpu.step_host(&mut got, &stored_values(2))
            .expect("gpu step");
        let err = max_scaled(&got, &round(dtype, &want));
        println!("adafactor {dtype}: largest difference {err:.3e} of the tensor's scale");
        assert!(err <= tolerance, "{dtype}: GPU differs from CPU by {err:e}");
    }
}

/// `x` stored as `dtype` (rounded to nearest even) and read back.
fn stored(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::BF16 => optjit::half::bf16::from_f32(x).to_f32(),
        DType::F16 => optjit::half::f16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// Half-precision storage: a step loads exact bf16/f16 values, computes in f32 and rounds once
/// on store, so a first step (zero states) equals the CPU's f32 step on the same inputs,
/// rounded, bit for bit, in the parameters and the states. Typed device slices give the same
/// result as host tensors, and slices of another type are refused before anything runs.
#[test]
fn half_precision_steps_round_the_f32_step_once() {
    let Some(device) = device() else { return };
    half_precision_rounds_once(&device);
    typed_half_precision_slices(&device);
}

#[test]
fn half_precision_steps_round_the_f32_step_once_in_the_simulator() {
    half_precision_rounds_once(&SimGpu::new());
}

/// AdamW and SGD, the built-ins the half-precision tests step.
fn half_precision_cases() -> [(&'static str, optjit::optim::Configured); 2] {
    [
        ("adamw", optjit::optim::AdamW::new().build().expect("AdamW")),
        (
            "sgd",
            optjit::optim::Sgd::new().lr(0.1).build().expect("SGD"),
        ),
    ]
}

/// `t` stored as `dtype` and read back.
fn round(dtype: DType, t: &[Vec<f32>]) -> Vec<Vec<f32>> {
    (t.iter())
        .map(|v| v.iter().map(|&x| stored(dtype, x)).collect())
        .collect()
}

/// One CPU f32 step of `configured` on inputs stored as `dtype`: the parameters and the CPU.
fn cpu_step_on_stored(
    configured: &optjit::optim::Configured,
    dtype: DType,
) -> (Vec<Vec<f32>>, Optimizer) {
    let setup = vectors(&SIZES, &configured.hypers);
    let (params, grads) = (round(dtype, &data(1)), round(dtype, &data(2)));
    let mut cpu = cpu_like_gpu(&configured.definition, setup);
    let mut want = params;
    cpu.step(&mut want, &grads).expect("cpu step");
    (want, cpu)
}

fn half_precision_rounds_once<G: Gpu>(device: &Arc<G>) {
    for dtype in [DType::BF16, DType::F16] {
        for (case, configured) in &half_precision_cases() {
            let (want, cpu) = cpu_step_on_stored(configured, dtype);
            let half = Setup {
                dtype,
                ..vectors(&SIZES, &configured.hypers)
            };
            let mut gpu =
                CudaOptimizer::new(&configured.definition, half, device.clone()).expect(case);
            let mut got = round(dtype, &data(1));
            gpu.step_host(&mut got, &round(dtype, &data(2)))
                .expect("gpu step");
            assert!(bit_identical(&got, &round(dtype, &want)), "{case} {dtype}");
            for state in &configured.definition.graph.states {
                for t in 0..SIZES.len() {
                    let Some(cpu_state) = cpu.state(t, &state.name) else {
                        continue;
                    };
                    let gpu_state = gpu.state(t, &state.name).expect("read").expect("state");
                    let want = round(dtype, &[cpu_state.to_vec()]);
                    assert!(
                        bit_identical(&[gpu_state], &want),
                        "{case} {dtype} {}",
                        state.name
                    );
                }
            }
        }
    }
}

/// Typed bf16 device slices give the CPU's step rounded once, as host tensors do, and slices of
/// another type are refused before anything runs.
fn typed_half_precision_slices(device: &Arc<CudaDevice>) {
    let dtype = DType::BF16;
    for (case, configured) in &half_precision_cases() {
        let (want, _) = cpu_step_on_stored(configured, dtype);
        let half = Setup {
            dtype,
            ..vectors(&SIZES, &configured.hypers)
        };
        let mut gpu =
            CudaOptimizer::new(&configured.definition, half.clone(), device.clone()).expect(case);
        // f32 slices for a half-precision optimizer are refused before anything runs.
        let mut p32: Vec<CudaSlice<f32>> = Vec::new();
        let refused = gpu.step(&mut p32, &[]);
        assert!(
            matches!(&refused, Err(OptimizerError::Cuda(e)) if e.to_string().contains("set up for")),
            "{refused:?}"
        );
        assert_eq!(gpu.steps(), 0);
        // The same step on bf16 device slices (the non-empty tensors).
        let nonempty: Vec<usize> = (0..SIZES.len()).filter(|&t| SIZES[t] > 0).collect();
        let setup = Setup {
            shapes: nonempty.iter().map(|&t| vec![SIZES[t]]).collect(),
            ..half
        };
        let mut typed =
            CudaOptimizer::new(&configured.definition, setup, device.clone()).expect(case);
        let upload = |t: &[Vec<f32>]| -> Vec<CudaSlice<optjit::half::bf16>> {
            (nonempty.iter())
                .map(|&i| {
                    let h: Vec<_> = (t[i].iter())
                        .map(|&x| optjit::half::bf16::from_f32(x))
                        .collect();
                    device.upload(&h).expect("upload")
                })
                .collect()
        };
        let (mut p, g) = (upload(&data(1)), upload(&data(2)));
        typed.step(&mut p, &g).expect("typed step");
        let want = round(dtype, &want);
        for (slice, &t) in p.iter().zip(&nonempty) {
            let back: Vec<f32> = (device.download(slice).expect("download").iter())
                .map(|h| h.to_f32())
                .collect();
            assert!(
                bit_identical(&[back], &[want[t].clone()]),
                "{case} tensor {t}"
            );
        }
    }
}

twins!(
    graph_replay_matches_eager_steps,
    graph_replay_matches_eager_steps_in_the_simulator,
    graph_replay_matches_eager
);

/// CUDA-graph replay: the same bits as launching each kernel, hyperparameter changes between
/// replays in force, tensors that move followed without a new capture, and steps that reduce
/// (clipping) left to the eager path.
fn graph_replay_matches_eager<G: Gpu>(device: &Arc<G>) {
    graph_replay_of_host_tensors(device);
    graph_replay_of_device_tensors(device);
}

/// An eager optimizer and one that replays graphs, for `configured` on vectors of `shapes`.
fn eager_and_graphed<G: Gpu>(
    device: &Arc<G>,
    configured: &optjit::optim::Configured,
    shapes: &[usize],
) -> (CudaOptimizer<G>, CudaOptimizer<G>) {
    let setup = vectors(shapes, &configured.hypers);
    let new = || CudaOptimizer::new(&configured.definition, setup.clone(), device.clone());
    let (eager, mut graphed) = (new().expect("eager"), new().expect("graphed"));
    graphed.set_graph_capture(true);
    (eager, graphed)
}

/// Host tensors: new device buffers every step, so new chunk tables, rewritten in place under
/// the one captured graph.
fn graph_replay_of_host_tensors<G: Gpu>(device: &Arc<G>) {
    let adamw = optjit::optim::AdamW::new().build().expect("AdamW");
    let clipped = adamw.clone().with_clip_grad_norm(1.0).expect("clip");
    for (case, configured, replays) in [("adamw", &adamw, true), ("adamw-clip", &clipped, false)] {
        let (mut eager, mut graphed) = eager_and_graphed(device, configured, &SIZES);
        let (mut p_eager, mut p_graph) = (data(1), data(1));
        for step in 0..4u32 {
            let grads = data(step + 2);
            if step == 2 {
                eager.set_hyper(None, "lr", 0.05).expect("lr");
                graphed.set_hyper(None, "lr", 0.05).expect("lr");
            }
            eager.step_host(&mut p_eager, &grads).expect("eager step");
            graphed.step_host(&mut p_graph, &grads).expect("graph step");
            assert_eq!(graphed.replays_graph(), replays, "{case} step {step}");
        }
        assert!(bit_identical(&p_eager, &p_graph), "{case}: replay differs");
        let captures = graphed.stats().graph_captures;
        assert_eq!(
            captures,
            u64::from(replays),
            "{case}: captured once, if at all"
        );
    }
}

/// Device tensors that stay put: one capture, then replays of it with new gradient values
/// (written in place) and new scalars; moving the gradients captures again.
fn graph_replay_of_device_tensors<G: Gpu>(device: &Arc<G>) {
    let adamw = optjit::optim::AdamW::new().build().expect("AdamW");
    let sizes = [37, 4096, 70_001]; // data()[3..6]
    let (mut eager, mut graphed) = eager_and_graphed(device, &adamw, &sizes);
    let host = |seed: u32| -> Vec<Vec<f32>> { data(seed)[3..6].to_vec() };
    let upload = |t: &[Vec<f32>]| -> Vec<G::Buffer<f32>> {
        t.iter()
            .map(|v| device.upload(v).expect("upload"))
            .collect()
    };
    let addresses =
        |t: &[G::Buffer<f32>]| -> Vec<u64> { t.iter().map(|b| device.address(b)).collect() };
    let (p_eager, p_graph) = (upload(&host(1)), upload(&host(1)));
    // Steps 0-2 read the first gradient buffers; steps 3 and 4 alternate with a second set,
    // so the tables are rewritten in place, and the graph captured at step 0 replays them.
    let mut grad_sets = [upload(&host(2)), upload(&host(2))];
    for step in 0..5u32 {
        let grads = &mut grad_sets[usize::from(step == 3)];
        for (buffer, values) in grads.iter_mut().zip(host(step + 2)) {
            device.write(&values, buffer).expect("new gradient values");
        }
        if step == 3 {
            eager.set_hyper(None, "lr", 0.05).expect("lr");
            graphed.set_hyper(None, "lr", 0.05).expect("lr");
        }
        let g = addresses(grads);
        // SAFETY: live, distinct f32 buffers of the setup's lengths on this device.
        unsafe {
            eager
                .step_raw(&addresses(&p_eager), &g)
                .expect("eager step");
            graphed
                .step_raw(&addresses(&p_graph), &g)
                .expect("graph step");
        }
        assert!(graphed.replays_graph());
    }
    assert_eq!(graphed.stats().graph_captures, 1, "captured at step 0 only");
    let download = |t: &[G::Buffer<f32>]| -> Vec<Vec<f32>> {
        t.iter()
            .map(|b| device.download(b).expect("download"))
            .collect()
    };
    assert!(bit_identical(&download(&p_eager), &download(&p_graph)));
}

#[test]
fn golden_cases_pass_on_the_gpu() {
    let Some(device) = device() else { return };
    golden_cases_pass(&Backend::Cuda(device));
}

/// The golden cases through the GPU path on the PTX interpreter: the `optjit golden` runner
/// with every optimizer a `CudaOptimizer` on a simulated device.
#[test]
fn golden_cases_pass_in_the_simulator() {
    golden_cases_pass(&Backend::Other {
        name: "sim",
        open: |definition, setup| {
            let optimizer = CudaOptimizer::new(definition, setup, SimGpu::new())?;
            Ok(Box::new(optimizer))
        },
    });
}

fn golden_cases_pass(backend: &Backend) {
    for case in common::GOLDEN_CASES {
        let result = run_file(&common::golden_path(case), backend).expect(case);
        println!("{result}");
        assert!(result.passed(), "{result}");
    }
}

/// Device buffers that are only 4-byte aligned take the scalar path and give the same result.
#[test]
fn misaligned_device_buffers_are_handled() {
    let Some(device) = device() else { return };
    let configured = optjit::optim::AdamW::new().build().expect("AdamW");
    let n = 1000;
    let setup = Setup {
        shapes: vec![vec![n]],
        hypers: configured.hypers.clone(),
        ..Setup::default()
    };
    let init = data(7)[5][..n].to_vec();
    let grad = data(8)[5][..n].to_vec();

    let mut cpu = Optimizer::new(&configured.definition, setup.clone()).expect("cpu");
    let mut want = vec![init.clone()];
    cpu.step(&mut want, std::slice::from_ref(&grad))
        .expect("cpu step");

    let mut gpu = CudaOptimizer::new(&configured.definition, setup, device.clone()).expect("gpu");
    // One float of padding in front: the tensors start 4 bytes past a 256-byte boundary.
    let padded = |v: &[f32]| [&[0.0f32][..], v].concat();
    let p = device.upload(&padded(&init)).expect("upload");
    let g = device.upload(&padded(&grad)).expect("upload");
    let stream = device.stream();
    let address = |s: &CudaSlice<f32>| {
        let (ptr, _sync) = s.device_ptr(stream);
        ptr + 4
    };
    // SAFETY: both buffers hold n + 1 floats on this device; the addresses skip the first.
    unsafe { gpu.step_raw(&[address(&p)], &[address(&g)]) }.expect("raw step");
    let got = device.download(&p).expect("download")[1..].to_vec();
    let err = max_rel(&[got], &want);
    assert!(
        err < 1e-5,
        "misaligned step differs from the CPU by {err:e}"
    );

    // SAFETY: (refused before any launch) a 2-byte offset is not a valid f32 address.
    let refused = unsafe { gpu.step_raw(&[address(&p) + 2], &[address(&g)]) };
    assert!(
        matches!(&refused, Err(OptimizerError::Cuda(e)) if e.to_string().contains("not 4-byte aligned")),
        "{refused:?}"
    );
}

#[test]
fn a_rejected_gpu_step_modifies_nothing() {
    let Some(device) = device() else { return };
    let configured = optjit::optim::Sgd::new()
        .lr(0.1)
        .momentum(0.9)
        .build()
        .expect("SGD");
    let setup = Setup {
        shapes: vec![vec![8], vec![3]],
        hypers: configured.hypers.clone(),
        ..Setup::default()
    };
    let mut gpu = CudaOptimizer::new(&configured.definition, setup, device.clone()).expect("gpu");
    let mut params = vec![
        device.upload(&[1.0f32; 8]).expect("upload"),
        device.upload(&[1.0f32; 3]).expect("upload"),
    ];
    let short = vec![
        device.upload(&[1.0f32; 8]).expect("upload"),
        device.upload(&[1.0f32; 2]).expect("upload"),
    ];
    let error = gpu.step(&mut params, &short).expect_err("wrong length");
    assert!(
        error
            .to_string()
            .contains("grad tensor 1 has 2 elements, expected 3"),
        "{error}"
    );
    let error = gpu
        .step(&mut params[..1], &short[..1])
        .expect_err("wrong count");
    assert!(
        error.to_string().contains("expects 2 param tensors, got 1"),
        "{error}"
    );
    assert_eq!(gpu.steps(), 0);
    assert_eq!(
        device.download(&params[1]).expect("download"),
        vec![1.0f32; 3]
    );
    assert_eq!(
        gpu.state(0, "momentum_buffer").expect("read"),
        Some(vec![0.0f32; 8])
    );
}

/// A training loop may run on any thread: the optimizers (a captured graph included) and their
/// checkpoints move between threads, and the CPU optimizer may be shared.
#[test]
fn optimizers_and_checkpoints_are_send() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<CudaOptimizer>();
    send::<Optimizer>();
    sync::<Optimizer>();
    send::<optjit::Checkpoint>();
    sync::<optjit::Checkpoint>();
}

twins!(
    a_graph_replays_on_another_thread_on_the_gpu,
    a_graph_replays_on_another_thread_in_the_simulator,
    graph_replays_on_another_thread
);

/// An optimizer whose step was captured in a graph on this thread replays it on another, and
/// the graph is dropped there.
fn graph_replays_on_another_thread<G: Gpu + Send + Sync + 'static>(device: &Arc<G>)
where
    CudaOptimizer<G>: Send,
{
    let configured = optjit::optim::AdamW::new().build().expect("AdamW");
    let setup = Setup {
        shapes: vec![vec![37]],
        hypers: configured.hypers.clone(),
        ..Setup::default()
    };
    let open = || {
        let definition = &configured.definition;
        CudaOptimizer::new(definition, setup.clone(), device.clone()).expect("optimizer")
    };
    let mut opt = open();
    opt.set_graph_capture(true);
    let (mut params, grads) = (vec![data(1)[3].clone()], vec![data(2)[3].clone()]);
    let mut eager = params.clone();
    opt.step_host(&mut params, &grads).expect("step");
    let moved_grads = grads.clone();
    let replayed = std::thread::spawn(move || {
        opt.step_host(&mut params, &moved_grads)
            .expect("step on another thread");
        let counts = (opt.replays_graph(), opt.stats().graph_captures);
        (params, counts)
    });
    let (params, counts) = replayed.join().expect("the thread");
    assert_eq!(counts, (true, 1));
    let mut plain = open();
    for _ in 0..2 {
        plain.step_host(&mut eager, &grads).expect("step");
    }
    assert_eq!(
        params, eager,
        "the replay on the other thread took the step"
    );
}
