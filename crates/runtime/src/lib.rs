//! optjit-runtime: the named compile pipeline, the Cranelift JIT loader, and CPU execution of a
//! compiled step over a chunk table that covers every tensor of every group.
#![warn(missing_docs)]

mod jit;
