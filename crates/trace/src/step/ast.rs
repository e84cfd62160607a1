//! The syntax tree of a `.step` source: `optimizer` and `schedule` blocks of statements.

/// Where a piece of source text is: 1-based line and column of its first character, and its
/// byte range in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset just past the last character.
    pub end: usize,
}

/// A whole source file: one or more blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// The blocks, in source order.
    pub items: Vec<Item>,
}

/// What a block defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    /// `optimizer NAME { ... }`: an update rule.
    Optimizer,
    /// `schedule NAME { ... }`: hyperparameter values in force per step.
    Schedule,
}

/// `optimizer NAME { statements }` or `schedule NAME { statements }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Optimizer or schedule.
    pub kind: ItemKind,
    /// The block's name.
    pub name: Ident,
    /// The statements, in order.
    pub body: Vec<Stmt>,
    /// From the keyword to the closing brace.
    pub span: Span,
}

/// A name as written, with its place.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    /// The text.
    pub name: String,
    /// Where it is.
    pub span: Span,
}

/// One statement of a block.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `hyper NAME = EXPR [in INTERVAL]`: a hyperparameter with its default (a constant
    /// expression) and the values it may take.
    Hyper {
        /// The hyperparameter.
        name: Ident,
        /// The default.
        value: Expr,
        /// `in [low, high)` and the like: the values it may be set to; any finite one without.
        domain: Option<Box<Interval>>,
    },
    /// `state NAME = EXPR` (per element), `state NAME: scalar = EXPR` (one per group),
    /// `state NAME: row = EXPR` or `state NAME: col = EXPR` (one per row or column of each
    /// matrix).
    State {
        /// The state.
        name: Ident,
        /// `Elem`, `Scalar`, `Row` or `Col`.
        class: optjit_ir::Class,
        /// The value before the first step (a constant expression).
        init: Expr,
    },
    /// `alias NAME = STATE when rank < N`: PyTorch's name for `STATE` on tensors of fewer than
    /// `N` dimensions (Adafactor's `variance` is its column state on vectors). Optimizers only.
    Alias {
        /// The other name.
        alias: Ident,
        /// The state it names.
        state: Ident,
        /// It applies to tensors of fewer dimensions than this.
        below_rank: usize,
    },
    /// `let NAME = EXPR`: names a value (a later `let` of the same name shadows it).
    Let {
        /// The name.
        name: Ident,
        /// The value.
        value: Expr,
    },
    /// `NAME = EXPR`: assigns `param`, a state or (in a schedule) a hyperparameter; later reads
    /// see the new value.
    Assign {
        /// What is assigned.
        name: Ident,
        /// The value.
        value: Expr,
    },
}

/// `[low, high]`, `[low, high)`, `(low, high]` or `(low, high)`: the values a hyperparameter
/// may take. A bound is a constant expression, `inf` or `-inf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    /// The lower bound as written.
    pub low: Expr,
    /// `[`: the lower bound itself is allowed; `(`: it is not.
    pub low_inclusive: bool,
    /// The upper bound as written.
    pub high: Expr,
    /// `]`: the upper bound itself is allowed; `)`: it is not.
    pub high_inclusive: bool,
    /// From the opening bracket to the closing one.
    pub span: Span,
}

/// An expression with its place.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it computes.
    pub kind: ExprKind,
    /// Its whole text.
    pub span: Span,
}

/// Binary arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

/// One step of a [`ExprKind::Chain`]: an operator and its right operand.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    /// The operator.
    pub op: BinOp,
    /// Where the operator is.
    pub at: Span,
    /// Its right operand.
    pub operand: Expr,
}

/// Comparison operators (they bind looser than arithmetic and do not chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// The forms of an expression.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A number literal (`1e-4`, `0.9`, `3`).
    Number(f64),
    /// A name: an input, a hyperparameter, a state, a `let`, or `pi`.
    Name(String),
    /// `-x`.
    Neg(Box<Expr>),
    /// `a op b op c ...`: operators of one precedence level (`+` and `-`, or `*` and `/`)
    /// applied left to right, `((a op b) op c) ...`. A chain of any length is one node, so that
    /// walking it takes no recursion (a long flat sum is not deeply nested).
    Chain {
        /// The leftmost operand.
        first: Box<Expr>,
        /// Each operator with its right operand, in order (at least one).
        rest: Vec<Link>,
    },
    /// `a op b`, a comparison.
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    /// `f(args)`.
    Call {
        /// The function's name.
        func: Ident,
        /// The arguments, in order.
        args: Vec<Expr>,
    },
}
