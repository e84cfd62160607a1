//! `Optimizer`: a compiled step bound to tensor shapes and param groups, holding the state, and
//! stepping every tensor of every group through one kernel call per phase.

use crate::buffer::AlignedBuf;
use crate::chunks::{self, ChunkTable};
use crate::error::OptimizerError;
use crate::pipeline::{CompileOptions, Compiled, compile};
use optjit_ir::{Buffer, Class};
use optjit_trace::Definition;
use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// How many times the pipeline ran for this optimizer.
    pub compiles: usize,
    /// Kernel calls per step (one per phase, covering every tensor of every group).
    pub kernels_per_step: usize,
    /// Bytes loaded and stored per element per step (static count from the fusion plan).
    pub bytes_per_elem: usize,
    /// Wall time of the compile, in milliseconds.
    pub compile_ms: f64,
    /// Steps taken.
    pub steps: u64,
}

/// Distance between the 4 KiB offsets of successive state buffers.
const STATE_STAGGER_BYTES: usize = 1024 + 64;

/// Where a kernel buffer's pointer comes from, resolved once at construction.
#[derive(Clone, Copy)]
enum Source {
    Param,
    Grad,
    /// Index into the graph's states.
    State(usize),
}

struct GroupState {
    tensors: Vec<usize>,
    /// Value in force of every declared hyperparameter, in declaration order.
    hypers: Vec<f64>,
    /// Scalar states, indexed like the graph's states (per-element entries unused).
    scalar_states: Vec<f64>,
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
pub struct Optimizer {
    definition: Definition,
    compiled: Arc<Compiled>,
    /// Per phase, the source of each kernel buffer.
    buffer_sources: Vec<Vec<Source>>,
    shapes: Vec<Vec<usize>>,
    lens: Vec<usize>,
    groups: Vec<GroupState>,
    /// `states[tensor][state]`: per-element buffers, indexed like the graph's states.
    states: Vec<Vec<AlignedBuf>>,
    step_count: u64,
    threads: usize,
    stats: Stats,
    scratch: Scratch,
}

#[derive(Default)]
struct Scratch {
    rows: Vec<f32>,
    values: Vec<f64>,
    table: Vec<u64>,
    lens: Vec<usize>,
}

impl Optimizer {
    /// Compiles `definition` and allocates its state for `setup`'s tensors.
    pub fn new(definition: &Definition, setup: Setup) -> Result<Optimizer, OptimizerError> {
        Self::with_options(definition, setup, &CompileOptions::default())
    }

    /// As [`Optimizer::new`], with explicit compile options.
    pub fn with_options(
        definition: &Definition,
        setup: Setup,
        options: &CompileOptions,
    ) -> Result<Optimizer, OptimizerError> {
        let graph = &definition.graph;
        let rule = graph.name.clone();
        let n_tensors = setup.shapes.len();
        let groups = if setup.groups.is_empty() {
            vec![Group {
                tensors: (0..n_tensors).collect(),
                hypers: BTreeMap::new(),
            }]
        } else {
            setup.groups.clone()
        };
        check_partition(&rule, &groups, n_tensors)?;

        let mut group_states = Vec::with_capacity(groups.len());
        for (g, group) in groups.iter().enumerate() {
            let mut values: Vec<f64> = graph.hypers.iter().map(|h| h.default).collect();
            let place = if groups.len() > 1 {
                format!(" in param group {g}")
            } else {
                String::new()
            };
            for (layer, place) in [(&setup.hypers, ""), (&group.hypers, place.as_str())] {
                for (name, &value) in layer {
                    let index = hyper_index(definition, name)?;
                    check_hyper(definition, name, value, place)?;
                    values[index] = value;
                }
            }
            let scalar_states = graph.states.iter().map(|s| s.init).collect();
            group_states.push(GroupState {
                tensors: group.tensors.clone(),
                hypers: values,
                scalar_states,
            });
        }

        let compiled = Arc::new(compile(definition, options)?);
        let buffer_sources = compiled
            .plan
            .phases
            .iter()
            .map(|phase| {
                let source = |buffer: &Buffer| match buffer {
                    Buffer::Param => Source::Param,
                    Buffer::Grad => Source::Grad,
                    Buffer::State(name) => Source::State(
                        graph
                            .states
                            .iter()
                            .position(|s| &s.name == name)
                            .expect("declared state"),
                    ),
                };
                phase.buffers.iter().map(|b| source(&b.buffer)).collect()
            })
            .collect();
        let lens = tensor_lengths(&rule, &setup.shapes)?;
        let states = lens
            .iter()
            .map(|&len| {
                let elem = |s: &optjit_ir::StateDecl| s.class == Class::Elem;
                graph
                    .states
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        // Each state at its own offset modulo 4 KiB (see AlignedBuf::staggered).
                        let stagger = STATE_STAGGER_BYTES * (i + 1) % 4096;
                        AlignedBuf::staggered(if elem(s) { len } else { 0 }, s.init as f32, stagger)
                    })
                    .collect()
            })
            .collect();
        let stats = Stats {
            compiles: 1,
            kernels_per_step: compiled.plan.phases.len(),
            bytes_per_elem: compiled.plan.bytes_per_elem(),
            compile_ms: compiled.compile_time().as_secs_f64() * 1e3,
            steps: 0,
        };
        let threads = match setup.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Optimizer {
            definition: definition.clone(),
            compiled,
            buffer_sources,
            shapes: setup.shapes,
            lens,
            groups: group_states,
            states,
            step_count: 0,
            threads,
            stats,
            scratch: Scratch::default(),
        })
    }

    fn rule(&self) -> &str {
        &self.definition.graph.name
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
        self.groups.len()
    }

    /// The tensor indices of param group `group`.
    pub fn group_tensors(&self, group: usize) -> Option<&[usize]> {
        self.groups.get(group).map(|g| g.tensors.as_slice())
    }

    fn group_index(&self, group: usize) -> Result<usize, OptimizerError> {
        if group < self.groups.len() {
            Ok(group)
        } else {
            Err(OptimizerError::NoSuchGroup {
                rule: self.rule().into(),
                group,
                n_groups: self.groups.len(),
            })
        }
    }

    /// The value of hyperparameter `name` in force for `group`.
    pub fn hyper(&self, group: usize, name: &str) -> Result<f64, OptimizerError> {
        let g = self.group_index(group)?;
        Ok(self.groups[g].hypers[hyper_index(&self.definition, name)?])
    }

    /// Sets hyperparameter `name` for one group (`Some(g)`) or all (`None`). It takes effect
    /// at the next step and never recompiles.
    pub fn set_hyper(
        &mut self,
        group: Option<usize>,
        name: &str,
        value: f64,
    ) -> Result<(), OptimizerError> {
        let index = hyper_index(&self.definition, name)?;
        let place = group
            .map(|g| format!(" in param group {g}"))
            .unwrap_or_default();
        check_hyper(&self.definition, name, value, &place)?;
        match group {
            Some(g) => {
                let g = self.group_index(g)?;
                self.groups[g].hypers[index] = value;
            }
            None => self.groups.iter_mut().for_each(|g| g.hypers[index] = value),
        }
        Ok(())
    }

    /// The per-element state `name` of tensor `tensor` (PyTorch's state names).
    pub fn state(&self, tensor: usize, name: &str) -> Option<&[f32]> {
        let index = self
            .definition
            .graph
            .states
            .iter()
            .position(|s| s.name == name && s.class == Class::Elem)?;
        self.states.get(tensor).map(|s| &*s[index])
    }

    /// The scalar state `name` of param group `group`.
    pub fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        let index = self
            .definition
            .graph
            .states
            .iter()
            .position(|s| s.name == name && s.class == Class::Scalar)?;
        self.groups.get(group).map(|g| g.scalar_states[index])
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step_count
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
        self.check_tensors(&params, &grads)?;
        let step = (self.step_count + 1) as f64;
        let program = &self.compiled.scalar_program;
        let n_scalars = program.n_kernel_scalars().max(1);
        let scratch = &mut self.scratch;
        scratch.rows.resize(self.groups.len() * n_scalars, 0.0);
        let mut state_updates = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            let row = &mut scratch.rows[g * n_scalars..(g + 1) * n_scalars];
            let updates = program.run(
                &group.hypers,
                step,
                &group.scalar_states,
                &mut scratch.values,
                row,
            );
            state_updates.push(updates);
        }

        for (sources, kernel) in self.buffer_sources.iter().zip(&self.compiled.module.fns) {
            scratch.table.clear();
            scratch.lens.clear();
            let n_buffers = sources.len();
            let mut table = ChunkTable {
                words: &mut scratch.table,
                lens: &mut scratch.lens,
                n_buffers,
            };
            let mut base = vec![std::ptr::null_mut::<f32>(); n_buffers];
            for (g, group) in self.groups.iter().enumerate() {
                let row = scratch.rows[g * n_scalars..].as_ptr();
                for &t in &group.tensors {
                    for (slot, source) in base.iter_mut().zip(sources) {
                        *slot = match *source {
                            Source::Param => params[t].as_mut_ptr(),
                            // Gradients are only read: kernels never store to a `grad` buffer.
                            Source::Grad => grads[t].as_ptr().cast_mut(),
                            Source::State(s) => self.states[t][s].as_mut_ptr(),
                        };
                    }
                    table.push_tensor(self.lens[t], row, &base);
                }
            }
            // SAFETY: every pointer comes from a live slice of the tensor's length (checked
            // above); tensors are distinct borrows, so records never overlap; the scalar rows
            // outlive the call.
            unsafe { chunks::run(*kernel, &scratch.table, &scratch.lens, self.threads) };
        }

        for (group, updates) in self.groups.iter_mut().zip(state_updates) {
            for (state, value) in updates {
                group.scalar_states[state] = value;
            }
        }
        self.step_count += 1;
        self.stats.steps = self.step_count;
        Ok(())
    }

    fn check_tensors(&self, params: &[&mut [f32]], grads: &[&[f32]]) -> Result<(), OptimizerError> {
        let rule = self.rule().to_string();
        for (what, got) in [("param", params.len()), ("grad", grads.len())] {
            if got != self.lens.len() {
                return Err(OptimizerError::TensorCount {
                    rule,
                    what,
                    expected: self.lens.len(),
                    got,
                });
            }
        }
        for (tensor, &expected) in self.lens.iter().enumerate() {
            for (what, got) in [
                ("param", params[tensor].len()),
                ("grad", grads[tensor].len()),
            ] {
                if got != expected {
                    let shape = self.shapes[tensor].clone();
                    return Err(OptimizerError::TensorLength {
                        rule,
                        what,
                        tensor,
                        got,
                        expected,
                        shape,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Element counts of `shapes`, refusing any that overflow or exceed what memory can address.
fn tensor_lengths(rule: &str, shapes: &[Vec<usize>]) -> Result<Vec<usize>, OptimizerError> {
    let limit = isize::MAX as usize / (2 * size_of::<f32>());
    shapes
        .iter()
        .enumerate()
        .map(|(tensor, shape)| {
            let len = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            len.filter(|&n| n <= limit)
                .ok_or_else(|| OptimizerError::BadShape {
                    rule: rule.to_string(),
                    tensor,
                    shape: shape.clone(),
                })
        })
        .collect()
}

fn hyper_index(definition: &Definition, name: &str) -> Result<usize, OptimizerError> {
    let hypers = &definition.graph.hypers;
    hypers
        .iter()
        .position(|h| h.name == name)
        .ok_or_else(|| OptimizerError::UnknownHyper {
            rule: definition.graph.name.clone(),
            name: name.to_string(),
            declared: hypers
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn check_hyper(
    definition: &Definition,
    name: &str,
    value: f64,
    place: &str,
) -> Result<(), OptimizerError> {
    let domain = definition.domain(name);
    if domain.contains(value) {
        return Ok(());
    }
    Err(OptimizerError::BadHyper {
        rule: definition.graph.name.clone(),
        name: name.to_string(),
        value,
        expected: domain.to_string(),
        place: place.to_string(),
    })
}

fn check_partition(rule: &str, groups: &[Group], n_tensors: usize) -> Result<(), OptimizerError> {
    let mut owner = vec![None; n_tensors];
    for (g, group) in groups.iter().enumerate() {
        for &t in &group.tensors {
            let problem = match owner.get(t) {
                None => format!("group {g} names tensor {t}, but there are {n_tensors} tensors"),
                Some(Some(first)) => format!("tensor {t} is in group {first} and group {g}"),
                Some(None) => {
                    owner[t] = Some(g);
                    continue;
                }
            };
            return Err(OptimizerError::BadGroups {
                rule: rule.to_string(),
                problem,
            });
        }
    }
    match owner.iter().position(Option::is_none) {
        Some(t) => Err(OptimizerError::BadGroups {
            rule: rule.to_string(),
            problem: format!("tensor {t} is in no group"),
        }),
        None => Ok(()),
    }
}
