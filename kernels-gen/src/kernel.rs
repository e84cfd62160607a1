//! The kernel IR: one fused phase as a straight-line list of per-element instructions,
//! independent of the target that runs it.
//!
//! A kernel describes what happens to *one* element: it loads that element from some buffers,
//! reads per-group scalars, computes, and stores. A backend decides how many elements it handles
//! at once (the Cranelift emitter does 16, 4 and 1). Every value is either a float in the
//! element dtype or a comparison mask ([`Kind`]); values are numbered by their instruction's
//! position (`v3` is the result of `insts[3]`), and an instruction only uses earlier values.
//! A kernel may also reduce values over each chunk ([`Inst::Reduce`]) into per-chunk partials
//! that the host combines in chunk order, so the result never depends on threads or timing.

use crate::abi::ChunkAbi;
use optjit_ir::{Binary, Buffer, BufferUse, Cmp, DType, Unary, Walk};
use std::fmt;

/// A value of a kernel: the result of the instruction at this index of [`Kernel::insts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(pub u32);

impl Value {
    /// The index of the defining instruction.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// What a kernel value holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A number in the kernel's element dtype.
    Float,
    /// The result of a comparison (only [`Inst::Select`] consumes it).
    Mask,
}

/// How a reduction folds the values of one chunk into its partial (an f64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum of squares (the host takes the square root for a norm).
    SumSquares,
    /// Sum (the host divides by the count for a mean).
    Sum,
    /// Largest absolute value (NaN if any value is NaN).
    MaxAbs,
}

impl ReduceOp {
    /// The mnemonic of the text form.
    pub fn mnemonic(self) -> &'static str {
        match self {
            ReduceOp::SumSquares => "sum_squares",
            ReduceOp::Sum => "sum",
            ReduceOp::MaxAbs => "max_abs",
        }
    }

    /// The partial of a chunk with no elements.
    pub fn identity(self) -> f64 {
        0.0
    }

    /// Combines two partials (the host's fold over chunks, in chunk order).
    pub fn combine(self, a: f64, b: f64) -> f64 {
        match self {
            ReduceOp::SumSquares | ReduceOp::Sum => a + b,
            ReduceOp::MaxAbs if a.is_nan() || b.is_nan() => f64::NAN,
            ReduceOp::MaxAbs => a.max(b),
        }
    }
}

/// What one partial of a column walk covers (see [`ChunkAbi`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceScope {
    /// The whole record: one partial.
    Record,
    /// Each row of the record: one partial per row.
    Row,
    /// Each column of the record: one partial per column.
    Column,
}

impl ReduceScope {
    /// How many partials a column-walk record of `rows` rows of `cols` columns writes for one
    /// slot of this scope (see [`ChunkAbi`]).
    pub fn partials(self, rows: usize, cols: usize) -> usize {
        match self {
            ReduceScope::Record => 1,
            ReduceScope::Row => rows,
            ReduceScope::Column => cols,
        }
    }

    /// The text form's suffix (nothing for a whole record).
    fn suffix(self) -> &'static str {
        match self {
            ReduceScope::Record => "",
            ReduceScope::Row => " per row",
            ReduceScope::Column => " per column",
        }
    }
}

/// One instruction of a kernel.
///
/// Arithmetic is IEEE f32 with one rounding per instruction (`Fma` rounds
/// once). `min`/`max` propagate NaN and order `-0` below `+0` (IEEE 754-2019 `minimum` /
/// `maximum`); `sign` is `jnp.sign` (NaN and ±0 map to themselves); `rsqrt x` is exactly
/// `1 / sqrt(x)`; comparisons are false on NaN except `ne`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Inst {
    /// The current element of `buffers[buffer]`.
    Load {
        /// Index into [`Kernel::buffers`].
        buffer: usize,
    },
    /// The per-group scalar in slot `slot` of the group's scalar row.
    Scalar {
        /// Slot in the row (the position in the plan's `kernel_scalars`).
        slot: usize,
    },
    /// A literal in the element dtype.
    Const(f32),
    /// A function of one float.
    Unary(Unary, Value),
    /// A function of two floats.
    Binary(Binary, Value, Value),
    /// `a * b + c` with one rounding.
    Fma(Value, Value, Value),
    /// A comparison of two floats, giving a mask.
    Cmp(Cmp, Value, Value),
    /// `cond ? a : b`, with `cond` a mask.
    Select(Value, Value, Value),
    /// Writes a float to the current element of `buffers[buffer]` (defines no value).
    Store {
        /// Index into [`Kernel::buffers`].
        buffer: usize,
        /// What is written.
        value: Value,
    },
    /// Folds a float into partial `slot` of the current chunk (defines no value).
    Reduce {
        /// How values combine.
        op: ReduceOp,
        /// Index of the partial within the chunk's partials (0, 1, ... in order).
        slot: usize,
        /// The value folded in.
        value: Value,
    },
}

impl Inst {
    /// The values the instruction reads, in operand order.
    pub fn operands(&self) -> Vec<Value> {
        match *self {
            Inst::Load { .. } | Inst::Scalar { .. } | Inst::Const(_) => Vec::new(),
            Inst::Unary(_, a) | Inst::Store { value: a, .. } | Inst::Reduce { value: a, .. } => {
                vec![a]
            }
            Inst::Binary(_, a, b) | Inst::Cmp(_, a, b) => vec![a, b],
            Inst::Fma(a, b, c) | Inst::Select(a, b, c) => vec![a, b, c],
        }
    }

    /// Rewrites every operand through `f`.
    pub fn map_operands(&self, mut f: impl FnMut(Value) -> Value) -> Inst {
        match *self {
            Inst::Load { .. } | Inst::Scalar { .. } | Inst::Const(_) => *self,
            Inst::Unary(u, a) => Inst::Unary(u, f(a)),
            Inst::Binary(op, a, b) => Inst::Binary(op, f(a), f(b)),
            Inst::Fma(a, b, c) => Inst::Fma(f(a), f(b), f(c)),
            Inst::Cmp(c, a, b) => Inst::Cmp(c, f(a), f(b)),
            Inst::Select(c, a, b) => Inst::Select(f(c), f(a), f(b)),
            Inst::Store { buffer, value } => Inst::Store {
                buffer,
                value: f(value),
            },
            Inst::Reduce { op, slot, value } => Inst::Reduce {
                op,
                slot,
                value: f(value),
            },
        }
    }

    /// Whether the instruction ends the kernel (a store or a reduction: it defines no value).
    pub fn is_sink(&self) -> bool {
        matches!(self, Inst::Store { .. } | Inst::Reduce { .. })
    }

    /// The kind of the result, or `None` for a store or a reduction.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Inst::Store { .. } | Inst::Reduce { .. } => None,
            Inst::Cmp(..) => Some(Kind::Mask),
            _ => Some(Kind::Float),
        }
    }
}

/// One fused phase as a kernel: per-element loads, arithmetic, stores and reductions.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// `<rule>.phase<n>`, unique within a compiled step.
    pub name: String,
    /// How tensors and their states are stored: f32, or f16/bf16, loaded exactly as f32 and
    /// stored rounded to nearest even. Column values and scratch buffers are always f32 (see
    /// [`Kernel::storage`]). Arithmetic is f32 whatever the storage (PyTorch's "opmath" for
    /// half-precision tensors).
    pub elem_dtype: DType,
    /// How each chunk's elements lie: contiguous, or a block of columns, rows `stride` bytes
    /// apart.
    pub walk: Walk,
    /// In a column walk, what each partial slot covers (by slot); empty in an element walk,
    /// where every partial covers its record.
    pub scopes: Vec<ReduceScope>,
    /// The buffers, in kernel-argument order (the phase's order).
    pub buffers: Vec<BufferUse>,
    /// How many floats each scalar row holds (a row per group, or per tensor when the step has
    /// per-tensor values).
    pub n_scalars: usize,
    /// The instructions; stores and reductions come last.
    pub insts: Vec<Inst>,
}

impl Kernel {
    /// A kernel that walks contiguous elements stored as f32, as one writes by hand: `name`
    /// (`<rule>.phase<n>`), its buffers in argument order, the floats of each scalar row, and
    /// the instructions.
    pub fn elements(
        name: &str,
        buffers: Vec<BufferUse>,
        n_scalars: usize,
        insts: Vec<Inst>,
    ) -> Kernel {
        Kernel {
            name: name.to_string(),
            elem_dtype: DType::F32,
            walk: Walk::Elements,
            scopes: Vec::new(),
            buffers,
            n_scalars,
            insts,
        }
    }

    /// Words per chunk record (see [`ChunkAbi`]): a column walk's records end with the stride,
    /// the width and where their partials start.
    pub fn record_words(&self) -> usize {
        ChunkAbi::record_words(self.buffers.len()) + 3 * usize::from(self.walk == Walk::Columns)
    }

    /// How many partials a column-walk record of `rows` rows of `cols` columns writes: per
    /// slot, one for the record, one per row, or one per column.
    pub fn column_walk_partials(&self, rows: usize, cols: usize) -> usize {
        (0..self.reductions().len())
            .map(|slot| self.scope(slot).partials(rows, cols))
            .sum()
    }

    /// The reductions' ops by partial slot (empty for a kernel without reductions).
    pub fn reductions(&self) -> Vec<ReduceOp> {
        let mut slots: Vec<(usize, ReduceOp)> = self
            .insts
            .iter()
            .filter_map(|inst| match *inst {
                Inst::Reduce { op, slot, .. } => Some((slot, op)),
                _ => None,
            })
            .collect();
        slots.sort_unstable_by_key(|&(slot, _)| slot);
        slots.into_iter().map(|(_, op)| op).collect()
    }

    /// What partial slot `slot` covers.
    pub fn scope(&self, slot: usize) -> ReduceScope {
        self.scopes
            .get(slot)
            .copied()
            .unwrap_or(ReduceScope::Record)
    }

    /// Instruction `i` in the text form (`v3 = mul v1, v2`, `store param, v9`).
    pub fn describe(&self, i: usize) -> String {
        let inst = &self.insts[i];
        match inst.is_sink() {
            true => InstText(self, inst).to_string(),
            false => format!("v{i} = {}", InstText(self, inst)),
        }
    }

    /// How buffer `buffer` stores its elements: the element dtype for params, gradients and
    /// states, f32 for the host-filled column values and for scratch buffers (a value kept
    /// between phases is not rounded again).
    pub fn storage(&self, buffer: usize) -> DType {
        match self.buffers[buffer].buffer {
            Buffer::ColValue(_) | Buffer::Temp(_) => DType::F32,
            Buffer::Param | Buffer::Grad | Buffer::State(_) => self.elem_dtype,
        }
    }

    /// The kind of `value`, if it names a value-defining instruction.
    pub fn kind(&self, value: Value) -> Option<Kind> {
        self.insts.get(value.index()).and_then(Inst::kind)
    }

    /// Checks the invariants backends rely on: operands are earlier values of the right kind,
    /// stores and reductions come after every other instruction, buffer and slot indices are in
    /// range, loads read readable buffers, stores write writable buffers with floats, partial
    /// slots are `0..n` once each, and no op is scalar-only. Returns the first violation.
    pub fn validate(&self) -> Result<(), String> {
        let mut stored = false;
        let mut partial_slots = Vec::new();
        for (i, inst) in self.insts.iter().enumerate() {
            let at = |message: String| format!("v{i} ({}): {message}", InstText(self, inst));
            match (inst.is_sink(), stored) {
                (true, _) => stored = true,
                (false, true) => return Err(at("an instruction after a store".to_string())),
                (false, false) => {}
            }
            for operand in inst.operands() {
                if operand.index() >= i {
                    return Err(at(format!("{operand} is not defined before its use")));
                }
                if self.insts[operand.index()].kind().is_none() {
                    return Err(at(format!("{operand} is a store, not a value")));
                }
            }
            let kind = |v: Value| self.kind(v);
            let floats = |values: &[Value]| -> Result<(), String> {
                match values.iter().find(|&&v| kind(v) != Some(Kind::Float)) {
                    Some(v) => Err(at(format!("{v} is a mask where a float is needed"))),
                    None => Ok(()),
                }
            };
            match *inst {
                Inst::Load { buffer } => match self.buffers.get(buffer) {
                    Some(b) if b.read => {}
                    Some(b) => return Err(at(format!("buffer {} is not read", b.buffer))),
                    None => return Err(at(format!("no buffer {buffer}"))),
                },
                Inst::Store { buffer, value } => {
                    match self.buffers.get(buffer) {
                        Some(b) if b.write => {}
                        Some(b) => return Err(at(format!("buffer {} is not written", b.buffer))),
                        None => return Err(at(format!("no buffer {buffer}"))),
                    }
                    floats(&[value])?;
                }
                Inst::Reduce { slot, value, .. } => {
                    partial_slots.push(slot);
                    floats(&[value])?;
                }
                Inst::Scalar { slot } if slot >= self.n_scalars => {
                    return Err(at(format!("slot {slot} of {} scalars", self.n_scalars)));
                }
                Inst::Scalar { .. } | Inst::Const(_) => {}
                Inst::Unary(u, a) => {
                    if u.scalar_only() {
                        return Err(at(format!("{} is not a per-element op", u.mnemonic())));
                    }
                    floats(&[a])?;
                }
                Inst::Binary(_, a, b) | Inst::Cmp(_, a, b) => floats(&[a, b])?,
                Inst::Fma(a, b, c) => floats(&[a, b, c])?,
                Inst::Select(c, a, b) => {
                    if kind(c) != Some(Kind::Mask) {
                        return Err(at(format!("{c} is not a mask")));
                    }
                    floats(&[a, b])?;
                }
            }
        }
        partial_slots.sort_unstable();
        if partial_slots.iter().enumerate().any(|(i, &s)| i != s) {
            return Err(format!(
                "partial slots {partial_slots:?} are not 0..n once each"
            ));
        }
        let scoped = self.scopes.iter().any(|&s| s != ReduceScope::Record);
        if scoped && (self.walk != Walk::Columns || self.scopes.len() != partial_slots.len()) {
            return Err(format!(
                "scopes {:?} need a column walk with a scope per partial slot",
                self.scopes
            ));
        }
        Ok(())
    }
}

/// The right-hand side of an instruction's line, with buffer names resolved.
struct InstText<'a>(&'a Kernel, &'a Inst);

impl fmt::Display for InstText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let InstText(kernel, inst) = *self;
        let buffer = |i: usize| -> String {
            kernel
                .buffers
                .get(i)
                .map_or_else(|| format!("#{i}"), |b| b.buffer.name().to_string())
        };
        match *inst {
            Inst::Load { buffer: b } => write!(f, "load {}", buffer(b)),
            Inst::Scalar { slot } => write!(f, "scalar {slot}"),
            // `{:?}` is the shortest text that parses back to the same f32.
            Inst::Const(c) => write!(f, "const {c:?}"),
            Inst::Unary(u, a) => write!(f, "{} {a}", u.mnemonic()),
            Inst::Binary(op, a, b) => write!(f, "{} {a}, {b}", op.mnemonic()),
            Inst::Fma(a, b, c) => write!(f, "fma {a}, {b}, {c}"),
            Inst::Cmp(c, a, b) => write!(f, "{} {a}, {b}", c.mnemonic()),
            Inst::Select(c, a, b) => write!(f, "select {c}, {a}, {b}"),
            Inst::Store { buffer: b, value } => write!(f, "store {}, {value}", buffer(b)),
            Inst::Reduce { op, slot, value } => {
                let scope = kernel.scope(slot).suffix();
                write!(f, "reduce {} partial {slot}{scope}, {value}", op.mnemonic())
            }
        }
    }
}

impl fmt::Display for Kernel {
    /// ```text
    /// kernel sgd.phase0 {
    ///   dtype f32
    ///   buffers param rw, grad r
    ///   scalars 1
    ///   v0 = load param
    ///   ...
    ///   store param, v4
    /// }
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel {} {{", self.name)?;
        writeln!(f, "  dtype {}", self.elem_dtype)?;
        if self.walk == Walk::Columns {
            writeln!(f, "  walk columns")?;
        }
        let buffers: Vec<String> = self
            .buffers
            .iter()
            .map(|b| {
                let access = match (b.read, b.write) {
                    (true, true) => "rw",
                    (true, false) => "r",
                    (false, true) => "w",
                    (false, false) => "-",
                };
                format!("{} {access}", b.buffer)
            })
            .collect();
        if buffers.is_empty() {
            writeln!(f, "  buffers none")?;
        } else {
            writeln!(f, "  buffers {}", buffers.join(", "))?;
        }
        writeln!(f, "  scalars {}", self.n_scalars)?;
        for i in 0..self.insts.len() {
            writeln!(f, "  {}", self.describe(i))?;
        }
        writeln!(f, "}}")
    }
}
