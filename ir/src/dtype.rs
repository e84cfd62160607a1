//! Element types and value classes of IR values.

use std::fmt;

/// The storage type of a value.
///
/// Per-element values carry the tensor's dtype (f32 today); scalar values are computed on the host
/// in f64; comparisons produce `Bool`. F16 and BF16 are representable so that graphs for
/// mixed-precision parameters can be written down, though no backend executes them yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// 32-bit IEEE float.
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
/// Ordered from cheapest to dearest, so `max` of the operands' classes is the class of a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Once per group per step, on the host, in f64 (hyperparameters, bias corrections, ...).
    Scalar,
    /// Once per tensor per step (a reduction over one tensor, such as `norm`).
    Tensor,
    /// Once per element of every tensor: the work a kernel does.
    Elem,
}

impl Class {
    /// The name used in the text form.
    pub fn name(self) -> &'static str {
        match self {
            Class::Scalar => "scalar",
            Class::Tensor => "tensor",
            Class::Elem => "elem",
        }
    }

    /// Parses a name of the text form.
    pub fn from_name(name: &str) -> Option<Class> {
        Some(match name {
            "scalar" => Class::Scalar,
            "tensor" => Class::Tensor,
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
