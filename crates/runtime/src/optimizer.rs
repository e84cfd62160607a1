//! `OptimizerOn<E>`: a compiled step bound to tensor shapes and param groups, holding the
//! state, and stepping every tensor of every group through one kernel call per phase (per part:
//! a kind of tensor of one variant, for a step that depends on the rank or groups that follow
//! different rules: see `variant.rs`), written once for every executor (`executor.rs`); its
//! forms are `Optimizer` (the host, `host.rs`) and `CudaOptimizer` (`cuda/optimizer.rs`).
//! Also what an optimizer is built from (`Setup`, `Group`) and its counters (`Stats`).

use crate::cache::CacheUse;
use crate::checkpoint::{self, Checkpoint, Slot};
use crate::error::OptimizerError;
use crate::executor::Executor;
use crate::kind_step::{KindStep, check_global_levels};
use crate::pipeline::{CompileOptions, Compiled, compile_cached};
use crate::variant::GroupTable;
use optjit_ir::DType;
use optjit_trace::Definition;
use std::collections::BTreeMap;
use std::time::Instant;

/// A param group: which tensors it holds, which hyperparameters it overrides, and the update
/// rule it follows when it is not the optimizer's.
#[derive(Clone, Debug, Default)]
pub struct Group {
    /// Indices into the tensor list (`Setup::shapes`, and the slices passed to `step`).
    pub tensors: Vec<usize>,
    /// Hyperparameter values that differ from the optimizer's.
    pub hypers: BTreeMap<String, f64>,
    /// The group's own update rule: another optimizer (SGD for some heads of an AdamW model),
    /// or the optimizer's with other structural options (`amsgrad` in one group). `None`: the
    /// optimizer's. Groups with the same rule share its compiled step, and all rules run in
    /// lockstep: still one kernel call per phase per rule, and a reduction over every tensor
    /// (`clip_grad_norm`) covers the tensors of every rule (each rule must have it).
    pub rule: Option<Definition>,
}

/// What an optimizer is built for.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// Shape of every tensor, in the order `step` receives them.
    pub shapes: Vec<Vec<usize>>,
    /// Param groups; empty means one group holding every tensor.
    pub groups: Vec<Group>,
    /// Hyperparameter values for every group (missing ones take the definition's defaults);
    /// a group with its own rule takes those its rule has.
    pub hypers: BTreeMap<String, f64>,
    /// Worker threads per step (0: one per available core).
    pub threads: usize,
    /// How the tensors and their per-element states are stored: f32 (the default), or f16 or
    /// bf16 on CUDA (computed in f32, rounded to nearest even on store).
    pub dtype: DType,
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
    /// Bytes loaded and stored per element per step (static count from the fusion plan, for
    /// tensors stored as the kernels store them).
    pub bytes_per_elem: usize,
    /// Wall time of obtaining the step (compile or cache lookup), in milliseconds.
    pub compile_ms: f64,
    /// Steps taken.
    pub steps: u64,
    /// CUDA graphs captured: one, at the first replayed step (see
    /// `CudaOptimizer::set_graph_capture`); 0 on the CPU.
    pub graph_captures: u64,
}

impl Stats {
    /// The counters of a fresh optimizer over `compiled`, obtained as `used` in `elapsed`.
    pub(crate) fn of(compiled: &Compiled, used: CacheUse, elapsed: std::time::Duration) -> Stats {
        Stats {
            compiles: usize::from(used == CacheUse::Compiled),
            memory_hits: usize::from(used == CacheUse::MemoryHit),
            disk_hits: usize::from(used == CacheUse::DiskHit),
            kernels_per_step: compiled.plan.phases.len(),
            bytes_per_elem: compiled.bytes_per_elem(),
            compile_ms: elapsed.as_secs_f64() * 1e3,
            steps: 0,
            graph_captures: 0,
        }
    }

    /// The counters of an optimizer over several compiled steps (one per kind of tensors),
    /// each with the number of elements it steps: compiles, hits, kernels and compile time add
    /// up; bytes per element are those of the step with the most elements.
    pub(crate) fn combined(parts: &[(Stats, usize)]) -> Stats {
        let mut total = Stats::default();
        for (s, _) in parts {
            total.compiles += s.compiles;
            total.memory_hits += s.memory_hits;
            total.disk_hits += s.disk_hits;
            total.kernels_per_step += s.kernels_per_step;
            total.compile_ms += s.compile_ms;
        }
        total.bytes_per_elem = parts
            .iter()
            .max_by_key(|(_, elems)| *elems)
            .map_or(0, |(s, _)| s.bytes_per_elem);
        total
    }

    /// How many times the optimizer obtained a compiled step (compiled or from a cache): one
    /// per kind of tensors (see [`Optimizer::compiled_kinds`]) for its whole life, since nothing
    /// a step can change recompiles.
    pub fn builds(&self) -> usize {
        self.compiles + self.memory_hits + self.disk_hits
    }
}

/// A compiled optimizer step with its state, on the host ([`crate::Optimizer`]) or a GPU
/// ([`crate::CudaOptimizer`]): everything but stepping and reading states is written once, here.
///
/// Most definitions compile to one step for every tensor. One that reads per-column values or
/// the rank (Adafactor) compiles one step per kind of tensor: two or more dimensions, one, none;
/// groups that follow rules of their own ([`Group::rule`]) compile one per rule (see
/// [`OptimizerOn::compiled_kinds`]). The steps run phase level by phase level together, and a
/// reduction over every tensor (`clip_grad_norm`'s) adds up all of them before any uses it.
#[allow(private_bounds)] // the executors are the crate's own; users name the two forms
pub struct OptimizerOn<E: Executor> {
    /// Where it runs. First, so that what it holds (a captured CUDA graph) is dropped before
    /// the parts' kernels and buffers.
    pub(crate) exec: E,
    /// The tensors and param groups, and which parts hold each group.
    pub(crate) table: GroupTable,
    pub(crate) parts: Vec<E::Part>,
    /// Per tensor: its part and its index there.
    pub(crate) placement: Vec<(usize, usize)>,
    /// Counters but the step count (the bindings hold it).
    pub(crate) stats: Stats,
}

#[allow(private_bounds)]
impl<E: Executor> OptimizerOn<E> {
    /// Compiles `definition` for `exec` (with `options`, for `setup`) and allocates its state
    /// for `setup`'s tensors.
    pub(crate) fn build(
        definition: &Definition,
        setup: Setup,
        options: &CompileOptions,
        exec: E,
    ) -> Result<OptimizerOn<E>, OptimizerError> {
        let (table, plans) = GroupTable::plan(definition, &setup)?;
        let options = exec.options(&table.rule, &setup, options)?;
        let mut parts = Vec::new();
        let mut part_stats = Vec::new();
        for plan in &plans {
            let started = Instant::now();
            let (compiled, used) = compile_cached(&plan.definition, &options)?;
            let elapsed = started.elapsed();
            if !exec.runs(&compiled) {
                return Err(OptimizerError::WrongTarget {
                    rule: table.rule.clone(),
                    target: options.target.to_string(),
                    expected: E::TARGET,
                });
            }
            let elems: usize = plan.tensors.iter().map(|&t| table.lens[t]).sum();
            let mut stats = Stats::of(&compiled, used, elapsed);
            let (part, load_ms) = exec.part(plan, compiled)?;
            stats.compile_ms += load_ms;
            part_stats.push((stats, elems));
            parts.push(part);
        }
        // Every part must reduce over all tensors at the same levels, to add their sums up.
        let kinds: Vec<&KindStep> = parts.iter().map(AsRef::as_ref).collect();
        check_global_levels(&kinds, &table.rule, E::TARGET)?;
        let mut placement = vec![(0, 0); table.lens.len()];
        for (p, part) in parts.iter().enumerate() {
            for (local, &t) in part.as_ref().tensors.iter().enumerate() {
                placement[t] = (p, local);
            }
        }
        Ok(OptimizerOn {
            exec,
            table,
            parts,
            placement,
            stats: Stats::combined(&part_stats),
        })
    }

    /// The compiled step (plan, kernels, stage texts) of the first part (the only one unless
    /// the definition depends on the rank or groups follow other rules).
    pub fn compiled(&self) -> &Compiled {
        &self.parts[0].as_ref().compiled
    }

    /// Every compiled step, one per part (a kind of tensors of one rule), with the optimizer's
    /// indices of the tensors each one steps.
    pub fn compiled_kinds(&self) -> impl Iterator<Item = (&Compiled, &[usize])> {
        (self.parts.iter().map(AsRef::as_ref))
            .map(|kind| (kind.compiled.as_ref(), kind.tensors.as_slice()))
    }

    /// Counters: compiles, kernels per step, bytes per element, compile time, steps.
    pub fn stats(&self) -> Stats {
        Stats {
            steps: self.steps(),
            ..self.stats
        }
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

    /// Reports the metric of the step just taken to the metric-driven schedule (as PyTorch's
    /// `ReduceLROnPlateau.step(metric)`): what it sets is in force from the next step. Fails,
    /// changing nothing, when no schedule of this optimizer reads `metric`.
    pub fn report_metric(&mut self, metric: f64) -> Result<(), OptimizerError> {
        for part in &self.parts {
            let binding = &part.as_ref().binding;
            if binding.definition.on_metric.is_none() {
                return Err(OptimizerError::NoMetricSchedule {
                    rule: binding.rule().to_string(),
                });
            }
        }
        for part in &mut self.parts {
            part.as_mut().binding.report_metric(metric)?;
        }
        Ok(())
    }

    /// The scalar state `name` of param group `group`: the group's own (a schedule's, the
    /// clipping norm), or, for one each tensor has, that of the group's first tensor.
    pub fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        self.table.scalar_state(&self.parts, group, name)
    }

    /// The scalar state `name` of tensor `tensor`, when each tensor has its own (NAdam's
    /// `mu_product`, ASGD's `eta` and `mu`: PyTorch keeps them per parameter).
    pub fn tensor_scalar_state(&self, tensor: usize, name: &str) -> Option<f64> {
        let &(part, local) = self.placement.get(tensor)?;
        self.parts[part]
            .as_ref()
            .binding
            .tensor_scalar_state(local, name)
    }

    /// Steps taken so far by tensor `tensor` (PyTorch's `state[p]["step"]`: steps where it
    /// had no gradient do not count).
    pub fn tensor_steps(&self, tensor: usize) -> Option<u64> {
        let &(part, local) = self.placement.get(tensor)?;
        Some(self.parts[part].as_ref().binding.tensors[local].steps)
    }

    /// Steps the optimizer took so far.
    pub fn steps(&self) -> u64 {
        self.parts[0].as_ref().binding.step_count
    }

    /// Everything this optimizer carries to its next step, read from where its states lie.
    pub(crate) fn take_checkpoint(&self) -> Result<Checkpoint, OptimizerError> {
        let kinds: Vec<&KindStep> = self.parts.iter().map(AsRef::as_ref).collect();
        let elem = |part: usize, local: usize, state: usize| {
            self.exec.read_state(&self.parts[part], local, state)
        };
        checkpoint::capture(&self.table, &kinds, self.exec.dtype(), elem)
    }

    /// Continues from `checkpoint`, made by an optimizer of the same rule, shapes and param
    /// groups (on any target): the next step is the one that would have followed it there.
    /// Hyperparameters take the checkpoint's values; states are stored as this optimizer stores
    /// them (f32 values round to f16 or bf16 on a GPU that stores those; a finite value beyond
    /// their range is refused). A checkpoint that does not fit changes nothing; on a GPU, a
    /// copy that fails half-way leaves the states partly written.
    pub fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), OptimizerError> {
        let kinds: Vec<&KindStep> = self.parts.iter().map(AsRef::as_ref).collect();
        let layout = checkpoint::check(checkpoint, &self.table, &kinds)?;
        for (t, (saved, states)) in checkpoint.tensors.iter().zip(&layout).enumerate() {
            for (name, _, slot) in states {
                let refused = match slot {
                    Slot::Elem { .. } => self.exec.refuse_values(t, name, &saved[name]),
                    Slot::Factor { .. } => None,
                };
                if let Some(problem) = refused {
                    let rule = self.table.rule.clone();
                    return Err(OptimizerError::Checkpoint { rule, problem });
                }
            }
        }
        for (saved, states) in checkpoint.tensors.iter().zip(&layout) {
            for (name, _, slot) in states {
                if let Slot::Elem { part, local, state } = *slot {
                    let values = &saved[name];
                    (self.exec).write_state(&mut self.parts[part], local, state, values)?;
                }
            }
        }
        let mut kinds: Vec<&mut KindStep> = self.parts.iter_mut().map(AsMut::as_mut).collect();
        checkpoint::restore_host(checkpoint, &layout, &self.table, &mut kinds);
        Ok(())
    }

    /// Begins a step in every part over the tensors `has_grad` says have a gradient (see
    /// `KindStep::begin`).
    pub(crate) fn begin_step(&mut self, has_grad: impl Fn(usize) -> bool) {
        for part in &mut self.parts {
            let kind = part.as_mut();
            for (stepping, &t) in kind.stepping.iter_mut().zip(&kind.tensors) {
                *stepping = has_grad(t);
            }
            kind.begin();
        }
    }
}
