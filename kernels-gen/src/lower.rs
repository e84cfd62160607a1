//! Lowering of one fusion-plan phase to the kernel IR, then FMA contraction, common
//! subexpression elimination and dead-code removal.
//!
//! Per-element inputs become loads, constants become inline literals rounded to the element
//! dtype, every other scalar or per-tensor operand becomes a slot of the record's scalar row (its
//! position in [`FusionPlan::kernel_scalars`]), and each store of the phase becomes a store (a
//! scalar value stored per element is broadcast).

use crate::kernel::{Inst, Kernel, Kind, ReduceOp, ReduceScope, Value};
use optjit_ir::{
    Binary, Buffer, Class, Cmp, DType, FusionPlan, Input, NodeIndex, Op, Reduction, Unary, Walk,
};
use std::collections::HashMap;
use thiserror::Error;

/// Target properties that change the kernel IR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LowerOptions {
    /// Contract `a*b + c`, `c + a*b`, `a*b - c` and `c - a*b` into fused multiply-adds (one
    /// rounding instead of two) where the product has no other use. Set it where FMA is a
    /// native instruction; results then differ from unfused evaluation in the last bit.
    pub fma: bool,
    /// How the kernel stores tensors and per-element states ([`Kernel::elem_dtype`]): f32,
    /// f16 or bf16.
    pub storage: DType,
}

/// A phase this lowering cannot express.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LowerError {
    /// The plan has no phase of that index.
    #[error("plan '{rule}' has no phase {phase} (it has {count})")]
    NoPhase {
        /// The update rule.
        rule: String,
        /// The phase asked for.
        phase: usize,
        /// How many phases the plan has.
        count: usize,
    },
    /// The element dtype has no lowering yet.
    #[error(
        "plan '{rule}': {dtype} elements are not supported (f32 arithmetic, stored as f32, f16 or bf16)"
    )]
    ElemDType {
        /// The update rule.
        rule: String,
        /// The graph's element dtype.
        dtype: DType,
    },
    /// A node of the phase cannot be lowered.
    #[error("cannot lower {node} in phase {phase} of '{rule}': {reason}")]
    Node {
        /// The update rule.
        rule: String,
        /// The phase index.
        phase: usize,
        /// The offending node as printed (`%12 = norm %9 : tensor f64`).
        node: String,
        /// Why.
        reason: String,
    },
}

/// Lowers phase `phase` of `plan` to a kernel named `<rule>.phase<phase>`.
///
/// The phase's reductions become [`Inst::Reduce`]s, in partial-slot order, after the stores.
///
/// Fails on casts
/// other than f32 → f32, scalar-only ops computed per element, and scalar operands missing from
/// the plan's kernel scalars.
pub fn lower(
    plan: &FusionPlan,
    phase: usize,
    options: &LowerOptions,
) -> Result<Kernel, LowerError> {
    let graph = &plan.graph;
    let Some(stage) = plan.phases.get(phase) else {
        return Err(LowerError::NoPhase {
            rule: graph.name.clone(),
            phase,
            count: plan.phases.len(),
        });
    };
    let storable = matches!(options.storage, DType::F32 | DType::F16 | DType::BF16);
    if graph.elem_dtype != DType::F32 || !storable {
        let dtype = match storable {
            true => graph.elem_dtype,
            false => options.storage,
        };
        let rule = graph.name.clone();
        return Err(LowerError::ElemDType { rule, dtype });
    }
    let mut lowering = Lowering {
        plan,
        phase,
        insts: Vec::new(),
        values: HashMap::new(),
    };
    for (buffer, node) in &stage.loads {
        let Some(index) = stage
            .buffers
            .iter()
            .position(|b| &b.buffer == buffer && b.read)
        else {
            return Err(lowering.error(
                *node,
                format!("loaded from {buffer}, not read by the phase"),
            ));
        };
        let value = lowering.push(Inst::Load { buffer: index });
        lowering.values.insert(*node, value);
    }
    for &node in &stage.nodes {
        lowering.lower_node(node)?;
    }
    for (buffer, node) in &stage.stores {
        let value = lowering.operand(*node)?;
        if lowering.kind(value) == Kind::Mask {
            return Err(lowering.error(*node, "a comparison result cannot be stored"));
        }
        let Some(index) = stage.buffers.iter().position(|b| &b.buffer == buffer) else {
            return Err(lowering.error(*node, format!("stored to {buffer}, not a phase buffer")));
        };
        lowering.insts.push(Inst::Store {
            buffer: index,
            value,
        });
    }
    for (slot, &reduce) in stage.reductions.iter().enumerate() {
        let Op::Reduce(reduction) = graph.node(reduce).op else {
            return Err(lowering.error(reduce, "listed as a reduction of the phase"));
        };
        let value = lowering.float(reduce, graph.operands(reduce)[0])?;
        lowering.insts.push(Inst::Reduce {
            op: reduce_op(reduction),
            slot,
            value,
        });
    }
    let mut insts = lowering.insts;
    if options.fma {
        insts = contract_fma(&insts);
    }
    Ok(Kernel {
        name: format!("{}.phase{phase}", graph.name),
        elem_dtype: options.storage,
        walk: stage.walk,
        scopes: match stage.walk {
            Walk::Elements => Vec::new(),
            Walk::Columns => stage
                .reductions
                .iter()
                .map(|&r| match graph.node(r).op {
                    Op::Reduce(reduction) => column_walk_scope(reduction),
                    _ => ReduceScope::Record,
                })
                .collect(),
        },
        buffers: stage.buffers.clone(),
        n_scalars: plan.kernel_scalars.len(),
        insts: cleanup(&insts),
    })
}

/// What a column walk's partial of `reduction` covers: a row mean's one row, a column mean's
/// one column, anything else the whole record.
pub fn column_walk_scope(reduction: Reduction) -> ReduceScope {
    match reduction {
        Reduction::RowMean => ReduceScope::Row,
        Reduction::ColMean => ReduceScope::Column,
        _ => ReduceScope::Record,
    }
}

/// The per-chunk fold of `reduction` (norms are square roots of sums of squares, means are sums
/// divided by the count: the host finishes them).
pub fn reduce_op(reduction: Reduction) -> ReduceOp {
    match reduction {
        Reduction::Norm | Reduction::GlobalNorm => ReduceOp::SumSquares,
        Reduction::Sum | Reduction::Mean => ReduceOp::Sum,
        Reduction::MaxAbs => ReduceOp::MaxAbs,
        Reduction::RowMean | Reduction::ColMean | Reduction::RowsMean => ReduceOp::Sum,
    }
}

/// The state of one lowering: the instructions so far and the value of each lowered node.
struct Lowering<'a> {
    plan: &'a FusionPlan,
    phase: usize,
    insts: Vec<Inst>,
    values: HashMap<NodeIndex, Value>,
}

impl Lowering<'_> {
    fn error(&self, node: NodeIndex, reason: impl Into<String>) -> LowerError {
        LowerError::Node {
            rule: self.plan.graph.name.clone(),
            phase: self.phase,
            node: optjit_ir::node_text(&self.plan.graph, node),
            reason: reason.into(),
        }
    }

    fn push(&mut self, inst: Inst) -> Value {
        self.insts.push(inst);
        Value(self.insts.len() as u32 - 1)
    }

    fn kind(&self, value: Value) -> Kind {
        self.insts[value.index()].kind().unwrap_or(Kind::Float)
    }

    /// The kernel value of graph node `node` used as an operand: a value lowered earlier in
    /// this phase, an inline literal, or a scalar slot.
    fn operand(&mut self, node: NodeIndex) -> Result<Value, LowerError> {
        if let Some(&v) = self.values.get(&node) {
            return Ok(v);
        }
        let n = self.plan.graph.node(node);
        let value = match (n.class, &n.op) {
            (Class::Scalar, Op::Const(c)) => self.push(Inst::Const(*c as f32)),
            // A per-tensor, per-matrix or per-row value is a slot too: the record's scalar row
            // is its tensor's or its row's (see ChunkAbi). Per-column values are loaded.
            (Class::Scalar | Class::Tensor | Class::Matrix | Class::Row, _) => {
                match self.plan.kernel_scalars.iter().position(|&s| s == node) {
                    Some(slot) => self.push(Inst::Scalar { slot }),
                    None => {
                        return Err(
                            self.error(node, "scalar operand missing from the kernel scalars")
                        );
                    }
                }
            }
            (Class::Elem, _) => {
                return Err(self.error(node, "per-element value not computed in this phase"));
            }
            (Class::Col, _) => {
                return Err(self.error(node, "per-column value not loaded by this phase"));
            }
        };
        if n.dtype == DType::Bool {
            // A scalar predicate arrives in its slot as 1.0 or 0.0.
            let zero = self.push(Inst::Const(0.0));
            return Ok(self.push(Inst::Cmp(Cmp::Ne, value, zero)));
        }
        Ok(value)
    }

    /// `operand`, checked to be a float.
    fn float(&mut self, user: NodeIndex, node: NodeIndex) -> Result<Value, LowerError> {
        let v = self.operand(node)?;
        match self.kind(v) {
            Kind::Float => Ok(v),
            Kind::Mask => Err(self.error(user, "a comparison result used as a number")),
        }
    }

    /// `operand` as a select condition: a mask, or a float compared with zero.
    fn mask(&mut self, node: NodeIndex) -> Result<Value, LowerError> {
        let v = self.operand(node)?;
        if self.kind(v) == Kind::Mask {
            return Ok(v);
        }
        let zero = self.push(Inst::Const(0.0));
        Ok(self.push(Inst::Cmp(Cmp::Ne, v, zero)))
    }

    fn lower_node(&mut self, node: NodeIndex) -> Result<(), LowerError> {
        let graph = &self.plan.graph;
        let n = graph.node(node);
        if n.class != Class::Elem {
            return Err(self.error(node, "not a per-element node"));
        }
        let operands = graph.operands(node);
        let value = match n.op.clone() {
            Op::Input(input) => {
                let buffer = match input {
                    Input::Param => Buffer::Param,
                    Input::Grad => Buffer::Grad,
                    Input::State(name) => Buffer::State(name),
                    other => {
                        return Err(self.error(node, format!("{other} is not a per-element input")));
                    }
                };
                let buffers = &self.plan.phases[self.phase].buffers;
                match buffers.iter().position(|b| b.buffer == buffer && b.read) {
                    Some(index) => self.push(Inst::Load { buffer: index }),
                    None => {
                        return Err(self.error(node, format!("{buffer} is not read by the phase")));
                    }
                }
            }
            Op::Unary(u) if u.scalar_only() => {
                let reason = format!("{} is only available in the scalar program", u.mnemonic());
                return Err(self.error(node, reason));
            }
            Op::Unary(u) => {
                let a = self.float(node, operands[0])?;
                self.push(Inst::Unary(u, a))
            }
            Op::Binary(b) => {
                let x = self.float(node, operands[0])?;
                let y = self.float(node, operands[1])?;
                self.push(Inst::Binary(b, x, y))
            }
            Op::Fma => {
                let a = self.float(node, operands[0])?;
                let b = self.float(node, operands[1])?;
                let c = self.float(node, operands[2])?;
                self.push(Inst::Fma(a, b, c))
            }
            Op::Cmp(c) => {
                let x = self.float(node, operands[0])?;
                let y = self.float(node, operands[1])?;
                self.push(Inst::Cmp(c, x, y))
            }
            Op::Select => {
                let c = self.mask(operands[0])?;
                let x = self.float(node, operands[1])?;
                let y = self.float(node, operands[2])?;
                self.push(Inst::Select(c, x, y))
            }
            Op::Cast(DType::F32) if graph.node(operands[0]).dtype == DType::F32 => {
                self.float(node, operands[0])?
            }
            Op::Cast(d) => {
                let from = graph.node(operands[0]).dtype;
                let reason = format!("casts from {from} to {d} are not supported yet");
                return Err(self.error(node, reason));
            }
            Op::Const(_) => return Err(self.error(node, "a per-element constant")),
            Op::Reduce(_) => {
                return Err(self.error(node, "a reduction's result is not per element"));
            }
        };
        self.values.insert(node, value);
        Ok(())
    }
}

/// How many instructions use each value (a value used twice by one instruction counts twice).
fn use_counts(insts: &[Inst]) -> Vec<usize> {
    let mut uses = vec![0; insts.len()];
    for inst in insts {
        for v in inst.operands() {
            uses[v.index()] += 1;
        }
    }
    uses
}

/// Rewrites `a*b + c` and `c + a*b` into `fma a, b, c`, `a*b - c` into `fma a, b, -c` and
/// `c - a*b` into `fma -a, b, c`, where the product has no other use (so no multiply is
/// computed twice). When both operands are such products, the left one is contracted. A
/// negated literal is folded; other negations stay as `neg` (x86 folds them into `vfnmadd`).
fn contract_fma(insts: &[Inst]) -> Vec<Inst> {
    let uses = use_counts(insts);
    let product = |v: Value| match insts[v.index()] {
        Inst::Binary(Binary::Mul, a, b) if uses[v.index()] == 1 => Some((a, b)),
        _ => None,
    };
    let mut out: Vec<Inst> = Vec::with_capacity(insts.len());
    // renamed[i]: the value of old instruction i in `out`.
    let mut renamed: Vec<Value> = Vec::with_capacity(insts.len());
    for inst in insts {
        let r = |v: Value| renamed[v.index()];
        let new = match *inst {
            Inst::Binary(Binary::Add, x, y) => match (product(x), product(y)) {
                (Some((a, b)), _) => Inst::Fma(r(a), r(b), r(y)),
                (None, Some((a, b))) => Inst::Fma(r(a), r(b), r(x)),
                (None, None) => inst.map_operands(r),
            },
            Inst::Binary(Binary::Sub, x, y) => match (product(x), product(y)) {
                (Some((a, b)), _) => {
                    let c = negate(&mut out, r(y));
                    Inst::Fma(r(a), r(b), c)
                }
                (None, Some((a, b))) => {
                    let a = negate(&mut out, r(a));
                    Inst::Fma(a, r(b), r(x))
                }
                (None, None) => inst.map_operands(r),
            },
            _ => inst.map_operands(r),
        };
        out.push(new);
        renamed.push(Value(out.len() as u32 - 1));
    }
    out
}

/// Appends `-v` to `insts` (a literal is negated in place) and returns it.
fn negate(insts: &mut Vec<Inst>, v: Value) -> Value {
    let inst = match insts[v.index()] {
        Inst::Const(c) => Inst::Const(-c),
        _ => Inst::Unary(Unary::Neg, v),
    };
    insts.push(inst);
    Value(insts.len() as u32 - 1)
}

/// The identity of a value-defining instruction, for common subexpression elimination
/// (literals compared by bits, so `-0.0` and `0.0` stay apart).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Load(usize),
    Scalar(usize),
    Const(u32),
    Unary(Unary, Value),
    Binary(Binary, Value, Value),
    Fma(Value, Value, Value),
    Cmp(Cmp, Value, Value),
    Select(Value, Value, Value),
}

fn key(inst: &Inst) -> Option<Key> {
    Some(match *inst {
        Inst::Load { buffer } => Key::Load(buffer),
        Inst::Scalar { slot } => Key::Scalar(slot),
        Inst::Const(c) => Key::Const(c.to_bits()),
        Inst::Unary(u, a) => Key::Unary(u, a),
        Inst::Binary(b, x, y) => Key::Binary(b, x, y),
        Inst::Fma(a, b, c) => Key::Fma(a, b, c),
        Inst::Cmp(c, x, y) => Key::Cmp(c, x, y),
        Inst::Select(c, x, y) => Key::Select(c, x, y),
        Inst::Store { .. } | Inst::Reduce { .. } => return None,
    })
}

/// Merges identical instructions (the first one stays), drops those no store depends on, puts
/// the leaves first and renumbers densely.
fn cleanup(insts: &[Inst]) -> Vec<Inst> {
    // Common subexpressions: canonical[i] is the first instruction identical to i.
    let mut canonical: Vec<Value> = Vec::with_capacity(insts.len());
    let mut merged: Vec<Inst> = Vec::with_capacity(insts.len());
    let mut seen: HashMap<Key, Value> = HashMap::new();
    for (i, inst) in insts.iter().enumerate() {
        let inst = inst.map_operands(|v| canonical[v.index()]);
        let own = Value(i as u32);
        let value = match key(&inst) {
            Some(k) => *seen.entry(k).or_insert(own),
            None => own,
        };
        canonical.push(value);
        merged.push(inst);
    }
    // Liveness, backwards from the stores and reductions.
    let mut live = vec![false; merged.len()];
    for i in (0..merged.len()).rev() {
        if merged[i].is_sink() {
            live[i] = true;
        }
        if live[i] {
            for v in merged[i].operands() {
                live[v.index()] = true;
            }
        }
    }
    // Leaves first (loads by buffer, scalars by slot, literals by first use), then the rest in
    // order: a canonical text, and still every definition before its uses.
    let mut order: Vec<usize> = (0..merged.len()).filter(|&i| live[i]).collect();
    order.sort_by_key(|&i| match merged[i] {
        Inst::Load { buffer } => (0, buffer, i),
        Inst::Scalar { slot } => (1, slot, i),
        Inst::Const(_) => (2, 0, i),
        _ => (3, 0, i),
    });
    let mut renamed = vec![Value(0); merged.len()];
    let mut out = Vec::with_capacity(order.len());
    for i in order {
        out.push(merged[i].map_operands(|v| renamed[v.index()]));
        renamed[i] = Value(out.len() as u32 - 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use optjit_ir::{BufferUse, Graph, Phase, Target};

    /// A one-phase plan for `graph`, built the way the fusion planner builds it: every Elem
    /// node in the phase, non-constant Scalar operands as kernel scalars.
    fn plan(graph: Graph) -> FusionPlan {
        let nodes = graph.nodes();
        let class = |n: NodeIndex| graph.node(n).class;
        let phase_nodes: Vec<NodeIndex> = nodes
            .iter()
            .copied()
            .filter(|&n| class(n) == Class::Elem)
            .collect();
        let mut stores = Vec::new();
        for output in &graph.outputs {
            let buffer = match &output.target {
                Target::Param => Buffer::Param,
                Target::State(s) => Buffer::State(s.clone()),
                Target::ScalarState(_) => continue,
            };
            stores.push((buffer, output.value));
        }
        let mut kernel_scalars: Vec<NodeIndex> = phase_nodes
            .iter()
            .flat_map(|&n| graph.operands(n))
            .chain(stores.iter().map(|&(_, v)| v))
            .filter(|&o| class(o) == Class::Scalar && !matches!(graph.node(o).op, Op::Const(_)))
            .collect();
        kernel_scalars.sort_unstable();
        kernel_scalars.dedup();
        let mut buffers = vec![Buffer::Param, Buffer::Grad];
        buffers.extend(graph.states.iter().map(|s| Buffer::State(s.name.clone())));
        let input_of = |b: &Buffer| match b {
            Buffer::Param => Input::Param,
            Buffer::Grad => Input::Grad,
            Buffer::State(s) => Input::State(s.clone()),
            Buffer::Temp(_) | Buffer::ColValue(_) => {
                unreachable!("no scratch or column buffers here")
            }
        };
        let buffers = buffers
            .into_iter()
            .map(|buffer| BufferUse {
                read: phase_nodes
                    .iter()
                    .any(|&n| graph.node(n).op == Op::Input(input_of(&buffer))),
                write: stores.iter().any(|(b, _)| b == &buffer),
                buffer,
            })
            .filter(|b| b.read || b.write)
            .collect();
        let scalar_program: Vec<NodeIndex> = nodes
            .iter()
            .copied()
            .filter(|&n| class(n) == Class::Scalar)
            .collect();
        FusionPlan {
            stage_ends: vec![scalar_program.len(); 2],
            scalar_program,
            kernel_scalars,
            scalar_outputs: Vec::new(),
            col_values: Vec::new(),
            phases: vec![Phase {
                walk: optjit_ir::Walk::Elements,
                level: 0,
                nodes: phase_nodes,
                buffers,
                stores,
                reductions: Vec::new(),
                loads: Vec::new(),
            }],
            temps: 0,
            graph,
        }
    }

    fn lower_text(graph: Graph, fma: bool) -> String {
        let options = LowerOptions {
            fma,
            ..LowerOptions::default()
        };
        let kernel = lower(&plan(graph), 0, &options).expect("lowers");
        kernel.validate().expect("valid kernel");
        kernel.to_string()
    }

    fn op(g: &mut Graph, op: Op, operands: &[NodeIndex]) -> NodeIndex {
        g.add(op, operands)
    }

    /// `param = param - lr * grad` with a momentum-style state: `m = beta * m + grad`.
    fn momentum() -> Graph {
        let mut g = Graph::new("momentum");
        g.declare_hyper("lr", 0.1);
        g.declare_hyper("beta", 0.9);
        g.declare_state("m", 0.0, Class::Elem);
        let p = g.input(Input::Param);
        let grad = g.input(Input::Grad);
        let m = g.input(Input::State("m".into()));
        let lr = g.input(Input::Hyper("lr".into()));
        let beta = g.input(Input::Hyper("beta".into()));
        let bm = op(&mut g, Op::Binary(Binary::Mul), &[beta, m]);
        let new_m = op(&mut g, Op::Binary(Binary::Add), &[bm, grad]);
        let step = op(&mut g, Op::Binary(Binary::Mul), &[lr, new_m]);
        let new_p = op(&mut g, Op::Binary(Binary::Sub), &[p, step]);
        g.set_output(Target::Param, new_p);
        g.set_output(Target::State("m".into()), new_m);
        g
    }

    #[test]
    fn scalars_get_their_plan_slots_and_buffers_their_phase_order() {
        let text = lower_text(momentum(), false);
        let expected = "\
kernel momentum.phase0 {
  dtype f32
  buffers param rw, grad r, m rw
  scalars 2
  v0 = load param
  v1 = load grad
  v2 = load m
  v3 = scalar 0
  v4 = scalar 1
  v5 = mul v4, v2
  v6 = add v5, v1
  v7 = mul v3, v6
  v8 = sub v0, v7
  store param, v8
  store m, v6
}
";
        assert_eq!(text, expected);
    }

    #[test]
    fn fma_contracts_single_use_products_only() {
        let text = lower_text(momentum(), true);
        // beta * m has one use: contracted. lr * new_m has one use: `p - lr*m'` becomes
        // `fma -lr, m', p`; new_m itself is stored, so it stays an fma result.
        let expected = "\
kernel momentum.phase0 {
  dtype f32
  buffers param rw, grad r, m rw
  scalars 2
  v0 = load param
  v1 = load grad
  v2 = load m
  v3 = scalar 0
  v4 = scalar 1
  v5 = fma v4, v2, v1
  v6 = neg v3
  v7 = fma v6, v5, v0
  store param, v7
  store m, v5
}
";
        assert_eq!(text, expected);
    }

    #[test]
    fn fma_leaves_shared_products_and_negates_literals_in_place() {
        let mut g = Graph::new("shared");
        let p = g.input(Input::Param);
        let grad = g.input(Input::Grad);
        let half = g.constant(0.5);
        let sq = op(&mut g, Op::Binary(Binary::Mul), &[grad, grad]);
        let a = op(&mut g, Op::Binary(Binary::Add), &[sq, p]);
        let b = op(&mut g, Op::Binary(Binary::Sub), &[a, sq]);
        let pg = op(&mut g, Op::Binary(Binary::Mul), &[p, grad]);
        let c = op(&mut g, Op::Binary(Binary::Sub), &[pg, half]);
        let d = op(&mut g, Op::Binary(Binary::Add), &[b, c]);
        g.set_output(Target::Param, d);
        // grad*grad has two uses and stays a multiply; the literal is negated at compile time.
        let expected = "\
kernel shared.phase0 {
  dtype f32
  buffers param rw, grad r
  scalars 0
  v0 = load param
  v1 = load grad
  v2 = const -0.5
  v3 = mul v1, v1
  v4 = add v3, v0
  v5 = sub v4, v3
  v6 = fma v0, v1, v2
  v7 = add v5, v6
  store param, v7
}
";
        assert_eq!(lower_text(g, true), expected);
    }

    #[test]
    fn constants_are_inlined_rounded_to_f32_and_deduplicated() {
        let mut g = Graph::new("consts");
        let p = g.input(Input::Param);
        let tenth = g.constant(0.1);
        let a = op(&mut g, Op::Binary(Binary::Mul), &[p, tenth]);
        let b = op(&mut g, Op::Binary(Binary::Add), &[a, tenth]);
        let minus = g.constant(-0.0);
        let c = op(&mut g, Op::Binary(Binary::Max), &[b, minus]);
        g.set_output(Target::Param, c);
        let kernel = lower(&plan(g), 0, &LowerOptions::default()).expect("lowers");
        assert_eq!(kernel.n_scalars, 0);
        let consts: Vec<f32> = kernel
            .insts
            .iter()
            .filter_map(|i| match i {
                Inst::Const(c) => Some(*c),
                _ => None,
            })
            .collect();
        assert_eq!(consts.len(), 2, "{kernel}");
        assert_eq!(consts[0].to_bits(), 0.1f32.to_bits());
        assert_eq!(consts[1].to_bits(), (-0.0f32).to_bits());
        assert!(kernel.to_string().contains("const -0.0\n"));
    }

    #[test]
    fn same_cast_is_free_and_scalar_predicates_become_masks() {
        let mut g = Graph::new("where");
        g.declare_hyper("flag", 1.0);
        let p = g.input(Input::Param);
        let grad = g.input(Input::Grad);
        let flag = g.input(Input::Hyper("flag".into()));
        let zero = g.constant(0.0);
        let on = op(&mut g, Op::Cmp(Cmp::Gt), &[flag, zero]);
        let cast = op(&mut g, Op::Cast(DType::F32), &[grad]);
        let sel = op(&mut g, Op::Select, &[on, cast, p]);
        g.set_output(Target::Param, sel);
        let text = lower_text(g, false);
        let expected = "\
kernel where.phase0 {
  dtype f32
  buffers param rw, grad r
  scalars 1
  v0 = load param
  v1 = load grad
  v2 = scalar 0
  v3 = const 0.0
  v4 = ne v2, v3
  v5 = select v4, v1, v0
  store param, v5
}
";
        assert_eq!(text, expected);
    }

    #[test]
    fn dead_values_and_duplicate_loads_are_dropped() {
        let mut g = Graph::new("dead");
        let p = g.input(Input::Param);
        let grad = g.input(Input::Grad);
        let _unused = op(&mut g, Op::Unary(Unary::Exp), &[grad]);
        let cast = op(&mut g, Op::Cast(DType::F32), &[p]);
        let sum = op(&mut g, Op::Binary(Binary::Add), &[p, cast]);
        g.set_output(Target::Param, sum);
        let text = lower_text(g, false);
        assert!(!text.contains("exp"), "{text}");
        assert!(text.contains("v1 = add v0, v0\n"), "{text}");
    }

    #[test]
    fn a_stored_scalar_is_broadcast() {
        let mut g = Graph::new("fill");
        g.declare_hyper("value", 3.0);
        g.declare_state("buf", 0.0, Class::Elem);
        let v = g.input(Input::Hyper("value".into()));
        g.set_output(Target::State("buf".into()), v);
        let text = lower_text(g, false);
        assert!(text.contains("buffers buf w\n"), "{text}");
        assert!(text.contains("v0 = scalar 0\n  store buf, v0\n"), "{text}");
    }

    #[test]
    fn unplanned_per_tensor_values_and_other_casts_are_refused() {
        let mut g = Graph::new("norm");
        let p = g.input(Input::Param);
        let grad = g.input(Input::Grad);
        let n = op(&mut g, Op::Reduce(optjit_ir::Reduction::Norm), &[grad]);
        let d = op(&mut g, Op::Binary(Binary::Div), &[grad, n]);
        let u = op(&mut g, Op::Binary(Binary::Sub), &[p, d]);
        g.set_output(Target::Param, u);
        // The test plan lists scalar slots only: the per-tensor norm has no slot.
        let err = lower(&plan(g), 0, &LowerOptions::default()).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("missing from the kernel scalars"), "{text}");
        assert!(text.contains("norm %1 : tensor f64"), "{text}");

        let mut g = Graph::new("cast");
        let p = g.input(Input::Param);
        let c = op(&mut g, Op::Cast(DType::BF16), &[p]);
        g.set_output(Target::Param, c);
        let err = lower(&plan(g), 0, &LowerOptions::default()).expect_err("refused");
        assert!(err.to_string().contains("from f32 to bf16"), "{err}");

        let mut g = Graph::new("missing");
        g.declare_hyper("lr", 0.1);
        let p = g.input(Input::Param);
        let lr = g.input(Input::Hyper("lr".into()));
        let m = op(&mut g, Op::Binary(Binary::Mul), &[p, lr]);
        g.set_output(Target::Param, m);
        let mut bad = plan(g);
        bad.kernel_scalars.clear();
        let err = lower(&bad, 0, &LowerOptions::default()).expect_err("refused");
        assert!(
            err.to_string().contains("missing from the kernel scalars"),
            "{err}"
        );
        let err = lower(&bad, 3, &LowerOptions::default()).expect_err("no phase");
        assert!(matches!(err, LowerError::NoPhase { count: 1, .. }), "{err}");
    }
}
