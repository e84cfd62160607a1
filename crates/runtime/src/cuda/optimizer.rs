//! `CudaOptimizer`: a step compiled to PTX, its state on the device, and one launch per phase
//! over a device chunk table that covers every tensor of every group (per kind of tensor, for
//! a step that depends on the rank: see `part.rs`).

use super::device::{CudaDevice, CudaError};
use super::elem::{DeviceFloat, decode, encode, round_trip};
use super::gpu::Gpu;
use super::part::CudaPart;
use crate::checkpoint::{self, Checkpoint, Slot};
use crate::error::OptimizerError;
use crate::kind_step::{KindStep, check_global_levels, step_in_lockstep};
use crate::optimizer::{Setup, Stats, report_metric};
use crate::pipeline::{CompileOptions, Compiled, compile_cached};
use crate::target::Target;
use crate::variant::GroupTable;
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
/// [`CudaDevice::stream`] and does not wait for the kernels. Hyperparameters and the scalar program's results reach the kernels through a small
/// device buffer written before the launches, so changing them never recompiles.
pub struct CudaOptimizer<G: Gpu = CudaDevice> {
    /// The captured launches of a step over the current tables. First, so that it is dropped
    /// before the kernels and buffers it launches on.
    graph: Option<G::Graph>,
    /// The tensors and param groups, and which parts hold each group.
    table: GroupTable,
    device: Arc<G>,
    parts: Vec<CudaPart<G>>,
    /// Per tensor: its part and its index there.
    placement: Vec<(usize, usize)>,
    /// Elements per chunk record.
    chunk_elems: usize,
    /// How the tensors and per-element states are stored.
    dtype: DType,
    /// Whether steps that can be are replayed from a CUDA graph (see
    /// [`CudaOptimizer::set_graph_capture`]).
    graphs: bool,
    stats: Stats,
}

impl<G: Gpu> CudaOptimizer<G> {
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
        let (table, plans) = GroupTable::plan(definition, &setup)?;
        let wrong_target = || OptimizerError::WrongTarget {
            rule: table.rule.clone(),
            target: options.target.to_string(),
            expected: "cuda",
        };
        if !matches!(options.target, Target::Cuda { .. }) {
            return Err(wrong_target());
        }
        let mut parts = Vec::new();
        let mut part_stats = Vec::new();
        let options = CompileOptions {
            storage: setup.dtype,
            ..options.clone()
        };
        for plan in &plans {
            let started = Instant::now();
            let (compiled, used) = compile_cached(&plan.definition, &options)?;
            let elapsed = started.elapsed();
            if compiled.ptx().is_none() {
                return Err(wrong_target());
            }
            let elems: usize = plan.tensors.iter().map(|&t| table.lens[t]).sum();
            let started = Instant::now();
            let part = CudaPart::new(plan, compiled.clone(), &*device)?;
            let mut stats = Stats::of(&compiled, used, elapsed);
            stats.compile_ms += started.elapsed().as_secs_f64() * 1e3;
            part_stats.push((stats, elems));
            parts.push(part);
        }
        // Every part must reduce over all tensors at the same levels, to add their sums up.
        let kinds: Vec<&KindStep> = parts.iter().map(|p| &p.kind).collect();
        check_global_levels(&kinds, &table.rule, "cuda")?;
        let mut placement = vec![(0, 0); table.lens.len()];
        for (p, part) in parts.iter().enumerate() {
            for (local, &t) in part.kind.tensors.iter().enumerate() {
                placement[t] = (p, local);
            }
        }
        Ok(CudaOptimizer {
            table,
            device,
            parts,
            placement,
            chunk_elems: chunk_elems(),
            dtype: setup.dtype,
            graphs: false,
            graph: None,
            stats: Stats::combined(&part_stats),
        })
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
        self.graphs = on;
        self.graph = None;
    }

    /// Whether the last step was replayed from (or captured into) a CUDA graph.
    pub fn replays_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// The device the step runs on.
    pub fn device(&self) -> &Arc<G> {
        &self.device
    }

    /// The compiled step (plan, kernels, PTX, stage texts) of the first kind of tensors (the
    /// only one unless the definition depends on the rank).
    pub fn compiled(&self) -> &Compiled {
        &self.parts[0].kind.compiled
    }

    /// Every compiled step, one per kind of tensors, with the optimizer's indices of the
    /// tensors each one steps.
    pub fn compiled_kinds(&self) -> impl Iterator<Item = (&Compiled, &[usize])> {
        self.parts
            .iter()
            .map(|p| (p.kind.compiled.as_ref(), p.kind.tensors.as_slice()))
    }

    /// Counters: compiles, kernels per step, bytes per element, compile (and load) time, steps.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How many param groups there are.
    pub fn n_groups(&self) -> usize {
        self.table.n_groups()
    }

    /// The tensor indices of param group `group`.
    pub fn group_tensors(&self, group: usize) -> Option<&[usize]> {
        self.table.tensors.get(group).map(Vec::as_slice)
    }

    /// The value of hyperparameter `name` in force for `group`.
    pub fn hyper(&self, group: usize, name: &str) -> Result<f64, OptimizerError> {
        self.table.hyper(&self.parts, group, name)
    }

    /// Sets hyperparameter `name` for one group (`Some(g)`) or all (`None`: every group whose
    /// rule has it). It takes effect at the next step and never recompiles.
    pub fn set_hyper(
        &mut self,
        group: Option<usize>,
        name: &str,
        value: f64,
    ) -> Result<(), OptimizerError> {
        self.table.set_hyper(&mut self.parts, group, name, value)
    }

    /// The state `name` of tensor `tensor` (PyTorch's state names), copied to the host (waits
    /// for the stream): per element, or per row or column of each matrix (row-major over the
    /// matrices). `None` if there is no such state or tensor.
    pub fn state(&self, tensor: usize, name: &str) -> Result<Option<Vec<f32>>, OptimizerError> {
        let Some(&(part, local)) = self.placement.get(tensor) else {
            return Ok(None);
        };
        self.parts[part].state(&self.device, local, name)
    }

    /// Everything this optimizer carries to its next step (states, scalar states,
    /// hyperparameters, the step count), copied to the host (waits for the stream), to save
    /// ([`Checkpoint::save`]) and resume from with [`CudaOptimizer::restore`], here or in a
    /// [`crate::Optimizer`].
    pub fn checkpoint(&self) -> Result<Checkpoint, OptimizerError> {
        let kinds: Vec<&KindStep> = self.parts.iter().map(|p| &p.kind).collect();
        let elem = |part: usize, local: usize, state: usize| {
            self.parts[part].elem_state(&self.device, local, state)
        };
        checkpoint::capture(&self.table, &kinds, self.dtype, elem)
    }

    /// Continues from `checkpoint`, made by an optimizer of the same rule, shapes and param
    /// groups (on any target): the next step is the one that would have followed it there.
    /// Hyperparameters take the checkpoint's values; states are stored as this optimizer's
    /// dtype (f32 values round to f16 or bf16; a finite value beyond its range is refused). The
    /// copies are enqueued on the stream. On a mismatch nothing is modified; a failed copy
    /// leaves the states partly written.
    pub fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), OptimizerError> {
        let kinds: Vec<&KindStep> = self.parts.iter().map(|p| &p.kind).collect();
        let layout = checkpoint::check(checkpoint, &self.table, &kinds)?;
        // A finite value that the dtype cannot hold would come back as infinity: refuse first.
        for (t, (saved, states)) in checkpoint.tensors.iter().zip(&layout).enumerate() {
            for (name, _, slot) in states {
                let values = &saved[name];
                let overflows = |&x: &f32| x.is_finite() && !round_trip(self.dtype, x).is_finite();
                if let (Slot::Elem { .. }, Some(i)) = (slot, values.iter().position(overflows)) {
                    return Err(OptimizerError::Checkpoint {
                        rule: self.table.rule.clone(),
                        problem: format!(
                            "its state {name} of tensor {t} holds {} at index {i}, beyond what {} can hold",
                            values[i], self.dtype
                        ),
                    });
                }
            }
        }
        for (saved, states) in checkpoint.tensors.iter().zip(&layout) {
            for (name, _, slot) in states {
                if let Slot::Elem { part, local, state } = *slot {
                    let values = &saved[name];
                    self.parts[part].write_elem_state(&self.device, local, state, values)?;
                }
            }
        }
        let mut kinds: Vec<&mut KindStep> = self.parts.iter_mut().map(|p| &mut p.kind).collect();
        checkpoint::restore_host(checkpoint, &layout, &self.table, &mut kinds);
        self.stats.steps = checkpoint.steps;
        Ok(())
    }

    /// Reports the metric of the step just taken to the metric-driven schedule (as PyTorch's
    /// `ReduceLROnPlateau.step(metric)`): what it sets is in force from the next step. Fails
    /// when no schedule of this optimizer reads `metric`.
    pub fn report_metric(&mut self, metric: f64) -> Result<(), OptimizerError> {
        report_metric(&mut self.parts, metric)
    }

    /// The scalar state `name` of param group `group`.
    pub fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        self.table.scalar_state(&self.parts, group, name)
    }

    /// The scalar state `name` of tensor `tensor`, when each tensor has its own (NAdam's
    /// `mu_product`, ASGD's `eta` and `mu`: PyTorch keeps them per parameter).
    pub fn tensor_scalar_state(&self, tensor: usize, name: &str) -> Option<f64> {
        let &(part, local) = self.placement.get(tensor)?;
        self.parts[part]
            .kind
            .binding
            .tensor_scalar_state(local, name)
    }

    /// Steps taken so far by tensor `tensor` (PyTorch's `state[p]["step"]`: steps where it
    /// had no gradient do not count).
    pub fn tensor_steps(&self, tensor: usize) -> Option<u64> {
        let &(part, local) = self.placement.get(tensor)?;
        Some(self.parts[part].kind.binding.tensors[local].steps)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.parts[0].kind.binding.step_count
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
        let n = self.table.lens.len();
        let claimed = |given: usize| match given == n {
            true => self.table.lens.clone(),
            false => vec![0; given],
        };
        self.table
            .check_lengths(&claimed(params.len()), &claimed(grads.len()))?;
        let bytes = self.dtype.size_bytes();
        for (what, addresses) in [("param", params), ("grad", grads)] {
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
        let mut params: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut()).collect();
        let grads: Vec<&[f32]> = grads.iter().map(|g| g.as_ref()).collect();
        let param_lens: Vec<usize> = params.iter().map(|p| p.len()).collect();
        let grad_lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
        self.table.check_lengths(&param_lens, &grad_lens)?;
        let dtype = self.dtype;
        let upload = |host: &[f32]| -> Result<Option<G::Buffer<u8>>, CudaError> {
            match host.len() {
                0 => Ok(None),
                _ => self.device.upload(&encode(dtype, host)).map(Some),
            }
        };
        let device_params = params
            .iter()
            .map(|p| upload(p))
            .collect::<Result<Vec<_>, _>>()?;
        let device_grads = grads
            .iter()
            .map(|g| upload(g))
            .collect::<Result<Vec<_>, _>>()?;
        let address = |b: &Option<G::Buffer<u8>>| b.as_ref().map_or(0, |b| self.device.address(b));
        let param_addresses: Vec<u64> = device_params.iter().map(address).collect();
        let grad_addresses: Vec<u64> = device_grads.iter().map(address).collect();
        self.step_addresses(&param_addresses, &grad_addresses)?;
        for (host, device) in params.iter_mut().zip(&device_params) {
            if let Some(device) = device {
                host.copy_from_slice(&decode(dtype, &self.device.download(device)?));
            }
        }
        Ok(())
    }

    /// The step over tensors at these device addresses (lengths already checked): each part's
    /// tables are rebuilt if its tensors moved, then the parts run in lockstep, phase level by
    /// phase level (see `CudaPart::run_phase`).
    fn step_addresses(&mut self, params: &[u64], grads: &[u64]) -> Result<(), OptimizerError> {
        // Device rows and tables are laid out one row per group (see `Binding::group_rows`).
        if !self.parts.iter().all(|p| p.kind.binding.uniform_groups()) {
            return Err(OptimizerError::NotOnTarget {
                rule: self.table.rule.clone(),
                what: "tensors of one param group at different step counts (a checkpoint of steps where some tensors had no gradient)".into(),
                target: "cuda",
            });
        }
        let mut part_params = vec![Vec::new(); self.parts.len()];
        let mut part_grads = vec![Vec::new(); self.parts.len()];
        for ((&param, &grad), &(part, _)) in params.iter().zip(grads).zip(&self.placement) {
            part_params[part].push(param);
            part_grads[part].push(grad);
        }
        for (part, (params, grads)) in self
            .parts
            .iter_mut()
            .zip(part_params.iter().zip(&part_grads))
        {
            if part.prepare_tables(&self.device, params, grads, self.chunk_elems)? {
                // The launches' tables or partials moved: the graph no longer fits.
                self.graph = None;
            }
        }
        let device = &self.device;
        let capturable = self.parts.iter().all(CudaPart::capturable);
        if self.graphs && capturable && self.parts.iter().any(CudaPart::launches) {
            for part in &mut self.parts {
                part.kind.begin();
                part.stage_all(device)?;
            }
            if self.graph.is_none() {
                self.graph = Some(self.capture()?);
                self.stats.graph_captures += 1;
            }
            let graph = self.graph.as_ref().expect("captured above");
            device.replay(graph)?;
            self.parts.iter_mut().for_each(|part| part.kind.finish());
        } else {
            self.graph = None;
            step_in_lockstep(&mut self.parts, |_, part, phase| {
                part.run_phase(device, phase)
            })?;
        }
        self.stats.steps = self.steps();
        Ok(())
    }

    /// Captures every part's launches, in order, into a graph (nothing runs).
    fn capture(&self) -> Result<G::Graph, OptimizerError> {
        let device = &*self.device;
        let parts = &self.parts;
        device.capture(&mut || parts.iter().try_for_each(|part| part.launch_all(device)))
    }
}

impl CudaOptimizer<CudaDevice> {
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
        if T::DTYPE != self.dtype {
            let (expected, got) = (self.dtype, T::DTYPE);
            return Err(CudaError::WrongDType { expected, got }.into());
        }
        let param_lens: Vec<usize> = params.iter().map(CudaSlice::len).collect();
        let grad_lens: Vec<usize> = grads.iter().map(CudaSlice::len).collect();
        self.table.check_lengths(&param_lens, &grad_lens)?;
        for (what, owned) in [
            (
                "param",
                params
                    .iter()
                    .map(|p| self.device.owns(p))
                    .collect::<Vec<_>>(),
            ),
            ("grad", grads.iter().map(|g| self.device.owns(g)).collect()),
        ] {
            if let Some(tensor) = owned.iter().position(|&ours| !ours) {
                return Err(CudaError::ForeignTensor { what, tensor }.into());
            }
        }
        let param_addresses: Vec<u64> = params.iter().map(|p| self.device.address(p)).collect();
        let grad_addresses: Vec<u64> = grads.iter().map(|g| self.device.address(g)).collect();
        self.step_addresses(&param_addresses, &grad_addresses)
    }
}
