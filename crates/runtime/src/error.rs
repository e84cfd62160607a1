//! Errors of compiling a step and of constructing or stepping an optimizer.

use crate::stage::Stage;
use thiserror::Error;

/// A stage of the pipeline failed.
#[derive(Debug, Error)]
#[error("compile of '{rule}' failed in stage {stage}: {message}")]
pub struct CompileError {
    /// The update rule.
    pub rule: String,
    /// Where it failed.
    pub stage: Stage,
    /// What went wrong, with the stage's input where it helps.
    pub message: String,
}

/// Bad input to an [`crate::Optimizer`]; when a step is rejected, nothing was modified.
#[derive(Debug, Error)]
pub enum OptimizerError {
    /// Compiling the step failed.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The step was compiled for another target than the optimizer runs on.
    #[error("{rule}: compiled for target {target}, but this optimizer runs on {expected}")]
    WrongTarget {
        /// The update rule.
        rule: String,
        /// The target of the compile options.
        target: String,
        /// The target the optimizer needs.
        expected: &'static str,
    },
    /// A CUDA driver call failed, or a tensor is not on the optimizer's device.
    #[error(transparent)]
    Cuda(#[from] crate::cuda::CudaError),
    /// A hyperparameter value is outside its domain.
    #[error("{rule}: {name} must be {expected}, got {value}{place}")]
    BadHyper {
        /// The update rule.
        rule: String,
        /// The hyperparameter.
        name: String,
        /// The value given.
        value: f64,
        /// The domain, in words.
        expected: String,
        /// ` in param group 1` or empty.
        place: String,
    },
    /// A metric was reported to an optimizer without a metric-driven schedule.
    #[error("{rule}: a metric was reported, but no schedule of this optimizer reads `metric`")]
    NoMetricSchedule {
        /// The update rule.
        rule: String,
    },
    /// The metric-driven schedule could not run (a bug: it was verified when built).
    #[error("{rule}: the metric-driven schedule failed: {message}")]
    MetricSchedule {
        /// The update rule.
        rule: String,
        /// What the interpreter said.
        message: String,
    },
    /// No hyperparameter of this name exists.
    #[error("{rule}: unknown hyperparameter '{name}'{place} (declared: {declared})")]
    UnknownHyper {
        /// The update rule.
        rule: String,
        /// The name given.
        name: String,
        /// Where it was given (` in param group 1`), or empty.
        place: String,
        /// The declared names.
        declared: String,
    },
    /// A param group index is out of range.
    #[error("{rule}: param group {group} does not exist ({n_groups} group(s))")]
    NoSuchGroup {
        /// The update rule.
        rule: String,
        /// The index given.
        group: usize,
        /// How many groups there are.
        n_groups: usize,
    },
    /// The param groups do not partition the tensors.
    #[error("{rule}: param groups must hold every tensor exactly once: {problem}")]
    BadGroups {
        /// The update rule.
        rule: String,
        /// Which tensor is missing, repeated or out of range.
        problem: String,
    },
    /// A schedule argument given per param group has a value count other than the number of
    /// groups.
    #[error(
        "{rule}: {given_by} has {got} values, one per param group, but there are {n_groups} param groups"
    )]
    PerGroupLength {
        /// The update rule.
        rule: String,
        /// Who gave the list: `OneCycleLR max_lr`.
        given_by: String,
        /// How many values it has.
        got: usize,
        /// How many groups there are.
        n_groups: usize,
    },
    /// A shape's element count overflows or cannot be allocated.
    #[error(
        "{rule}: tensor {tensor} has shape {shape:?}, whose elements, rows or columns are more than memory can hold"
    )]
    BadShape {
        /// The update rule.
        rule: String,
        /// The tensor's index.
        tensor: usize,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// Memory cannot hold what a tensor needs (per-row or per-column states of a shape with
    /// very many rows or columns).
    #[error("{rule}: tensor {tensor} needs {what}, more than memory can hold")]
    OutOfMemory {
        /// The update rule.
        rule: String,
        /// The tensor's index.
        tensor: usize,
        /// What it needs.
        what: String,
    },
    /// `step` got the wrong number of tensors.
    #[error("{rule}: step expects {expected} {what} tensors, got {got}")]
    TensorCount {
        /// The update rule.
        rule: String,
        /// `param` or `grad`.
        what: &'static str,
        /// How many the optimizer was built for.
        expected: usize,
        /// How many were given.
        got: usize,
    },
    /// A tensor has the wrong number of elements.
    #[error(
        "{rule}: {what} tensor {tensor} has {got} elements, expected {expected} (shape {shape:?})"
    )]
    TensorLength {
        /// The update rule.
        rule: String,
        /// `param` or `grad`.
        what: &'static str,
        /// The tensor's index.
        tensor: usize,
        /// Its length.
        got: usize,
        /// The length of its shape.
        expected: usize,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A checkpoint does not fit this optimizer.
    #[error("{rule}: cannot restore this checkpoint: {problem}")]
    Checkpoint {
        /// The update rule.
        rule: String,
        /// What differs, naming it.
        problem: String,
    },
    /// The step needs something this target does not run yet.
    #[error("{rule}: {what} is not supported on {target} yet")]
    NotOnTarget {
        /// The update rule.
        rule: String,
        /// What the step needs.
        what: String,
        /// The target.
        target: &'static str,
    },
}

impl OptimizerError {
    /// This error, placed (` in param group 1`) where it names no place yet.
    pub(crate) fn at(self, place: &str) -> OptimizerError {
        match self {
            OptimizerError::UnknownHyper {
                rule,
                name,
                place: unplaced,
                declared,
            } if unplaced.is_empty() => OptimizerError::UnknownHyper {
                rule,
                name,
                place: place.to_string(),
                declared,
            },
            other => other,
        }
    }
}
