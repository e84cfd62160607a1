//! optjit-kernels-gen: lowering of a fused phase to a target-neutral kernel IR, and the
//! Cranelift emitter for the CPU. It produces IR and text only: it never runs a JIT or touches
//! a GPU (the runtime loads what it emits).
//!
//! ```text
//! FusionPlan --lower--> Kernel (kernel IR text) --emit_clif--> cranelift ir::Function
//! ```
#![warn(missing_docs)]

mod clif;
mod kernel;
mod lower;

pub use clif::{ChunkAbi, EmitError, LIBCALLS, UNROLL, emit_clif};
pub use kernel::{Inst, Kernel, Kind, Value};
pub use lower::{LowerError, LowerOptions, lower};
