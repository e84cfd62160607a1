//! One compiled step over the tensors of one kind, stepped phase by phase so that an optimizer
//! can run the steps of several kinds in lockstep (see [`kinds`]).

use crate::binding::{Binding, Source, StageScratch, buffer_sources, row_width};
use crate::buffer::AlignedBuf;
use crate::chunks::{self, CHUNK_ELEMS, ChunkTable};
use crate::error::OptimizerError;
use crate::optimizer::{Group, Setup};
use crate::pipeline::Compiled;
use crate::reduce::{self, Records, Reduced};
use optjit_ir::{Class, Op, Reduction, Walk};
use optjit_trace::Definition;
use std::sync::Arc;

/// Distance between the 4 KiB offsets of successive state buffers.
const STATE_STAGGER_BYTES: usize = 1024 + 64;

/// Splits the tensors of `shapes` by the step they need: one kind for all of them, unless the
/// definition reads per-column values or the rank, whose steps differ between tensors of two
/// or more dimensions (the definition as it is) and tensors of fewer (one row each: see
/// [`optjit_ir::specialize_one_row`]), as PyTorch's Adafactor groups its tensors. Returns each
/// kind's definition and tensors (ascending), kinds with no tensor left out.
pub(crate) fn kinds(
    definition: &Definition,
    shapes: &[Vec<usize>],
) -> Vec<(Definition, Vec<usize>)> {
    if !optjit_ir::depends_on_rank(&definition.graph) {
        return vec![(definition.clone(), (0..shapes.len()).collect())];
    }
    let of_rank = |keep: &dyn Fn(usize) -> bool| -> Vec<usize> {
        (0..shapes.len())
            .filter(|&t| keep(shapes[t].len()))
            .collect()
    };
    let mut kinds = vec![(definition.clone(), of_rank(&|rank| rank >= 2))];
    for rank in 0..2 {
        let mut one_row = definition.clone();
        one_row.graph = optjit_ir::specialize_one_row(&definition.graph, rank);
        kinds.push((one_row, of_rank(&|r| r == rank)));
    }
    kinds.retain(|(_, tensors)| !tensors.is_empty());
    if kinds.is_empty() {
        kinds.push((definition.clone(), Vec::new()));
    }
    kinds
}

/// The part of `setup` that holds `tensors` (renumbered `0..`): their shapes, and every group
/// with its tensors among them (a group may be left empty).
pub(crate) fn part_setup(setup: &Setup, tensors: &[usize]) -> Setup {
    let mut local = vec![None; setup.shapes.len()];
    for (i, &t) in tensors.iter().enumerate() {
        local[t] = Some(i);
    }
    let groups = match setup.groups.is_empty() {
        true => vec![Group {
            tensors: (0..tensors.len()).collect(),
            hypers: Default::default(),
        }],
        false => setup
            .groups
            .iter()
            .map(|g| Group {
                tensors: g.tensors.iter().filter_map(|&t| local[t]).collect(),
                hypers: g.hypers.clone(),
            })
            .collect(),
    };
    Setup {
        shapes: tensors.iter().map(|&t| setup.shapes[t].clone()).collect(),
        groups,
        hypers: setup.hypers.clone(),
        threads: setup.threads,
    }
}

/// The compiled step of one kind of tensors, its binding and its state.
pub(crate) struct Part {
    /// The optimizer's index of each of this part's tensors.
    pub(crate) tensors: Vec<usize>,
    pub(crate) binding: Binding,
    pub(crate) compiled: Arc<Compiled>,
    /// Per phase, the source of each kernel buffer.
    buffer_sources: Vec<Vec<Source>>,
    /// Per phase, which kernel buffers hold one value per column (see `ChunkTable::push_rows`).
    per_col: Vec<Vec<bool>>,
    /// For each reduction over every tensor (`global_norm`), in order: its reduction index and
    /// the level of the phase that folds it.
    pub(crate) globals: Vec<(usize, usize)>,
    /// `states[tensor][state]`: per-element buffers, indexed like the graph's states, then the
    /// plan's scratch buffers.
    states: Vec<Vec<AlignedBuf>>,
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

impl Part {
    /// The part of `definition`, compiled as `compiled`, for `setup`'s `tensors` (the
    /// optimizer's indices).
    pub(crate) fn new(
        definition: &Definition,
        setup: &Setup,
        tensors: Vec<usize>,
        compiled: Arc<Compiled>,
    ) -> Result<Part, OptimizerError> {
        let mut binding = Binding::new(definition, &part_setup(setup, &tensors))?;
        binding.allocate_factor_states();
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
        let per_col = buffer_sources
            .iter()
            .map(|sources| {
                let column = |s: &Source| matches!(s, Source::ColValue(_));
                sources.iter().map(column).collect()
            })
            .collect();
        let plan = &compiled.plan;
        let mut globals = Vec::new();
        for (p, phase) in plan.phases.iter().enumerate() {
            for (slot, &node) in phase.reductions.iter().enumerate() {
                if plan.graph.node(node).op == Op::Reduce(Reduction::GlobalNorm) {
                    globals.push((plan.first_reduction(p) + slot, phase.level));
                }
            }
        }
        Ok(Part {
            tensors,
            binding,
            compiled,
            buffer_sources,
            per_col,
            globals,
            states,
            scratch: Scratch::default(),
        })
    }

    /// The state `name` of this part's tensor `tensor`.
    pub(crate) fn state(&self, tensor: usize, name: &str) -> Option<&[f32]> {
        let rank = self.binding.views.get(tensor)?.rank;
        let name = self.binding.definition.state_name(name, rank);
        let Some(index) = self.binding.state_index(name, Class::Elem) else {
            return self.binding.factor_state(tensor, name);
        };
        self.states.get(tensor).map(|s| &*s[index])
    }

    /// The level of phase `phase` (see [`optjit_ir::Phase::level`]); phases come in level
    /// order.
    pub(crate) fn level(&self, phase: usize) -> Option<usize> {
        self.compiled.plan.phases.get(phase).map(|p| p.level)
    }

    /// The step's reductions so far.
    pub(crate) fn reduced(&mut self) -> &mut Reduced {
        &mut self.scratch.reduced
    }

    /// Starts a step: no reduction is known yet.
    pub(crate) fn begin(&mut self) {
        let plan = &self.compiled.plan;
        self.scratch.reduced.reset(plan, self.binding.lens.len());
    }

    /// Runs stage `phase` of the scalar program, then phase `phase` over this part's tensors
    /// (`params[i]` and `grads[i]` are its tensor i, lengths checked), then folds its
    /// reductions.
    pub(crate) fn run_phase(
        &mut self,
        phase: usize,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        threads: usize,
    ) {
        let program = &self.compiled.scalar_program;
        let plan = &self.compiled.plan;
        let width = row_width(program);
        let scratch = &mut self.scratch;
        let module = self.compiled.cpu_module().expect("checked at construction");
        let (sources, kernel) = (&self.buffer_sources[phase], module.fns[phase]);
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
            partials: 0,
        };
        let kernel_ir = &self.compiled.kernels[phase];
        let walk = plan.phases[phase].walk;
        let per_col = &self.per_col[phase];
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
                    (Walk::Columns, _) => {
                        let partials = |rows, cols| kernel_ir.column_walk_partials(rows, cols);
                        table.push_columns(t, view, row(0), &base, partials)
                    }
                    (Walk::Elements, true) => table.push_rows(t, view, row, &base, per_col),
                    (Walk::Elements, false) => {
                        table.push_tensor(t, self.binding.lens[t], row(0), &base)
                    }
                }
            }
        }
        // A column walk's records say where their partials go (see `ChunkTable::push_columns`).
        let n_partials = match walk {
            Walk::Elements => plan.phases[phase].reductions.len() * scratch.lens.len(),
            Walk::Columns => table.partials,
        };
        scratch.partials.clear();
        scratch.partials.resize(n_partials, 0.0);
        // SAFETY: every pointer comes from a live slice of the tensor's length (checked by the
        // caller); tensors are distinct borrows, so records never overlap; the scalar rows and
        // column values outlive the call; the partials hold a row per record.
        unsafe {
            chunks::run(
                kernel,
                &scratch.table,
                &scratch.lens,
                threads,
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

    /// Runs the last stage of the scalar program and commits the step.
    pub(crate) fn finish(&mut self) {
        let program = &self.compiled.scalar_program;
        let last = self.compiled.plan.phases.len();
        let scratch = &mut self.scratch;
        self.binding
            .scalar_stage(program, last, &scratch.reduced, &mut scratch.stage);
        let pending = self.binding.pending_step(program, &scratch.stage);
        self.binding.finish_step(pending);
    }
}
