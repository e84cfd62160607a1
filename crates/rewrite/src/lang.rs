//! The egg language that mirrors the IR ops, and the conversions between the two.

use egg::{Id, define_language};
use optjit_ir::{Binary, Cmp, DType, Input, Op, Reduction, Unary, format_f64};
use std::fmt;
use std::str::FromStr;

/// A numeric literal, compared and hashed by its bit pattern.
///
/// Bits rather than `NotNan<f64>`: `NotNan` equates `-0.0` with `0.0`, which would merge the
/// classes of `x + -0` (exactly `x`) and `x + 0` (not `x` when `x` is `-0`). Bits also keep NaN
/// literals representable; the analysis never folds through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Konst(u64);

impl Konst {
    /// The literal `value`.
    pub(crate) fn new(value: f64) -> Konst {
        Konst(value.to_bits())
    }

    /// Its value.
    pub(crate) fn value(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl fmt::Display for Konst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_f64(self.value()))
    }
}

impl FromStr for Konst {
    type Err = std::num::ParseFloatError;

    fn from_str(s: &str) -> Result<Konst, Self::Err> {
        s.parse::<f64>().map(Konst::new)
    }
}

/// An input of the graph as an e-graph leaf: `param`, `grad`, `step`, `rank`, `state:NAME`,
/// `rstate:NAME`, `cstate:NAME`, `sstate:NAME`, `hyper:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Leaf(pub(crate) Input);

impl fmt::Display for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Input::Param => f.write_str("param"),
            Input::Grad => f.write_str("grad"),
            Input::Step => f.write_str("step"),
            Input::OptimizerStep => f.write_str("optimizer_step"),
            Input::Rank => f.write_str("rank"),
            Input::State(n) => write!(f, "state:{n}"),
            Input::RowState(n) => write!(f, "rstate:{n}"),
            Input::ColState(n) => write!(f, "cstate:{n}"),
            Input::ScalarState(n) => write!(f, "sstate:{n}"),
            Input::Hyper(n) => write!(f, "hyper:{n}"),
        }
    }
}

impl FromStr for Leaf {
    type Err = String;

    fn from_str(s: &str) -> Result<Leaf, String> {
        let input = match s {
            "param" => Input::Param,
            "grad" => Input::Grad,
            "step" => Input::Step,
            "optimizer_step" => Input::OptimizerStep,
            "rank" => Input::Rank,
            _ => match s.split_once(':') {
                Some(("state", n)) if !n.is_empty() => Input::State(n.to_string()),
                Some(("rstate", n)) if !n.is_empty() => Input::RowState(n.to_string()),
                Some(("cstate", n)) if !n.is_empty() => Input::ColState(n.to_string()),
                Some(("sstate", n)) if !n.is_empty() => Input::ScalarState(n.to_string()),
                Some(("hyper", n)) if !n.is_empty() => Input::Hyper(n.to_string()),
                _ => return Err(format!("not an input: {s:?}")),
            },
        };
        Ok(Leaf(input))
    }
}

define_language! {
    /// The step graph's ops as an egg language (one variant per IR op).
    pub(crate) enum OptLang {
        "+" = Add([Id; 2]),
        "-" = Sub([Id; 2]),
        "*" = Mul([Id; 2]),
        "/" = Div([Id; 2]),
        "min" = Min([Id; 2]),
        "max" = Max([Id; 2]),
        "pow" = Pow([Id; 2]),
        "fma" = Fma([Id; 3]),
        "neg" = Neg(Id),
        "sqrt" = Sqrt(Id),
        "rsqrt" = Rsqrt(Id),
        "exp" = Exp(Id),
        "log" = Log(Id),
        "abs" = Abs(Id),
        "sign" = Sign(Id),
        "sin" = Sin(Id),
        "cos" = Cos(Id),
        "floor" = Floor(Id),
        "<" = Lt([Id; 2]),
        "<=" = Le([Id; 2]),
        ">" = Gt([Id; 2]),
        ">=" = Ge([Id; 2]),
        "==" = Eq([Id; 2]),
        "!=" = Ne([Id; 2]),
        "select" = Select([Id; 3]),
        "cast-f32" = CastF32(Id),
        "cast-f64" = CastF64(Id),
        "cast-f16" = CastF16(Id),
        "cast-bf16" = CastBf16(Id),
        "cast-bool" = CastBool(Id),
        "norm" = Norm(Id),
        "global-norm" = GlobalNorm(Id),
        "sum" = Sum(Id),
        "mean" = Mean(Id),
        "max-abs" = MaxAbs(Id),
        "row-mean" = RowMean(Id),
        "col-mean" = ColMean(Id),
        "rows-mean" = RowsMean(Id),
        // Leaves: numbers are tried before inputs, so that "0.5" parses as a number.
        Num(Konst),
        In(Leaf),
    }
}

impl OptLang {
    /// The e-node for `op` applied to the e-classes `ids` (as many as the op's arity).
    pub(crate) fn from_op(op: &Op, ids: &[Id]) -> OptLang {
        let a = |i: usize| ids[i];
        let two = || [ids[0], ids[1]];
        match op {
            Op::Input(input) => OptLang::In(Leaf(input.clone())),
            Op::Const(c) => OptLang::Num(Konst::new(*c)),
            Op::Unary(u) => {
                let x = a(0);
                match u {
                    Unary::Neg => OptLang::Neg(x),
                    Unary::Sqrt => OptLang::Sqrt(x),
                    Unary::Rsqrt => OptLang::Rsqrt(x),
                    Unary::Exp => OptLang::Exp(x),
                    Unary::Log => OptLang::Log(x),
                    Unary::Abs => OptLang::Abs(x),
                    Unary::Sign => OptLang::Sign(x),
                    Unary::Sin => OptLang::Sin(x),
                    Unary::Cos => OptLang::Cos(x),
                    Unary::Floor => OptLang::Floor(x),
                }
            }
            Op::Binary(b) => match b {
                Binary::Add => OptLang::Add(two()),
                Binary::Sub => OptLang::Sub(two()),
                Binary::Mul => OptLang::Mul(two()),
                Binary::Div => OptLang::Div(two()),
                Binary::Min => OptLang::Min(two()),
                Binary::Max => OptLang::Max(two()),
                Binary::Pow => OptLang::Pow(two()),
            },
            Op::Fma => OptLang::Fma([ids[0], ids[1], ids[2]]),
            Op::Cmp(c) => match c {
                Cmp::Lt => OptLang::Lt(two()),
                Cmp::Le => OptLang::Le(two()),
                Cmp::Gt => OptLang::Gt(two()),
                Cmp::Ge => OptLang::Ge(two()),
                Cmp::Eq => OptLang::Eq(two()),
                Cmp::Ne => OptLang::Ne(two()),
            },
            Op::Select => OptLang::Select([ids[0], ids[1], ids[2]]),
            Op::Cast(d) => match d {
                DType::F32 => OptLang::CastF32(a(0)),
                DType::F64 => OptLang::CastF64(a(0)),
                DType::F16 => OptLang::CastF16(a(0)),
                DType::BF16 => OptLang::CastBf16(a(0)),
                DType::Bool => OptLang::CastBool(a(0)),
            },
            Op::Reduce(r) => match r {
                Reduction::Norm => OptLang::Norm(a(0)),
                Reduction::GlobalNorm => OptLang::GlobalNorm(a(0)),
                Reduction::Sum => OptLang::Sum(a(0)),
                Reduction::Mean => OptLang::Mean(a(0)),
                Reduction::MaxAbs => OptLang::MaxAbs(a(0)),
                Reduction::RowMean => OptLang::RowMean(a(0)),
                Reduction::ColMean => OptLang::ColMean(a(0)),
                Reduction::RowsMean => OptLang::RowsMean(a(0)),
            },
        }
    }

    /// The IR op of this e-node (its operands are its children, in order).
    pub(crate) fn to_op(&self) -> Op {
        use OptLang as L;
        match self {
            L::Add(_) => Op::Binary(Binary::Add),
            L::Sub(_) => Op::Binary(Binary::Sub),
            L::Mul(_) => Op::Binary(Binary::Mul),
            L::Div(_) => Op::Binary(Binary::Div),
            L::Min(_) => Op::Binary(Binary::Min),
            L::Max(_) => Op::Binary(Binary::Max),
            L::Pow(_) => Op::Binary(Binary::Pow),
            L::Fma(_) => Op::Fma,
            L::Neg(_) => Op::Unary(Unary::Neg),
            L::Sqrt(_) => Op::Unary(Unary::Sqrt),
            L::Rsqrt(_) => Op::Unary(Unary::Rsqrt),
            L::Exp(_) => Op::Unary(Unary::Exp),
            L::Log(_) => Op::Unary(Unary::Log),
            L::Abs(_) => Op::Unary(Unary::Abs),
            L::Sign(_) => Op::Unary(Unary::Sign),
            L::Sin(_) => Op::Unary(Unary::Sin),
            L::Cos(_) => Op::Unary(Unary::Cos),
            L::Floor(_) => Op::Unary(Unary::Floor),
            L::Lt(_) => Op::Cmp(Cmp::Lt),
            L::Le(_) => Op::Cmp(Cmp::Le),
            L::Gt(_) => Op::Cmp(Cmp::Gt),
            L::Ge(_) => Op::Cmp(Cmp::Ge),
            L::Eq(_) => Op::Cmp(Cmp::Eq),
            L::Ne(_) => Op::Cmp(Cmp::Ne),
            L::Select(_) => Op::Select,
            L::CastF32(_) => Op::Cast(DType::F32),
            L::CastF64(_) => Op::Cast(DType::F64),
            L::CastF16(_) => Op::Cast(DType::F16),
            L::CastBf16(_) => Op::Cast(DType::BF16),
            L::CastBool(_) => Op::Cast(DType::Bool),
            L::Norm(_) => Op::Reduce(Reduction::Norm),
            L::GlobalNorm(_) => Op::Reduce(Reduction::GlobalNorm),
            L::Sum(_) => Op::Reduce(Reduction::Sum),
            L::Mean(_) => Op::Reduce(Reduction::Mean),
            L::MaxAbs(_) => Op::Reduce(Reduction::MaxAbs),
            L::RowMean(_) => Op::Reduce(Reduction::RowMean),
            L::ColMean(_) => Op::Reduce(Reduction::ColMean),
            L::RowsMean(_) => Op::Reduce(Reduction::RowsMean),
            L::Num(k) => Op::Const(k.value()),
            L::In(leaf) => Op::Input(leaf.0.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egg::{Language, RecExpr};

    #[test]
    fn every_op_round_trips() {
        let mut ops: Vec<Op> = vec![
            Op::Input(Input::Param),
            Op::Input(Input::Grad),
            Op::Input(Input::Step),
            Op::Input(Input::OptimizerStep),
            Op::Input(Input::State("exp_avg".into())),
            Op::Input(Input::ScalarState("mu".into())),
            Op::Input(Input::Hyper("lr".into())),
            Op::Const(0.5),
            Op::Const(-0.0),
            Op::Const(f64::NAN),
            Op::Const(f64::NEG_INFINITY),
            Op::Fma,
            Op::Select,
        ];
        ops.extend(Unary::ALL.iter().map(|&u| Op::Unary(u)));
        ops.extend(Binary::ALL.iter().map(|&b| Op::Binary(b)));
        ops.extend(Cmp::ALL.iter().map(|&c| Op::Cmp(c)));
        ops.extend(Reduction::ALL.iter().map(|&r| Op::Reduce(r)));
        for d in [DType::F32, DType::F64, DType::F16, DType::BF16, DType::Bool] {
            ops.push(Op::Cast(d));
        }
        for op in ops {
            let ids: Vec<Id> = (0..op.arity()).map(Id::from).collect();
            let node = OptLang::from_op(&op, &ids);
            assert_eq!(node.children(), &ids[..]);
            assert_eq!(op.key(), node.to_op().key(), "{op:?}");
        }
    }

    #[test]
    fn leaves_parse_numbers_first() {
        let e: RecExpr<OptLang> = "(* (+ state:exp_avg -0.0) (/ hyper:lr 1e-8))"
            .parse()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "(* (+ state:exp_avg -0.0) (/ hyper:lr 1e-8))"
        );
        assert!(
            matches!(e[1.into()], OptLang::Num(k) if k.value().to_bits() == (-0.0f64).to_bits())
        );
        assert!("state:".parse::<Leaf>().is_err());
        assert!("lr".parse::<Leaf>().is_err());
    }
}
