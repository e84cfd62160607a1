//! optjit-runtime: the named compile pipeline, the Cranelift JIT loader, and CPU execution of a
//! compiled step over a chunk table that covers every tensor of every group.
#![warn(missing_docs)]

mod buffer;
mod chunks;
mod error;
mod jit;
mod optimizer;
mod pipeline;
mod pool;
mod scalar_program;
mod stage;

pub use buffer::{ALIGN, AlignedBuf};
pub use chunks::{CHUNK_ELEMS, max_threads};
pub use error::{CompileError, OptimizerError};
pub use jit::{CpuCodegen, CpuModule, JitError, KernelFn};
pub use optimizer::{Group, Optimizer, Setup, Stats};
pub use pipeline::{CompileOptions, Compiled, compile};
pub use stage::{Dump, Stage};
