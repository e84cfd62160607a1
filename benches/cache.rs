//! Compile times through the cache, for AdamW on the CPU and to PTX: a cold compile (caches
//! off), a disk hit (memory off, warm directory: the e-graph is skipped) and a memory hit; and
//! an optimizer's `compile_ms` (caches off) for 10 and for 10,000 tensors.
//!
//! `cargo bench --bench cache`

use optjit::optim::AdamW;
use optjit::{CacheOptions, CompileOptions, Optimizer, Setup, Target, compile_cached};
use std::time::Instant;

/// Median wall time of `f`, in microseconds, over `runs` runs.
fn median_us(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    let adamw = AdamW::new().build().expect("AdamW");
    let dir = std::env::temp_dir().join(format!("optjit-cache-bench-{}", std::process::id()));
    for target in [Target::Cpu, Target::cuda()] {
        let with = |memory: bool, dir: Option<std::path::PathBuf>| CompileOptions {
            target,
            cache: CacheOptions { memory, dir },
            ..CompileOptions::default()
        };
        let compile = |options: &CompileOptions| {
            compile_cached(&adamw.definition, options).expect("compile");
        };
        let cold = median_us(20, || compile(&with(false, None)));
        let disk_options = with(false, Some(dir.clone()));
        compile(&disk_options);
        let disk = median_us(20, || compile(&disk_options));
        let memory_options = with(true, None);
        compile(&memory_options);
        let memory = median_us(10_000, || compile(&memory_options));
        println!(
            "target={} rule=adamw cold_us={cold:.0} disk_hit_us={disk:.0} memory_hit_us={memory:.2}",
            match target {
                Target::Cpu => "cpu",
                Target::Cuda { .. } => "cuda",
            }
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    let off = CompileOptions {
        cache: CacheOptions::off(),
        ..CompileOptions::default()
    };
    for tensors in [10, 10_000] {
        let mut times: Vec<f64> = (0..20)
            .map(|_| {
                let setup = Setup {
                    shapes: vec![vec![64]; tensors],
                    hypers: adamw.hypers.clone(),
                    ..Setup::default()
                };
                let opt = Optimizer::with_options(&adamw.definition, setup, &off).expect("opt");
                opt.stats().compile_ms
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "target=cpu rule=adamw tensors={tensors} compile_ms={:.3}",
            times[10]
        );
    }
}
