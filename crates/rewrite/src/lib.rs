//! optjit-rewrite: the e-graph stages of the pipeline.
//!
//! * `simplify` ([`simplify`]) puts the step graph into an `egg` e-graph, one root per output,
//!   and runs the rule tables: exact identities, sign moves, small powers, constant folding (an
//!   e-class analysis, f64 like the host's scalar program) and scalar hoisting, which regroups
//!   arithmetic so that everything computed once per group (bias corrections, `lr / bc1`, ...)
//!   forms Scalar-class subtrees. A rule that holds only for some values (a square root split
//!   over a quotient needs a positive divisor) fires only where the analysis's value ranges
//!   ([`ValueRange`]) prove it, from constants, the ops and hyperparameters' domains
//!   ([`SimplifyOptions::hyper_ranges`]).
//! * `extract` ([`extract`]) reads back the cheapest graph by a cost model that weighs an op by
//!   how often it runs (per element ≫ per tensor ≫ per group), never by tensor sizes.
//! * `fuse` ([`fuse`]) splits the extracted graph into the host scalar program and one kernel
//!   phase, with the buffers it loads and stores.
//!
//! ```
//! use optjit_ir::{Binary, Graph, Input, Op, Target};
//! let mut g = Graph::new("sgd");
//! g.declare_hyper("lr", 0.01);
//! let p = g.input(Input::Param);
//! let grad = g.input(Input::Grad);
//! let lr = g.input(Input::Hyper("lr".into()));
//! let step = g.add(Op::Binary(Binary::Mul), &[lr, grad]);
//! let new_p = g.add(Op::Binary(Binary::Sub), &[p, step]);
//! g.set_output(Target::Param, new_p);
//!
//! let simplified = optjit_rewrite::simplify(&g, &Default::default()).unwrap();
//! let extracted = optjit_rewrite::extract(&simplified);
//! let plan = optjit_rewrite::fuse(&extracted).unwrap();
//! assert_eq!(plan.bytes_per_elem(), 12); // read param and grad, write param
//! ```
#![warn(missing_docs)]

mod analysis;
mod cheapest;
mod cost;
mod counts;
mod error;
mod fuse;
mod lang;
mod limits;
mod rules;
mod simplify;
mod state_signs;
mod value_range;

pub use counts::{OpCounts, count_elem_ops, plan_stats};

/// The source text of this crate: what the compile cache hashes into its version, so that a
/// cached optimized graph is never reused by a build whose rules or cost model differ.
pub const SOURCES: &[&str] = &[
    include_str!("analysis.rs"),
    include_str!("cheapest.rs"),
    include_str!("cost.rs"),
    include_str!("counts.rs"),
    include_str!("error.rs"),
    include_str!("fuse.rs"),
    include_str!("lang.rs"),
    include_str!("lib.rs"),
    include_str!("limits.rs"),
    include_str!("rules/identities.rs"),
    include_str!("rules/mod.rs"),
    include_str!("rules/scalar_hoisting.rs"),
    include_str!("rules/signs.rs"),
    include_str!("rules/strength_reduction.rs"),
    include_str!("rules/tests.rs"),
    include_str!("simplify.rs"),
    include_str!("state_signs.rs"),
    include_str!("value_range.rs"),
    include_str!("value_range/tests.rs"),
];
pub use error::RewriteError;
pub use fuse::fuse;
pub use limits::{MAX_GRAPH_NODES, MAX_KERNEL_BUFFERS, MAX_PHASES};
pub use rules::{Exactness, rule_names};
pub use simplify::{Simplified, SimplifyOptions, SimplifyReport, extract, simplify};
pub use state_signs::non_negative_states;
pub use value_range::ValueRange;
