//! `Executor`: where an optimizer runs, the one thing its two forms differ in. The optimizer
//! (`optimizer.rs`, `OptimizerOn<E>`) is written once over it: the host (`host.rs`: Cranelift
//! kernels over host memory) and a GPU (`cuda/optimizer.rs`: PTX through the `Gpu` trait) each
//! build parts, and read and write the per-element states they keep.

use crate::error::OptimizerError;
use crate::kind_step::KindStep;
use crate::optimizer::{OptimizerOn, Setup};
use crate::pipeline::{CompileOptions, Compiled};
use crate::variant::PartPlan;
use std::sync::Arc;

/// Where an optimizer's parts run and keep their per-element states.
pub(crate) trait Executor {
    /// One part's compiled step with its tensors' states, as this executor keeps them.
    type Part: AsRef<KindStep> + AsMut<KindStep>;

    /// The target's name, for errors.
    const TARGET: &'static str;

    /// The compile options for `setup` (the storage of its dtype), or why this executor cannot
    /// run `setup` compiled as `options` (another target, a dtype it does not store).
    fn options(
        &self,
        rule: &str,
        setup: &Setup,
        options: &CompileOptions,
    ) -> Result<CompileOptions, OptimizerError>;

    /// Whether `compiled` holds code this executor runs.
    fn runs(&self, compiled: &Compiled) -> bool;

    /// The part `plan`, compiled as `compiled`, with its states allocated (and its code
    /// loaded), and the time that took beyond compiling, in milliseconds.
    fn part(
        &self,
        plan: &PartPlan,
        compiled: Arc<Compiled>,
    ) -> Result<(Self::Part, f64), OptimizerError>;

    /// The per-element state with index `state` among the graph's of `part`'s tensor `local`,
    /// as f32 on the host.
    fn read_state(
        &self,
        part: &Self::Part,
        local: usize,
        state: usize,
    ) -> Result<Vec<f32>, OptimizerError>;

    /// Writes `values` (f32, as many as the state holds) to that state.
    fn write_state(
        &self,
        part: &mut Self::Part,
        local: usize,
        state: usize,
        values: &[f32],
    ) -> Result<(), OptimizerError>;

    /// Why `values`, of state `name` of tensor `tensor`, cannot be stored as this executor
    /// stores states (f16 overflows), checked before a restore writes anything.
    fn refuse_values(&self, tensor: usize, name: &str, values: &[f32]) -> Option<String>;

    /// How the tensors and per-element states are stored.
    fn dtype(&self) -> optjit_ir::DType;

    /// One step of `opt` over host tensors (see `DynOptimizer::step`).
    fn step_host_tensors(
        opt: &mut OptimizerOn<Self>,
        params: &mut [Vec<f32>],
        grads: &[Option<Vec<f32>>],
    ) -> Result<(), OptimizerError>
    where
        Self: Sized;

    /// The state `name` of `opt`'s tensor `tensor`, on the host.
    fn state_on_host(
        opt: &OptimizerOn<Self>,
        tensor: usize,
        name: &str,
    ) -> Result<Option<Vec<f32>>, OptimizerError>
    where
        Self: Sized;
}
