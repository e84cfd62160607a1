//! `DynOptimizer`: an optimizer on any target behind one object-safe interface over host
//! tensors, implemented once for every executor, for tools that choose the target at run time
//! (`optjit golden`, and the tests' simulated GPU).

use crate::checkpoint::Checkpoint;
use crate::error::OptimizerError;
use crate::executor::Executor;
use crate::optimizer::{OptimizerOn, Stats};

/// An optimizer of either target, stepped with host tensors (a GPU's are copied there and
/// back).
pub trait DynOptimizer {
    /// One step; a tensor whose gradient is `None` does not step (see
    /// [`crate::Optimizer::step_optional`]).
    fn step(
        &mut self,
        params: &mut [Vec<f32>],
        grads: &[Option<Vec<f32>>],
    ) -> Result<(), OptimizerError>;
    /// The hyperparameter `name` in force for `group`.
    fn hyper(&self, group: usize, name: &str) -> Result<f64, OptimizerError>;
    /// The param groups.
    fn n_groups(&self) -> usize;
    /// The tensors of param group `group`.
    fn group_tensors(&self, group: usize) -> Option<&[usize]>;
    /// The state `name` of tensor `tensor`, on the host.
    fn state(&self, tensor: usize, name: &str) -> Result<Option<Vec<f32>>, OptimizerError>;
    /// The scalar state `name` of param group `group`.
    fn scalar_state(&self, group: usize, name: &str) -> Option<f64>;
    /// The scalar state `name` of tensor `tensor`, when each tensor has its own.
    fn tensor_scalar_state(&self, tensor: usize, name: &str) -> Option<f64>;
    /// Reports the metric of the step just taken to the metric-driven schedule.
    fn report_metric(&mut self, metric: f64) -> Result<(), OptimizerError>;
    /// The optimizer's counters.
    fn stats(&self) -> Stats;
    /// Everything the optimizer carries to its next step.
    fn checkpoint(&self) -> Result<Checkpoint, OptimizerError>;
    /// Goes on from a checkpoint (of this rule, shapes and groups, from any target).
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), OptimizerError>;

    /// The param group holding tensor `tensor`.
    fn group_of(&self, tensor: usize) -> Option<usize> {
        let holds = |tensors: Option<&[usize]>| tensors.is_some_and(|t| t.contains(&tensor));
        (0..self.n_groups()).find(|&g| holds(self.group_tensors(g)))
    }
}

#[allow(private_bounds)] // the executors are the crate's own
impl<E: Executor> DynOptimizer for OptimizerOn<E> {
    fn step(
        &mut self,
        params: &mut [Vec<f32>],
        grads: &[Option<Vec<f32>>],
    ) -> Result<(), OptimizerError> {
        E::step_host_tensors(self, params, grads)
    }
    fn hyper(&self, group: usize, name: &str) -> Result<f64, OptimizerError> {
        OptimizerOn::hyper(self, group, name)
    }
    fn n_groups(&self) -> usize {
        OptimizerOn::n_groups(self)
    }
    fn group_tensors(&self, group: usize) -> Option<&[usize]> {
        OptimizerOn::group_tensors(self, group)
    }
    fn state(&self, tensor: usize, name: &str) -> Result<Option<Vec<f32>>, OptimizerError> {
        E::state_on_host(self, tensor, name)
    }
    fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        OptimizerOn::scalar_state(self, group, name)
    }
    fn tensor_scalar_state(&self, tensor: usize, name: &str) -> Option<f64> {
        OptimizerOn::tensor_scalar_state(self, tensor, name)
    }
    fn report_metric(&mut self, metric: f64) -> Result<(), OptimizerError> {
        OptimizerOn::report_metric(self, metric)
    }
    fn stats(&self) -> Stats {
        OptimizerOn::stats(self)
    }
    fn checkpoint(&self) -> Result<Checkpoint, OptimizerError> {
        self.take_checkpoint()
    }
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), OptimizerError> {
        OptimizerOn::restore(self, checkpoint)
    }
}
