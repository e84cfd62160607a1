//! optjit-kernels-gen: lowering of a fused phase to a target-neutral kernel IR, the Cranelift
//! emitter for the CPU and the PTX emitter for NVIDIA GPUs. It produces IR and text only: it
//! never runs a JIT or touches a GPU (the runtime loads what it emits).
//!
//! ```text
//! FusionPlan --lower--> Kernel (kernel IR text) --emit_clif--> cranelift ir::Function
//!                                               --emit_ptx---> PTX module text
//! ```
//!
//! Both emitters walk the same chunk table, [`ChunkAbi`].
#![warn(missing_docs)]

mod abi;
mod clif;
mod kernel;
mod lower;
mod ptx;

pub use abi::ChunkAbi;
pub use clif::{EmitError, LIBCALLS, UNROLL, emit_clif};
pub use kernel::{Inst, Kernel, Kind, ReduceOp, ReduceScope, Value};
pub use lower::{LowerError, LowerOptions, column_walk_scope, lower, reduce_op};
pub use ptx::{Arch, PTX_BLOCK_THREADS, PtxOptions, emit_ptx, ptx_entry_name};

/// The source text of this crate: what the compile cache hashes into its version, so that
/// cached PTX is never reused by a build whose lowering or emitters differ.
pub const SOURCES: &[&str] = &[
    include_str!("abi.rs"),
    include_str!("clif.rs"),
    include_str!("kernel.rs"),
    include_str!("lib.rs"),
    include_str!("lower.rs"),
    include_str!("ptx.rs"),
];
