//! Errors a user can make while tracing an update rule.

use thiserror::Error;

/// A mistake in a traced definition, reported by [`crate::Tracer::finish`].
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TraceError {
    /// Two declarations share a name.
    #[error("{what} '{name}' is declared twice in optimizer '{optimizer}'")]
    Duplicate {
        /// `hyper` or `state`.
        what: &'static str,
        /// The repeated name.
        name: String,
        /// The optimizer being traced.
        optimizer: String,
    },
    /// A declaration uses a name reserved for an input.
    #[error("'{name}' is reserved in optimizer '{optimizer}' (param, grad and step are inputs)")]
    Reserved {
        /// The reserved name.
        name: String,
        /// The optimizer being traced.
        optimizer: String,
    },
    /// `set_state` was given a handle that is not a state read.
    #[error(
        "set_state in optimizer '{optimizer}' expects a handle returned by state() or scalar_state(), got {got}"
    )]
    NotAState {
        /// The optimizer being traced.
        optimizer: String,
        /// What the handle is.
        got: String,
    },
    /// A default value is not in the hyperparameter's domain.
    #[error("hyper '{name}' of optimizer '{optimizer}' has default {value}, expected {expected}")]
    BadDefault {
        /// The hyperparameter.
        name: String,
        /// The optimizer being traced.
        optimizer: String,
        /// The default given.
        value: f64,
        /// The domain, in words.
        expected: String,
    },
    /// `clip_grad_norm` got a `max_norm` outside its domain.
    #[error("clip_grad_norm: max_norm must be {expected}, got {value}")]
    BadMaxNorm {
        /// The value given.
        value: f64,
        /// The domain, in words.
        expected: String,
    },
    /// Handles from two different tracers were combined.
    #[error("a value of optimizer '{other}' was used while tracing optimizer '{optimizer}'")]
    ForeignValue {
        /// The optimizer being traced.
        optimizer: String,
        /// The optimizer the value belongs to.
        other: String,
    },
    /// The step never assigns the parameter.
    #[error("optimizer '{optimizer}' never assigns param (call set_param)")]
    NoParamUpdate {
        /// The optimizer being traced.
        optimizer: String,
    },
    /// The traced graph failed the IR verifier.
    #[error("optimizer '{optimizer}' is not a valid step: {message}")]
    Invalid {
        /// The optimizer being traced.
        optimizer: String,
        /// The verifier's report.
        message: String,
    },
}
