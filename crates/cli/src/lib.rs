//! optjit-cli: the `optjit` command's subcommands, as a library so that tests run them too.
#![warn(missing_docs)]

pub mod bench;
pub mod compile;
pub mod cuda_bench;
pub mod demo;
pub mod golden;
pub mod list;
pub mod rule;
pub mod stepper;
pub mod workload;
