//! Element types and value classes of IR values.

use std::fmt;

/// The storage type of a value.
///
/// Per-element values are f32 (the arithmetic of every backend; how kernels *store* tensors —
/// f32, f16 or bf16 — is a compile option, not a graph type); scalar values are computed on the
/// host in f64; comparisons produce `Bool`. F64, F16 and BF16 graphs can be written down and
/// verified, but no backend lowers them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// 32-bit IEEE float.
    #[default]
    F32,
    /// 64-bit IEEE float.
    F64,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// A comparison result (a predicate or mask).
    Bool,
}

impl DType {
    /// Size of one stored element in bytes (`Bool` counts as one byte; it is never stored).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::BF16 => 2,
            DType::Bool => 1,
        }
    }

    /// The name used in the text form.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Bool => "bool",
        }
    }

    /// Parses a name of the text form.
    pub fn from_name(name: &str) -> Option<DType> {
        Some(match name {
            "f32" => DType::F32,
            "f64" => DType::F64,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How often a value is computed: the axis the cost model and the fusion planner care about.
///
/// Ordered from cheapest to dearest. The class of a result is the [`Class::join`] of its
/// operands' classes: the larger one, except that a per-row and a per-column value meet per
/// element. Every class but `Elem` is computed by the host.
///
/// `Matrix`, `Row` and `Col` see a tensor as matrices: for a shape `(..., R, C)` of two or more
/// dimensions, `prod(...)` matrices of `R` rows and `C` columns (PyTorch's factored view); a
/// tensor of fewer dimensions is one matrix of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Once per group per step, on the host, in f64 (hyperparameters, bias corrections, ...).
    Scalar,
    /// Once per tensor per step (a reduction over one tensor, such as `norm`).
    Tensor,
    /// Once per matrix of a tensor (`rows_mean` of a per-row value).
    Matrix,
    /// Once per row of every matrix (`row_mean`, a `row` state such as Adafactor's `row_var`).
    Row,
    /// Once per column of every matrix (`col_mean`, a `col` state such as `col_var`).
    Col,
    /// Once per element of every tensor: the work a kernel does.
    Elem,
}

impl Class {
    /// The name used in the text form.
    pub fn name(self) -> &'static str {
        match self {
            Class::Scalar => "scalar",
            Class::Tensor => "tensor",
            Class::Matrix => "matrix",
            Class::Row => "row",
            Class::Col => "col",
            Class::Elem => "elem",
        }
    }

    /// The class of a value computed from values of classes `self` and `other`.
    pub fn join(self, other: Class) -> Class {
        match (self, other) {
            (Class::Row, Class::Col) | (Class::Col, Class::Row) => Class::Elem,
            (a, b) => a.max(b),
        }
    }

    /// The class of a value computed from operands of `classes` (Scalar for none).
    pub fn join_all(classes: impl IntoIterator<Item = Class>) -> Class {
        classes.into_iter().fold(Class::Scalar, Class::join)
    }

    /// Whether the host computes values of this class (every class but `Elem`).
    pub fn on_host(self) -> bool {
        self != Class::Elem
    }

    /// Parses a name of the text form.
    pub fn from_name(name: &str) -> Option<Class> {
        Some(match name {
            "scalar" => Class::Scalar,
            "tensor" => Class::Tensor,
            "matrix" => Class::Matrix,
            "row" => Class::Row,
            "col" => Class::Col,
            "elem" => Class::Elem,
            _ => return None,
        })
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
