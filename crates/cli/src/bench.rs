//! `optjit bench`: compile a built-in for a workload and time its steps on the CPU or a GPU.

use crate::stepper::Backend;
use crate::{cuda_bench, workload};
use optjit_ir::DType;
use optjit_optim::Kwargs;
use optjit_runtime::{Optimizer, Setup};
use std::time::Instant;

/// What to measure.
pub struct BenchArgs {
    /// Built-in optimizer name, or a `.step` file.
    pub optimizer: String,
    /// Its keyword arguments.
    pub kwargs: Kwargs,
    /// `clip_grad_norm_` max_norm, fused into the step.
    pub clip_grad_norm: Option<f64>,
    /// How params, grads and states are stored (f16 and bf16 on CUDA only).
    pub dtype: DType,
    /// A PyTorch LR scheduler as JSON (`{"name": "StepLR", "kwargs": {...}}`), put in force.
    pub schedule: Option<String>,
    /// Workload name.
    pub workload: String,
    /// Timed steps, at least 1 (after 2 warm-up steps on the CPU, 3 on a GPU).
    pub steps: usize,
    /// Worker threads (0: one per core), at most [`optjit_runtime::max_threads`] on the CPU.
    pub threads: usize,
    /// Where the steps run.
    pub backend: Backend,
}

/// Runs the benchmark and returns the machine-readable result line.
pub fn run(args: &BenchArgs) -> Result<String, String> {
    if args.steps == 0 {
        return Err("--steps 0: nothing to time (give at least 1 step)".into());
    }
    let cap = optjit_runtime::max_threads();
    if matches!(args.backend, Backend::Cpu { .. }) && args.threads > cap {
        return Err(format!(
            "--threads {}: at most {cap} here (the size of the worker pool; 0 takes one per core)",
            args.threads
        ));
    }
    let sizes = workload::sizes(&args.workload).ok_or_else(|| {
        format!(
            "unknown workload '{}' (expected one of {})",
            args.workload,
            workload::NAMES.join(", ")
        )
    })?;
    let mut configured = crate::rule::choose(&args.optimizer, &args.kwargs, args.clip_grad_norm)?;
    if let Some(schedule) = &args.schedule {
        configured = crate::rule::with_schedule(configured, schedule)?;
    }
    let shapes = workload::shapes(&args.workload).expect("a known workload");
    if let Backend::Other { name, .. } = &args.backend {
        return Err(format!(
            "bench: no timing on the {name} backend (cpu or cuda)"
        ));
    }
    if let Backend::Cuda(device) = &args.backend {
        let reference = configured.name == "AdamW"
            && args.kwargs.is_empty()
            && args.clip_grad_norm.is_none()
            && args.dtype == DType::F32;
        let setup = Setup {
            shapes,
            hypers: configured.hypers.clone(),
            dtype: args.dtype,
            ..Setup::default()
        };
        let times = cuda_bench::run(device, &configured.definition, setup, args.steps, reference)?;
        return Ok(cuda_line(args, &configured.name, &sizes, &times));
    }
    let (mut params, grads) = workload::data(&sizes);
    let setup = Setup {
        shapes,
        groups: Vec::new(),
        hypers: configured.hypers.clone(),
        threads: args.threads,
        dtype: args.dtype,
    };
    let mut opt = Optimizer::new(&configured.definition, setup).map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(args.steps);
    for k in 0..args.steps + 2 {
        let start = Instant::now();
        opt.step(&mut params, &grads).map_err(|e| e.to_string())?;
        if k >= 2 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let median = cuda_bench::median(times);
    let elems: usize = sizes.iter().sum();
    let stats = opt.stats();
    // The threads the step actually used (one per core for 0, within the worker pool).
    let requested = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    let threads = requested.min(cap);
    Ok(format!(
        "workload={} optimizer={} target=cpu tensors={} elems={} compile_ms={:.3} step_ms_median={:.3} \
         melem_per_s={:.1} gb_per_s={:.1} bytes_per_elem={} kernels_per_step={} compiles={} memory_hits={} disk_hits={} threads={} steps={}",
        args.workload,
        configured.name,
        sizes.len(),
        elems,
        stats.compile_ms,
        median * 1e3,
        elems as f64 / median / 1e6,
        (elems * stats.bytes_per_elem) as f64 / median / 1e9,
        stats.bytes_per_elem,
        stats.kernels_per_step,
        stats.compiles,
        stats.memory_hits,
        stats.disk_hits,
        threads,
        args.steps,
    ))
}

/// The CUDA result line: the CPU line's keys (the step time measured per step, host work
/// included, as PyTorch's anchor measures it; and back to back, `step_ms_pipelined`), then the
/// device, the copy bandwidth, the fraction of it reached, and the hand-fused reference's time
/// where there is one.
fn cuda_line(args: &BenchArgs, name: &str, sizes: &[usize], t: &cuda_bench::CudaTimes) -> String {
    let elems: usize = sizes.iter().sum();
    let seconds = t.step_ms * 1e-3;
    let gb_per_s = (elems * t.stats.bytes_per_elem) as f64 / seconds / 1e9;
    let reference = match t.reference_ms {
        Some(ms) => format!(
            " reference_ms_median={ms:.4} vs_reference={:.3}",
            t.step_ms / ms
        ),
        None => String::new(),
    };
    format!(
        "workload={} optimizer={name} target=cuda tensors={} elems={elems} compile_ms={:.3} \
         step_ms_median={:.4} host_ms_median={:.4} step_ms_pipelined={:.4} melem_per_s={:.1} gb_per_s={gb_per_s:.1} bytes_per_elem={} \
         kernels_per_step={} compiles={} memory_hits={} disk_hits={} steps={} copy_gb_per_s={:.1} of_copy_bw={:.3}{reference} \
         device=\"{}\"",
        args.workload,
        sizes.len(),
        t.stats.compile_ms,
        t.step_ms,
        t.host_ms,
        t.pipelined_ms,
        elems as f64 / seconds / 1e6,
        t.stats.bytes_per_elem,
        t.stats.kernels_per_step,
        t.stats.compiles,
        t.stats.memory_hits,
        t.stats.disk_hits,
        args.steps,
        t.copy_gb_per_s,
        gb_per_s / t.copy_gb_per_s,
        t.device,
    )
}
