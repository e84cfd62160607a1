//! Tensors without a gradient at a step (`Optimizer::step_optional`), as PyTorch skips a
//! parameter whose `.grad` is `None`: the tensor, its states, its step count and its own scalar
//! states stay as they are; schedules count the optimizer's steps; clipping covers the tensors
//! that have a gradient.

mod common;

use common::sim_gpu::SimGpu;
use optjit::optim::{AdamW, NAdam, SchedulerArg, SchedulerConfig, Sgd};
use optjit::trace::step::in_force_state;
use optjit::{CudaOptimizer, Optimizer, Setup};

const SHAPES: [usize; 3] = [6, 9, 4];

fn grad(t: usize, step: usize) -> Vec<f32> {
    (0..SHAPES[t])
        .map(|i| (((i * 5 + t * 3 + step * 7) % 13) as f32 - 6.0) * 0.1)
        .collect()
}

fn setup(hypers: &std::collections::BTreeMap<String, f64>, tensors: &[usize]) -> Setup {
    Setup {
        shapes: tensors.iter().map(|&t| vec![SHAPES[t]]).collect(),
        hypers: hypers.clone(),
        threads: 2,
        ..Setup::default()
    }
}

/// Whether tensor 1 has a gradient at `step` (it skips steps 2, 3 and 6).
fn has_grad(step: usize) -> bool {
    ![2, 3, 6].contains(&step)
}

/// A tensor that skips steps goes exactly as an optimizer of its own that only takes the
/// steps where it has a gradient (its bias corrections and NAdam's `mu_product` count its own
/// steps), and the others as if it were not there.
#[test]
fn a_skipped_tensor_goes_on_from_where_it_stopped() {
    let adamw = AdamW::new()
        .lr(1e-2)
        .weight_decay(0.1)
        .build()
        .expect("AdamW");
    let nadam = NAdam::new().lr(2e-3).build().expect("NAdam");
    for rule in [adamw, nadam] {
        let mut together =
            Optimizer::new(&rule.definition, setup(&rule.hypers, &[0, 1, 2])).expect("together");
        let mut params: Vec<Vec<f32>> = SHAPES.iter().map(|&n| vec![0.5; n]).collect();
        let mut own = Optimizer::new(&rule.definition, setup(&rule.hypers, &[1])).expect("own");
        let mut own_params = vec![vec![0.5f32; SHAPES[1]]];
        let mut others =
            Optimizer::new(&rule.definition, setup(&rule.hypers, &[0, 2])).expect("others");
        let mut other_params = vec![vec![0.5f32; SHAPES[0]], vec![0.5f32; SHAPES[2]]];
        for step in 0..8 {
            let grads: Vec<Option<Vec<f32>>> = (0..3)
                .map(|t| (t != 1 || has_grad(step)).then(|| grad(t, step)))
                .collect();
            let before = params[1].clone();
            together.step_optional(&mut params, &grads).expect("step");
            if !has_grad(step) {
                assert_eq!(
                    params[1], before,
                    "step {step}: a skipped tensor is untouched"
                );
            } else {
                own.step(&mut own_params, &[grad(1, step)])
                    .expect("own step");
            }
            others
                .step(&mut other_params, &[grad(0, step), grad(2, step)])
                .expect("others step");
        }
        let name = rule.name;
        assert_eq!(params[1], own_params[0], "{name}: the skipping tensor");
        assert_eq!(
            (&params[0], &params[2]),
            (&other_params[0], &other_params[1]),
            "{name}"
        );
        assert_eq!(together.tensor_steps(1), Some(5));
        assert_eq!(together.tensor_steps(0), Some(8));
        assert_eq!(together.steps(), 8);
        if name == "NAdam" {
            let mu = |opt: &Optimizer, t| opt.tensor_scalar_state(t, "mu_product").expect("mu");
            assert_eq!(mu(&together, 1), mu(&own, 0));
            assert_ne!(mu(&together, 1), mu(&together, 0));
        }
    }
}

/// A schedule follows the optimizer's steps, not a tensor's: a tensor that first steps at step
/// 2 of `StepLR(step_size=2, gamma=0.1)` takes lr 0.1 * 0.1.
#[test]
fn schedules_count_the_optimizers_steps() {
    let sgd = Sgd::new().lr(0.1).build().expect("SGD");
    let step_lr = SchedulerConfig::new(
        "StepLR",
        [
            ("step_size", SchedulerArg::Number(2.0)),
            ("gamma", SchedulerArg::Number(0.1)),
        ],
    );
    let scheduled = step_lr.apply(&sgd.definition).expect("StepLR");
    let mut opt = Optimizer::new(&scheduled, setup(&sgd.hypers, &[0, 1])).expect("SGD");
    let mut params = vec![vec![1.0f32; SHAPES[0]], vec![1.0f32; SHAPES[1]]];
    let ones = |t: usize| vec![1.0f32; SHAPES[t]];
    for _ in 0..2 {
        opt.step_optional(&mut params, &[Some(ones(0)), None])
            .expect("tensor 1 skips");
    }
    opt.step_optional(&mut params, &[Some(ones(0)), Some(ones(1))])
        .expect("both step");
    let lr = opt.scalar_state(0, &in_force_state("lr")).expect("lr");
    assert!((lr - 0.01).abs() < 1e-15, "lr in force at t=2: {lr}");
    assert_eq!(
        params[1][0],
        1.0 - 0.01f32,
        "tensor 1's first step took t=2's lr"
    );
    assert_eq!(params[0][0], 1.0f32 - 0.1 - 0.1 - 0.01);
}

/// `clip_grad_norm_` covers the tensors that have a gradient.
#[test]
fn clipping_covers_the_tensors_with_a_gradient() {
    let clipped = (AdamW::new().build().expect("AdamW"))
        .with_clip_grad_norm(0.5)
        .expect("clip");
    let mut opt =
        Optimizer::new(&clipped.definition, setup(&clipped.hypers, &[0, 1, 2])).expect("clipped");
    let mut params: Vec<Vec<f32>> = SHAPES.iter().map(|&n| vec![0.0; n]).collect();
    let grads = [Some(grad(0, 1)), None, Some(grad(2, 1))];
    opt.step_optional(&mut params, &grads).expect("step");
    let want: f64 = [grad(0, 1), grad(2, 1)]
        .iter()
        .flatten()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    let got = opt.scalar_state(0, optjit::GRAD_NORM).expect("norm");
    assert!((got - want).abs() <= 1e-6 * want, "norm {got}, want {want}");
    assert_eq!(params[1], vec![0.0; SHAPES[1]]);
}

/// Missing gradients survive a checkpoint, resumed on the CPU or on the (simulated) GPU: the
/// resumed runs are the uninterrupted run's bits.
#[test]
fn per_tensor_steps_resume_on_either_target() {
    let nadam = NAdam::new().lr(2e-3).build().expect("NAdam");
    let open =
        || Optimizer::new(&nadam.definition, setup(&nadam.hypers, &[0, 1, 2])).expect("NAdam");
    let grads = |step: usize| -> Vec<Option<Vec<f32>>> {
        (0..3)
            .map(|t| (t != 1 || has_grad(step)).then(|| grad(t, step)))
            .collect()
    };
    let mut straight = open();
    let mut params: Vec<Vec<f32>> = SHAPES.iter().map(|&n| vec![0.5; n]).collect();
    let mut halfway = params.clone();
    for step in 0..8 {
        straight
            .step_optional(&mut params, &grads(step))
            .expect("step");
    }
    let mut first = open();
    for step in 0..4 {
        first
            .step_optional(&mut halfway, &grads(step))
            .expect("step");
    }
    let bytes = first.checkpoint().to_bytes();
    let checkpoint = optjit::Checkpoint::from_bytes(&bytes).expect("reads");
    assert_eq!(
        (checkpoint.tensor_steps(0), checkpoint.tensor_steps(1)),
        (Some(4), Some(2))
    );

    let mut on_cpu = open();
    on_cpu.restore(&checkpoint).expect("restores");
    let mut cpu_params = halfway.clone();
    for step in 4..8 {
        (on_cpu.step_optional(&mut cpu_params, &grads(step))).expect("step");
    }
    assert_eq!(cpu_params, params);

    let setup = setup(&nadam.hypers, &[0, 1, 2]);
    let mut gpu = CudaOptimizer::new(&nadam.definition, setup, SimGpu::new()).expect("sim");
    gpu.restore(&checkpoint).expect("restores");
    let mut gpu_params = halfway.clone();
    for step in 4..8 {
        (gpu.step_host_optional(&mut gpu_params, &grads(step))).expect("step");
    }
    assert_eq!(
        gpu_params, params,
        "the GPU's kernels give the CPU's bits here"
    );
    assert_eq!((gpu.tensor_steps(1), gpu.steps()), (Some(5), 8));
}
