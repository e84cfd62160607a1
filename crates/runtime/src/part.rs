//! One compiled step over the tensors of one kind, stepped phase by phase so that an optimizer
//! can run the steps of several kinds, and variants, in lockstep (see `variant.rs`).

use crate::binding::{Source, row_width};
use crate::buffer::AlignedBuf;
use crate::chunks::{self, CHUNK_ELEMS, ChunkTable};
use crate::error::OptimizerError;
use crate::kind_step::KindStep;
use crate::pipeline::Compiled;
use crate::reduce::Records;
use crate::variant::PartPlan;
use optjit_ir::Class;
use std::sync::Arc;

/// Distance between the 4 KiB offsets of successive state buffers.
const STATE_STAGGER_BYTES: usize = 1024 + 64;

/// The compiled step of one kind of tensors on the CPU: its [`KindStep`] and its state.
pub(crate) struct Part {
    pub(crate) kind: KindStep,
    /// `states[tensor][state]`: per-element buffers, indexed like the graph's states, then the
    /// plan's scratch buffers.
    states: Vec<Vec<AlignedBuf>>,
    scratch: Scratch,
}

impl AsMut<KindStep> for Part {
    fn as_mut(&mut self) -> &mut KindStep {
        &mut self.kind
    }
}

impl AsRef<KindStep> for Part {
    fn as_ref(&self) -> &KindStep {
        &self.kind
    }
}

/// A phase's chunk table and partials, reused from phase to phase.
#[derive(Default)]
struct Scratch {
    table: Vec<u64>,
    lens: Vec<usize>,
    owners: Vec<usize>,
    entities: Vec<usize>,
    partials: Vec<f64>,
}

impl Part {
    /// The part `plan`, compiled as `compiled`.
    pub(crate) fn new(plan: &PartPlan, compiled: Arc<Compiled>) -> Result<Part, OptimizerError> {
        let kind = KindStep::new(plan, compiled)?;
        let graph = &plan.definition.graph;
        let temps = kind.compiled.plan.temps;
        let states = kind
            .binding
            .lens
            .iter()
            .map(|&len| {
                // The states, then the plan's scratch buffers (see `Source::State`).
                let inits = graph.states.iter().map(|s| match s.class {
                    Class::Elem => (len, s.init as f32),
                    _ => (0, 0.0),
                });
                let scratch = std::iter::repeat_n((len, 0.0), temps);
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
        Ok(Part {
            kind,
            states,
            scratch: Scratch::default(),
        })
    }

    /// The state `name` of this part's tensor `tensor`.
    pub(crate) fn state(&self, tensor: usize, name: &str) -> Option<&[f32]> {
        let binding = &self.kind.binding;
        let rank = binding.views.get(tensor)?.rank;
        let name = binding.definition.state_name(name, rank);
        let Some(index) = binding.state_index(name, Class::Elem) else {
            return binding.factor_state(tensor, name);
        };
        self.states.get(tensor).map(|s| &*s[index])
    }

    /// The per-element state with index `state` among the graph's of this part's tensor
    /// `tensor`.
    pub(crate) fn elem_state(&self, tensor: usize, state: usize) -> &[f32] {
        &self.states[tensor][state]
    }

    /// As [`Part::elem_state`], to write.
    pub(crate) fn elem_state_mut(&mut self, tensor: usize, state: usize) -> &mut [f32] {
        &mut self.states[tensor][state]
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
        self.kind.scalar_stage(phase);
        let kind = &self.kind;
        let width = row_width(&kind.compiled.scalar_program);
        let module = kind.compiled.cpu_module().expect("checked at construction");
        let scratch = &mut self.scratch;
        scratch.table.clear();
        scratch.lens.clear();
        scratch.owners.clear();
        scratch.entities.clear();
        let mut table = ChunkTable {
            words: &mut scratch.table,
            lens: &mut scratch.lens,
            owners: &mut scratch.owners,
            entities: &mut scratch.entities,
            n_buffers: kind.buffer_sources[phase].len(),
            chunk_elems: CHUNK_ELEMS,
            elem_bytes: &kind.buffer_bytes[phase],
            partials: 0,
        };
        let (rows, cols) = (&kind.stage.rows, &kind.stage.cols);
        let states = &mut self.states;
        let address = |t: usize, source: Source| match source {
            Source::Param => params[t].as_mut_ptr() as u64,
            // Gradients are only read: kernels never store to a `grad` buffer.
            Source::Grad => grads[t].as_ptr() as u64,
            Source::State(s) => states[t][s].as_mut_ptr() as u64,
            Source::ColValue(c) => cols[t][c].as_ptr() as u64,
        };
        let row = |index: usize| rows[index * width..].as_ptr() as u64;
        kind.push_records(phase, &mut table, address, row);
        let n_partials = kind.n_partials(phase, &table);
        scratch.partials.clear();
        scratch.partials.resize(n_partials, 0.0);
        // SAFETY: every pointer comes from a live slice of the tensor's length (checked by the
        // caller; params and states are exclusively borrowed through `self` and `params`, so
        // the kernel may write them); tensors are distinct, so records never overlap; the
        // scalar rows and column values outlive the call; the partials are sized for the table.
        unsafe {
            chunks::run(
                module.fns[phase],
                &scratch.table,
                &scratch.lens,
                threads,
                &mut scratch.partials,
            )
        };
        let records = Records {
            owners: &scratch.owners,
            entities: &scratch.entities,
            lens: &scratch.lens,
        };
        self.kind.finish_phase(phase, &scratch.partials, &records);
    }
}
