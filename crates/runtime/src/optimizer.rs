//! `Optimizer`: a compiled step bound to tensor shapes and param groups, holding the state, and
//! stepping every tensor of every group through one kernel call per phase (per part: a kind of
//! tensor of one variant, for a step that depends on the rank or groups that follow different
//! rules: see `variant.rs`).

use crate::cache::CacheUse;
use crate::checkpoint::{self, Checkpoint, Slot};
use crate::checkpoint_file::{CheckpointError, CheckpointView};
use crate::error::OptimizerError;
use crate::kind_step::{KindStep, check_global_levels, step_in_lockstep};
use crate::part::Part;
use crate::pipeline::{CompileOptions, Compiled, compile_cached};
use crate::target::Target;
use crate::variant::GroupTable;
use optjit_ir::DType;
use optjit_trace::Definition;
use std::collections::BTreeMap;
use std::path::Path;
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
///
/// Most definitions compile to one step for every tensor. One that reads per-column values or
/// the rank (Adafactor) compiles one step per kind of tensor: two or more dimensions, one, none
/// (see [`Optimizer::compiled_kinds`]); the steps run phase level by phase level together, and a
/// reduction over every tensor (`clip_grad_norm`'s) adds up all kinds before any uses it.
pub struct Optimizer {
    /// The tensors and param groups, and which parts hold each group.
    table: GroupTable,
    parts: Vec<Part>,
    /// Per tensor: its part and its index there.
    placement: Vec<(usize, usize)>,
    threads: usize,
    stats: Stats,
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
        let (table, plans) = GroupTable::plan(definition, &setup)?;
        let wrong_target = || OptimizerError::WrongTarget {
            rule: table.rule.clone(),
            target: options.target.to_string(),
            expected: "cpu",
        };
        if options.target != Target::Cpu {
            return Err(wrong_target());
        }
        if setup.dtype != DType::F32 {
            return Err(OptimizerError::NotOnTarget {
                rule: table.rule.clone(),
                what: format!("{} tensors (Setup::dtype)", setup.dtype),
                target: "cpu",
            });
        }
        let mut parts = Vec::new();
        let mut part_stats = Vec::new();
        for plan in &plans {
            let started = Instant::now();
            let (compiled, used) = compile_cached(&plan.definition, options)?;
            let elapsed = started.elapsed();
            if compiled.cpu_module().is_none() {
                return Err(wrong_target());
            }
            let elems: usize = plan.tensors.iter().map(|&t| table.lens[t]).sum();
            part_stats.push((Stats::of(&compiled, used, elapsed), elems));
            parts.push(Part::new(plan, compiled)?);
        }
        // Every part must reduce over all tensors at the same levels, to add their sums up.
        let kinds: Vec<&KindStep> = parts.iter().map(|p| &p.kind).collect();
        check_global_levels(&kinds, &table.rule, "cpu")?;
        let mut placement = vec![(0, 0); table.lens.len()];
        for (p, part) in parts.iter().enumerate() {
            for (local, &t) in part.kind.tensors.iter().enumerate() {
                placement[t] = (p, local);
            }
        }
        let threads = match setup.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Optimizer {
            table,
            parts,
            placement,
            threads,
            stats: Stats::combined(&part_stats),
        })
    }

    /// The compiled step (plan, kernels, stage texts) of the first part (the only one unless
    /// the definition depends on the rank or groups follow other rules).
    pub fn compiled(&self) -> &Compiled {
        &self.parts[0].kind.compiled
    }

    /// Every compiled step, one per part (a kind of tensors of one rule), with the optimizer's
    /// indices of the tensors each one steps.
    pub fn compiled_kinds(&self) -> impl Iterator<Item = (&Compiled, &[usize])> {
        self.parts
            .iter()
            .map(|p| (p.kind.compiled.as_ref(), p.kind.tensors.as_slice()))
    }

    /// Counters: compiles, kernels per step, bytes per element, compile time, steps.
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

    /// The state `name` of tensor `tensor` (PyTorch's state names): per element, or per row
    /// or column of each matrix (row-major over the matrices).
    pub fn state(&self, tensor: usize, name: &str) -> Option<&[f32]> {
        let &(part, local) = self.placement.get(tensor)?;
        self.parts[part].state(local, name)
    }

    /// Everything this optimizer carries to its next step (states, scalar states,
    /// hyperparameters, the step count), to save ([`Checkpoint::save`]) and resume from with
    /// [`Optimizer::restore`], here or in a [`crate::CudaOptimizer`].
    pub fn checkpoint(&self) -> Checkpoint {
        let kinds: Vec<&KindStep> = self.parts.iter().map(|p| &p.kind).collect();
        let elem = |part: usize, local: usize, state: usize| {
            Ok(self.parts[part].elem_state(local, state).to_vec())
        };
        checkpoint::capture(&self.table, &kinds, DType::F32, elem)
            .expect("reading host states cannot fail")
    }

    /// Saves the checkpoint to `path`, written straight from the states where they lie: the
    /// same file as `checkpoint().save(path)`, without a copy of the states in memory.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let kinds: Vec<&KindStep> = self.parts.iter().map(|p| &p.kind).collect();
        let layout = checkpoint::layout(self.table.lens.len(), &kinds);
        let groups = checkpoint::groups(&self.table, &kinds);
        let tensors = (layout.iter())
            .map(|states| {
                let mut states: Vec<(&str, &[f32])> = (states.iter())
                    .map(|(name, _, slot)| {
                        let values = match *slot {
                            Slot::Elem { part, local, state } => {
                                self.parts[part].elem_state(local, state)
                            }
                            Slot::Factor { part, local, state } => {
                                &kinds[part].binding.factor_states[local][state]
                            }
                        };
                        (name.as_str(), values)
                    })
                    .collect();
                states.sort_by_key(|&(name, _)| name);
                states
            })
            .collect();
        let (tensor_steps, tensor_scalar_states) =
            checkpoint::tensor_scalars(self.table.lens.len(), &kinds);
        let view = CheckpointView {
            tensor_steps,
            tensor_scalar_states,
            rule: &self.table.rule,
            dtype: DType::F32,
            steps: self.steps(),
            shapes: &self.table.shapes,
            groups: &groups,
            tensors,
        };
        view.save(path.as_ref())
    }

    /// Continues from `checkpoint`, made by an optimizer of the same rule, shapes and param
    /// groups (on any target): the next step is the one that would have followed it there.
    /// Hyperparameters take the checkpoint's values. On error nothing is modified.
    pub fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), OptimizerError> {
        let kinds: Vec<&KindStep> = self.parts.iter().map(|p| &p.kind).collect();
        let layout = checkpoint::check(checkpoint, &self.table, &kinds)?;
        let mut kinds: Vec<&mut KindStep> = self.parts.iter_mut().map(|p| &mut p.kind).collect();
        checkpoint::restore_host(checkpoint, &layout, &self.table, &mut kinds);
        for (saved, states) in checkpoint.tensors.iter().zip(&layout) {
            for (name, _, slot) in states {
                if let Slot::Elem { part, local, state } = *slot {
                    let values = self.parts[part].elem_state_mut(local, state);
                    values.copy_from_slice(&saved[name]);
                }
            }
        }
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

    /// Takes one step: updates every parameter and state in place. `params[i]` and `grads[i]`
    /// are tensor i of the setup. On error nothing is modified.
    pub fn step<P: AsMut<[f32]>, G: AsRef<[f32]>>(
        &mut self,
        params: &mut [P],
        grads: &[G],
    ) -> Result<(), OptimizerError> {
        let grads: Vec<Option<&[f32]>> = grads.iter().map(|g| Some(g.as_ref())).collect();
        self.step_optional(params, &grads)
    }

    /// Takes one step over the tensors that have a gradient (`Some`), as PyTorch skips a
    /// parameter whose `.grad` is `None`: a tensor without one keeps its parameter, states,
    /// step count and scalar states (so its bias corrections, NAdam's `mu_product`, ... go on
    /// from where it stopped), and a reduction over every tensor (`clip_grad_norm`) covers
    /// those that have one. Schedules count the optimizer's steps. On error nothing is
    /// modified.
    pub fn step_optional<P: AsMut<[f32]>, G: AsRef<[f32]>>(
        &mut self,
        params: &mut [P],
        grads: &[Option<G>],
    ) -> Result<(), OptimizerError> {
        // Take each slice once: the pointers handed to the kernels are those of the checked
        // slices, whatever a user's AsMut/AsRef would return on a second call.
        let mut params: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut()).collect();
        let grads: Vec<Option<&[f32]>> = grads
            .iter()
            .map(|g| g.as_ref().map(|g| g.as_ref()))
            .collect();
        let param_lens: Vec<usize> = params.iter().map(|p| p.len()).collect();
        // A missing gradient has no length to check.
        let grad_lens: Vec<usize> = (grads.iter().enumerate())
            .map(|(t, g)| {
                g.map_or_else(
                    || self.table.lens.get(t).copied().unwrap_or(0),
                    <[f32]>::len,
                )
            })
            .collect();
        self.table.check_lengths(&param_lens, &grad_lens)?;
        for part in &mut self.parts {
            let kind = &mut part.kind;
            for (stepping, &t) in kind.stepping.iter_mut().zip(&kind.tensors) {
                *stepping = grads[t].is_some();
            }
        }
        let grads: Vec<&[f32]> = grads.iter().map(|g| g.unwrap_or(&[])).collect();
        // Each part's tensors, in its order (ascending optimizer indices).
        let mut part_params: Vec<Vec<&mut [f32]>> = self.parts.iter().map(|_| Vec::new()).collect();
        let mut part_grads: Vec<Vec<&[f32]>> = self.parts.iter().map(|_| Vec::new()).collect();
        for ((param, grad), &(part, _)) in params.drain(..).zip(grads).zip(&self.placement) {
            part_params[part].push(param);
            part_grads[part].push(grad);
        }
        let threads = self.threads;
        let run = |i: usize, part: &mut Part, phase: usize| {
            part.run_phase(phase, &mut part_params[i], &part_grads[i], threads);
            Ok::<(), std::convert::Infallible>(())
        };
        let Ok(()) = step_in_lockstep(&mut self.parts, run);
        self.stats.steps = self.steps();
        Ok(())
    }
}

/// Reports `metric` to every part's metric-driven schedule (see [`Optimizer::report_metric`]):
/// every part must have one, else nothing changes.
pub(crate) fn report_metric<K: AsMut<KindStep>>(
    parts: &mut [K],
    metric: f64,
) -> Result<(), OptimizerError> {
    for part in parts.iter_mut() {
        let binding = &part.as_mut().binding;
        if binding.definition.on_metric.is_none() {
            return Err(OptimizerError::NoMetricSchedule {
                rule: binding.rule().to_string(),
            });
        }
    }
    for part in parts.iter_mut() {
        part.as_mut().binding.report_metric(metric)?;
    }
    Ok(())
}
