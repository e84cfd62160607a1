//! The host's half of a reduction: folding a phase's per-chunk partials, in chunk order, into
//! the values the next stage of the scalar program reads (one per step, one per tensor, or one
//! per row or column of each tensor).

use crate::view::View;
use optjit_ir::{FusionPlan, Op, Reduction, Walk};
use optjit_kernels_gen::reduce_op;
use optjit_kernels_gen::{ReduceScope, column_walk_scope};

/// The finished reductions of a step so far, by reduction index (the plan's phases in order,
/// then partial slots): `global_norm` once, per-tensor reductions once per tensor.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reduced {
    n: usize,
    global: Vec<f64>,
    /// Before the final square root: what [`Reduced::merge_global`] adds up across steps of
    /// several kinds.
    global_sums: Vec<f64>,
    /// Tensor-major: reduction `r` of tensor `t` at `t * n + r`.
    per_tensor: Vec<f64>,
    /// Row and column means, tensor-major like `per_tensor`: one value per row (or column) of
    /// every matrix of the tensor (empty for other reductions).
    per_entity: Vec<Vec<f64>>,
}

impl Reduced {
    /// Room for every reduction of `plan` over `n_tensors` tensors, all unknown (NaN).
    pub(crate) fn reset(&mut self, plan: &FusionPlan, n_tensors: usize) {
        self.n = plan.reductions().count();
        self.global.clear();
        self.global.resize(self.n, f64::NAN);
        self.global_sums.clear();
        self.global_sums.resize(self.n, f64::NAN);
        self.per_tensor.clear();
        self.per_tensor.resize(self.n * n_tensors, f64::NAN);
        self.per_entity.resize(self.n * n_tensors, Vec::new());
    }

    /// Reduction `r` over every tensor.
    pub(crate) fn global(&self, r: usize) -> f64 {
        self.global[r]
    }

    /// The sum of squares of global reduction `r` (before its square root).
    pub(crate) fn global_sum(&self, r: usize) -> f64 {
        self.global_sums[r]
    }

    /// Sets global reduction `r` from `sum`, its sum of squares over every tensor (the steps of
    /// all kinds of tensors together).
    pub(crate) fn merge_global(&mut self, r: usize, sum: f64) {
        self.global_sums[r] = sum;
        self.global[r] = sum.sqrt();
    }

    /// Reduction `r` of tensor `t`.
    pub(crate) fn of_tensor(&self, t: usize, r: usize) -> f64 {
        self.per_tensor[t * self.n + r]
    }

    /// Row or column mean `r` of tensor `t` at row (or column) `e` over all its matrices.
    pub(crate) fn of_entity(&self, t: usize, r: usize, e: usize) -> f64 {
        self.per_entity[t * self.n + r][e]
    }
}

/// Where each record of a phase's chunk table lies: its tensor and, when records never cross a
/// row, the row (or, in a column walk, the column) over all the tensor's matrices.
pub(crate) struct Records<'a> {
    /// Per record: its tensor.
    pub(crate) owners: &'a [usize],
    /// Per record: its row or column (empty when records are not row-aligned).
    pub(crate) entities: &'a [usize],
    /// Per record: its element count.
    pub(crate) lens: &'a [usize],
}

/// Finishes the reductions of phase `phase` from `partials` (one row of
/// `plan.phases[phase].reductions.len()` partials per chunk record, in record order, or in a
/// column walk the record's partials per record, row or column, see `ChunkAbi`);
/// `records` says where each record lies, `lens[t]` is the element count of tensor `t` and
/// `views[t]` its view (needed for row and column means only).
pub(crate) fn finish_phase(
    plan: &FusionPlan,
    phase: usize,
    partials: &[f64],
    records: &Records<'_>,
    lens: &[usize],
    views: &[View],
    reduced: &mut Reduced,
) {
    let owners = records.owners;
    let walk = plan.phases[phase].walk;
    let reductions = &plan.phases[phase].reductions;
    let first = plan.first_reduction(phase);
    for (slot, &node) in reductions.iter().enumerate() {
        let Op::Reduce(reduction) = plan.graph.node(node).op else {
            unreachable!("a phase reduces only Reduce nodes")
        };
        let op = reduce_op(reduction);
        let r = first + slot;
        let column = partials.iter().skip(slot).step_by(reductions.len());
        if reduction == Reduction::GlobalNorm {
            let folded = match walk {
                Walk::Elements => column.fold(op.identity(), |acc, &p| op.combine(acc, p)),
                Walk::Columns => {
                    reduced.global_sums[r] = op.identity();
                    fold_column_walk(plan, phase, slot, partials, records, views, reduced);
                    reduced.global_sums[r]
                }
            };
            reduced.global_sums[r] = folded;
            reduced.global[r] = folded.sqrt();
            continue;
        }
        if matches!(reduction, Reduction::RowMean | Reduction::ColMean) {
            let rows = reduction == Reduction::RowMean;
            for (t, view) in views.iter().enumerate() {
                let count = match rows {
                    true => view.total_rows(),
                    false => view.total_cols(),
                };
                let sums = &mut reduced.per_entity[t * reduced.n + r];
                sums.clear();
                sums.resize(count, op.identity());
            }
            if walk == Walk::Elements {
                for ((&owner, &e), &p) in owners.iter().zip(records.entities).zip(column) {
                    let acc = &mut reduced.per_entity[owner * reduced.n + r][e];
                    *acc = op.combine(*acc, p);
                }
            } else {
                fold_column_walk(plan, phase, slot, partials, records, views, reduced);
            }
            for (t, view) in views.iter().enumerate() {
                let over = match rows {
                    true => view.cols,
                    false => view.rows,
                };
                // The mean of nothing is NaN (0 / 0), as for `mean`.
                for acc in &mut reduced.per_entity[t * reduced.n + r] {
                    *acc /= over as f64;
                }
            }
            continue;
        }
        for t in 0..lens.len() {
            reduced.per_tensor[t * reduced.n + r] = op.identity();
        }
        if walk == Walk::Elements {
            for (&owner, &p) in owners.iter().zip(column) {
                let acc = &mut reduced.per_tensor[owner * reduced.n + r];
                *acc = op.combine(*acc, p);
            }
        } else {
            fold_column_walk(plan, phase, slot, partials, records, views, reduced);
        }
        for (t, &len) in lens.iter().enumerate() {
            let acc = &mut reduced.per_tensor[t * reduced.n + r];
            *acc = match reduction {
                Reduction::Norm => acc.sqrt(),
                // The mean of no elements is NaN, as 0 / 0 (the reference interpreter agrees).
                Reduction::Mean => *acc / len as f64,
                Reduction::Sum | Reduction::MaxAbs => *acc,
                Reduction::GlobalNorm | Reduction::RowMean | Reduction::ColMean => {
                    unreachable!("handled above")
                }
                Reduction::RowsMean => unreachable!("the host computes rows_mean"),
            };
        }
    }
}

/// Folds reduction slot `slot` of a column walk's partials (see `ChunkAbi`: each record's
/// partials start where `ChunkTable::push_columns` counted them, slot after slot) into
/// `reduced`, in record order: a row mean's rows and a column mean's columns into the tensor's
/// per-row or per-column sums (set up by the caller), anything else into the tensor's value or
/// the global sum of squares.
fn fold_column_walk(
    plan: &FusionPlan,
    phase: usize,
    slot: usize,
    partials: &[f64],
    records: &Records<'_>,
    views: &[View],
    reduced: &mut Reduced,
) {
    let reductions = &plan.phases[phase].reductions;
    let kind = |node| match plan.graph.node(node).op {
        Op::Reduce(reduction) => reduction,
        _ => unreachable!("a phase reduces only Reduce nodes"),
    };
    let r = plan.first_reduction(phase) + slot;
    let op = reduce_op(kind(reductions[slot]));
    let mut at = 0;
    let records = records
        .owners
        .iter()
        .zip(records.entities)
        .zip(records.lens);
    for ((&owner, &first), &len) in records {
        let view = &views[owner];
        // A record is whole rows of one matrix (`ChunkTable::push_columns`).
        let (width, row) = (view.cols, first / view.cols);
        let rows = len / width;
        let size = |s: usize| column_walk_scope(kind(reductions[s])).partials(rows, width);
        let own = at + (0..slot).map(size).sum::<usize>();
        at += (0..reductions.len()).map(size).sum::<usize>();
        let combine = |acc: &mut f64, p: f64| *acc = op.combine(*acc, p);
        match (
            column_walk_scope(kind(reductions[slot])),
            kind(reductions[slot]),
        ) {
            (ReduceScope::Row, _) => {
                let sums = &mut reduced.per_entity[owner * reduced.n + r];
                for (acc, &p) in sums[row..row + rows].iter_mut().zip(&partials[own..]) {
                    combine(acc, p);
                }
            }
            (ReduceScope::Column, _) => {
                let column = (row / view.rows) * view.cols;
                let sums = &mut reduced.per_entity[owner * reduced.n + r];
                for (acc, &p) in sums[column..column + width]
                    .iter_mut()
                    .zip(&partials[own..])
                {
                    combine(acc, p);
                }
            }
            (ReduceScope::Record, Reduction::GlobalNorm) => {
                combine(&mut reduced.global_sums[r], partials[own]);
            }
            (ReduceScope::Record, _) => {
                combine(
                    &mut reduced.per_tensor[owner * reduced.n + r],
                    partials[own],
                );
            }
        }
    }
}
