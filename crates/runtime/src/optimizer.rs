//! `Optimizer`: a compiled step bound to tensor shapes and param groups, holding the state, and
//! stepping every tensor of every group through one kernel call per phase.

use crate::binding::{Binding, Source, StageScratch, buffer_sources, row_width};
use crate::buffer::AlignedBuf;
use crate::cache::CacheUse;
use crate::chunks::{self, CHUNK_ELEMS, ChunkTable};
use crate::error::OptimizerError;
use crate::pipeline::{CompileOptions, Compiled, compile_cached};
use crate::reduce::{self, Records, Reduced};
use crate::target::Target;
use optjit_ir::{Class, Walk};
use optjit_trace::Definition;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// A param group: which tensors it holds and which hyperparameters it overrides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Group {
    /// Indices into the tensor list (`Setup::shapes`, and the slices passed to `step`).
    pub tensors: Vec<usize>,
    /// Hyperparameter values that differ from the optimizer's.
    pub hypers: BTreeMap<String, f64>,
}

/// What an optimizer is built for.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// Shape of every tensor, in the order `step` receives them.
    pub shapes: Vec<Vec<usize>>,
    /// Param groups; empty means one group holding every tensor.
    pub groups: Vec<Group>,
    /// Hyperparameter values for every group (missing ones take the definition's defaults).
    pub hypers: BTreeMap<String, f64>,
    /// Worker threads per step (0: one per available core).
    pub threads: usize,
}

/// Counters of an optimizer's compiled step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// How many times the whole pipeline ran for this optimizer.
    pub compiles: usize,
    /// How many times its step came from this process's memory cache instead.
    pub memory_hits: usize,
    /// How many times its step came from the disk cache instead (e-graph skipped).
    pub disk_hits: usize,
    /// Kernel calls per step (one per phase, covering every tensor of every group).
    pub kernels_per_step: usize,
    /// Bytes loaded and stored per element per step (static count from the fusion plan).
    pub bytes_per_elem: usize,
    /// Wall time of obtaining the step (compile or cache lookup), in milliseconds.
    pub compile_ms: f64,
    /// Steps taken.
    pub steps: u64,
}

impl Stats {
    /// The counters of a fresh optimizer over `compiled`, obtained as `used` in `elapsed`.
    pub(crate) fn of(compiled: &Compiled, used: CacheUse, elapsed: std::time::Duration) -> Stats {
        Stats {
            compiles: usize::from(used == CacheUse::Compiled),
            memory_hits: usize::from(used == CacheUse::MemoryHit),
            disk_hits: usize::from(used == CacheUse::DiskHit),
            kernels_per_step: compiled.plan.phases.len(),
            bytes_per_elem: compiled.plan.bytes_per_elem(),
            compile_ms: elapsed.as_secs_f64() * 1e3,
            steps: 0,
        }
    }

    /// How many times the optimizer obtained a compiled step (compiled or from a cache): 1 for
    /// its whole life, since nothing a step can change recompiles.
    pub fn builds(&self) -> usize {
        self.compiles + self.memory_hits + self.disk_hits
    }
}

/// Distance between the 4 KiB offsets of successive state buffers.
const STATE_STAGGER_BYTES: usize = 1024 + 64;

/// A compiled optimizer step with its state.
///
/// ```
/// use optjit_runtime::{Optimizer, Setup};
/// let adamw = optjit_optim::AdamW::new().lr(0.1).build().unwrap();
/// let setup = Setup { shapes: vec![vec![3]], hypers: adamw.hypers.clone(), ..Setup::default() };
/// let mut opt = Optimizer::new(&adamw.definition, setup).unwrap();
/// let mut params = vec![vec![1.0f32, 2.0, 3.0]];
/// opt.step(&mut params, &[vec![0.5f32, -0.5, 0.0]]).unwrap();
/// assert!(params[0][0] < 1.0 && params[0][1] > 2.0);
/// assert_eq!(opt.stats().kernels_per_step, 1);
/// ```
pub struct Optimizer {
    binding: Binding,
    compiled: Arc<Compiled>,
    /// Per phase, the source of each kernel buffer.
    buffer_sources: Vec<Vec<Source>>,
    /// `states[tensor][state]`: per-element buffers, indexed like the graph's states.
    states: Vec<Vec<AlignedBuf>>,
    threads: usize,
    stats: Stats,
    scratch: Scratch,
}

#[derive(Default)]
struct Scratch {
    stage: StageScratch,
    table: Vec<u64>,
    lens: Vec<usize>,
    owners: Vec<usize>,
    entities: Vec<usize>,
    partials: Vec<f64>,
    reduced: Reduced,
}

impl Optimizer {
    /// Compiles `definition` and allocates its state for `setup`'s tensors.
    pub fn new(definition: &Definition, setup: Setup) -> Result<Optimizer, OptimizerError> {
        Self::with_options(definition, setup, &CompileOptions::default())
    }

    /// As [`Optimizer::new`], with explicit compile options (their target must be the CPU).
    pub fn with_options(
        definition: &Definition,
        setup: Setup,
        options: &CompileOptions,
    ) -> Result<Optimizer, OptimizerError> {
        let binding = Binding::new(definition, &setup)?;
        if options.target != Target::Cpu {
            return Err(OptimizerError::WrongTarget {
                rule: binding.rule().to_string(),
                target: options.target.to_string(),
                expected: "cpu",
            });
        }
        let started = Instant::now();
        let (compiled, used) = compile_cached(definition, options)?;
        let elapsed = started.elapsed();
        if compiled.cpu_module().is_none() {
            return Err(OptimizerError::WrongTarget {
                rule: binding.rule().to_string(),
                target: options.target.to_string(),
                expected: "cpu",
            });
        }
        let buffer_sources = buffer_sources(definition, &compiled.plan);
        let graph = &definition.graph;
        let states = binding
            .lens
            .iter()
            .map(|&len| {
                // The states, then the plan's scratch buffers (see `Source::State`).
                let inits = graph.states.iter().map(|s| match s.class {
                    Class::Elem => (len, s.init as f32),
                    _ => (0, 0.0),
                });
                let scratch = std::iter::repeat_n((len, 0.0), compiled.plan.temps);
                inits
                    .chain(scratch)
                    .enumerate()
                    .map(|(i, (len, init))| {
                        // Each buffer at its own offset modulo 4 KiB (see AlignedBuf::staggered).
                        let stagger = STATE_STAGGER_BYTES * (i + 1) % 4096;
                        AlignedBuf::staggered(len, init, stagger)
                    })
                    .collect()
            })
            .collect();
        let stats = Stats::of(&compiled, used, elapsed);
        let threads = match setup.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Optimizer {
            binding,
            compiled,
            buffer_sources,
            states,
            threads,
            stats,
            scratch: Scratch::default(),
        })
    }

    /// The compiled step (plan, kernels, stage texts).
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Counters: compiles, kernels per step, bytes per element, compile time, steps.
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

    /// The state `name` of tensor `tensor` (PyTorch's state names): per element, or per row
    /// or column of each matrix (row-major over the matrices).
    pub fn state(&self, tensor: usize, name: &str) -> Option<&[f32]> {
        let rank = self.binding.views.get(tensor)?.rank;
        let name = self.binding.definition.state_name(name, rank);
        let Some(index) = self.binding.state_index(name, Class::Elem) else {
            return self.binding.factor_state(tensor, name);
        };
        self.states.get(tensor).map(|s| &*s[index])
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

    /// Takes one step: updates every parameter and state in place. `params[i]` and `grads[i]`
    /// are tensor i of the setup. On error nothing is modified.
    pub fn step<P: AsMut<[f32]>, G: AsRef<[f32]>>(
        &mut self,
        params: &mut [P],
        grads: &[G],
    ) -> Result<(), OptimizerError> {
        // Take each slice once: the pointers handed to the kernels are those of the checked
        // slices, whatever a user's AsMut/AsRef would return on a second call.
        let mut params: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut()).collect();
        let grads: Vec<&[f32]> = grads.iter().map(|g| g.as_ref()).collect();
        let param_lens: Vec<usize> = params.iter().map(|p| p.len()).collect();
        let grad_lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
        self.binding.check_lengths(&param_lens, &grad_lens)?;
        let program = &self.compiled.scalar_program;
        let plan = &self.compiled.plan;
        let width = row_width(program);
        let scratch = &mut self.scratch;
        scratch.reduced.reset(plan, self.binding.lens.len());
        let module = self.compiled.cpu_module().expect("checked at construction");

        for (phase, (sources, kernel)) in self.buffer_sources.iter().zip(&module.fns).enumerate() {
            self.binding
                .scalar_stage(program, phase, &scratch.reduced, &mut scratch.stage);
            scratch.table.clear();
            scratch.lens.clear();
            scratch.owners.clear();
            scratch.entities.clear();
            let n_buffers = sources.len();
            let mut table = ChunkTable {
                words: &mut scratch.table,
                lens: &mut scratch.lens,
                owners: &mut scratch.owners,
                entities: &mut scratch.entities,
                n_buffers,
                chunk_elems: CHUNK_ELEMS,
            };
            let walk = plan.phases[phase].walk;
            let per_col: Vec<bool> = sources
                .iter()
                .map(|s| matches!(s, Source::ColValue(_)))
                .collect();
            let mut base = vec![0u64; n_buffers];
            for (g, group) in self.binding.groups.iter().enumerate() {
                for &t in &group.tensors {
                    let rows = &scratch.stage.rows;
                    let row = |r: usize| {
                        let index = self.binding.row_of(program, g, t, r);
                        rows[index * width..].as_ptr() as u64
                    };
                    for (slot, source) in base.iter_mut().zip(sources) {
                        *slot = match *source {
                            Source::Param => params[t].as_mut_ptr() as u64,
                            // Gradients are only read: kernels never store to a `grad` buffer.
                            Source::Grad => grads[t].as_ptr() as u64,
                            Source::State(s) => self.states[t][s].as_mut_ptr() as u64,
                            Source::ColValue(c) => scratch.stage.cols[t][c].as_ptr() as u64,
                        };
                    }
                    let view = &self.binding.views[t];
                    match (walk, program.rows_per_row()) {
                        // A tensor without elements has no rows to read.
                        _ if self.binding.lens[t] == 0 => {}
                        (Walk::Columns, _) => table.push_columns(t, view, row(0), &base),
                        (Walk::Elements, true) => table.push_rows(t, view, row, &base, &per_col),
                        (Walk::Elements, false) => {
                            table.push_tensor(t, self.binding.lens[t], row(0), &base)
                        }
                    }
                }
            }
            let n_partials = plan.phases[phase].reductions.len() * scratch.lens.len();
            scratch.partials.clear();
            scratch.partials.resize(n_partials, 0.0);
            // SAFETY: every pointer comes from a live slice of the tensor's length (checked
            // above); tensors are distinct borrows, so records never overlap; the scalar rows
            // outlive the call; the partials hold a row per record.
            unsafe {
                chunks::run(
                    *kernel,
                    &scratch.table,
                    &scratch.lens,
                    self.threads,
                    &mut scratch.partials,
                )
            };
            let records = Records {
                owners: &scratch.owners,
                entities: &scratch.entities,
            };
            reduce::finish_phase(
                plan,
                phase,
                &scratch.partials,
                &records,
                &self.binding.lens,
                &self.binding.views,
                &mut scratch.reduced,
            );
        }
        let last = plan.phases.len();
        self.binding
            .scalar_stage(program, last, &scratch.reduced, &mut scratch.stage);
        let pending = self.binding.pending_step(program, &scratch.stage);
        self.binding.finish_step(pending);
        self.stats.steps = self.binding.step_count;
        Ok(())
    }
}
