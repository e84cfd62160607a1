//! `CudaDevice`: one GPU's context and the stream every optjit launch and copy goes through,
//! opened without ever panicking when there is no driver or no device.

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DriverError, sys};
use std::sync::Arc;
use thiserror::Error;

/// A CUDA failure, saying what was being done.
#[derive(Debug, Error)]
pub enum CudaError {
    /// The driver library could not be loaded.
    #[error("no CUDA driver: libcuda.so could not be loaded (is an NVIDIA driver installed?)")]
    NoDriver,
    /// The driver loaded but the requested device does not exist.
    #[error("no CUDA device {ordinal}: the driver reports {count} device(s)")]
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// How many devices the driver sees.
        count: usize,
    },
    /// A driver call failed.
    #[error("CUDA error while {doing}: {source}")]
    Driver {
        /// What optjit was doing.
        doing: String,
        /// The driver's error.
        source: DriverError,
    },
    /// A raw device address handed to a step is not aligned to its elements.
    #[error(
        "{what} tensor {tensor} is at device address {address:#x}, which is not {bytes}-byte aligned"
    )]
    Misaligned {
        /// `param` or `grad`.
        what: &'static str,
        /// The tensor's index.
        tensor: usize,
        /// The address given.
        address: u64,
        /// The size of one element.
        bytes: usize,
    },
    /// A device other than the CUDA driver's (a [`Gpu`](crate::Gpu) stand-in) failed.
    #[error("{doing}: {message}")]
    Backend {
        /// What optjit was doing.
        doing: String,
        /// The device's message.
        message: String,
    },
    /// A CUDA graph capture recorded nothing.
    #[error("the CUDA graph capture of the step recorded nothing")]
    EmptyGraph,
    /// Tensors handed to a step are not of the dtype the optimizer was set up for.
    #[error(
        "the step was given {got} tensors, but the optimizer was set up for {expected} (Setup::dtype)"
    )]
    WrongDType {
        /// The setup's dtype.
        expected: optjit_ir::DType,
        /// The tensors' dtype.
        got: optjit_ir::DType,
    },
    /// A tensor handed to a step lives on another CUDA context.
    #[error(
        "{what} tensor {tensor} was allocated on another CUDA context than the optimizer's device"
    )]
    ForeignTensor {
        /// `param` or `grad`.
        what: &'static str,
        /// The tensor's index.
        tensor: usize,
    },
}

/// Adds what was being done to a driver error.
pub(crate) trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, CudaError>;
}

impl<T> Doing<T> for Result<T, DriverError> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, CudaError> {
        self.map_err(|source| CudaError::Driver {
            doing: what(),
            source,
        })
    }
}

/// One GPU: its primary context and optjit's stream on it.
///
/// Event tracking is off: optjit orders its own work on one stream. Tensors handed to an
/// optimizer must be allocated on that stream (for example with [`CudaDevice::upload`]); work
/// on other streams must be synchronized by the caller.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
}

impl CudaDevice {
    /// Opens device `ordinal`. Without a driver or a device this is an error, never a panic.
    pub fn open(ordinal: usize) -> Result<Arc<CudaDevice>, CudaError> {
        // SAFETY: only probes whether the library can be loaded.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        let count = CudaContext::device_count().doing(|| "counting devices".into())?;
        let count = usize::try_from(count).unwrap_or(0);
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).doing(|| format!("opening device {ordinal}"))?;
        // SAFETY: called before this context allocates anything.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().doing(|| "creating a stream".into())?;
        Ok(Arc::new(CudaDevice { ctx, stream }))
    }

    /// The device's name, e.g. `NVIDIA H200`.
    pub fn name(&self) -> String {
        self.ctx
            .name()
            .unwrap_or_else(|_| "unknown CUDA device".into())
    }

    /// The compute capability, e.g. `(9, 0)`.
    pub fn compute_capability(&self) -> Result<(i32, i32), CudaError> {
        self.ctx
            .compute_capability()
            .doing(|| "reading the compute capability".into())
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream optjit launches on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Copies `host` to a new device buffer.
    pub fn upload<T: cudarc::driver::DeviceRepr>(
        &self,
        host: &[T],
    ) -> Result<CudaSlice<T>, CudaError> {
        self.stream
            .clone_htod(host)
            .doing(|| format!("copying {} values to the device", host.len()))
    }

    /// Copies `device` back to the host (waits for the stream's earlier work).
    pub fn download<T: cudarc::driver::DeviceRepr>(
        &self,
        device: &CudaSlice<T>,
    ) -> Result<Vec<T>, CudaError> {
        self.stream
            .clone_dtoh(device)
            .doing(|| format!("copying {} values from the device", device.len()))
    }

    /// Copies `host` into the existing device buffer `device` (same length).
    pub fn write<T: cudarc::driver::DeviceRepr>(
        &self,
        host: &[T],
        device: &mut CudaSlice<T>,
    ) -> Result<(), CudaError> {
        self.stream
            .memcpy_htod(host, device)
            .doing(|| format!("copying {} values to the device", host.len()))
    }

    /// Waits until every launch and copy on the stream has finished.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .doing(|| "waiting for the stream".into())
    }

    /// Runs `work` (which enqueues on [`CudaDevice::stream`]) between two events and returns
    /// the GPU time it took, in milliseconds.
    pub fn time_ms<E: From<CudaError>>(
        &self,
        work: impl FnOnce() -> Result<(), E>,
    ) -> Result<f32, E> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let event = || {
            self.ctx
                .new_event(flags)
                .doing(|| "creating an event".into())
        };
        let (start, end) = (event()?, event()?);
        start
            .record(&self.stream)
            .doing(|| "recording an event".into())?;
        work()?;
        end.record(&self.stream)
            .doing(|| "recording an event".into())?;
        end.synchronize().doing(|| "waiting for an event".into())?;
        Ok(start
            .elapsed_ms(&end)
            .doing(|| "reading an event time".into())?)
    }

    /// Whether `slice` belongs to this device's stream (and so its context): cudarc frees a
    /// slice on its own stream, which orders the free after optjit's launches only if that
    /// stream is this one.
    pub(crate) fn owns<T>(&self, slice: &CudaSlice<T>) -> bool {
        slice.context().cu_ctx() == self.ctx.cu_ctx()
            && slice.stream().cu_stream() == self.stream.cu_stream()
    }

    /// The raw device address of `slice`.
    pub(crate) fn address<T>(&self, slice: &CudaSlice<T>) -> u64 {
        let (ptr, _sync) = slice.device_ptr(&self.stream);
        ptr
    }
}
