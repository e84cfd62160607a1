//! The scalar program: the per-group, per-step f64 arithmetic (bias corrections, schedules,
//! scalar states) flattened into an instruction list that runs without touching the graph.

use optjit_ir::{FusionPlan, Input, NodeIndex, Op, Target, eval_op};
use std::collections::HashMap;

#[derive(Clone, Debug)]
enum Inst {
    Hyper(usize),
    Step,
    State(usize),
    Const(f64),
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
}

impl ScalarProgram {
    /// Flattens the plan's scalar program. Panics on a node the fusion planner should never
    /// have put there (a bug, reported with the plan text).
    pub(crate) fn new(plan: &FusionPlan) -> ScalarProgram {
        let graph = &plan.graph;
        let mut slot: HashMap<NodeIndex, usize> = HashMap::new();
        let mut insts = Vec::with_capacity(plan.scalar_program.len());
        for &node in &plan.scalar_program {
            let ops: Vec<usize> = graph.operands(node).iter().map(|o| slot[o]).collect();
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
                other @ (Op::Reduce(_) | Op::Input(_)) => {
                    panic!("{other:?} cannot run in the scalar program of\n{plan}")
                }
                op => Inst::Apply(op.clone(), ops),
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
        }
    }

    /// How many scalars each kernel row holds.
    pub(crate) fn n_kernel_scalars(&self) -> usize {
        self.kernel_slots.len()
    }

    /// Runs the program for one group: fills `row` with the kernel scalars (as f32) and returns
    /// the new scalar-state values as (state index, value).
    pub(crate) fn run(
        &self,
        hypers: &[f64],
        step: f64,
        states: &[f64],
        values: &mut Vec<f64>,
        row: &mut [f32],
    ) -> Vec<(usize, f64)> {
        values.clear();
        let mut operands = Vec::with_capacity(3);
        for inst in &self.insts {
            let x = match inst {
                Inst::Hyper(h) => hypers[*h],
                Inst::Step => step,
                Inst::State(s) => states[*s],
                Inst::Const(c) => *c,
                Inst::Apply(op, args) => {
                    operands.clear();
                    operands.extend(args.iter().map(|&a| values[a]));
                    eval_op(op, &operands)
                }
            };
            values.push(x);
        }
        for (dst, &src) in row.iter_mut().zip(&self.kernel_slots) {
            *dst = values[src] as f32;
        }
        self.state_updates
            .iter()
            .map(|&(state, src)| (state, values[src]))
            .collect()
    }
}
