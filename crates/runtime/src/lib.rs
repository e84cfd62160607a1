//! optjit-runtime: the named compile pipeline, the Cranelift JIT loader, CPU execution of a
//! compiled step over a chunk table that covers every tensor of every group, and CUDA execution
//! of the same step from PTX (the driver is loaded at run time).
#![warn(missing_docs)]

mod binding;
mod buffer;
mod cache;
mod checkpoint;
mod checkpoint_file;
mod checkpoint_read;
mod chunks;
mod cuda;
mod dyn_optimizer;
mod error;
mod executor;
mod host;
mod jit;
mod kind_step;
mod optimizer;
mod part;
mod pipeline;
mod pool;
mod reduce;
mod scalar_program;
mod stage;
mod target;
mod variant;
mod view;

pub use buffer::{ALIGN, AlignedBuf};
pub use cache::{CacheOptions, CacheUse};
pub use checkpoint::Checkpoint;
pub use checkpoint_file::{CHECKPOINT_FORMAT, CheckpointError};
pub use chunks::{CHUNK_ELEMS, max_threads};
pub use cuda::{
    CUDA_CHUNK_ELEMS, CudaDevice, CudaError, CudaOptimizer, DeviceFloat, DeviceGraph, DeviceValue,
    Gpu, GpuExecutor,
};
pub use cudarc;
pub use dyn_optimizer::DynOptimizer;
pub use error::{CompileError, OptimizerError};
pub use half;
pub use host::{Host, Optimizer};
pub use jit::{CpuCodegen, CpuModule, JitError, KernelFn};
pub use optimizer::{Group, OptimizerOn, Setup, Stats};
pub use optjit_kernels_gen::Arch;
pub use pipeline::{CompileOptions, Compiled, compile, compile_cached};
pub use stage::{Dump, Stage};
pub use target::Target;
