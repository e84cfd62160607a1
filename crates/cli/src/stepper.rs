//! One compiled step on either target behind one interface, so that `golden` and `bench` run
//! the same code on the CPU and on a CUDA device.

use optjit_runtime::{CudaDevice, CudaOptimizer, Optimizer, OptimizerError, Setup, Stats};
use optjit_trace::Definition;
use std::sync::Arc;

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

    /// `cpu` or `cuda`, as the machine-readable lines print it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu { .. } => "cpu",
            Backend::Cuda(_) => "cuda",
        }
    }
}

/// A compiled optimizer on one of the backends, stepping host tensors.
pub enum Stepper {
    /// On the CPU.
    Cpu(Box<Optimizer>),
    /// On a CUDA device (host tensors are copied there and back each step).
    Cuda(Box<CudaOptimizer>),
}

impl Stepper {
    /// Compiles `definition` for `backend` and binds it to `setup`.
    pub fn new(
        definition: &Definition,
        mut setup: Setup,
        backend: &Backend,
    ) -> Result<Stepper, OptimizerError> {
        Ok(match backend {
            Backend::Cpu { threads } => {
                setup.threads = *threads;
                Stepper::Cpu(Box::new(Optimizer::new(definition, setup)?))
            }
            Backend::Cuda(device) => Stepper::Cuda(Box::new(CudaOptimizer::new(
                definition,
                setup,
                device.clone(),
            )?)),
        })
    }

    /// One step over host tensors.
    pub fn step(
        &mut self,
        params: &mut [Vec<f32>],
        grads: &[Vec<f32>],
    ) -> Result<(), OptimizerError> {
        match self {
            Stepper::Cpu(opt) => opt.step(params, grads),
            Stepper::Cuda(opt) => opt.step_host(params, grads),
        }
    }

    /// The hyperparameter `name` in force for `group`.
    pub fn hyper(&self, group: usize, name: &str) -> Result<f64, OptimizerError> {
        match self {
            Stepper::Cpu(opt) => opt.hyper(group, name),
            Stepper::Cuda(opt) => opt.hyper(group, name),
        }
    }

    /// The param group holding tensor `tensor`.
    pub fn group_of(&self, tensor: usize) -> Option<usize> {
        let holds = |tensors: Option<&[usize]>| tensors.is_some_and(|t| t.contains(&tensor));
        match self {
            Stepper::Cpu(opt) => (0..opt.n_groups()).find(|&g| holds(opt.group_tensors(g))),
            Stepper::Cuda(opt) => (0..opt.n_groups()).find(|&g| holds(opt.group_tensors(g))),
        }
    }

    /// The per-element state `name` of tensor `tensor`, on the host.
    pub fn state(&self, tensor: usize, name: &str) -> Result<Option<Vec<f32>>, OptimizerError> {
        match self {
            Stepper::Cpu(opt) => Ok(opt.state(tensor, name).map(<[f32]>::to_vec)),
            Stepper::Cuda(opt) => opt.state(tensor, name),
        }
    }

    /// The scalar state `name` of param group `group`.
    pub fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        match self {
            Stepper::Cpu(opt) => opt.scalar_state(group, name),
            Stepper::Cuda(opt) => opt.scalar_state(group, name),
        }
    }

    /// Reports the metric of the step just taken to the metric-driven schedule.
    pub fn report_metric(&mut self, metric: f64) -> Result<(), OptimizerError> {
        match self {
            Stepper::Cpu(opt) => opt.report_metric(metric),
            Stepper::Cuda(opt) => opt.report_metric(metric),
        }
    }

    /// The optimizer's counters.
    pub fn stats(&self) -> Stats {
        match self {
            Stepper::Cpu(opt) => opt.stats(),
            Stepper::Cuda(opt) => opt.stats(),
        }
    }
}
