//! Checkpoint times for AdamW over 16M parameters on the CPU (two states, 128 MiB): taking the
//! checkpoint (copying the states), saving it (hash, write, fsync, rename), saving straight from
//! the optimizer (`save_checkpoint`: no copy), loading it (read, decode, verify) and restoring
//! it. Medians of 5 runs; the file goes to the system's temp directory.
//!
//! `cargo bench --bench checkpoint`

use optjit::optim::AdamW;
use optjit::{Checkpoint, Optimizer, Setup};
use std::time::Instant;

fn main() {
    let n = 16 << 20;
    let adamw = AdamW::new().build().expect("AdamW");
    let setup = Setup {
        shapes: vec![vec![n]],
        hypers: adamw.hypers.clone(),
        ..Setup::default()
    };
    let mut opt = Optimizer::new(&adamw.definition, setup).expect("optimizer");
    let (mut params, grads) = (vec![vec![0.5f32; n]], vec![vec![0.01f32; n]]);
    opt.step(&mut params, &grads).expect("step");
    let path =
        std::env::temp_dir().join(format!("optjit-bench-{}.safetensors", std::process::id()));
    let mut times: [Vec<f64>; 5] = Default::default();
    for _ in 0..5 {
        let mut lap = Instant::now();
        let mut record = |what: usize| {
            times[what].push(lap.elapsed().as_secs_f64() * 1e3);
            lap = Instant::now();
        };
        let checkpoint = opt.checkpoint();
        record(0);
        checkpoint.save(&path).expect("save");
        record(1);
        opt.save_checkpoint(&path).expect("save_checkpoint");
        record(2);
        let loaded = Checkpoint::load(&path).expect("load");
        record(3);
        opt.restore(&loaded).expect("restore");
        record(4);
    }
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    std::fs::remove_file(&path).expect("remove the file");
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let [checkpoint, save, save_direct, load, restore] = &mut times;
    println!(
        "checkpoint_bytes={bytes} checkpoint_ms={:.1} save_ms={:.1} save_checkpoint_ms={:.1} load_ms={:.1} restore_ms={:.1} save_gb_per_s={:.2}",
        median(checkpoint),
        median(save),
        median(save_direct),
        median(load),
        median(restore),
        bytes as f64 / median(save) / 1e6
    );
}
