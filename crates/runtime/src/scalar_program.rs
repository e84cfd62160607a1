//! The scalar program: the per-group, per-step f64 arithmetic (bias corrections, schedules,
//! scalar states), the per-tensor arithmetic on per-tensor reductions and the per-matrix,
//! per-row and per-column arithmetic of factored values, flattened into an instruction list that
//! runs without touching the graph, in stages: stage p before phase p, the last after every
//! phase.

use crate::reduce::Reduced;
use crate::view::View;
use optjit_ir::{Class, FusionPlan, Input, NodeIndex, Op, Reduction, Target, eval_op};
use std::collections::HashMap;

#[derive(Clone, Debug)]
enum Inst {
    Hyper(usize),
    /// The tensors' step count (see `StageInputs::step`).
    Step,
    /// The optimizer's step count.
    OptimizerStep,
    /// A scalar state, or (in a per-row or per-column instruction) a row or column state, by
    /// index into the graph's states.
    State(usize),
    /// The tensor's number of dimensions.
    Rank,
    Const(f64),
    /// The mean over each matrix's rows of a per-row value.
    RowsMean(usize),
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
    /// Per instruction: how often it is computed.
    class: Vec<Class>,
    /// Instruction whose value fills each kernel scalar slot.
    kernel_slots: Vec<usize>,
    /// Instruction whose value fills each column-value buffer.
    col_slots: Vec<usize>,
    /// (index into the graph's states, instruction) for each scalar-state update.
    state_updates: Vec<(usize, usize)>,
    /// (index into the graph's states, instruction) for each row- or column-state update.
    factor_updates: Vec<(usize, usize)>,
    /// Whether kernels read a row of scalars per row of each tensor.
    rows_per_row: bool,
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
        let mut class = Vec::with_capacity(plan.scalar_program.len());
        let state = |name: &str| {
            graph
                .states
                .iter()
                .position(|s| s.name == name)
                .expect("declared state")
        };
        for &node in &plan.scalar_program {
            let inst = match &graph.node(node).op {
                Op::Input(Input::Hyper(name)) => Inst::Hyper(
                    graph
                        .hypers
                        .iter()
                        .position(|h| &h.name == name)
                        .expect("declared hyper"),
                ),
                Op::Input(
                    Input::ScalarState(name) | Input::RowState(name) | Input::ColState(name),
                ) => Inst::State(state(name)),
                Op::Input(Input::Step) => Inst::Step,
                Op::Input(Input::OptimizerStep) => Inst::OptimizerStep,
                Op::Input(Input::Rank) => Inst::Rank,
                Op::Reduce(Reduction::RowsMean) => Inst::RowsMean(slot[&graph.operands(node)[0]]),
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
            class.push(graph.node(node).class);
        }
        let kernel_slots = plan.kernel_scalars.iter().map(|n| slot[n]).collect();
        let col_slots = plan.col_values.iter().map(|n| slot[n]).collect();
        let (mut state_updates, mut factor_updates) = (Vec::new(), Vec::new());
        for (target, node) in &plan.scalar_outputs {
            match target {
                Target::ScalarState(name) => state_updates.push((state(name), slot[node])),
                Target::State(name) => factor_updates.push((state(name), slot[node])),
                Target::Param => panic!("scalar output to param in\n{plan}"),
            }
        }
        ScalarProgram {
            insts,
            class,
            kernel_slots,
            col_slots,
            state_updates,
            factor_updates,
            rows_per_row: plan.has_rows(),
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
        self.kernel_slots
            .iter()
            .any(|&i| self.class[i] == Class::Tensor)
    }

    /// Whether the step has per-matrix, per-row or per-column values: then every row of every
    /// tensor has its own row of kernel scalars, and records never cross a row.
    pub(crate) fn rows_per_row(&self) -> bool {
        self.rows_per_row
    }

    /// How many column-value buffers kernels read.
    pub(crate) fn n_col_values(&self) -> usize {
        self.col_slots.len()
    }

    /// The instructions of stage `stage`.
    fn stage(&self, stage: usize) -> std::ops::Range<usize> {
        self.stages[stage].clone()
    }

    /// Runs the per-group instructions of stage `stage` for one group: `values` holds the
    /// group's values of the earlier stages and receives this stage's.
    pub(crate) fn run_group(&self, stage: usize, inputs: &StageInputs<'_>, values: &mut [f64]) {
        for i in self
            .stage(stage)
            .filter(|&i| self.class[i] == Class::Scalar)
        {
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
        for i in self
            .stage(stage)
            .filter(|&i| self.class[i] == Class::Tensor)
        {
            let operand = |a: usize| match self.class[a] {
                Class::Tensor => values[a],
                _ => group[a],
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
            Inst::OptimizerStep => inputs.optimizer_step,
            Inst::State(s) => inputs.states[*s],
            Inst::Rank | Inst::RowsMean(_) => unreachable!("run by run_factors"),
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
                let value = match (self.class[src], tensor) {
                    (Class::Tensor, Some(tensor)) => tensor[src],
                    (Class::Tensor, None) => f64::NAN,
                    _ => group[src],
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

impl ScalarProgram {
    /// Runs the per-tensor, per-matrix, per-row and per-column instructions of stage `stage`
    /// for tensor `tensor` (seen as `view`, its row and column states `states`, indexed like the
    /// graph's states) of a group whose values are `group`: `tensor_values` holds the tensor's
    /// own values and `factors` its per-matrix, per-row and per-column ones.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_factors(
        &self,
        stage: usize,
        tensor: usize,
        view: &View,
        inputs: &StageInputs<'_>,
        group: &[f64],
        tensor_values: &mut [f64],
        states: &[Vec<f32>],
        factors: &mut FactorValues,
    ) {
        factors.size(&self.class, view);
        for i in self.stage(stage) {
            let class = self.class[i];
            if class == Class::Tensor {
                tensor_values[i] = match self.insts[i] {
                    Inst::Rank => view.rank as f64,
                    _ => {
                        let operand = |a: usize| match self.class[a] {
                            Class::Tensor => tensor_values[a],
                            _ => group[a],
                        };
                        let reduced = |r: usize| inputs.reduced.of_tensor(tensor, r);
                        self.eval(i, inputs, operand, reduced)
                    }
                };
                continue;
            }
            for e in 0..factors.count(i) {
                // The matrix that entity `e` of `class` belongs to.
                let matrix = match class {
                    Class::Matrix => e,
                    Class::Row => e / view.rows.max(1),
                    _ => e / view.cols.max(1),
                };
                let value = match self.insts[i] {
                    Inst::RowsMean(a) => {
                        let own = &factors.values(a)[matrix * view.rows..][..view.rows];
                        own.iter().sum::<f64>() / view.rows as f64
                    }
                    Inst::State(s) => states[s].get(e).map_or(f64::NAN, |&v| f64::from(v)),
                    _ => {
                        let operand = |a: usize| match self.class[a] {
                            Class::Scalar => group[a],
                            Class::Tensor => tensor_values[a],
                            Class::Matrix => factors.values(a)[matrix],
                            Class::Row | Class::Col => factors.values(a)[e],
                            Class::Elem => unreachable!("the host computes no per-element value"),
                        };
                        let reduced = |r: usize| inputs.reduced.of_entity(tensor, r, e);
                        self.eval(i, inputs, operand, reduced)
                    }
                };
                factors.values_mut(i)[e] = value;
            }
        }
    }

    /// Fills the slots of the kernel rows of one tensor's rows (`rows`, a row of
    /// `n_kernel_scalars().max(1)` floats per row of the tensor) that stage `stage` computes.
    pub(crate) fn fill_factor_rows(
        &self,
        stage: usize,
        view: &View,
        (group, tensor): (&[f64], &[f64]),
        factors: &FactorValues,
        rows: &mut [f32],
    ) {
        let range = self.stage(stage);
        let width = self.n_kernel_scalars().max(1);
        for (r, row) in rows.chunks_mut(width).take(view.total_rows()).enumerate() {
            for (dst, &src) in row.iter_mut().zip(&self.kernel_slots) {
                if !range.contains(&src) {
                    continue;
                }
                let value = match self.class[src] {
                    Class::Scalar => group[src],
                    Class::Tensor => tensor[src],
                    Class::Matrix => factors.values(src)[r / view.rows.max(1)],
                    Class::Row => factors.values(src)[r],
                    Class::Col | Class::Elem => unreachable!("not a kernel scalar"),
                };
                *dst = value as f32;
            }
        }
    }

    /// Fills the column-value buffers of one tensor that stage `stage` computes.
    pub(crate) fn fill_cols(&self, stage: usize, factors: &FactorValues, cols: &mut [Vec<f32>]) {
        let range = self.stage(stage);
        for (buffer, &src) in cols.iter_mut().zip(&self.col_slots) {
            if range.contains(&src) {
                let values = factors.values(src);
                buffer.clear();
                buffer.extend(values.iter().map(|&v| v as f32));
            }
        }
    }

    /// The new values of one tensor's row and column states after every stage ran, as (state
    /// index, values).
    pub(crate) fn factor_updates(&self, factors: &FactorValues) -> Vec<(usize, Vec<f32>)> {
        self.factor_updates
            .iter()
            .map(|&(state, src)| {
                let values = factors.values(src).iter().map(|&v| v as f32);
                (state, values.collect())
            })
            .collect()
    }
}

/// One tensor's per-matrix, per-row and per-column values: each such instruction's values
/// (one per matrix, row or column over every matrix) in one array, one after the other.
#[derive(Clone, Debug, Default)]
pub(crate) struct FactorValues {
    /// Per instruction: where its values start and how many there are (0 for other classes).
    spans: Vec<(usize, usize)>,
    values: Vec<f64>,
}

impl FactorValues {
    /// Room for the per-matrix, per-row and per-column instructions among `classes` over
    /// `view` (kept when already that size).
    fn size(&mut self, classes: &[Class], view: &View) {
        self.spans.clear();
        let mut next = 0;
        for class in classes {
            let count = match class {
                Class::Matrix => view.matrices,
                Class::Row => view.total_rows(),
                Class::Col => view.total_cols(),
                _ => 0,
            };
            self.spans.push((next, count));
            next += count;
        }
        self.values.resize(next, f64::NAN);
    }

    /// How many values instruction `i` has for this tensor.
    fn count(&self, i: usize) -> usize {
        self.spans[i].1
    }

    /// Instruction `i`'s values.
    fn values(&self, i: usize) -> &[f64] {
        let (start, count) = self.spans[i];
        &self.values[start..start + count]
    }

    fn values_mut(&mut self, i: usize) -> &mut [f64] {
        let (start, count) = self.spans[i];
        &mut self.values[start..start + count]
    }
}

/// What one group's stage reads besides earlier values.
pub(crate) struct StageInputs<'a> {
    /// The group's hyperparameters in force, in declaration order.
    pub(crate) hypers: &'a [f64],
    /// The tensors' 1-based step count, this step included (PyTorch's `state["step"]`).
    pub(crate) step: f64,
    /// The optimizer's 1-based step count, this step included (what schedules count).
    pub(crate) optimizer_step: f64,
    /// The group's scalar states (indexed like the graph's states).
    pub(crate) states: &'a [f64],
    /// The step's reductions finished so far.
    pub(crate) reduced: &'a Reduced,
}
