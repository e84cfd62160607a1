//! Lowering of one fusion-plan phase to the kernel IR: loads, scalar slots, inline constants,
//! element ops and stores, then FMA contraction and dead-code removal.

use crate::kernel::{Inst, Kernel, Value};
use optjit_ir::{Binary, Buffer, Class, DType, FusionPlan, Input, NodeIndex, Op, Unary};
use std::collections::HashMap;
use thiserror::Error;

/// Target properties that change the kernel IR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LowerOptions {
    /// Contract `a*b + c` and `a*b - c` into fused multiply-adds (one rounding).
    pub fma: bool,
}

/// A phase this lowering cannot express.
#[derive(Debug, Error, PartialEq)]
#[error("cannot lower {node} in phase {phase} of '{rule}': {reason}")]
pub struct LowerError {
    /// The update rule.
    pub rule: String,
    /// The phase index.
    pub phase: usize,
    /// The offending node, as printed (`%12 = norm %9`).
    pub node: String,
    /// Why.
    pub reason: String,
}

struct Lowering<'a> {
    plan: &'a FusionPlan,
    phase: usize,
    insts: Vec<Inst>,
    values: HashMap<NodeIndex, Value>,
    uniform: HashMap<UniformKey, Value>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum UniformKey {
    Slot(usize),
    Const(u32),
    Load(usize),
}

impl Lowering<'_> {
    fn error(&self, node: NodeIndex, reason: impl Into<String>) -> LowerError {
        let graph = &self.plan.graph;
        let number = optjit_ir::numbering(graph);
        let operands: Vec<String> = graph
            .operands(node)
            .iter()
            .map(|o| format!("%{}", number[o]))
            .collect();
        let op = &graph.node(node).op;
        LowerError {
            rule: graph.name.clone(),
            phase: self.phase,
            node: format!(
                "%{} = {} {}",
                number[&node],
                op.mnemonic(),
                operands.join(", ")
            )
            .trim_end()
            .to_string(),
            reason: reason.into(),
        }
    }

    fn push(&mut self, inst: Inst) -> Value {
        self.insts.push(inst);
        Value(self.insts.len() as u32 - 1)
    }

    /// An instruction that is the same for every element, emitted once.
    fn uniform(&mut self, key: UniformKey, inst: Inst) -> Value {
        if let Some(&v) = self.uniform.get(&key) {
            return v;
        }
        let v = self.push(inst);
        self.uniform.insert(key, v);
        v
    }

    /// The kernel value of graph node `node` used as an operand.
    fn operand(&mut self, node: NodeIndex) -> Result<Value, LowerError> {
        if let Some(&v) = self.values.get(&node) {
            return Ok(v);
        }
        let graph = &self.plan.graph;
        match (graph.node(node).class, &graph.node(node).op) {
            (Class::Scalar, Op::Const(c)) => {
                let c = *c as f32;
                Ok(self.uniform(UniformKey::Const(c.to_bits()), Inst::Const(c)))
            }
            (Class::Scalar, _) => match self.plan.kernel_scalars.iter().position(|&s| s == node) {
                Some(slot) => Ok(self.uniform(UniformKey::Slot(slot), Inst::Scalar { slot })),
                None => Err(self.error(
                    node,
                    "scalar operand is not among the plan's kernel scalars",
                )),
            },
            (Class::Tensor, _) => {
                Err(self.error(node, "per-tensor values (reductions) are not lowered yet"))
            }
            (Class::Elem, _) => Err(self.error(node, "used before it is computed in this phase")),
        }
    }

    fn buffer_index(&self, buffer: &Buffer) -> Option<usize> {
        self.plan.phases[self.phase]
            .buffers
            .iter()
            .position(|b| &b.buffer == buffer)
    }

    fn lower_node(&mut self, node: NodeIndex) -> Result<(), LowerError> {
        let graph = &self.plan.graph;
        let op = graph.node(node).op.clone();
        let operands = graph.operands(node);
        let mut ops = Vec::with_capacity(operands.len());
        for &o in &operands {
            ops.push(self.operand(o)?);
        }
        let value = match op {
            Op::Input(input) => {
                let buffer = match input {
                    Input::Param => Buffer::Param,
                    Input::Grad => Buffer::Grad,
                    Input::State(name) => Buffer::State(name),
                    other => {
                        return Err(self.error(node, format!("{other} is not a per-element input")));
                    }
                };
                let index = self
                    .buffer_index(&buffer)
                    .ok_or_else(|| self.error(node, "buffer missing from the phase"))?;
                self.uniform(UniformKey::Load(index), Inst::Load { buffer: index })
            }
            Op::Unary(u) if u.scalar_only() => {
                return Err(self.error(
                    node,
                    format!("{} is only available in the scalar program", u.mnemonic()),
                ));
            }
            Op::Unary(u) => self.push(Inst::Unary(u, ops[0])),
            Op::Binary(b) => self.push(Inst::Binary(b, ops[0], ops[1])),
            Op::Fma => self.push(Inst::Fma(ops[0], ops[1], ops[2])),
            Op::Cmp(c) => self.push(Inst::Cmp(c, ops[0], ops[1])),
            Op::Select => self.push(Inst::Select(ops[0], ops[1], ops[2])),
            Op::Cast(DType::F32) if graph.elem_dtype == DType::F32 => ops[0],
            Op::Cast(d) => {
                return Err(self.error(node, format!("casts to {d} are not lowered yet")));
            }
            Op::Const(_) => return Err(self.error(node, "a per-element constant")),
            Op::Reduce(_) => return Err(self.error(node, "reductions are not lowered yet")),
        };
        self.values.insert(node, value);
        Ok(())
    }
}

/// Lowers phase `phase` of `plan` to a kernel.
pub fn lower(
    plan: &FusionPlan,
    phase: usize,
    options: &LowerOptions,
) -> Result<Kernel, LowerError> {
    let mut lowering = Lowering {
        plan,
        phase,
        insts: Vec::new(),
        values: HashMap::new(),
        uniform: HashMap::new(),
    };
    let stage = &plan.phases[phase];
    for &node in &stage.nodes {
        lowering.lower_node(node)?;
    }
    for (buffer, node) in &stage.stores {
        let value = lowering.operand(*node)?;
        let index = lowering
            .buffer_index(buffer)
            .ok_or_else(|| lowering.error(*node, "store to a missing buffer"))?;
        lowering.push(Inst::Store {
            buffer: index,
            value,
        });
    }
    let mut insts = lowering.insts;
    if options.fma {
        insts = contract_fma(insts);
    }
    Ok(Kernel {
        name: format!("{}.phase{phase}", plan.graph.name),
        elem_dtype: plan.graph.elem_dtype,
        buffers: stage.buffers.clone(),
        n_scalars: plan.kernel_scalars.len(),
        insts: remove_dead(insts),
    })
}

fn use_counts(insts: &[Inst]) -> Vec<usize> {
    let mut uses = vec![0; insts.len()];
    for inst in insts {
        for v in inst.operands() {
            uses[v.index()] += 1;
        }
    }
    uses
}

/// Rewrites `a*b + c`, `c + a*b`, `a*b - c` and `c - a*b` into fused multiply-adds when the
/// product has no other use (Cranelift folds the negations into `vfnmadd`/`vfmsub`).
fn contract_fma(insts: Vec<Inst>) -> Vec<Inst> {
    let uses = use_counts(&insts);
    let single_mul = |v: Value| match insts[v.index()] {
        Inst::Binary(Binary::Mul, a, b) if uses[v.index()] == 1 => Some((a, b)),
        _ => None,
    };
    let mut out: Vec<Inst> = Vec::with_capacity(insts.len());
    let mut renamed: Vec<Value> = Vec::with_capacity(insts.len());
    for inst in &insts {
        let r = |v: Value| renamed[v.index()];
        let neg = |out: &mut Vec<Inst>, v: Value| {
            out.push(Inst::Unary(Unary::Neg, v));
            Value(out.len() as u32 - 1)
        };
        let new = match *inst {
            Inst::Binary(Binary::Add, x, y) => match (single_mul(x), single_mul(y)) {
                (Some((a, b)), _) => Inst::Fma(r(a), r(b), r(y)),
                (None, Some((a, b))) => Inst::Fma(r(a), r(b), r(x)),
                (None, None) => remap(inst, &renamed),
            },
            Inst::Binary(Binary::Sub, x, y) => match (single_mul(x), single_mul(y)) {
                (Some((a, b)), _) => {
                    let c = neg(&mut out, r(y));
                    Inst::Fma(r(a), r(b), c)
                }
                (None, Some((a, b))) => {
                    let na = neg(&mut out, r(a));
                    Inst::Fma(na, r(b), r(x))
                }
                (None, None) => remap(inst, &renamed),
            },
            _ => remap(inst, &renamed),
        };
        out.push(new);
        renamed.push(Value(out.len() as u32 - 1));
    }
    out
}

/// `inst` with its operands renamed.
fn remap(inst: &Inst, renamed: &[Value]) -> Inst {
    let r = |v: Value| renamed[v.index()];
    match *inst {
        Inst::Unary(u, a) => Inst::Unary(u, r(a)),
        Inst::Binary(b, x, y) => Inst::Binary(b, r(x), r(y)),
        Inst::Fma(a, b, c) => Inst::Fma(r(a), r(b), r(c)),
        Inst::Cmp(c, x, y) => Inst::Cmp(c, r(x), r(y)),
        Inst::Select(c, x, y) => Inst::Select(r(c), r(x), r(y)),
        Inst::Store { buffer, value } => Inst::Store {
            buffer,
            value: r(value),
        },
        ref leaf => *leaf,
    }
}

/// Drops instructions nothing uses (except stores) and renumbers densely.
fn remove_dead(insts: Vec<Inst>) -> Vec<Inst> {
    let mut live = vec![false; insts.len()];
    for i in (0..insts.len()).rev() {
        if matches!(insts[i], Inst::Store { .. }) || live[i] {
            live[i] = true;
            for v in insts[i].operands() {
                live[v.index()] = true;
            }
        }
    }
    let mut renamed = vec![Value(0); insts.len()];
    let mut out = Vec::new();
    for (i, inst) in insts.iter().enumerate() {
        if live[i] {
            out.push(remap(inst, &renamed));
            renamed[i] = Value(out.len() as u32 - 1);
        }
    }
    out
}
