//! An interpreter for the PTX that optjit emits, so that machines without a GPU (CI) run the
//! generated GPU kernels and compare them with the CPU's.
//!
//! It covers the subset of PTX that `optjit-kernels-gen` writes: global, shared and parameter
//! memory, f32/f64/f16/bf16 and 32/64-bit integer arithmetic, predicates, branches, `bar.sync`
//! and full-warp `shfl.sync.down`. Arithmetic is IEEE (`.rn`, no flush to zero) as on the GPU;
//! `ex2.approx`/`lg2.approx` are computed exactly, so they are not bit-identical to hardware.
//! Blocks run one after another and a block's threads each up to their next barrier or
//! shuffle, which must then be reached by every thread it involves. Every memory access is
//! checked (inside one allocation, naturally aligned), and so is what a GPU would not report:
//! two threads writing the same global byte in a launch, a launch writing memory that it reads
//! through the non-coherent cache (`ld.global.nc`), threads of a block touching the same shared
//! byte, one of them writing, with no barrier between, and a register read before any write.
//!
//! ```
//! use optjit_ptx_sim::{Device, Module};
//! let ptx = ".visible .entry twice(\n.param .u64 x\n)\n{\n.reg .b64 %rd<2>;\n.reg .f32 %f<2>;\n\
//!            ld.param.u64 %rd0, [x];\nld.global.f32 %f0, [%rd0];\nadd.rn.f32 %f1, %f0, %f0;\n\
//!            st.global.f32 [%rd0], %f1;\nret;\n}\n";
//! let module = Module::parse(ptx).unwrap();
//! let mut device = Device::default();
//! let x = device.memory.upload(&1.5f32.to_le_bytes());
//! device.launch(&module, "twice", 1, 1, &[x]).unwrap();
//! assert_eq!(device.memory.read_host(x, 4).unwrap(), 3.0f32.to_le_bytes());
//! ```

mod exec;
mod memory;
mod parse;
mod shared;

pub use memory::Memory;
pub use parse::{Entry, Module};
use thiserror::Error;

/// What went wrong, with where.
#[derive(Debug, Error)]
pub enum SimError {
    /// The text is not PTX of the supported subset.
    #[error("PTX line {line}: {message}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// What was expected.
        message: String,
    },
    /// A bad launch (unknown entry, wrong parameters).
    #[error("launch: {0}")]
    Launch(String),
    /// An instruction failed.
    #[error("{entry}, PTX line {line} `{text}`: {message}")]
    Exec {
        /// The entry.
        entry: String,
        /// 1-based line of the instruction.
        line: usize,
        /// The instruction.
        text: String,
        /// What went wrong.
        message: String,
    },
    /// An access outside every allocation, or misaligned.
    #[error("memory fault at {address:#x}: {message}")]
    Fault {
        /// The device address.
        address: u64,
        /// Why.
        message: String,
    },
    /// A race or a non-coherent read of written memory.
    #[error("memory hazard at {address:#x}: {message}")]
    Hazard {
        /// The device address.
        address: u64,
        /// Which threads did what.
        message: String,
    },
    /// Threads wait for each other forever.
    #[error("deadlock: {0}")]
    Deadlock(String),
}

/// A simulated device: its global memory.
#[derive(Default)]
pub struct Device {
    /// Global memory, shared by every launch.
    pub memory: Memory,
}

impl Device {
    /// Runs entry `name` of `module` on `grid` blocks of `block` threads with `params` (each a
    /// 64-bit value: a device address or an integer); returns the instructions executed.
    pub fn launch(
        &mut self,
        module: &Module,
        name: &str,
        grid: usize,
        block: usize,
        params: &[u64],
    ) -> Result<u64, SimError> {
        let entry = module
            .entry(name)
            .ok_or_else(|| SimError::Launch(format!("no entry named {name}")))?;
        exec::launch(&mut self.memory, entry, grid, block, params)
    }
}
