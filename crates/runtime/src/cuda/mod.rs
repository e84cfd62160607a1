//! CUDA execution: a device opened through cudarc (the driver is loaded at run time, so nothing
//! here needs CUDA to build), and an optimizer whose step is one PTX launch per phase.

mod device;
mod elem;
mod gpu;
mod optimizer;
mod part;

pub use device::{CudaDevice, CudaError};
pub use elem::DeviceFloat;
pub use gpu::{DeviceGraph, DeviceValue, Gpu};
pub use optimizer::{CUDA_CHUNK_ELEMS, CudaOptimizer, GpuExecutor};
