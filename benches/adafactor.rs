//! Adafactor step time: optjit's compiled steps against the hand-fused Rust reference,
//! alternating in one run on each workload (GPT-2 small with its real shapes: matrices and
//! vectors; the others vectors). `cargo bench --bench adafactor [-- WORKLOAD... --threads N]`.

mod adafactor_reference;
mod bench_args;

use optjit::{Optimizer, Setup};
use optjit_cli::workload;
use std::time::Instant;

const ROUNDS: usize = 5;
const STEPS: usize = 5;

fn main() {
    let (names, threads) = bench_args::parse();
    let lr = 0.01;
    let adafactor = optjit::optim::Adafactor::new()
        .lr(lr)
        .build()
        .expect("Adafactor");
    println!("Adafactor fp32, {threads} threads, median of {ROUNDS} rounds x {STEPS} steps");
    for name in names {
        let shapes = workload::shapes(name).expect("known workload");
        let sizes = workload::sizes(name).expect("known workload");
        let (mut p_jit, grads) = workload::data(&sizes);
        let mut p_ref = p_jit.clone();
        let mut tensors: Vec<_> = shapes
            .iter()
            .map(|s| adafactor_reference::Tensor::new(s))
            .collect();
        let setup = Setup {
            shapes: shapes.clone(),
            hypers: adafactor.hypers.clone(),
            threads,
            ..Setup::default()
        };
        let mut opt = Optimizer::new(&adafactor.definition, setup).expect("compile");
        let (mut t_jit, mut t_ref) = (Vec::new(), Vec::new());
        let mut ref_step = 0;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for _ in 0..STEPS {
                opt.step(&mut p_jit, &grads).expect("step");
            }
            t_jit.push(start.elapsed().as_secs_f64() * 1e3 / STEPS as f64);
            let start = Instant::now();
            for _ in 0..STEPS {
                ref_step += 1;
                adafactor_reference::step(&mut p_ref, &grads, &mut tensors, ref_step, lr, threads);
            }
            t_ref.push(start.elapsed().as_secs_f64() * 1e3 / STEPS as f64);
        }
        let max_diff = p_jit
            .iter()
            .zip(&p_ref)
            .flat_map(|(a, b)| a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max);
        let (j, r) = (bench_args::median(t_jit), bench_args::median(t_ref));
        println!(
            "{name:<14} optjit {j:>8.3} ms  hand-fused-rust {r:>8.3} ms  ratio {:.2}  (max |diff| {max_diff:.1e})",
            j / r
        );
    }
}
