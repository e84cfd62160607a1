//! What the CPU and CUDA optimizers share to step one kind of tensors (see `part::kinds`):
//! the compiled step with its binding, scalar stages and reductions, the records of each
//! phase's chunk table, and the lockstep that runs several kinds phase level by phase level.

use crate::binding::{Binding, Source, StageScratch, buffer_sources};
use crate::chunks::ChunkTable;
use crate::error::OptimizerError;
use crate::pipeline::Compiled;
use crate::reduce::{self, Records, Reduced};
use crate::variant::PartPlan;
use optjit_ir::{Op, Reduction, Walk};
use std::sync::Arc;

/// One kind's compiled step and everything about it that does not depend on the target.
pub(crate) struct KindStep {
    /// The optimizer's index of each of this kind's tensors (ascending).
    pub(crate) tensors: Vec<usize>,
    /// The variant (update rule) this kind belongs to (see `variant.rs`).
    pub(crate) variant: usize,
    pub(crate) binding: Binding,
    pub(crate) compiled: Arc<Compiled>,
    /// Per phase, the source of each kernel buffer.
    pub(crate) buffer_sources: Vec<Vec<Source>>,
    /// Per phase, which kernel buffers hold one value per column (see `ChunkTable::push_rows`).
    per_col: Vec<Vec<bool>>,
    /// Per phase, the bytes of one stored element of each kernel buffer (`Kernel::storage`).
    pub(crate) buffer_bytes: Vec<Vec<usize>>,
    /// For each reduction over every tensor (`global_norm`), in order: its reduction index and
    /// the level of the phase that folds it.
    pub(crate) globals: Vec<(usize, usize)>,
    /// The scalar program's rows and column values of the stage that ran last.
    pub(crate) stage: StageScratch,
    /// Per tensor of this kind, whether it takes the next step (has a gradient).
    pub(crate) stepping: Vec<bool>,
    /// The step's reductions so far.
    pub(crate) reduced: Reduced,
}

impl AsRef<KindStep> for KindStep {
    fn as_ref(&self) -> &KindStep {
        self
    }
}

impl AsMut<KindStep> for KindStep {
    fn as_mut(&mut self) -> &mut KindStep {
        self
    }
}

impl KindStep {
    /// The step of the part `plan`, compiled as `compiled`, with its row and column states
    /// allocated.
    pub(crate) fn new(
        part: &PartPlan,
        compiled: Arc<Compiled>,
    ) -> Result<KindStep, OptimizerError> {
        let definition = &part.definition;
        let mut binding = Binding::new(definition, &part.setup)?;
        binding.allocate_factor_states()?;
        let buffer_sources = buffer_sources(definition, &compiled.plan);
        let per_col = buffer_sources
            .iter()
            .map(|sources| {
                let column = |s: &Source| matches!(s, Source::ColValue(_));
                sources.iter().map(column).collect()
            })
            .collect();
        let buffer_bytes = (compiled.kernels.iter())
            .map(|k| {
                (0..k.buffers.len())
                    .map(|b| k.storage(b).size_bytes())
                    .collect()
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
        Ok(KindStep {
            tensors: part.tensors.clone(),
            variant: part.variant,
            binding,
            compiled,
            buffer_sources,
            per_col,
            buffer_bytes,
            globals,
            stage: StageScratch::default(),
            stepping: vec![true; part.tensors.len()],
            reduced: Reduced::default(),
        })
    }

    /// The level of phase `phase` (see [`optjit_ir::Phase::level`]); phases come in level
    /// order.
    pub(crate) fn level(&self, phase: usize) -> Option<usize> {
        self.compiled.plan.phases.get(phase).map(|p| p.level)
    }

    /// Starts a step over the tensors marked in `stepping`: no reduction is known yet, and the
    /// cohorts (see `binding::Cohort`) are formed, once for the whole step.
    pub(crate) fn begin(&mut self) {
        let plan = &self.compiled.plan;
        self.reduced.reset(plan, self.binding.lens.len());
        self.binding.form_cohorts(&self.stepping, &mut self.stage);
    }

    /// Runs stage `stage` of the scalar program into `self.stage`.
    pub(crate) fn scalar_stage(&mut self, stage: usize) {
        let program = &self.compiled.scalar_program;
        (self.binding).scalar_stage(program, stage, &self.reduced, &mut self.stage);
    }

    /// Adds to `table` the records of phase `phase` over every tensor of this kind: `address`
    /// gives the address of element 0 of a tensor's buffer, `row` that of the scalar row with
    /// the given index (see `Binding::row_of`). Tensors without elements add nothing.
    pub(crate) fn push_records(
        &self,
        phase: usize,
        table: &mut ChunkTable<'_>,
        mut address: impl FnMut(usize, Source) -> u64,
        row: impl Fn(usize) -> u64,
    ) {
        let program = &self.compiled.scalar_program;
        let kernel = &self.compiled.kernels[phase];
        let walk = self.compiled.plan.phases[phase].walk;
        let (sources, per_col) = (&self.buffer_sources[phase], &self.per_col[phase]);
        let mut base = vec![0u64; sources.len()];
        for group in &self.binding.groups {
            for &t in &group.tensors {
                let stage = &self.stage;
                if self.binding.lens[t] == 0 || self.binding.row_of(program, stage, t, 0).is_none()
                {
                    continue; // nothing to step, or no gradient
                }
                for (slot, &source) in base.iter_mut().zip(sources) {
                    *slot = address(t, source);
                }
                let row_of = |r: usize| {
                    let index = self.binding.row_of(program, stage, t, r);
                    row(index.expect("a stepping tensor has rows"))
                };
                let view = &self.binding.views[t];
                match (walk, program.rows_per_row()) {
                    (Walk::Columns, _) => {
                        let partials = |rows, cols| kernel.column_walk_partials(rows, cols);
                        table.push_columns(t, view, row_of(0), &base, partials)
                    }
                    (Walk::Elements, true) => table.push_rows(t, view, row_of, &base, per_col),
                    (Walk::Elements, false) => {
                        table.push_tensor(t, self.binding.lens[t], row_of(0), &base)
                    }
                }
            }
        }
    }

    /// How many partials phase `phase` writes over `table`'s records (zero-filled by the caller:
    /// a column walk adds into its column partials).
    pub(crate) fn n_partials(&self, phase: usize, table: &ChunkTable<'_>) -> usize {
        match self.compiled.plan.phases[phase].walk {
            Walk::Elements => self.compiled.plan.phases[phase].reductions.len() * table.lens.len(),
            Walk::Columns => table.partials,
        }
    }

    /// Folds the partials phase `phase` wrote over `records` into the step's reductions.
    pub(crate) fn finish_phase(&mut self, phase: usize, partials: &[f64], records: &Records<'_>) {
        let (lens, views) = (&self.binding.lens, &self.binding.views);
        let plan = &self.compiled.plan;
        reduce::finish_phase(
            plan,
            phase,
            partials,
            records,
            lens,
            views,
            &mut self.reduced,
        );
    }

    /// Runs the last stage of the scalar program and commits the step.
    pub(crate) fn finish(&mut self) {
        self.scalar_stage(self.compiled.plan.phases.len());
        let program = &self.compiled.scalar_program;
        let pending = self.binding.pending_step(program, &self.stage);
        self.binding.finish_step(pending, &self.stage);
    }
}

/// Refuses kinds whose reductions over every tensor sit at different phase levels: their sums
/// could not be added up before any kind uses them.
pub(crate) fn check_global_levels(
    kinds: &[&KindStep],
    rule: &str,
    target: &'static str,
) -> Result<(), OptimizerError> {
    let levels =
        |kind: &KindStep| -> Vec<usize> { kind.globals.iter().map(|&(_, level)| level).collect() };
    let Some(first) = kinds.first() else {
        return Ok(());
    };
    match kinds.iter().find(|k| levels(k) != levels(first)) {
        None => Ok(()),
        Some(other) => Err(OptimizerError::NotOnTarget {
            rule: rule.to_string(),
            what: format!(
                "reductions over every tensor at different phase levels for tensors of different kinds or rules ({:?} and {:?}; every rule of the param groups must clip, or none)",
                levels(first),
                levels(other)
            ),
            target,
        }),
    }
}

/// Runs one step of every part (a kind's step on some target), begun (`KindStep::begin`): each
/// part's phases of level 0,
/// then of level 1, and so on, calling `run(i, parts[i], phase)` for each; after each level,
/// the sums of the reductions over every tensor folded at that level are added up in part
/// order and every part gets the total. Stops at the first error.
pub(crate) fn step_in_lockstep<P: AsMut<KindStep>, E>(
    parts: &mut [P],
    mut run: impl FnMut(usize, &mut P, usize) -> Result<(), E>,
) -> Result<(), E> {
    let mut next = vec![0; parts.len()];
    let mut level = 0;
    while (parts.iter_mut().zip(&next)).any(|(p, &n)| p.as_mut().level(n).is_some()) {
        for (i, (part, next)) in parts.iter_mut().zip(&mut next).enumerate() {
            while part.as_mut().level(*next) == Some(level) {
                run(i, part, *next)?;
                *next += 1;
            }
        }
        if parts.len() > 1 {
            merge_globals(parts, level);
        }
        level += 1;
    }
    parts.iter_mut().for_each(|p| p.as_mut().finish());
    Ok(())
}

/// Adds up, in part order, the sums of squares of the reductions over every tensor that phases
/// of level `level` folded, and gives every part the total.
fn merge_globals<P: AsMut<KindStep>>(parts: &mut [P], level: usize) {
    let n = parts.first_mut().map_or(0, |p| p.as_mut().globals.len());
    for k in 0..n {
        if parts[0].as_mut().globals[k].1 != level {
            continue;
        }
        let total: f64 = (parts.iter_mut())
            .map(|part| {
                let kind = part.as_mut();
                kind.reduced.global_sum(kind.globals[k].0)
            })
            .sum();
        for part in parts.iter_mut() {
            let kind = part.as_mut();
            let r = kind.globals[k].0;
            kind.reduced.merge_global(r, total);
        }
    }
}
