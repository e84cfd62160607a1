//! `CudaOptimizer`: a step compiled to PTX, its state on the device, and one launch per phase
//! over a device chunk table that covers every tensor of every group.

use super::device::{CudaDevice, CudaError, Doing};
use crate::binding::{Binding, Source, StageScratch, buffer_sources, row_width};
use crate::chunks::ChunkTable;
use crate::error::OptimizerError;
use crate::optimizer::{Setup, Stats};
use crate::pipeline::{CompileOptions, Compiled, compile_cached};
use crate::reduce::{self, Records, Reduced};
use crate::target::Target;
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use optjit_ir::Class;
use optjit_kernels_gen::{PTX_BLOCK_THREADS, ptx_entry_name};
use optjit_trace::Definition;
use std::sync::Arc;
use std::time::Instant;

/// Elements per chunk record on the GPU: one block walks a record, 64 float4 groups per
/// thread. Long records amortize reading a record's header and scalars; measured on an H200
/// against 1K-32K (docs/perf.md). A multiple of 4, so records keep their tensor's alignment.
pub const CUDA_CHUNK_ELEMS: usize = 1 << 16;

/// The record length in force: `OPTJIT_CUDA_CHUNK_ELEMS` (a positive multiple of 4, for
/// tuning) or [`CUDA_CHUNK_ELEMS`].
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

/// Most blocks one launch starts; blocks walk the records with a grid stride beyond that.
const MAX_GRID_BLOCKS: usize = 1 << 16;

/// One phase's loaded kernel and its device chunk table.
struct Phase {
    /// The kernel's name (for errors).
    name: String,
    function: CudaFunction,
    sources: Vec<Source>,
    /// The chunk table on the device (`None` when the step has no elements).
    table: Option<CudaSlice<u64>>,
    n_records: usize,
    /// The tensor of each record of the table.
    owners: Vec<usize>,
    /// Device partials of the phase's reductions (`n_records` rows), when it reduces.
    partials: Option<CudaSlice<f64>>,
}

/// A compiled optimizer step on a CUDA device, holding its state there.
///
/// Parameters and gradients are device buffers on the device's stream ([`CudaDevice::upload`]);
/// [`CudaOptimizer::step`] enqueues a copy of the step's scalars and the launches on
/// [`CudaDevice::stream`] and does not wait for the kernels. Hyperparameters and the scalar program's results reach the kernels through a small
/// device buffer written before the launches, so changing them never recompiles.
pub struct CudaOptimizer {
    binding: Binding,
    compiled: Arc<Compiled>,
    device: Arc<CudaDevice>,
    phases: Vec<Phase>,
    /// `states[tensor][state]`: per-element buffers (`None` for scalar states).
    states: Vec<Vec<Option<CudaSlice<f32>>>>,
    /// Every group's row of kernel scalars.
    rows: CudaSlice<f32>,
    /// The param and grad addresses the phases' tables were built for.
    table_tensors: Vec<u64>,
    /// Elements per chunk record.
    chunk_elems: usize,
    stats: Stats,
    stage: StageScratch,
    lens_scratch: Vec<usize>,
}

impl CudaOptimizer {
    /// Compiles `definition` to sm_80 PTX (which the driver also runs on sm_90 and later), loads
    /// it on `device`, and allocates the state for `setup`'s tensors there.
    pub fn new(
        definition: &Definition,
        setup: Setup,
        device: Arc<CudaDevice>,
    ) -> Result<CudaOptimizer, OptimizerError> {
        let options = CompileOptions {
            target: Target::cuda(),
            ..CompileOptions::default()
        };
        Self::with_options(definition, setup, device, &options)
    }

    /// As [`CudaOptimizer::new`], with explicit compile options (their target must be CUDA).
    pub fn with_options(
        definition: &Definition,
        setup: Setup,
        device: Arc<CudaDevice>,
        options: &CompileOptions,
    ) -> Result<CudaOptimizer, OptimizerError> {
        let binding = Binding::new(definition, &setup)?;
        let started = Instant::now();
        let (compiled, used) = compile_cached(definition, options)?;
        let elapsed = started.elapsed();
        if compiled.plan.has_rows() {
            return Err(OptimizerError::NotOnTarget {
                rule: binding.rule().to_string(),
                what: "per-row and per-column values (row_mean, col_mean, rank: Adafactor's factored second moment)".to_string(),
                target: "cuda",
            });
        }
        let Some(modules) = compiled.ptx() else {
            return Err(OptimizerError::WrongTarget {
                rule: binding.rule().to_string(),
                target: options.target.to_string(),
                expected: "cuda",
            });
        };
        let started = Instant::now();
        let mut phases = Vec::with_capacity(modules.len());
        for ((ptx, kernel), sources) in modules
            .iter()
            .zip(&compiled.kernels)
            .zip(buffer_sources(definition, &compiled.plan))
        {
            let entry = ptx_entry_name(kernel);
            let module = device
                .context()
                .load_module(Ptx::from_src(ptx.clone()))
                .doing(|| {
                    format!(
                        "loading the PTX of kernel {} (check it with ptxas)",
                        kernel.name
                    )
                })?;
            let function = module
                .load_function(&entry)
                .doing(|| format!("finding entry {entry}"))?;
            phases.push(Phase {
                name: kernel.name.clone(),
                function,
                sources,
                table: None,
                n_records: 0,
                owners: Vec::new(),
                partials: None,
            });
        }
        let load_ms = started.elapsed().as_secs_f64() * 1e3;

        let graph = &definition.graph;
        let mut states = Vec::with_capacity(binding.lens.len());
        for &len in &binding.lens {
            let mut tensor_states = Vec::with_capacity(graph.states.len());
            for state in &graph.states {
                let buffer = match state.class {
                    Class::Elem if len > 0 => Some(device.upload(&vec![state.init as f32; len])?),
                    _ => None,
                };
                tensor_states.push(buffer);
            }
            // The plan's scratch buffers follow the states (see `Source::State`).
            for _ in 0..compiled.plan.temps {
                tensor_states.push(match len {
                    0 => None,
                    _ => Some(device.upload(&vec![0f32; len])?),
                });
            }
            states.push(tensor_states);
        }
        let width = row_width(&compiled.scalar_program);
        let n_rows = match compiled.scalar_program.rows_per_tensor() {
            true => width * binding.lens.len(),
            false => width * binding.groups.len(),
        };
        let rows = device.upload(&vec![0f32; n_rows])?;
        let mut stats = Stats::of(&compiled, used, elapsed);
        stats.compile_ms += load_ms;
        Ok(CudaOptimizer {
            binding,
            compiled,
            device,
            phases,
            states,
            rows,
            table_tensors: Vec::new(),
            chunk_elems: chunk_elems(),
            stats,
            stage: StageScratch::default(),
            lens_scratch: Vec::new(),
        })
    }

    /// The device the step runs on.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    /// The compiled step (plan, kernels, PTX, stage texts).
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Counters: compiles, kernels per step, bytes per element, compile (and load) time, steps.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How many param groups there are.
    pub fn n_groups(&self) -> usize {
        self.binding.groups.len()
    }

    /// The tensor indices of param group `group`.
    pub fn group_tensors(&self, group: usize) -> Option<&[usize]> {
        self.binding.group_tensors(group)
    }

    /// The value of hyperparameter `name` in force for `group`.
    pub fn hyper(&self, group: usize, name: &str) -> Result<f64, OptimizerError> {
        self.binding.hyper(group, name)
    }

    /// Sets hyperparameter `name` for one group (`Some(g)`) or all (`None`). It takes effect
    /// at the next step and never recompiles.
    pub fn set_hyper(
        &mut self,
        group: Option<usize>,
        name: &str,
        value: f64,
    ) -> Result<(), OptimizerError> {
        self.binding.set_hyper(group, name, value)
    }

    /// The per-element state `name` of tensor `tensor`, copied to the host (waits for the
    /// stream). `None` if there is no such state or tensor.
    pub fn state(&self, tensor: usize, name: &str) -> Result<Option<Vec<f32>>, OptimizerError> {
        let Some(index) = self.binding.state_index(name, Class::Elem) else {
            return Ok(None);
        };
        match self.states.get(tensor).map(|s| &s[index]) {
            None => Ok(None),
            Some(None) => Ok(Some(Vec::new())),
            Some(Some(buffer)) => Ok(Some(self.device.download(buffer)?)),
        }
    }

    /// Reports the metric of the step just taken to the metric-driven schedule (as PyTorch's
    /// `ReduceLROnPlateau.step(metric)`): what it sets is in force from the next step. Fails
    /// when no schedule of this optimizer reads `metric`.
    pub fn report_metric(&mut self, metric: f64) -> Result<(), OptimizerError> {
        self.binding.report_metric(metric)
    }

    /// The scalar state `name` of param group `group`.
    pub fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        self.binding.scalar_state(group, name)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.binding.step_count
    }

    /// Enqueues one step on the device's stream: updates every parameter and state in place.
    /// `params[i]` and `grads[i]` are tensor i of the setup, allocated on [`CudaDevice::stream`]
    /// (so that freeing them is ordered after the step). A step refused for its input (counts,
    /// lengths, foreign buffers) modifies nothing; after a driver error the step may have run
    /// in part, and the device should be considered lost, as CUDA's own errors usually are.
    pub fn step(
        &mut self,
        params: &mut [CudaSlice<f32>],
        grads: &[CudaSlice<f32>],
    ) -> Result<(), OptimizerError> {
        let param_lens: Vec<usize> = params.iter().map(CudaSlice::len).collect();
        let grad_lens: Vec<usize> = grads.iter().map(CudaSlice::len).collect();
        self.binding.check_lengths(&param_lens, &grad_lens)?;
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

    /// Enqueues one step over tensors given as raw device addresses (for buffers that another
    /// library allocated, e.g. PyTorch's). Each address needs only 4-byte alignment; records
    /// whose buffers are all 16-byte aligned use 128-bit loads and stores.
    ///
    /// # Safety
    /// `params[i]` and `grads[i]` must be addresses on this device's context of live buffers of
    /// at least tensor i's element count of f32; no parameter may overlap another parameter, any
    /// gradient or any state (gradients are read through the non-coherent cache, so a gradient
    /// must not alias a buffer the step writes); and all must stay valid, with no other stream
    /// writing them, until this device's stream has run the step.
    pub unsafe fn step_raw(&mut self, params: &[u64], grads: &[u64]) -> Result<(), OptimizerError> {
        let n = self.binding.lens.len();
        let claimed = |given: usize| match given == n {
            true => self.binding.lens.clone(),
            false => vec![0; given],
        };
        self.binding
            .check_lengths(&claimed(params.len()), &claimed(grads.len()))?;
        for (what, addresses) in [("param", params), ("grad", grads)] {
            if let Some(tensor) = addresses.iter().position(|&a| a % 4 != 0) {
                let address = addresses[tensor];
                return Err(CudaError::Misaligned {
                    what,
                    tensor,
                    address,
                }
                .into());
            }
        }
        self.step_addresses(params, grads)
    }

    /// Copies host tensors to the device, takes one step there, and copies the parameters
    /// back (waits for the stream). Convenient for tests and small problems; a training loop
    /// keeps its tensors on the device and calls [`CudaOptimizer::step`].
    pub fn step_host<P: AsMut<[f32]>, G: AsRef<[f32]>>(
        &mut self,
        params: &mut [P],
        grads: &[G],
    ) -> Result<(), OptimizerError> {
        let mut params: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut()).collect();
        let grads: Vec<&[f32]> = grads.iter().map(|g| g.as_ref()).collect();
        let param_lens: Vec<usize> = params.iter().map(|p| p.len()).collect();
        let grad_lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
        self.binding.check_lengths(&param_lens, &grad_lens)?;
        let upload = |host: &[f32]| -> Result<Option<CudaSlice<f32>>, CudaError> {
            match host.len() {
                0 => Ok(None),
                _ => self.device.upload(host).map(Some),
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
        let address = |b: &Option<CudaSlice<f32>>| b.as_ref().map_or(0, |b| self.device.address(b));
        let param_addresses: Vec<u64> = device_params.iter().map(address).collect();
        let grad_addresses: Vec<u64> = device_grads.iter().map(address).collect();
        self.step_addresses(&param_addresses, &grad_addresses)?;
        for (host, device) in params.iter_mut().zip(&device_params) {
            if let Some(device) = device {
                host.copy_from_slice(&self.device.download(device)?);
            }
        }
        Ok(())
    }

    /// The step over tensors at these device addresses (lengths already checked).
    ///
    /// Before each phase the host runs that stage of the scalar program and copies the rows to
    /// the device. After a phase that reduces, it waits for the partials, folds them in record
    /// order (so the result is the same run to run) and goes on with the next stage.
    fn step_addresses(&mut self, params: &[u64], grads: &[u64]) -> Result<(), OptimizerError> {
        let tensors: Vec<u64> = params.iter().chain(grads).copied().collect();
        if tensors != self.table_tensors {
            // Forget the old tables first: a rebuild that fails half-way is redone next step.
            self.table_tensors.clear();
            self.build_tables(params, grads)?;
            self.table_tensors = tensors;
        }
        let program = &self.compiled.scalar_program;
        let plan = &self.compiled.plan;
        let mut reduced = Reduced::default();
        reduced.reset(plan, self.binding.lens.len());
        for (k, phase) in self.phases.iter_mut().enumerate() {
            self.binding
                .scalar_stage(program, k, &reduced, &mut self.stage);
            // A copy from pageable memory: the driver takes the data before returning, so
            // the rows can be rewritten next, and the stream orders the copy after the
            // previous launches (page-locked rows with an event gained nothing on an H200,
            // docs/perf.md).
            self.device.write(&self.stage.rows, &mut self.rows)?;
            let n_slots = plan.phases[k].reductions.len();
            let Some(table) = &phase.table else {
                // No elements: every reduction folds nothing.
                let records = Records {
                    owners: &[],
                    entities: &[],
                };
                let (lens, views) = (&self.binding.lens, &self.binding.views);
                reduce::finish_phase(plan, k, &[], &records, lens, views, &mut reduced);
                continue;
            };
            let partials = match n_slots {
                0 => 0,
                _ => {
                    // Every record of the table is non-empty, so the kernel writes every
                    // partial: the buffer is only (re)allocated, never cleared.
                    let len = phase.n_records * n_slots;
                    if phase.partials.as_ref().map(|p| p.len()) != Some(len) {
                        phase.partials = Some(self.device.upload(&vec![0.0f64; len])?);
                    }
                    self.device
                        .address(phase.partials.as_ref().expect("set above"))
                }
            };
            let table_address = self.device.address(table);
            let n_records = phase.n_records as u64;
            let config = LaunchConfig {
                grid_dim: (phase.n_records.min(MAX_GRID_BLOCKS) as u32, 1, 1),
                block_dim: (PTX_BLOCK_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = self.device.stream().launch_builder(&phase.function);
            launch.arg(&table_address).arg(&n_records).arg(&partials);
            // SAFETY: the kernel takes (table: u64, n_records: u64, partials: u64) (ChunkAbi);
            // every address in the table is a live device buffer of the tensor's length on this
            // context, the records of distinct tensors never overlap, the partials hold a row
            // per record, and the table, rows and partials stay alive (owned by self) until the
            // stream has run the launch.
            unsafe { launch.launch(config) }
                .doing(|| format!("launching kernel {}", phase.name))?;
            if let (Some(partials), true) = (&phase.partials, n_slots > 0) {
                let host = self.device.download(partials)?;
                let records = Records {
                    owners: &phase.owners,
                    entities: &[],
                };
                reduce::finish_phase(
                    plan,
                    k,
                    &host,
                    &records,
                    &self.binding.lens,
                    &self.binding.views,
                    &mut reduced,
                );
            }
        }
        let last = self.phases.len();
        self.binding
            .scalar_stage(program, last, &reduced, &mut self.stage);
        let pending = self.binding.pending_step(program, &self.stage);
        self.binding.finish_step(pending);
        self.stats.steps = self.binding.step_count;
        Ok(())
    }

    /// Builds and uploads every phase's chunk table for tensors at these addresses.
    fn build_tables(&mut self, params: &[u64], grads: &[u64]) -> Result<(), OptimizerError> {
        let program = &self.compiled.scalar_program;
        let width = row_width(program);
        let rows = self.device.address(&self.rows);
        for phase in &mut self.phases {
            let n_buffers = phase.sources.len();
            let mut words = Vec::new();
            self.lens_scratch.clear();
            phase.owners.clear();
            let mut table = ChunkTable {
                words: &mut words,
                lens: &mut self.lens_scratch,
                owners: &mut phase.owners,
                entities: &mut Vec::new(),
                n_buffers,
                chunk_elems: self.chunk_elems,
                partials: 0,
            };
            let mut base = vec![0u64; n_buffers];
            for (g, group) in self.binding.groups.iter().enumerate() {
                for &t in &group.tensors {
                    let row = self.binding.row_of(program, g, t, 0);
                    let row = rows + (row * width * size_of::<f32>()) as u64;
                    for (slot, source) in base.iter_mut().zip(&phase.sources) {
                        *slot = match *source {
                            Source::Param => params[t],
                            Source::Grad => grads[t],
                            Source::State(s) => self.states[t][s]
                                .as_ref()
                                .map_or(0, |b| self.device.address(b)),
                            Source::ColValue(_) => unreachable!("refused at construction"),
                        };
                    }
                    table.push_tensor(t, self.binding.lens[t], row, &base);
                }
            }
            phase.n_records = self.lens_scratch.len();
            phase.table = match (phase.table.take(), phase.n_records) {
                (_, 0) => None,
                (Some(mut table), _) if table.len() == words.len() => {
                    self.device.write(&words, &mut table)?;
                    Some(table)
                }
                _ => Some(self.device.upload(&words)?),
            };
        }
        Ok(())
    }
}
