//! Errors of the simplify and fuse stages.

use thiserror::Error;

/// Why a graph could not be simplified or planned.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RewriteError {
    /// An output names a node that is not in the graph.
    #[error("output {target} refers to a node that is not in the graph")]
    MissingNode {
        /// The output's target name.
        target: String,
    },
    /// A rule of the built-in tables does not parse or binds no variable it uses (a bug).
    #[error("rule {rule:?} is invalid: {message}")]
    InvalidRule {
        /// The rule's name.
        rule: String,
        /// What egg said.
        message: String,
    },
    /// A reduction the planner cannot place.
    #[error("cannot plan {node}: {reason}")]
    Reduction {
        /// The reduction's line of the graph text (`%5 = norm %4 : tensor f64`).
        node: String,
        /// Why.
        reason: String,
    },
    /// A scalar-only op (`sin`, `cos`, `floor`) would have to run per element.
    #[error("{node}: this op only runs in the scalar program, not per element")]
    ScalarOnlyPerElement {
        /// The node's line of the graph text.
        node: String,
    },
    /// An output's target and value do not fit together (a per-element value assigned to a
    /// scalar state, a state that is not declared, ...).
    #[error("output {target}: {message}")]
    BadOutput {
        /// The output's target name.
        target: String,
        /// What is wrong.
        message: String,
    },
    /// The graph or the plan is larger than a compile-time limit allows (`limits.rs`).
    #[error(
        "too large: {size} {what}, more than the limit of {limit} (optjit_rewrite::{name}; docs/perf.md, \"Large programs\")"
    )]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// How many there are.
        size: usize,
        /// The most allowed.
        limit: usize,
        /// The limit's constant in this crate.
        name: &'static str,
    },
}
