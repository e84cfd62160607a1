//! `Gpu`: what a CUDA step needs from a device (buffers, copies, loaded kernels, launches and
//! graphs), so that one optimizer runs on the CUDA driver ([`CudaDevice`]) or on a stand-in
//! (the tests run it on a PTX interpreter).

use super::device::{CudaDevice, CudaError, Doing};
use crate::error::OptimizerError;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits, sys,
};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;

/// The element types of the buffers a step keeps on a device: u8, u64, f32 and f64, and no
/// others (the trait is sealed), so a [`Gpu`] may copy them as plain bytes.
pub trait DeviceValue:
    sealed::Plain + DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + 'static
{
}

mod sealed {
    /// Numbers whose every bit pattern is a value.
    pub trait Plain {}
    impl Plain for u8 {}
    impl Plain for u64 {}
    impl Plain for f32 {}
    impl Plain for f64 {}
}

impl DeviceValue for u8 {}
impl DeviceValue for u64 {}
impl DeviceValue for f32 {}
impl DeviceValue for f64 {}

/// A device that runs [`CudaOptimizer`](crate::CudaOptimizer) steps: work is enqueued in
/// order on one stream, and copies back to the host wait for it.
pub trait Gpu {
    /// A device buffer of `T`.
    type Buffer<T: DeviceValue>;
    /// A loaded kernel entry.
    type Kernel;
    /// A captured sequence of launches.
    type Graph;

    /// A new buffer holding `host`.
    fn upload<T: DeviceValue>(&self, host: &[T]) -> Result<Self::Buffer<T>, CudaError>;
    /// `buffer`'s values, once the work before has run.
    fn download<T: DeviceValue>(&self, buffer: &Self::Buffer<T>) -> Result<Vec<T>, CudaError>;
    /// Copies `host` into `buffer` (same length), after the work before.
    fn write<T: DeviceValue>(
        &self,
        host: &[T],
        buffer: &mut Self::Buffer<T>,
    ) -> Result<(), CudaError>;
    /// Fills `buffer` with zeros, after the work before.
    fn zero<T: DeviceValue>(&self, buffer: &mut Self::Buffer<T>) -> Result<(), CudaError>;
    /// The device address of `buffer`.
    fn address<T: DeviceValue>(&self, buffer: &Self::Buffer<T>) -> u64;
    /// The elements of `buffer`.
    fn len<T: DeviceValue>(buffer: &Self::Buffer<T>) -> usize;
    /// Loads `ptx` and finds its entry `entry` (`kernel` names it in errors).
    fn load(&self, ptx: &str, entry: &str, kernel: &str) -> Result<Self::Kernel, CudaError>;
    /// Enqueues `kernel` (`name` in errors) on `blocks` blocks of `threads` threads with its
    /// three 64-bit arguments (see `optjit_kernels_gen::ChunkAbi`).
    ///
    /// # Safety
    /// The arguments must be what the kernel expects: a chunk table of live buffers and
    /// partials sized for it, all alive until the launch has run.
    unsafe fn launch(
        &self,
        kernel: &Self::Kernel,
        name: &str,
        blocks: u32,
        threads: u32,
        args: [u64; 3],
    ) -> Result<(), CudaError>;
    /// Records the launches that `work` enqueues (running none of them) into a graph.
    fn capture(
        &self,
        work: &mut dyn FnMut() -> Result<(), OptimizerError>,
    ) -> Result<Self::Graph, OptimizerError>;
    /// Enqueues the launches of `graph` again.
    fn replay(&self, graph: &Self::Graph) -> Result<(), CudaError>;
}

/// A captured CUDA graph that may move to another thread with its optimizer: cudarc's
/// [`CudaGraph`] holds raw driver handles and so is neither `Send` nor `Sync`.
pub struct DeviceGraph {
    graph: Option<CudaGraph>,
    ctx: Arc<CudaContext>,
}

// SAFETY: the driver's graph handles belong to no thread; what they need is that no two calls
// use them at once, which holds because `DeviceGraph` stays `!Sync` (one owner launches or
// drops it). `CudaGraph::launch` makes the context current on the calling thread, and `drop`
// below does so before the handles are destroyed.
unsafe impl Send for DeviceGraph {}

impl Drop for DeviceGraph {
    fn drop(&mut self) {
        // As cudarc's own destructors do: an error is kept for the context's next check.
        self.ctx.record_err(self.ctx.bind_to_thread());
        drop(self.graph.take());
    }
}

impl Gpu for CudaDevice {
    type Buffer<T: DeviceValue> = CudaSlice<T>;
    type Kernel = CudaFunction;
    type Graph = DeviceGraph;

    fn upload<T: DeviceValue>(&self, host: &[T]) -> Result<CudaSlice<T>, CudaError> {
        CudaDevice::upload(self, host)
    }

    fn download<T: DeviceValue>(&self, buffer: &CudaSlice<T>) -> Result<Vec<T>, CudaError> {
        CudaDevice::download(self, buffer)
    }

    fn write<T: DeviceValue>(
        &self,
        host: &[T],
        buffer: &mut CudaSlice<T>,
    ) -> Result<(), CudaError> {
        CudaDevice::write(self, host, buffer)
    }

    fn zero<T: DeviceValue>(&self, buffer: &mut CudaSlice<T>) -> Result<(), CudaError> {
        (self.stream().memset_zeros(buffer))
            .doing(|| format!("clearing {} values on the device", buffer.len()))
    }

    fn address<T: DeviceValue>(&self, buffer: &CudaSlice<T>) -> u64 {
        CudaDevice::address(self, buffer)
    }

    fn len<T: DeviceValue>(buffer: &CudaSlice<T>) -> usize {
        buffer.len()
    }

    fn load(&self, ptx: &str, entry: &str, kernel: &str) -> Result<CudaFunction, CudaError> {
        let module = (self.context().load_module(Ptx::from_src(ptx)))
            .doing(|| format!("loading the PTX of kernel {kernel} (check it with ptxas)"))?;
        module
            .load_function(entry)
            .doing(|| format!("finding entry {entry}"))
    }

    unsafe fn launch(
        &self,
        kernel: &CudaFunction,
        name: &str,
        blocks: u32,
        threads: u32,
        args: [u64; 3],
    ) -> Result<(), CudaError> {
        let config = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.stream().launch_builder(kernel);
        for arg in &args {
            launch.arg(arg);
        }
        // SAFETY: the caller's contract.
        unsafe { launch.launch(config) }
            .map(drop)
            .doing(|| format!("launching kernel {name}"))
    }

    fn capture(
        &self,
        work: &mut dyn FnMut() -> Result<(), OptimizerError>,
    ) -> Result<DeviceGraph, OptimizerError> {
        let stream = self.stream();
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        stream
            .begin_capture(mode)
            .doing(|| "starting a CUDA graph capture".into())?;
        let launched = work();
        // End the capture whatever happened, so the stream is usable again.
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        launched?;
        match ended.doing(|| "ending the CUDA graph capture".into())? {
            Some(graph) => Ok(DeviceGraph {
                graph: Some(graph),
                ctx: self.context().clone(),
            }),
            None => Err(CudaError::EmptyGraph.into()),
        }
    }

    fn replay(&self, graph: &DeviceGraph) -> Result<(), CudaError> {
        let graph = graph.graph.as_ref().expect("taken only when dropped");
        graph
            .launch()
            .doing(|| "replaying the step's CUDA graph".into())
    }
}
