//! The host's half of a reduction: folding a phase's per-chunk partials, in chunk order, into
//! the values the next stage of the scalar program reads.

use optjit_ir::{FusionPlan, Op, Reduction};
use optjit_kernels_gen::reduce_op;

/// Appends to `reduced` the results of phase `phase`'s reductions, from `partials` (one row of
/// `plan.phases[phase].reductions.len()` partials per chunk record, in record order).
///
/// Only reductions over every tensor (`global_norm`) reach here: the planner refuses
/// per-tensor ones.
pub(crate) fn finish_phase(
    plan: &FusionPlan,
    phase: usize,
    partials: &[f64],
    reduced: &mut Vec<f64>,
) {
    let reductions = &plan.phases[phase].reductions;
    for (slot, &node) in reductions.iter().enumerate() {
        let Op::Reduce(reduction) = plan.graph.node(node).op else {
            unreachable!("a phase reduces only Reduce nodes")
        };
        let op = reduce_op(reduction);
        let folded = partials
            .iter()
            .skip(slot)
            .step_by(reductions.len())
            .fold(op.identity(), |acc, &p| op.combine(acc, p));
        reduced.push(match reduction {
            Reduction::GlobalNorm => folded.sqrt(),
            other => unreachable!("the planner refuses per-tensor {other:?}"),
        });
    }
}
