//! `CudaOptimizer`: the optimizer on a GPU. Its executor, [`GpuExecutor`], holds the device,
//! the storage dtype and a captured CUDA graph; each part's step is compiled to PTX, its state
//! lives on the device, and each phase is one launch over a device chunk table that covers
//! every tensor of the part.

use super::device::{CudaDevice, CudaError};
use super::elem::{DeviceFloat, decode, encode, round_trip};
use super::gpu::Gpu;
use super::part::CudaPart;
use crate::checkpoint::Checkpoint;
use crate::error::OptimizerError;
use crate::executor::Executor;
use crate::kind_step::step_in_lockstep;
use crate::optimizer::{OptimizerOn, Setup};
use crate::pipeline::{CompileOptions, Compiled};
use crate::target::Target;
use crate::variant::PartPlan;
use cudarc::driver::CudaSlice;
use optjit_ir::DType;
use optjit_trace::Definition;
use std::sync::Arc;
use std::time::Instant;

/// Elements per chunk record on the GPU: one block walks a record, 64 float4 groups per
/// thread. Long records amortize reading a record's header and scalars; measured on an H200
/// against 1K-32K (docs/perf.md). A multiple of 4, so records keep their tensor's alignment.
pub const CUDA_CHUNK_ELEMS: usize = 1 << 16;

/// The record length in force: `OPTJIT_CUDA_CHUNK_ELEMS` (a positive multiple of 4, for
/// tuning) or [`CUDA_CHUNK_ELEMS`]. Column-walk records take as many whole rows as fit in it
/// (`ChunkAbi::tile_rows`), so it tunes them too.
fn chunk_elems() -> usize {
    let Ok(text) = std::env::var("OPTJIT_CUDA_CHUNK_ELEMS") else {
        return CUDA_CHUNK_ELEMS;
    };
    match text.parse::<usize>() {
        Ok(n) if n > 0 && n % 4 == 0 => n,
        _ => {
            eprintln!(
                "optjit: OPTJIT_CUDA_CHUNK_ELEMS={text} ignored: expected a positive multiple of 4"
            );
            CUDA_CHUNK_ELEMS
        }
    }
}

/// A compiled optimizer step on a CUDA device, holding its state there. The device is the
/// CUDA driver's ([`CudaDevice`]) unless another [`Gpu`] is given (the tests use a PTX
/// interpreter).
///
/// Parameters and gradients are device buffers on the device's stream ([`CudaDevice::upload`]);
/// [`CudaOptimizer::step`] enqueues a copy of the step's scalars and the launches on
/// [`CudaDevice::stream`] and does not wait for the kernels. Hyperparameters and the scalar
/// program's results reach the kernels through a small device buffer written before the
/// launches, so changing them never recompiles.
pub type CudaOptimizer<G = CudaDevice> = OptimizerOn<GpuExecutor<G>>;

/// A GPU as an optimizer's executor: the device, how tensors are stored there, and the CUDA
/// graph of a step's launches when steps are replayed.
pub struct GpuExecutor<G: Gpu> {
    /// The captured launches of a step over the current tables. First, so that it is dropped
    /// before the device handle (and, in the optimizer, before the parts' kernels).
    graph: Option<G::Graph>,
    device: Arc<G>,
    /// Elements per chunk record.
    chunk_elems: usize,
    /// How the tensors and per-element states are stored.
    dtype: DType,
    /// Whether steps that can be are replayed from a CUDA graph (see
    /// [`CudaOptimizer::set_graph_capture`]).
    graphs: bool,
}

impl<G: Gpu> Executor for GpuExecutor<G> {
    type Part = CudaPart<G>;

    const TARGET: &'static str = "cuda";

    fn options(
        &self,
        rule: &str,
        setup: &Setup,
        options: &CompileOptions,
    ) -> Result<CompileOptions, OptimizerError> {
        if !matches!(options.target, Target::Cuda { .. }) {
            return Err(OptimizerError::WrongTarget {
                rule: rule.to_string(),
                target: options.target.to_string(),
                expected: Self::TARGET,
            });
        }
        Ok(CompileOptions {
            storage: setup.dtype,
            ..options.clone()
        })
    }

    fn runs(&self, compiled: &Compiled) -> bool {
        compiled.ptx().is_some()
    }

    fn part(
        &self,
        plan: &PartPlan,
        compiled: Arc<Compiled>,
    ) -> Result<(CudaPart<G>, f64), OptimizerError> {
        let started = Instant::now();
        let part = CudaPart::new(plan, compiled, &*self.device)?;
        Ok((part, started.elapsed().as_secs_f64() * 1e3))
    }

    fn read_state(
        &self,
        part: &CudaPart<G>,
        local: usize,
        state: usize,
    ) -> Result<Vec<f32>, OptimizerError> {
        part.elem_state(&self.device, local, state)
    }

    fn write_state(
        &self,
        part: &mut CudaPart<G>,
        local: usize,
        state: usize,
        values: &[f32],
    ) -> Result<(), OptimizerError> {
        part.write_elem_state(&self.device, local, state, values)
    }

    fn refuse_values(&self, tensor: usize, name: &str, values: &[f32]) -> Option<String> {
        // A finite value that the dtype cannot hold would come back as infinity.
        let overflows = |&x: &f32| x.is_finite() && !round_trip(self.dtype, x).is_finite();
        let i = values.iter().position(overflows)?;
        Some(format!(
            "its state {name} of tensor {tensor} holds {} at index {i}, beyond what {} can hold",
            values[i], self.dtype
        ))
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn step_host_tensors(
        opt: &mut CudaOptimizer<G>,
        params: &mut [Vec<f32>],
        grads: &[Option<Vec<f32>>],
    ) -> Result<(), OptimizerError> {
        opt.step_host_optional(params, grads)
    }

    fn state_on_host(
        opt: &CudaOptimizer<G>,
        tensor: usize,
        name: &str,
    ) -> Result<Option<Vec<f32>>, OptimizerError> {
        opt.state(tensor, name)
    }
}

impl<G: Gpu> OptimizerOn<GpuExecutor<G>> {
    /// Compiles `definition` to sm_80 PTX (which the driver also runs on sm_90 and later), loads
    /// it on `device`, and allocates the state for `setup`'s tensors there.
    pub fn new(
        definition: &Definition,
        setup: Setup,
        device: Arc<G>,
    ) -> Result<CudaOptimizer<G>, OptimizerError> {
        let options = CompileOptions {
            target: Target::cuda(),
            ..CompileOptions::default()
        };
        Self::with_options(definition, setup, device, &options)
    }

    /// As [`CudaOptimizer::new`], with explicit compile options (their target must be CUDA;
    /// their storage is the setup's dtype).
    pub fn with_options(
        definition: &Definition,
        setup: Setup,
        device: Arc<G>,
        options: &CompileOptions,
    ) -> Result<CudaOptimizer<G>, OptimizerError> {
        let exec = GpuExecutor {
            graph: None,
            device,
            chunk_elems: chunk_elems(),
            dtype: setup.dtype,
            graphs: false,
        };
        OptimizerOn::build(definition, setup, options, exec)
    }

    /// Replays steps from a CUDA graph (`on`) or launches each kernel (the default). A graph
    /// holds every launch of a step; the host still runs the scalar program and copies its
    /// rows before each replay, so hyperparameters and schedules keep working. Only steps whose
    /// phases need nothing from the host between them can be replayed: no reduction (no
    /// clipping, no per-tensor norm) and no per-column values (Adafactor); other steps run as
    /// without it. A graph is captured at the first step; when tensors move (new gradient
    /// buffers every step, say), the chunk tables are rewritten in place before the replay, so
    /// the same graph goes on serving. (Not yet run on a GPU; `tests/cuda.rs` runs it on the
    /// PTX interpreter.)
    pub fn set_graph_capture(&mut self, on: bool) {
        self.exec.graphs = on;
        self.exec.graph = None;
    }

    /// Whether the last step was replayed from (or captured into) a CUDA graph.
    pub fn replays_graph(&self) -> bool {
        self.exec.graph.is_some()
    }

    /// The device the step runs on.
    pub fn device(&self) -> &Arc<G> {
        &self.exec.device
    }

    /// The state `name` of tensor `tensor` (PyTorch's state names), copied to the host (waits
    /// for the stream): per element, or per row or column of each matrix (row-major over the
    /// matrices). `None` if there is no such state or tensor.
    pub fn state(&self, tensor: usize, name: &str) -> Result<Option<Vec<f32>>, OptimizerError> {
        let Some(&(part, local)) = self.placement.get(tensor) else {
            return Ok(None);
        };
        self.parts[part].state(&self.exec.device, local, name)
    }

    /// Everything this optimizer carries to its next step (states, scalar states,
    /// hyperparameters, step counts), copied to the host (waits for the stream), to save
    /// ([`Checkpoint::save`]) and resume from with [`OptimizerOn::restore`], here or in a
    /// [`crate::Optimizer`].
    pub fn checkpoint(&self) -> Result<Checkpoint, OptimizerError> {
        self.take_checkpoint()
    }

    /// Enqueues one step over tensors given as raw device addresses (for buffers that another
    /// library allocated, e.g. PyTorch's). Each address needs only the alignment of one element
    /// of the setup's dtype; records whose buffers are all aligned to 4 elements use vector
    /// loads and stores.
    ///
    /// # Safety
    /// `params[i]` and `grads[i]` must be addresses on this device's context of live buffers of
    /// at least tensor i's element count of the setup's dtype; no parameter may overlap another parameter, any
    /// gradient or any state (gradients are read through the non-coherent cache, so a gradient
    /// must not alias a buffer the step writes); and all must stay valid, with no other stream
    /// writing them, until this device's stream has run the step.
    pub unsafe fn step_raw(&mut self, params: &[u64], grads: &[u64]) -> Result<(), OptimizerError> {
        let grads: Vec<Option<u64>> = grads.iter().copied().map(Some).collect();
        // SAFETY: the caller's promises, every gradient present.
        unsafe { self.step_raw_optional(params, &grads) }
    }

    /// As [`CudaOptimizer::step_raw`], over the tensors that have a gradient (`Some`): a tensor
    /// without one is skipped as PyTorch skips a parameter whose `.grad` is `None` (see
    /// [`crate::Optimizer::step_optional`]).
    ///
    /// # Safety
    /// As [`CudaOptimizer::step_raw`], for the gradients given.
    pub unsafe fn step_raw_optional(
        &mut self,
        params: &[u64],
        grads: &[Option<u64>],
    ) -> Result<(), OptimizerError> {
        // Raw addresses carry no length: the counts are checked, the lengths taken on trust.
        let n = self.table.lens.len();
        let claimed = |given: usize| match given == n {
            true => self.table.lens.clone(),
            false => vec![0; given],
        };
        let grad_lens: Vec<Option<usize>> = claimed(grads.len()).into_iter().map(Some).collect();
        self.table
            .check_lengths(&claimed(params.len()), &grad_lens)?;
        let bytes = self.exec.dtype.size_bytes();
        let given: Vec<u64> = grads.iter().map(|g| g.unwrap_or(0)).collect();
        for (what, addresses) in [("param", params), ("grad", &given[..])] {
            if let Some(tensor) = addresses.iter().position(|&a| a % bytes as u64 != 0) {
                let address = addresses[tensor];
                return Err(CudaError::Misaligned {
                    what,
                    tensor,
                    address,
                    bytes,
                }
                .into());
            }
        }
        self.step_addresses(params, grads)
    }

    /// Copies host tensors to the device, takes one step there, and copies the parameters
    /// back (waits for the stream), stored on the device as the setup's dtype (so f16 and bf16
    /// round the host values to nearest even). Convenient for tests and small problems; a
    /// training loop keeps its tensors on the device and calls [`CudaOptimizer::step`].
    pub fn step_host<P: AsMut<[f32]>, Q: AsRef<[f32]>>(
        &mut self,
        params: &mut [P],
        grads: &[Q],
    ) -> Result<(), OptimizerError> {
        let grads: Vec<Option<&[f32]>> = grads.iter().map(|g| Some(g.as_ref())).collect();
        self.step_host_optional(params, &grads)
    }

    /// As [`CudaOptimizer::step_host`], over the tensors that have a gradient (`Some`; see
    /// [`crate::Optimizer::step_optional`]).
    pub fn step_host_optional<P: AsMut<[f32]>, Q: AsRef<[f32]>>(
        &mut self,
        params: &mut [P],
        grads: &[Option<Q>],
    ) -> Result<(), OptimizerError> {
        let mut params: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut()).collect();
        let grads: Vec<Option<&[f32]>> = (grads.iter())
            .map(|g| g.as_ref().map(|g| g.as_ref()))
            .collect();
        let param_lens: Vec<usize> = params.iter().map(|p| p.len()).collect();
        let grad_lens: Vec<Option<usize>> = grads.iter().map(|g| g.map(<[f32]>::len)).collect();
        self.table.check_lengths(&param_lens, &grad_lens)?;
        let dtype = self.exec.dtype;
        let device = &self.exec.device;
        let upload = |host: &[f32]| -> Result<Option<G::Buffer<u8>>, CudaError> {
            match host.len() {
                0 => Ok(None),
                _ => device.upload(&encode(dtype, host)).map(Some),
            }
        };
        let device_params = params
            .iter()
            .map(|p| upload(p))
            .collect::<Result<Vec<_>, _>>()?;
        let device_grads = grads
            .iter()
            .map(|g| g.map(upload).transpose().map(Option::flatten))
            .collect::<Result<Vec<_>, _>>()?;
        let address = |b: &Option<G::Buffer<u8>>| b.as_ref().map_or(0, |b| device.address(b));
        let param_addresses: Vec<u64> = device_params.iter().map(address).collect();
        let grad_addresses: Vec<Option<u64>> = (grads.iter().zip(&device_grads))
            .map(|(given, buffer)| given.map(|_| address(buffer)))
            .collect();
        self.step_addresses(&param_addresses, &grad_addresses)?;
        let device = &self.exec.device;
        for (host, buffer) in params.iter_mut().zip(&device_params) {
            if let Some(buffer) = buffer {
                host.copy_from_slice(&decode(dtype, &device.download(buffer)?));
            }
        }
        Ok(())
    }

    /// The step over tensors at these device addresses (lengths already checked): each part's
    /// tables are rebuilt if its tensors moved, then the parts run in lockstep, phase level by
    /// phase level (see `CudaPart::run_phase`).
    fn step_addresses(
        &mut self,
        params: &[u64],
        grads: &[Option<u64>],
    ) -> Result<(), OptimizerError> {
        self.begin_step(|t| grads[t].is_some());
        let mut part_params = vec![Vec::new(); self.parts.len()];
        let mut part_grads = vec![Vec::new(); self.parts.len()];
        for ((&param, &grad), &(part, _)) in params.iter().zip(grads).zip(&self.placement) {
            part_params[part].push(param);
            part_grads[part].push(grad.unwrap_or(0));
        }
        let exec = &mut self.exec;
        let pairs = part_params.iter().zip(&part_grads);
        for (part, (params, grads)) in self.parts.iter_mut().zip(pairs) {
            if part.prepare_tables(&exec.device, params, grads, exec.chunk_elems)? {
                // The launches' tables or partials moved: the graph no longer fits.
                exec.graph = None;
            }
        }
        let device = &exec.device;
        let capturable = self.parts.iter().all(CudaPart::capturable);
        if exec.graphs && capturable && self.parts.iter().any(CudaPart::launches) {
            for part in &mut self.parts {
                part.stage_all(device)?;
            }
            if exec.graph.is_none() {
                // Captures every part's launches, in order (nothing runs).
                let parts = &self.parts;
                let launches = &mut || parts.iter().try_for_each(|p| p.launch_all(&**device));
                exec.graph = Some(device.capture(launches)?);
                self.stats.graph_captures += 1;
            }
            let graph = exec.graph.as_ref().expect("captured above");
            device.replay(graph)?;
            self.parts.iter_mut().for_each(|part| part.kind.finish());
        } else {
            exec.graph = None;
            step_in_lockstep(&mut self.parts, |_, part, phase| {
                part.run_phase(device, phase)
            })?;
        }
        Ok(())
    }
}

impl OptimizerOn<GpuExecutor<CudaDevice>> {
    /// Enqueues one step on the device's stream: updates every parameter and state in place.
    /// `params[i]` and `grads[i]` are tensor i of the setup, allocated on [`CudaDevice::stream`]
    /// (so that freeing them is ordered after the step). A step refused for its input (counts,
    /// lengths, foreign buffers) modifies nothing; after a driver error the step may have run
    /// in part, and the device should be considered lost, as CUDA's own errors usually are.
    pub fn step<T: DeviceFloat>(
        &mut self,
        params: &mut [CudaSlice<T>],
        grads: &[CudaSlice<T>],
    ) -> Result<(), OptimizerError> {
        let grads: Vec<Option<&CudaSlice<T>>> = grads.iter().map(Some).collect();
        self.step_optional(params, &grads)
    }

    /// As [`CudaOptimizer::step`], over the tensors that have a gradient (`Some`): a tensor
    /// without one is skipped as PyTorch skips a parameter whose `.grad` is `None` (see
    /// [`crate::Optimizer::step_optional`]).
    pub fn step_optional<T: DeviceFloat>(
        &mut self,
        params: &mut [CudaSlice<T>],
        grads: &[Option<&CudaSlice<T>>],
    ) -> Result<(), OptimizerError> {
        if T::DTYPE != self.exec.dtype {
            let (expected, got) = (self.exec.dtype, T::DTYPE);
            return Err(CudaError::WrongDType { expected, got }.into());
        }
        let param_lens: Vec<usize> = params.iter().map(CudaSlice::len).collect();
        let grad_lens: Vec<Option<usize>> = grads.iter().map(|g| g.map(CudaSlice::len)).collect();
        self.table.check_lengths(&param_lens, &grad_lens)?;
        let device = &self.exec.device;
        let foreign_param = params.iter().position(|p| !device.owns(p));
        let foreign_grad = grads
            .iter()
            .position(|g| g.is_some_and(|g| !device.owns(g)));
        for (what, tensor) in [("param", foreign_param), ("grad", foreign_grad)] {
            if let Some(tensor) = tensor {
                return Err(CudaError::ForeignTensor { what, tensor }.into());
            }
        }
        let param_addresses: Vec<u64> = params.iter().map(|p| device.address(p)).collect();
        let grad_addresses: Vec<Option<u64>> =
            grads.iter().map(|g| g.map(|g| device.address(g))).collect();
        self.step_addresses(&param_addresses, &grad_addresses)
    }
}
