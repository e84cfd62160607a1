//! Where a compiled step runs: the host CPU (Cranelift) or an NVIDIA GPU (PTX for an arch).

use optjit_kernels_gen::Arch;
use std::fmt;

/// The machine a step is compiled for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Target {
    /// The host CPU, through the Cranelift JIT.
    #[default]
    Cpu,
    /// An NVIDIA GPU: PTX for `arch`, loaded through cudarc.
    Cuda {
        /// The virtual architecture the PTX targets (it also runs on later ones).
        arch: Arch,
    },
}

impl Target {
    /// The CUDA target for the default arch (sm_80).
    pub fn cuda() -> Target {
        Target::Cuda {
            arch: Arch::default(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cpu => write!(f, "cpu"),
            Target::Cuda { arch } => write!(f, "cuda ({arch})"),
        }
    }
}
