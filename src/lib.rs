//! optjit: a JIT compiler for deep-learning optimizer steps.
//!
//! A user defines an optimizer step, built-in or their own; optjit traces it into an IR graph,
//! simplifies it with an e-graph, fuses it into one kernel per phase covering every tensor of
//! every param group, emits Cranelift machine code for the CPU or PTX for NVIDIA GPUs
//! ([`CudaOptimizer`]), and runs it in place.
//!
//! ```
//! use optjit::{Optimizer, Setup, optim::AdamW};
//!
//! let adamw = AdamW::new().lr(1e-3).weight_decay(0.01).build().unwrap();
//! let setup = Setup { shapes: vec![vec![2, 3], vec![3]], hypers: adamw.hypers.clone(), ..Setup::default() };
//! let mut opt = Optimizer::new(&adamw.definition, setup).unwrap();
//! let mut params = vec![vec![0.5f32; 6], vec![0.0f32; 3]];
//! let grads = vec![vec![0.1f32; 6], vec![-0.2f32; 3]];
//! opt.step(&mut params, &grads).unwrap();
//! opt.set_hyper(None, "lr", 5e-4).unwrap(); // takes effect next step, no recompile
//! opt.step(&mut params, &grads).unwrap();
//! assert_eq!(opt.stats().builds(), 1); // compiled once, or found in a cache
//! ```
#![warn(missing_docs)]

pub use optjit_runtime::{
    AlignedBuf, Arch, CHECKPOINT_FORMAT, CacheOptions, CacheUse, Checkpoint, CheckpointError,
    CompileError, CompileOptions, Compiled, CpuCodegen, CudaDevice, CudaError, CudaOptimizer,
    DeviceFloat, DeviceGraph, DeviceValue, Dump, Gpu, Group, Optimizer, OptimizerError, Setup,
    Stage, Stats, Target, compile, compile_cached,
};
pub use optjit_trace::{
    Definition, Domain, GRAD_NORM, MAX_NORM, TraceError, Tracer, Value, clip_grad_norm, select,
};

/// The IR: graphs, ops, dtypes, the text form, the verifier and the reference interpreter.
pub use optjit_ir as ir;
/// Lowering to kernel IR, and the Cranelift and PTX emitters.
pub use optjit_kernels_gen as kernels_gen;
/// Built-in optimizers with PyTorch's names and defaults.
pub use optjit_optim as optim;
/// The e-graph stage and fusion planner.
pub use optjit_rewrite as rewrite;
/// The CUDA driver bindings the GPU backend uses (device buffers are `cudarc` slices).
pub use optjit_runtime::cudarc;
/// The f16 and bf16 types of half-precision device buffers ([`Setup::dtype`]).
pub use optjit_runtime::half;
/// The tracing API and the `.step` language (`trace::step`).
pub use optjit_trace as trace;
