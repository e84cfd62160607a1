//! The scalar program: the per-group, per-step f64 arithmetic (bias corrections, schedules,
//! scalar states) flattened into an instruction list that runs without touching the graph, in
//! stages: stage 0 before the first kernel, stage k after phase k - 1 has reduced.

use optjit_ir::{FusionPlan, Input, NodeIndex, Op, Target, eval_op};
use std::collections::HashMap;

#[derive(Clone, Debug)]
enum Inst {
    Hyper(usize),
    Step,
    State(usize),
    Const(f64),
    /// The result of the step's reduction of this index (in plan order: phase, then slot).
    Reduced(usize),
    /// An element-wise op on earlier values, evaluated by `optjit_ir::eval_op`.
    Apply(Op, Vec<usize>),
}

/// The host part of a compiled step. Values are indexed by instruction.
#[derive(Clone, Debug)]
pub(crate) struct ScalarProgram {
    insts: Vec<Inst>,
    /// Instruction whose value fills each kernel scalar slot.
    kernel_slots: Vec<usize>,
    /// (index into the graph's states, instruction) for each scalar-state update.
    state_updates: Vec<(usize, usize)>,
    /// The plan's `stage_ends` (instructions are the plan's scalar nodes, one for one).
    stage_ends: Vec<usize>,
}

impl ScalarProgram {
    /// Flattens the plan's scalar program. Panics on a node the fusion planner should never
    /// have put there (a bug, reported with the plan text).
    pub(crate) fn new(plan: &FusionPlan) -> ScalarProgram {
        let graph = &plan.graph;
        let mut slot: HashMap<NodeIndex, usize> = HashMap::new();
        let reductions: Vec<NodeIndex> = plan
            .phases
            .iter()
            .flat_map(|p| p.reductions.iter().copied())
            .collect();
        let mut insts = Vec::with_capacity(plan.scalar_program.len());
        for &node in &plan.scalar_program {
            let inst = match &graph.node(node).op {
                Op::Input(Input::Hyper(name)) => Inst::Hyper(
                    graph
                        .hypers
                        .iter()
                        .position(|h| &h.name == name)
                        .expect("declared hyper"),
                ),
                Op::Input(Input::ScalarState(name)) => Inst::State(
                    graph
                        .states
                        .iter()
                        .position(|s| &s.name == name)
                        .expect("declared state"),
                ),
                Op::Input(Input::Step) => Inst::Step,
                Op::Const(c) => Inst::Const(*c),
                Op::Reduce(_) if reductions.contains(&node) => {
                    Inst::Reduced(reductions.iter().position(|&r| r == node).expect("listed"))
                }
                other @ (Op::Reduce(_) | Op::Input(_)) => {
                    panic!("{other:?} cannot run in the scalar program of\n{plan}")
                }
                op => Inst::Apply(
                    op.clone(),
                    graph.operands(node).iter().map(|o| slot[o]).collect(),
                ),
            };
            slot.insert(node, insts.len());
            insts.push(inst);
        }
        let kernel_slots = plan.kernel_scalars.iter().map(|n| slot[n]).collect();
        let state_updates = plan
            .scalar_outputs
            .iter()
            .map(|(target, node)| {
                let Target::ScalarState(name) = target else {
                    panic!("scalar output to {target:?}")
                };
                (
                    graph
                        .states
                        .iter()
                        .position(|s| &s.name == name)
                        .expect("declared state"),
                    slot[node],
                )
            })
            .collect();
        ScalarProgram {
            insts,
            kernel_slots,
            state_updates,
            stage_ends: plan.stage_ends.clone(),
        }
    }

    /// How many values one group's run holds (one per instruction).
    pub(crate) fn n_values(&self) -> usize {
        self.insts.len()
    }

    /// How many scalars each kernel row holds.
    pub(crate) fn n_kernel_scalars(&self) -> usize {
        self.kernel_slots.len()
    }

    /// Runs stage `stage` of the program for one group: `values` holds the group's values of
    /// the earlier stages (and receives this stage's), `reduced` the step's reductions so far.
    /// Fills the slots of `row` that this stage computes (as f32).
    pub(crate) fn run_stage(
        &self,
        stage: usize,
        inputs: &StageInputs<'_>,
        values: &mut [f64],
        row: &mut [f32],
    ) {
        let start = stage.checked_sub(1).map_or(0, |s| self.stage_ends[s]);
        let end = self.stage_ends[stage];
        let mut operands = Vec::with_capacity(3);
        for i in start..end {
            values[i] = match &self.insts[i] {
                Inst::Hyper(h) => inputs.hypers[*h],
                Inst::Step => inputs.step,
                Inst::State(s) => inputs.states[*s],
                Inst::Const(c) => *c,
                Inst::Reduced(r) => inputs.reduced[*r],
                Inst::Apply(op, args) => {
                    operands.clear();
                    operands.extend(args.iter().map(|&a| values[a]));
                    eval_op(op, &operands)
                }
            };
        }
        for (dst, &src) in row.iter_mut().zip(&self.kernel_slots) {
            if (start..end).contains(&src) {
                *dst = values[src] as f32;
            }
        }
    }

    /// The new scalar-state values of a group whose every stage ran, as (state index, value).
    pub(crate) fn state_updates(&self, values: &[f64]) -> Vec<(usize, f64)> {
        self.state_updates
            .iter()
            .map(|&(state, src)| (state, values[src]))
            .collect()
    }
}

/// What one group's stage reads besides earlier values.
pub(crate) struct StageInputs<'a> {
    /// The group's hyperparameters in force, in declaration order.
    pub(crate) hypers: &'a [f64],
    /// The 1-based step being taken.
    pub(crate) step: f64,
    /// The group's scalar states (indexed like the graph's states).
    pub(crate) states: &'a [f64],
    /// The step's reductions finished so far (see [`Inst::Reduced`]).
    pub(crate) reduced: &'a [f64],
}
