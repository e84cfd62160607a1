//! `SimGpu`: the PTX interpreter (`optjit-ptx-sim`) as a [`Gpu`], so that `CudaOptimizer`,
//! tables, copies, launches and graph replay included, runs where there is no GPU. Launches
//! run when enqueued; a capture records them, and a replay runs them again.

use optjit::{CudaError, DeviceValue, Gpu, OptimizerError};
use optjit_ptx_sim::{Device, Module};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

/// A simulated device.
#[derive(Default)]
pub struct SimGpu {
    device: Mutex<Device>,
    /// The launches of a capture in progress.
    recording: Mutex<Option<Vec<Launch>>>,
}

/// A buffer of `T` in simulated global memory.
pub struct SimBuffer<T> {
    address: u64,
    len: usize,
    _values: PhantomData<T>,
}

/// A parsed module and the entry to run.
#[derive(Clone)]
pub struct SimKernel {
    module: Arc<Module>,
    entry: String,
}

/// One recorded launch.
#[derive(Clone)]
pub struct Launch {
    kernel: SimKernel,
    blocks: u32,
    threads: u32,
    args: [u64; 3],
}

impl SimGpu {
    /// A fresh device.
    pub fn new() -> Arc<SimGpu> {
        Arc::new(SimGpu::default())
    }

    fn device(&self) -> MutexGuard<'_, Device> {
        lock(&self.device)
    }

    fn run(&self, launch: &Launch) -> Result<(), CudaError> {
        let mut device = self.device();
        let Launch {
            kernel,
            blocks,
            threads,
            args,
        } = launch;
        (device.launch(
            &kernel.module,
            &kernel.entry,
            *blocks as usize,
            *threads as usize,
            args,
        ))
        .map(drop)
        .map_err(|e| failed(format!("running {}", kernel.entry), e))
    }
}

/// `mutex`'s value (a panicked test poisons nothing that matters here).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn failed(doing: String, e: impl std::fmt::Display) -> CudaError {
    CudaError::Backend {
        doing,
        message: e.to_string(),
    }
}

fn bytes<T: DeviceValue>(values: &[T]) -> &[u8] {
    // SAFETY: `DeviceValue` is sealed to plain numbers (u8, u64, f32, f64): any value is its
    // bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) }
}

impl Gpu for SimGpu {
    type Buffer<T: DeviceValue> = SimBuffer<T>;
    type Kernel = SimKernel;
    type Graph = Vec<Launch>;

    fn upload<T: DeviceValue>(&self, host: &[T]) -> Result<SimBuffer<T>, CudaError> {
        let address = self.device().memory.upload(bytes(host));
        Ok(SimBuffer {
            address,
            len: host.len(),
            _values: PhantomData,
        })
    }

    fn download<T: DeviceValue>(&self, buffer: &SimBuffer<T>) -> Result<Vec<T>, CudaError> {
        let device = self.device();
        let data = (device.memory)
            .read_host(buffer.address, buffer.len * size_of::<T>())
            .map_err(|e| failed("reading a buffer".into(), e))?;
        let mut values = vec![T::default(); buffer.len];
        // SAFETY: `values` holds exactly `data.len()` bytes of plain numbers.
        let target =
            unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), data.len()) };
        target.copy_from_slice(&data);
        Ok(values)
    }

    fn write<T: DeviceValue>(
        &self,
        host: &[T],
        buffer: &mut SimBuffer<T>,
    ) -> Result<(), CudaError> {
        if host.len() != buffer.len {
            let lengths = format!("{} values into a buffer of {}", host.len(), buffer.len);
            return Err(failed("writing a buffer".into(), lengths));
        }
        let mut device = self.device();
        (device.memory.write_host(buffer.address, bytes(host)))
            .map_err(|e| failed("writing a buffer".into(), e))
    }

    fn zero<T: DeviceValue>(&self, buffer: &mut SimBuffer<T>) -> Result<(), CudaError> {
        let zeros = vec![0u8; buffer.len * size_of::<T>()];
        let mut device = self.device();
        (device.memory.write_host(buffer.address, &zeros))
            .map_err(|e| failed("clearing a buffer".into(), e))
    }

    fn address<T: DeviceValue>(&self, buffer: &SimBuffer<T>) -> u64 {
        buffer.address
    }

    fn len<T: DeviceValue>(buffer: &SimBuffer<T>) -> usize {
        buffer.len
    }

    fn load(&self, ptx: &str, entry: &str, kernel: &str) -> Result<SimKernel, CudaError> {
        let module = Module::parse(ptx).map_err(|e| failed(format!("parsing {kernel}"), e))?;
        if module.entry(entry).is_none() {
            return Err(failed(format!("finding entry {entry}"), "no such entry"));
        }
        Ok(SimKernel {
            module: Arc::new(module),
            entry: entry.to_string(),
        })
    }

    unsafe fn launch(
        &self,
        kernel: &SimKernel,
        _name: &str,
        blocks: u32,
        threads: u32,
        args: [u64; 3],
    ) -> Result<(), CudaError> {
        let launch = Launch {
            kernel: kernel.clone(),
            blocks,
            threads,
            args,
        };
        if let Some(recorded) = lock(&self.recording).as_mut() {
            recorded.push(launch);
            return Ok(());
        }
        self.run(&launch)
    }

    fn capture(
        &self,
        work: &mut dyn FnMut() -> Result<(), OptimizerError>,
    ) -> Result<Vec<Launch>, OptimizerError> {
        *lock(&self.recording) = Some(Vec::new());
        let launched = work();
        let recorded = lock(&self.recording).take().unwrap_or_default();
        launched?;
        match recorded.is_empty() {
            true => Err(CudaError::EmptyGraph.into()),
            false => Ok(recorded),
        }
    }

    fn replay(&self, graph: &Vec<Launch>) -> Result<(), CudaError> {
        graph.iter().try_for_each(|launch| self.run(launch))
    }
}
