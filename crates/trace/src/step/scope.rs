//! Names in scope while a block is turned into IR, and expressions turned into graph nodes with
//! their types checked.

use super::ast::{BinOp, CmpOp, Expr, ExprKind, Ident, Span};
use super::error::StepError;
use super::limits::MAX_GRAPH_NODES;
use optjit_ir::{Binary, Class, Cmp, DType, Graph, Input, NodeIndex, Op, Reduction, Unary};
use std::collections::HashMap;

/// Functions of one argument, by name.
const UNARY: &[(&str, Unary)] = &[
    ("sqrt", Unary::Sqrt),
    ("rsqrt", Unary::Rsqrt),
    ("exp", Unary::Exp),
    ("log", Unary::Log),
    ("abs", Unary::Abs),
    ("sign", Unary::Sign),
    ("sin", Unary::Sin),
    ("cos", Unary::Cos),
    ("floor", Unary::Floor),
];

/// Functions of two arguments, by name.
const BINARY: &[(&str, Binary)] = &[
    ("min", Binary::Min),
    ("max", Binary::Max),
    ("pow", Binary::Pow),
];

/// Reductions, by name.
const REDUCTIONS: &[(&str, Reduction)] = &[
    ("norm", Reduction::Norm),
    ("global_norm", Reduction::GlobalNorm),
    ("sum", Reduction::Sum),
    ("mean", Reduction::Mean),
    ("max_abs", Reduction::MaxAbs),
    ("row_mean", Reduction::RowMean),
    ("col_mean", Reduction::ColMean),
    ("rows_mean", Reduction::RowsMean),
];

/// Every function name, for suggestions and reserved-name checks.
pub(crate) fn function_names() -> impl Iterator<Item = &'static str> {
    let unary = UNARY.iter().map(|(n, _)| *n);
    let binary = BINARY.iter().map(|(n, _)| *n);
    let reductions = REDUCTIONS.iter().map(|(n, _)| *n);
    unary
        .chain(binary)
        .chain(reductions)
        .chain(["clamp", "where"])
}

/// Which kind of block is being built: the names and functions each may use differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockKind {
    /// An update rule: `param`, `grad`, `step`, reductions.
    Optimizer,
    /// A schedule: `t`, no per-element values, no reductions.
    Schedule,
}

/// How a value of `class` is called in `.step` terms.
pub(crate) fn class_words(class: Class) -> &'static str {
    match class {
        Class::Scalar => "scalar",
        Class::Tensor => "per-tensor",
        Class::Matrix => "per-matrix",
        Class::Row => "per-row",
        Class::Col => "per-column",
        Class::Elem => "per-element",
    }
}

/// The names visible at the current statement, and the graph being built.
pub(crate) struct Scope<'a> {
    pub(crate) file: &'a str,
    pub(crate) source: &'a str,
    pub(crate) graph: &'a mut Graph,
    pub(crate) kind: BlockKind,
    /// Name → its current value.
    pub(crate) names: HashMap<String, NodeIndex>,
    /// Names the block defines later, with where (for "used before its definition").
    pub(crate) later: HashMap<String, Span>,
    /// What each name the block has declared so far is.
    pub(crate) declared: HashMap<String, Declared>,
}

/// What a `hyper` or `state` statement declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Declared {
    /// A hyperparameter.
    Hyper,
    /// A state of this class.
    State(Class),
}

/// The edit distance between `a` and `b` (insertions, deletions, substitutions and swaps of
/// neighbours, each costing 1: "optimal string alignment"), for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The longest name a suggestion is looked for (each candidate costs the product of the
/// lengths).
const SUGGEST_CHARS: usize = 32;

/// `; did you mean 'x'?` for the closest of `candidates` within a third of `name`'s length
/// (none for a name longer than 32 characters).
pub(crate) fn suggestion<'c>(name: &str, candidates: impl Iterator<Item = &'c str>) -> String {
    let length = name.chars().count();
    if length > SUGGEST_CHARS {
        return String::new();
    }
    let limit = (length / 3).max(1);
    candidates
        .filter(|c| *c != name)
        // The distance is at least the difference of the lengths: skip what cannot be close.
        .filter(|c| c.chars().count().abs_diff(length) <= limit)
        .map(|c| (distance(name, c), c))
        .filter(|&(d, _)| d <= limit)
        .min()
        .map(|(_, c)| format!("; did you mean '{c}'?"))
        .unwrap_or_default()
}

impl Scope<'_> {
    pub(crate) fn error(&self, span: Span, message: impl Into<String>) -> StepError {
        StepError::at(self.file, self.source, span, message)
    }

    /// The value of `name` at this point of the block.
    fn lookup(&mut self, name: &str, span: Span) -> Result<NodeIndex, StepError> {
        if let Some(&node) = self.names.get(name) {
            return Ok(node);
        }
        let message = match (name, self.kind) {
            ("pi", _) => return self.add(Op::Const(std::f64::consts::PI), &[], span),
            ("t", BlockKind::Optimizer) => {
                "'t' is a schedule's step index; an optimizer reads `step`, the tensor's own count"
                    .into()
            }
            ("step", BlockKind::Schedule) => {
                "a schedule reads `t`, the 0-based index of the step about to be taken".into()
            }
            ("metric", BlockKind::Optimizer) => {
                "`metric` is read by a schedule (ReduceLROnPlateau-style), not by an optimizer"
                    .into()
            }
            _ => match self.later.get(name) {
                Some(def) => format!(
                    "'{name}' is used before its definition at {}:{}",
                    def.line, def.col
                ),
                None => {
                    let known = self.names.keys().map(String::as_str).chain(["pi"]);
                    format!("unknown name '{name}'{}", suggestion(name, known))
                }
            },
        };
        Err(self.error(span, message))
    }

    /// Adds (or finds) `op` on `operands` for the expression at `at`, refusing to grow the
    /// graph past [`MAX_GRAPH_NODES`].
    fn add(&mut self, op: Op, operands: &[NodeIndex], at: Span) -> Result<NodeIndex, StepError> {
        self.check_room(at)?;
        Ok(self.graph.add(op, operands))
    }

    /// Refuses the code at `at` when the graph already has [`MAX_GRAPH_NODES`] nodes.
    pub(crate) fn check_room(&self, at: Span) -> Result<(), StepError> {
        if self.graph.len() < MAX_GRAPH_NODES {
            return Ok(());
        }
        Err(self.error(
            at,
            format!(
                "this would take the block's graph past {MAX_GRAPH_NODES} nodes (operations, \
                 inputs and constants), the most a step may have (docs/step-language.md, \
                 \"Limits\")"
            ),
        ))
    }

    /// `node`, checked to be a number (not a comparison result).
    fn number(&self, node: NodeIndex, at: &Expr) -> Result<NodeIndex, StepError> {
        match self.graph.node(node).dtype {
            DType::Bool => Err(self.error(
                at.span,
                "a comparison result cannot be used as a number; use where(condition, a, b)",
            )),
            _ => Ok(node),
        }
    }

    /// The graph node of `expr`, its names resolved in this scope.
    pub(crate) fn expr(&mut self, expr: &Expr) -> Result<NodeIndex, StepError> {
        let at = expr.span;
        match &expr.kind {
            ExprKind::Number(x) => self.add(Op::Const(*x), &[], at),
            ExprKind::Name(name) => self.lookup(name, expr.span),
            ExprKind::Neg(x) => {
                let a = self.expr(x)?;
                let a = self.number(a, x)?;
                self.add(Op::Unary(Unary::Neg), &[a], at)
            }
            // Left to right, without recursing along the chain.
            ExprKind::Chain { first, rest } => {
                let value = self.expr(first)?;
                let mut value = self.number(value, first)?;
                for link in rest {
                    let b = self.expr(&link.operand)?;
                    let b = self.number(b, &link.operand)?;
                    let op = match link.op {
                        BinOp::Add => Binary::Add,
                        BinOp::Sub => Binary::Sub,
                        BinOp::Mul => Binary::Mul,
                        BinOp::Div => Binary::Div,
                    };
                    value = self.add(Op::Binary(op), &[value, b], link.at)?;
                }
                Ok(value)
            }
            ExprKind::Compare(op, x, y) => {
                let a = self.expr(x)?;
                let a = self.number(a, x)?;
                let b = self.expr(y)?;
                let b = self.number(b, y)?;
                let op = match op {
                    CmpOp::Lt => Cmp::Lt,
                    CmpOp::Le => Cmp::Le,
                    CmpOp::Gt => Cmp::Gt,
                    CmpOp::Ge => Cmp::Ge,
                    CmpOp::Eq => Cmp::Eq,
                    CmpOp::Ne => Cmp::Ne,
                };
                self.add(Op::Cmp(op), &[a, b], at)
            }
            ExprKind::Call { func, args } => self.call(expr, func, args),
        }
    }

    fn arity(&self, func: &Ident, args: &[Expr], want: usize) -> Result<(), StepError> {
        if args.len() == want {
            return Ok(());
        }
        let plural = if want == 1 { "" } else { "s" };
        Err(self.error(
            func.span,
            format!(
                "{} takes {want} argument{plural}, got {}",
                func.name,
                args.len()
            ),
        ))
    }

    /// The number arguments of a call, in order.
    fn numbers(&mut self, args: &[Expr]) -> Result<Vec<NodeIndex>, StepError> {
        args.iter()
            .map(|a| {
                let node = self.expr(a)?;
                self.number(node, a)
            })
            .collect()
    }

    fn call(&mut self, expr: &Expr, func: &Ident, args: &[Expr]) -> Result<NodeIndex, StepError> {
        let name = func.name.as_str();
        if let Some(&(_, u)) = UNARY.iter().find(|(n, _)| *n == name) {
            self.arity(func, args, 1)?;
            let x = self.numbers(args)?[0];
            if u.scalar_only() && self.graph.node(x).class != Class::Scalar {
                return Err(self.error(
                    expr.span,
                    format!(
                        "{name} runs only on scalars (hyperparameters, step, scalar states), \
                         not on per-element or per-tensor values"
                    ),
                ));
            }
            return self.add(Op::Unary(u), &[x], expr.span);
        }
        if let Some(&(_, b)) = BINARY.iter().find(|(n, _)| *n == name) {
            self.arity(func, args, 2)?;
            let x = self.numbers(args)?;
            return self.add(Op::Binary(b), &x, expr.span);
        }
        if let Some(&(_, r)) = REDUCTIONS.iter().find(|(n, _)| *n == name) {
            self.arity(func, args, 1)?;
            if self.kind == BlockKind::Schedule {
                return Err(self.error(func.span, "reductions are not available in a schedule"));
            }
            let x = self.numbers(args)?[0];
            if self.graph.node(x).class != r.operand_class() {
                let message = match r.operand_class() {
                    Class::Row => format!(
                        "{name} reduces a per-row value (a `: row` state or a row_mean); this one is {}",
                        self.graph.node(x).class
                    ),
                    _ => format!("{name} reduces a per-element value; this one is not per element"),
                };
                return Err(self.error(args[0].span, message));
            }
            return self.add(Op::Reduce(r), &[x], expr.span);
        }
        match name {
            "clamp" => {
                self.arity(func, args, 3)?;
                let x = self.numbers(args)?;
                let low = self.add(Op::Binary(Binary::Max), &[x[0], x[1]], expr.span)?;
                self.add(Op::Binary(Binary::Min), &[low, x[2]], expr.span)
            }
            "where" => {
                self.arity(func, args, 3)?;
                let condition = self.expr(&args[0])?;
                if self.graph.node(condition).dtype != DType::Bool {
                    return Err(self.error(
                        args[0].span,
                        "where's first argument must be a comparison (`a < b`, ...)",
                    ));
                }
                let values = self.numbers(&args[1..])?;
                self.add(Op::Select, &[condition, values[0], values[1]], expr.span)
            }
            _ => Err(self.error(
                func.span,
                format!(
                    "unknown function '{name}'{}",
                    suggestion(name, function_names())
                ),
            )),
        }
    }

    /// The value of a constant expression (numbers, `pi`, arithmetic), for defaults and
    /// initial values.
    pub(crate) fn constant(&self, expr: &Expr) -> Result<f64, StepError> {
        let value = match &expr.kind {
            ExprKind::Number(x) => *x,
            ExprKind::Name(n) if n == "pi" => std::f64::consts::PI,
            ExprKind::Neg(x) => -self.constant(x)?,
            ExprKind::Chain { first, rest } => {
                // Every partial result must be finite, as each operation's was when the chain
                // was a tree of them.
                let mut value = self.constant(first)?;
                for link in rest {
                    let b = self.constant(&link.operand)?;
                    value = match link.op {
                        BinOp::Add => value + b,
                        BinOp::Sub => value - b,
                        BinOp::Mul => value * b,
                        BinOp::Div => value / b,
                    };
                    if !value.is_finite() {
                        let span = Span {
                            end: link.operand.span.end,
                            ..first.span
                        };
                        let message = format!("the constant is {value}, not finite");
                        return Err(self.error(span, message));
                    }
                }
                value
            }
            _ => {
                return Err(self.error(
                    expr.span,
                    "expected a constant (a number, `pi`, or arithmetic on them)",
                ));
            }
        };
        match value.is_finite() {
            true => Ok(value),
            false => Err(self.error(expr.span, format!("the constant is {value}, not finite"))),
        }
    }

    /// The input node `input`, bound to `name`.
    pub(crate) fn bind_input(&mut self, name: &str, input: Input) -> NodeIndex {
        let node = self.graph.input(input);
        self.names.insert(name.to_string(), node);
        node
    }
}
