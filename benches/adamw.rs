//! AdamW step time: optjit's compiled step against the hand-fused Rust reference, alternating
//! in one run on each workload. `cargo bench --bench adamw [-- WORKLOAD... --threads N]`.

mod bench_args;
mod reference;

use optjit::{Optimizer, Setup};
use optjit_cli::workload;
use reference::AdamWScalars;
use std::time::Instant;

const ROUNDS: usize = 5;
const STEPS: usize = 10;

fn main() {
    let (names, threads) = bench_args::parse();
    let (lr, beta1, beta2, eps, wd) = (1e-3, 0.9, 0.999, 1e-8, 0.01);
    let adamw = optjit::optim::AdamW::new()
        .lr(lr)
        .weight_decay(wd)
        .build()
        .expect("AdamW");
    println!("AdamW fp32, {threads} threads, median of {ROUNDS} rounds x {STEPS} steps");
    for name in names {
        let sizes = workload::sizes(name).expect("known workload");
        let (mut p_jit, grads) = workload::data(&sizes);
        let mut p_ref = p_jit.clone();
        let zeros = || {
            sizes
                .iter()
                .map(|&n| optjit::AlignedBuf::filled(n, 0.0))
                .collect::<Vec<_>>()
        };
        let (mut m, mut v) = (zeros(), zeros());
        let shapes = sizes.iter().map(|&n| vec![n]).collect();
        let setup = Setup {
            shapes,
            hypers: adamw.hypers.clone(),
            threads,
            ..Setup::default()
        };
        let mut opt = Optimizer::new(&adamw.definition, setup).expect("compile");
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
                let s = AdamWScalars::new(lr, beta1, beta2, eps, wd, ref_step);
                reference::adamw_step(&mut p_ref, &grads, &mut m, &mut v, s, threads);
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
            "{name:<14} optjit {j:>8.3} ms  hand-fused-rust {r:>8.3} ms  ratio {:.2}  (max |diff| {max_diff:.1e}, compile {:.2} ms)",
            j / r,
            opt.stats().compile_ms
        );
    }
}
