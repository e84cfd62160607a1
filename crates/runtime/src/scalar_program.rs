//! The scalar program: the per-group, per-step f64 arithmetic (bias corrections, schedules,
//! scalar states) flattened into an instruction list that runs without touching the graph.

use optjit_ir::{Binary, Cmp, DType, FusionPlan, Input, NodeIndex, Op, Target, Unary};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug)]
enum Inst {
    Hyper(usize),
    Step,
    State(usize),
    Const(f64),
    Unary(Unary, usize),
    Binary(Binary, usize, usize),
    Fma(usize, usize, usize),
    Cmp(Cmp, usize, usize),
    Select(usize, usize, usize),
    Cast(DType, usize),
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
                Op::Unary(u) => Inst::Unary(*u, ops[0]),
                Op::Binary(b) => Inst::Binary(*b, ops[0], ops[1]),
                Op::Fma => Inst::Fma(ops[0], ops[1], ops[2]),
                Op::Cmp(c) => Inst::Cmp(*c, ops[0], ops[1]),
                Op::Select => Inst::Select(ops[0], ops[1], ops[2]),
                Op::Cast(d) => Inst::Cast(*d, ops[0]),
                other => panic!("{other:?} cannot run in the scalar program of\n{plan}"),
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
        for inst in &self.insts {
            let v = |i: usize| values[i];
            let x = match *inst {
                Inst::Hyper(h) => hypers[h],
                Inst::Step => step,
                Inst::State(s) => states[s],
                Inst::Const(c) => c,
                Inst::Unary(u, a) => unary(u, v(a)),
                Inst::Binary(b, a, c) => binary(b, v(a), v(c)),
                Inst::Fma(a, b, c) => v(a).mul_add(v(b), v(c)),
                Inst::Cmp(c, a, b) => f64::from(u8::from(compare(c, v(a), v(b)))),
                Inst::Select(c, a, b) => {
                    if v(c) != 0.0 {
                        v(a)
                    } else {
                        v(b)
                    }
                }
                Inst::Cast(DType::F32 | DType::F16 | DType::BF16, a) => v(a) as f32 as f64,
                Inst::Cast(_, a) => v(a),
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

/// `torch.sign` semantics: ±0 and NaN map to themselves.
pub(crate) fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

fn unary(op: Unary, x: f64) -> f64 {
    match op {
        Unary::Neg => -x,
        Unary::Sqrt => x.sqrt(),
        Unary::Rsqrt => 1.0 / x.sqrt(),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Abs => x.abs(),
        Unary::Sign => sign(x),
        Unary::Sin => x.sin(),
        Unary::Cos => x.cos(),
        Unary::Floor => x.floor(),
    }
}

fn binary(op: Binary, a: f64, b: f64) -> f64 {
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        // NaN-propagating, as torch.minimum / torch.maximum.
        Binary::Min if a.is_nan() || b.is_nan() => f64::NAN,
        Binary::Max if a.is_nan() || b.is_nan() => f64::NAN,
        Binary::Min => a.min(b),
        Binary::Max => a.max(b),
        Binary::Pow => a.powf(b),
    }
}

fn compare(op: Cmp, a: f64, b: f64) -> bool {
    match op {
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
    }
}
