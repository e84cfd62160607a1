//! Where steps run (`Backend`, for `golden` and `bench`), and opening an optimizer there behind
//! `DynOptimizer`, so that `golden` runs the same code on the CPU, on a CUDA device, or on a
//! stand-in for one.

use optjit_runtime::{CudaDevice, CudaOptimizer, DynOptimizer, Optimizer, OptimizerError, Setup};
use optjit_trace::Definition;
use std::sync::Arc;

/// Builds a stepper for a definition and setup (see [`Backend::Other`]).
pub type Open = fn(&Definition, Setup) -> Result<Box<dyn DynOptimizer>, OptimizerError>;

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

/// Compiles `definition` for `backend` and binds it to `setup`.
pub fn open(
    definition: &Definition,
    mut setup: Setup,
    backend: &Backend,
) -> Result<Box<dyn DynOptimizer>, OptimizerError> {
    Ok(match backend {
        Backend::Cpu { threads } => {
            setup.threads = *threads;
            Box::new(Optimizer::new(definition, setup)?)
        }
        Backend::Cuda(device) => Box::new(CudaOptimizer::new(definition, setup, device.clone())?),
        Backend::Other { open, .. } => open(definition, setup)?,
    })
}
