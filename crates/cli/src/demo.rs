//! `optjit demo`: the README's main job. Compiles AdamW (plain, with gradient clipping fused
//! in, and with clipping and a OneCycleLR peak per param group), Adafactor (a matrix and a vector) and a custom Lion traced in a few lines, trains a
//! logistic-regression model on synthetic data on the CPU, and prints the loss going down, the
//! compile time and the step time; resumes AdamW from a checkpoint file half-way.

use optjit_optim::SchedulerArg;
use optjit_runtime::{Checkpoint, Group, Optimizer, Setup};
use optjit_trace::{Definition, Domain, Tracer};
use std::collections::BTreeMap;
use std::time::Instant;

const SAMPLES: usize = 8192;
const FEATURES: usize = 64;
const STEPS: usize = 300;

/// Runs the demo, printing to stdout.
pub fn run() -> Result<(), String> {
    let data = Data::generate();
    println!(
        "optjit demo: logistic regression, {SAMPLES} samples x {FEATURES} features (synthetic, seeded)\n"
    );

    let adamw = optjit_optim::AdamW::new()
        .lr(0.05)
        .weight_decay(0.01)
        .build()
        .map_err(|e| e.to_string())?;
    train(
        "AdamW (built-in)",
        &adamw.definition,
        adamw.hypers.clone(),
        &data,
        &[FEATURES],
    )?;

    let clipped = adamw
        .clone()
        .with_clip_grad_norm(0.01)
        .map_err(|e| e.to_string())?;
    train(
        "AdamW with clip_grad_norm(0.01) fused in (a norm phase, then the update)",
        &clipped.definition,
        clipped.hypers.clone(),
        &data,
        &[FEATURES],
    )?;

    // The fine-tuning recipe: every param group with its own peak learning rate
    // (`OneCycleLR(max_lr=[...])`), clipping, AdamW; still one compiled step.
    let one_cycle = optjit_optim::SchedulerConfig::new(
        "OneCycleLR",
        [
            ("max_lr", SchedulerArg::Numbers(vec![0.05, 0.01])),
            ("total_steps", SchedulerArg::Number(STEPS as f64)),
        ],
    );
    let recipe = one_cycle
        .apply(&clipped.definition)
        .map_err(|e| e.to_string())?;
    train(
        "AdamW + clip_grad_norm(0.01) + OneCycleLR(max_lr=[0.05, 0.01]): a peak per param group",
        &recipe,
        clipped.hypers.clone(),
        &data,
        &[FEATURES],
    )?;

    let adafactor = optjit_optim::Adafactor::new()
        .lr(0.5)
        .build()
        .map_err(|e| e.to_string())?;
    train(
        "Adafactor (built-in; weights as an 8x8 matrix: factored second moment, the bias unfactored)",
        &adafactor.definition,
        adafactor.hypers.clone(),
        &data,
        &[8, FEATURES / 8],
    )?;

    let lion = lion().map_err(|e| e.to_string())?;
    let hypers = BTreeMap::from([("lr".to_string(), 0.005)]);
    let title = "Lion (custom, traced in 10 lines)";
    train(title, &lion, hypers, &data, &[FEATURES])?;

    resume(&adamw.definition, adamw.hypers.clone(), &data)?;
    throughput(&adamw.definition, adamw.hypers)
}

/// Trains with AdamW once straight through and once interrupted half-way: a checkpoint file
/// saved, the optimizer dropped, a fresh one restored from the file. Prints whether the two
/// runs end on the same bits.
fn resume(
    definition: &Definition,
    hypers: BTreeMap<String, f64>,
    data: &Data,
) -> Result<(), String> {
    let setup = setup(hypers, &[FEATURES]);
    let open = || Optimizer::new(definition, setup.clone()).map_err(|e| e.to_string());
    let train = |opt: &mut Optimizer, params: &mut Vec<Vec<f32>>, steps: usize| {
        for _ in 0..steps {
            let (_, _, grads) = data.loss_and_grad(params);
            opt.step(params, &grads).map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    };
    let mut straight = vec![vec![0.0f32; FEATURES], vec![0.0f32]];
    train(&mut open()?, &mut straight, STEPS)?;

    let mut params = vec![vec![0.0f32; FEATURES], vec![0.0f32]];
    let mut first = open()?;
    train(&mut first, &mut params, STEPS / 2)?;
    let path = std::env::temp_dir().join(format!("optjit-demo-{}.safetensors", std::process::id()));
    first.save_checkpoint(&path).map_err(|e| e.to_string())?;
    drop(first);
    let checkpoint = Checkpoint::load(&path).map_err(|e| e.to_string());
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let checkpoint = checkpoint?;
    let mut resumed = open()?;
    resumed.restore(&checkpoint).map_err(|e| e.to_string())?;
    train(&mut resumed, &mut params, STEPS - STEPS / 2)?;

    let (loss, _, _) = data.loss_and_grad(&params);
    let same = params == straight;
    println!(
        "== AdamW stopped after step {}, resumed from a checkpoint file",
        STEPS / 2
    );
    println!(
        "  checkpoint: {bytes} bytes (safetensors: states, step count, hyperparameters), restored in a fresh optimizer"
    );
    println!(
        "  step {STEPS:>4}  loss {loss:.4}  same bits as the uninterrupted run: {}\n",
        if same { "yes" } else { "NO" }
    );
    match same {
        true => Ok(()),
        false => Err("the resumed run differs from the uninterrupted one".into()),
    }
}

/// Lion (Chen et al. 2023), the way a user writes a custom optimizer.
fn lion() -> Result<Definition, optjit_trace::TraceError> {
    let t = Tracer::new("lion");
    let lr = t.hyper_in("lr", 1e-4, Domain::non_negative());
    let (beta1, beta2) = (t.hyper("beta1", 0.9), t.hyper("beta2", 0.99));
    let wd = t.hyper("weight_decay", 0.0);
    let (param, grad, exp_avg) = (t.param(), t.grad(), t.state("exp_avg", 0.0));
    let update = (&beta1 * &exp_avg + (1.0 - &beta1) * &grad).sign();
    t.set_param(&param * (1.0 - &lr * &wd) - &lr * update);
    t.set_state(&exp_avg, &beta2 * &exp_avg + (1.0 - &beta2) * &grad);
    t.finish()
}

/// The model's two tensors in two param groups, as in real training: the weights decay, the
/// bias does not.
fn setup(hypers: BTreeMap<String, f64>, weight_shape: &[usize]) -> Setup {
    let groups = vec![
        Group {
            tensors: vec![0],
            hypers: BTreeMap::new(),
            rule: None,
        },
        Group {
            tensors: vec![1],
            hypers: BTreeMap::from([("weight_decay".to_string(), 0.0)]),
            rule: None,
        },
    ];
    Setup {
        shapes: vec![weight_shape.to_vec(), vec![1]],
        groups,
        hypers,
        threads: 1,
        ..Setup::default()
    }
}

fn train(
    title: &str,
    definition: &Definition,
    hypers: BTreeMap<String, f64>,
    data: &Data,
    weight_shape: &[usize],
) -> Result<(), String> {
    let mut opt =
        Optimizer::new(definition, setup(hypers, weight_shape)).map_err(|e| e.to_string())?;
    let stats = opt.stats();
    println!("== {title}");
    println!(
        "compiled in {:.2} ms: kernels_per_step={} bytes_per_elem={} compiles={}",
        stats.compile_ms, stats.kernels_per_step, stats.bytes_per_elem, stats.compiles
    );
    if opt.compiled_kinds().count() > 1 {
        for (compiled, tensors) in opt.compiled_kinds() {
            let plan = &compiled.plan;
            println!(
                "  tensors {tensors:?}: {} kernels, {} bytes per element",
                plan.phases.len(),
                plan.bytes_per_elem()
            );
        }
    }
    let mut params = vec![vec![0.0f32; FEATURES], vec![0.0f32]];
    let mut step_times = Vec::with_capacity(STEPS);
    for step in 0..=STEPS {
        let (loss, accuracy, grads) = data.loss_and_grad(&params);
        if step % 50 == 0 {
            // With clipping: the total gradient norm of the last step, before clipping.
            let norm = match opt.scalar_state(0, optjit_trace::GRAD_NORM) {
                Some(norm) if step > 0 => format!("  grad_norm {norm:.4}"),
                _ => String::new(),
            };
            // With a schedule: each group's learning rate in force during the last step.
            let lr_in_force = optjit_trace::step::in_force_state("lr");
            let lrs: Vec<String> = (0..opt.n_groups())
                .filter_map(|g| opt.scalar_state(g, &lr_in_force))
                .map(|lr| format!("{lr:.4}"))
                .collect();
            let lrs = match lrs.is_empty() || step == 0 {
                true => String::new(),
                false => format!("  lr per group [{}]", lrs.join(", ")),
            };
            println!(
                "  step {step:>4}  loss {loss:.4}  accuracy {:.1}%{norm}{lrs}",
                accuracy * 100.0
            );
        }
        if step == STEPS {
            break;
        }
        let start = Instant::now();
        opt.step(&mut params, &grads).map_err(|e| e.to_string())?;
        step_times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    step_times.sort_by(f64::total_cmp);
    println!(
        "  median step time {:.2} us ({} parameters)\n",
        step_times[STEPS / 2],
        FEATURES + 1
    );
    Ok(())
}

/// One AdamW step over a 16M-parameter model: the memory-bound regime.
fn throughput(definition: &Definition, hypers: BTreeMap<String, f64>) -> Result<(), String> {
    let n = 16 << 20;
    let setup = Setup {
        shapes: vec![vec![n]],
        hypers,
        ..Setup::default()
    };
    let mut opt = Optimizer::new(definition, setup).map_err(|e| e.to_string())?;
    let (mut params, grads) = (vec![vec![0.5f32; n]], vec![vec![0.01f32; n]]);
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            opt.step(&mut params, &grads)
                .map(|_| start.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let bytes = (n * opt.stats().bytes_per_elem) as f64;
    println!(
        "== AdamW over 16.8M parameters: median step {:.2} ms, {:.1} GB/s moved ({} threads)",
        median * 1e3,
        bytes / median / 1e9,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    Ok(())
}

struct Data {
    x: Vec<f32>,
    y: Vec<f32>,
}

impl Data {
    /// Separable-with-noise labels from a hidden weight vector; xorshift keeps it reproducible.
    fn generate() -> Data {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let truth: Vec<f64> = (0..FEATURES).map(|_| uniform() * 2.0).collect();
        let mut x = Vec::with_capacity(SAMPLES * FEATURES);
        let mut y = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let row: Vec<f64> = (0..FEATURES).map(|_| uniform()).collect();
            let score: f64 =
                row.iter().zip(&truth).map(|(a, b)| a * b).sum::<f64>() + 0.3 + 0.5 * uniform();
            x.extend(row.iter().map(|&v| v as f32));
            y.push(if score > 0.0 { 1.0 } else { 0.0 });
        }
        Data { x, y }
    }

    /// Mean binary cross-entropy, accuracy, and the gradient for [weights, bias].
    fn loss_and_grad(&self, params: &[Vec<f32>]) -> (f64, f64, Vec<Vec<f32>>) {
        let (w, b) = (&params[0], params[1][0] as f64);
        let mut gw = vec![0.0f64; FEATURES];
        let (mut gb, mut loss, mut correct) = (0.0f64, 0.0f64, 0usize);
        for (row, &label) in self.x.chunks_exact(FEATURES).zip(&self.y) {
            let z: f64 = row
                .iter()
                .zip(w)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
                + b;
            let p = 1.0 / (1.0 + (-z).exp());
            let label = label as f64;
            loss -= label * p.max(1e-12).ln() + (1.0 - label) * (1.0 - p).max(1e-12).ln();
            correct += usize::from((p > 0.5) == (label > 0.5));
            let err = p - label;
            gw.iter_mut()
                .zip(row)
                .for_each(|(g, &a)| *g += err * a as f64);
            gb += err;
        }
        let n = SAMPLES as f64;
        let grads = vec![
            gw.iter().map(|g| (g / n) as f32).collect(),
            vec![(gb / n) as f32],
        ];
        (loss / n, correct as f64 / n, grads)
    }
}
