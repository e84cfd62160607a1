//! The scalar program: the per-group, per-step f64 arithmetic (bias corrections, schedules,
//! scalar states) and the per-tensor arithmetic on per-tensor reductions, flattened into an
//! instruction list that runs without touching the graph, in stages: stage 0 before the first
//! kernel, stage k after phase k - 1 has reduced.

use crate::reduce::Reduced;
use optjit_ir::{Class, FusionPlan, Input, NodeIndex, Op, Target, eval_op};
use std::collections::HashMap;

#[derive(Clone, Debug)]
enum Inst {
    Hyper(usize),
    Step,
    State(usize),
    Const(f64),
    /// The result of the step's reduction of this index (in plan order: phase, then slot):
    /// the global one, or the tensor's for a per-tensor instruction.
    Reduced(usize),
    /// An element-wise op on earlier values, evaluated by `optjit_ir::eval_op`.
    Apply(Op, Vec<usize>),
}

/// The host part of a compiled step. Values are indexed by instruction.
#[derive(Clone, Debug)]
pub(crate) struct ScalarProgram {
    insts: Vec<Inst>,
    /// Per instruction: computed once per tensor (Tensor class) rather than once per group.
    per_tensor: Vec<bool>,
    /// Instruction whose value fills each kernel scalar slot.
    kernel_slots: Vec<usize>,
    /// (index into the graph's states, instruction) for each scalar-state update.
    state_updates: Vec<(usize, usize)>,
    /// Each stage's instructions (the plan's scalar nodes, one for one).
    stages: Vec<std::ops::Range<usize>>,
}

impl ScalarProgram {
    /// Flattens the plan's scalar program. Panics on a node the fusion planner should never
    /// have put there (a bug, reported with the plan text).
    pub(crate) fn new(plan: &FusionPlan) -> ScalarProgram {
        let graph = &plan.graph;
        let mut slot: HashMap<NodeIndex, usize> = HashMap::new();
        let reductions: Vec<NodeIndex> = plan.reductions().collect();
        let mut insts = Vec::with_capacity(plan.scalar_program.len());
        let mut per_tensor = Vec::with_capacity(plan.scalar_program.len());
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
            per_tensor.push(graph.node(node).class == Class::Tensor);
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
            per_tensor,
            kernel_slots,
            state_updates,
            stages: (0..plan.stage_ends.len())
                .map(|k| plan.stage_range(k))
                .collect(),
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

    /// Whether kernels read per-tensor values, so that every tensor needs its own row.
    pub(crate) fn rows_per_tensor(&self) -> bool {
        self.kernel_slots.iter().any(|&i| self.per_tensor[i])
    }

    /// The instructions of stage `stage`.
    fn stage(&self, stage: usize) -> std::ops::Range<usize> {
        self.stages[stage].clone()
    }

    /// Runs the per-group instructions of stage `stage` for one group: `values` holds the
    /// group's values of the earlier stages and receives this stage's.
    pub(crate) fn run_group(&self, stage: usize, inputs: &StageInputs<'_>, values: &mut [f64]) {
        for i in self.stage(stage).filter(|&i| !self.per_tensor[i]) {
            values[i] = self.eval(i, inputs, |a| values[a], |r| inputs.reduced.global(r));
        }
    }

    /// Runs the per-tensor instructions of stage `stage` for tensor `tensor` of a group whose
    /// values (this stage's included) are `group`: `values` holds the tensor's own.
    pub(crate) fn run_tensor(
        &self,
        stage: usize,
        tensor: usize,
        inputs: &StageInputs<'_>,
        group: &[f64],
        values: &mut [f64],
    ) {
        for i in self.stage(stage).filter(|&i| self.per_tensor[i]) {
            let operand = |a: usize| match self.per_tensor[a] {
                true => values[a],
                false => group[a],
            };
            let reduced = |r: usize| inputs.reduced.of_tensor(tensor, r);
            values[i] = self.eval(i, inputs, operand, reduced);
        }
    }

    /// Instruction `i`, its operands read through `operand` and reductions through `reduced`.
    fn eval(
        &self,
        i: usize,
        inputs: &StageInputs<'_>,
        operand: impl Fn(usize) -> f64,
        reduced: impl Fn(usize) -> f64,
    ) -> f64 {
        match &self.insts[i] {
            Inst::Hyper(h) => inputs.hypers[*h],
            Inst::Step => inputs.step,
            Inst::State(s) => inputs.states[*s],
            Inst::Const(c) => *c,
            Inst::Reduced(r) => reduced(*r),
            Inst::Apply(op, args) => {
                let mut operands = [0.0; 3];
                for (slot, &a) in operands.iter_mut().zip(args) {
                    *slot = operand(a);
                }
                eval_op(op, &operands[..args.len()])
            }
        }
    }

    /// Fills the slots of `row` (as f32) that stage `stage` computes, from the group's values
    /// and, for per-tensor slots, the tensor's.
    pub(crate) fn fill_row(
        &self,
        stage: usize,
        group: &[f64],
        tensor: Option<&[f64]>,
        row: &mut [f32],
    ) {
        let range = self.stage(stage);
        for (dst, &src) in row.iter_mut().zip(&self.kernel_slots) {
            if range.contains(&src) {
                let value = match (self.per_tensor[src], tensor) {
                    (true, Some(tensor)) => tensor[src],
                    (true, None) => f64::NAN,
                    (false, _) => group[src],
                };
                *dst = value as f32;
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
    /// The step's reductions finished so far.
    pub(crate) reduced: &'a Reduced,
}
