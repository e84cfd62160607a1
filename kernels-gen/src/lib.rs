//! optjit-kernels-gen: lowering of a fused phase to a target-neutral kernel IR, and the
//! Cranelift emitter for the CPU. Produces IR and text only: it never touches a GPU or a JIT.
#![warn(missing_docs)]

mod clif;
mod kernel;
mod lower;

pub use clif::{ChunkAbi, EmitError, LIBCALLS, UNROLL, emit_clif};
pub use kernel::{Inst, Kernel, Value};
pub use lower::{LowerError, LowerOptions, lower};
