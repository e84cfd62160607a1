//! Where steps run (`Backend`, for `golden` and `bench`), and one compiled step on any of them
//! behind one interface (`Steps`), so that `golden` runs the same code on the CPU, on a CUDA
//! device, or on a stand-in for one.

use optjit_runtime::{
    Checkpoint, CudaDevice, CudaOptimizer, Gpu, Optimizer, OptimizerError, Setup, Stats,
};
use optjit_trace::Definition;
use std::sync::Arc;

/// Builds a stepper for a definition and setup (see [`Backend::Other`]).
pub type Open = fn(&Definition, Setup) -> Result<Box<dyn Steps>, OptimizerError>;

/// Where steps run.
#[derive(Clone)]
pub enum Backend {
    /// The host CPU with this many threads (0: one per core).
    Cpu {
        /// Worker threads.
        threads: usize,
    },
    /// A CUDA device.
    Cuda(Arc<CudaDevice>),
    /// Another device, such as the tests' simulated GPU: its name and how to open a stepper
    /// on it.
    Other {
        /// As `--target` would name it.
        name: &'static str,
        /// Builds the stepper of a definition.
        open: Open,
    },
}

impl Backend {
    /// The backend `--target` names: `cpu`, or `cuda`/`ptx` (device 0, opened here).
    pub fn from_target(target: &str, threads: usize) -> Result<Backend, String> {
        match target {
            "cpu" => Ok(Backend::Cpu { threads }),
            "cuda" | "ptx" => CudaDevice::open(0)
                .map(Backend::Cuda)
                .map_err(|e| format!("--target {target}: {e}")),
            other => Err(format!(
                "--target {other}: unknown target (expected cpu, cuda or ptx)"
            )),
        }
    }

    /// `cpu` or `cuda` (or the other device's name), as the machine-readable lines print it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu { .. } => "cpu",
            Backend::Cuda(_) => "cuda",
            Backend::Other { name, .. } => name,
        }
    }
}

/// What `golden` asks of a compiled optimizer, stepping host tensors, on any target.
pub trait Steps {
    /// One step over host tensors; a tensor whose gradient is `None` does not step.
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
    /// The per-element state `name` of tensor `tensor`, on the host.
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

impl Steps for Optimizer {
    fn step(
        &mut self,
        params: &mut [Vec<f32>],
        grads: &[Option<Vec<f32>>],
    ) -> Result<(), OptimizerError> {
        Optimizer::step_optional(self, params, grads)
    }
    fn hyper(&self, group: usize, name: &str) -> Result<f64, OptimizerError> {
        Optimizer::hyper(self, group, name)
    }
    fn n_groups(&self) -> usize {
        Optimizer::n_groups(self)
    }
    fn group_tensors(&self, group: usize) -> Option<&[usize]> {
        Optimizer::group_tensors(self, group)
    }
    fn state(&self, tensor: usize, name: &str) -> Result<Option<Vec<f32>>, OptimizerError> {
        Ok(Optimizer::state(self, tensor, name).map(<[f32]>::to_vec))
    }
    fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        Optimizer::scalar_state(self, group, name)
    }
    fn tensor_scalar_state(&self, tensor: usize, name: &str) -> Option<f64> {
        Optimizer::tensor_scalar_state(self, tensor, name)
    }
    fn report_metric(&mut self, metric: f64) -> Result<(), OptimizerError> {
        Optimizer::report_metric(self, metric)
    }
    fn stats(&self) -> Stats {
        Optimizer::stats(self)
    }
    fn checkpoint(&self) -> Result<Checkpoint, OptimizerError> {
        Ok(Optimizer::checkpoint(self))
    }
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), OptimizerError> {
        Optimizer::restore(self, checkpoint)
    }
}

/// Host tensors are copied to the device and back each step.
impl<G: Gpu> Steps for CudaOptimizer<G> {
    fn step(
        &mut self,
        params: &mut [Vec<f32>],
        grads: &[Option<Vec<f32>>],
    ) -> Result<(), OptimizerError> {
        let Some(grads) = grads.iter().cloned().collect::<Option<Vec<Vec<f32>>>>() else {
            return Err(OptimizerError::NotOnTarget {
                rule: "golden".into(),
                what: "tensors without a gradient (Optimizer::step_optional)".into(),
                target: "cuda",
            });
        };
        self.step_host(params, &grads)
    }
    fn hyper(&self, group: usize, name: &str) -> Result<f64, OptimizerError> {
        CudaOptimizer::hyper(self, group, name)
    }
    fn n_groups(&self) -> usize {
        CudaOptimizer::n_groups(self)
    }
    fn group_tensors(&self, group: usize) -> Option<&[usize]> {
        CudaOptimizer::group_tensors(self, group)
    }
    fn state(&self, tensor: usize, name: &str) -> Result<Option<Vec<f32>>, OptimizerError> {
        CudaOptimizer::state(self, tensor, name)
    }
    fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        CudaOptimizer::scalar_state(self, group, name)
    }
    fn tensor_scalar_state(&self, tensor: usize, name: &str) -> Option<f64> {
        CudaOptimizer::tensor_scalar_state(self, tensor, name)
    }
    fn report_metric(&mut self, metric: f64) -> Result<(), OptimizerError> {
        CudaOptimizer::report_metric(self, metric)
    }
    fn stats(&self) -> Stats {
        CudaOptimizer::stats(self)
    }
    fn checkpoint(&self) -> Result<Checkpoint, OptimizerError> {
        CudaOptimizer::checkpoint(self)
    }
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), OptimizerError> {
        CudaOptimizer::restore(self, checkpoint)
    }
}

/// Compiles `definition` for `backend` and binds it to `setup`.
pub fn open(
    definition: &Definition,
    mut setup: Setup,
    backend: &Backend,
) -> Result<Box<dyn Steps>, OptimizerError> {
    Ok(match backend {
        Backend::Cpu { threads } => {
            setup.threads = *threads;
            Box::new(Optimizer::new(definition, setup)?)
        }
        Backend::Cuda(device) => Box::new(CudaOptimizer::new(definition, setup, device.clone())?),
        Backend::Other { open, .. } => open(definition, setup)?,
    })
}
