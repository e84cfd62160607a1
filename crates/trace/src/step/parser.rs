//! Recursive-descent parser from `.step` source text to the syntax tree ([`Program`]).

use super::ast::{
    BinOp, CmpOp, Expr, ExprKind, Ident, Interval, Item, ItemKind, Link, Program, Span, Stmt,
};
use super::error::StepError;
use super::lexer::{Keyword, Lexer, Token, TokenKind};
use super::limits::{ECHO_CHARS, MAX_DEPTH, MAX_SOURCE_BYTES, shorten};
use optjit_ir::Class;

/// The error for an expression nested deeper than [`MAX_DEPTH`] (refused rather than overflow
/// the stack of the passes that walk the tree).
fn too_deep() -> String {
    format!(
        "expression nested too deeply: more than {MAX_DEPTH} levels of parentheses, calls, unary \
         minus and operators of different precedence (docs/step-language.md, \"Limits\")"
    )
}

/// Errors are boxed inside the parser so that the results passed up its recursive calls stay
/// small, and so do their stack frames.
type Fallible<T> = Result<T, Box<StepError>>;

/// Parses a whole `.step` source. `file` names it in errors (`<input>` when empty).
///
/// ```
/// use optjit_trace::step::{ast::Stmt, parse};
///
/// let program = parse("sgd.step", "optimizer sgd { hyper lr = 0.1  param = param - lr * grad }")?;
/// assert_eq!(program.items[0].name.name, "sgd");
/// assert!(matches!(program.items[0].body[1], Stmt::Assign { .. }));
/// # Ok::<(), optjit_trace::step::StepError>(())
/// ```
pub fn parse(file: &str, source: &str) -> Result<Program, StepError> {
    let file = if file.is_empty() { "<input>" } else { file };
    if source.len() > MAX_SOURCE_BYTES {
        let start = Span {
            line: 1,
            col: 1,
            start: 0,
            end: 0,
        };
        let message = format!(
            "the source is {} bytes, more than the limit of {MAX_SOURCE_BYTES} bytes (4 MiB) \
             of a .step file",
            source.len()
        );
        return Err(StepError::at(file, source, start, message));
    }
    parse_items(file, source).map_err(|error| *error)
}

/// program := item+
fn parse_items(file: &str, source: &str) -> Fallible<Program> {
    let mut parser = Parser::new(file, source)?;
    let mut items = Vec::new();
    while items.is_empty() || parser.current.kind != TokenKind::End {
        items.push(parser.item()?);
    }
    Ok(Program { items })
}

/// An expression being built (boxed, ready to become a child), with the height of its tree
/// (a leaf is 1).
struct Parsed {
    expr: Box<Expr>,
    height: u32,
}

impl Parsed {
    fn leaf(kind: ExprKind, span: Span) -> Parsed {
        Parsed {
            expr: Box::new(Expr { kind, span }),
            height: 1,
        }
    }
}

/// The parser's state: the lexer and the one token of lookahead the grammar needs.
struct Parser<'s> {
    file: &'s str,
    source: &'s str,
    lexer: Lexer<'s>,
    /// The next token, not yet consumed.
    current: Token,
    /// How many expressions (and unary minuses) are being parsed, one inside the other.
    depth: u32,
}

/// The span from the start of `first` to the end of `last`, placed at `first`.
fn join(first: Span, last: Span) -> Span {
    Span {
        end: last.end,
        ..first
    }
}

fn item_word(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Optimizer => "optimizer",
        ItemKind::Schedule => "schedule",
    }
}

fn comparison_op(kind: TokenKind) -> Option<CmpOp> {
    Some(match kind {
        TokenKind::Less => CmpOp::Lt,
        TokenKind::LessEqual => CmpOp::Le,
        TokenKind::Greater => CmpOp::Gt,
        TokenKind::GreaterEqual => CmpOp::Ge,
        TokenKind::EqualEqual => CmpOp::Eq,
        TokenKind::NotEqual => CmpOp::Ne,
        _ => return None,
    })
}

impl<'s> Parser<'s> {
    fn new(file: &'s str, source: &'s str) -> Fallible<Parser<'s>> {
        let mut lexer = Lexer::new(file, source);
        let current = lexer.next_token()?;
        Ok(Parser {
            file,
            source,
            lexer,
            current,
            depth: 0,
        })
    }

    /// Consumes the current token and returns it.
    fn advance(&mut self) -> Fallible<Token> {
        let next = self.lexer.next_token()?;
        Ok(std::mem::replace(&mut self.current, next))
    }

    /// The source text of `span`.
    fn text(&self, span: Span) -> &'s str {
        self.source.get(span.start..span.end).unwrap_or("")
    }

    /// How error messages name the current token: `` `text` ``, the keyword `text`, or the end.
    fn found(&self) -> String {
        let text = shorten(self.text(self.current.span), ECHO_CHARS);
        match self.current.kind {
            TokenKind::End => "end of input".to_string(),
            TokenKind::Keyword(_) => format!("the keyword `{text}`"),
            _ => format!("`{text}`"),
        }
    }

    fn error_at(&self, span: Span, message: impl Into<String>) -> Box<StepError> {
        Box::new(StepError::at(self.file, self.source, span, message))
    }

    /// An error at the current token: "expected WHAT, found ...".
    fn expected(&self, what: &str) -> Box<StepError> {
        self.error_at(
            self.current.span,
            format!("expected {what}, found {}", self.found()),
        )
    }

    /// Consumes a token of `kind`, or fails with "expected WHAT, found ...".
    fn expect(&mut self, kind: TokenKind, what: &str) -> Fallible<Token> {
        if self.current.kind == kind {
            self.advance()
        } else {
            Err(self.expected(what))
        }
    }

    /// Consumes a name (an identifier) and returns it.
    fn ident(&mut self) -> Fallible<Ident> {
        let token = self.advance()?;
        Ok(Ident {
            name: self.text(token.span).to_string(),
            span: token.span,
        })
    }

    /// A name after `keyword`.
    fn name_after(&mut self, keyword: &str) -> Fallible<Ident> {
        if self.current.kind != TokenKind::Ident {
            return Err(self.expected(&format!("a name after `{keyword}`")));
        }
        self.ident()
    }

    /// item := ("optimizer" | "schedule") IDENT "{" stmt* "}"
    fn item(&mut self) -> Fallible<Item> {
        let kind = match self.current.kind {
            TokenKind::Keyword(Keyword::Optimizer) => ItemKind::Optimizer,
            TokenKind::Keyword(Keyword::Schedule) => ItemKind::Schedule,
            _ => return Err(self.expected("`optimizer` or `schedule`")),
        };
        let word = item_word(kind);
        let keyword = self.advance()?;
        let name = self.name_after(word)?;
        let open = self.expect(TokenKind::LeftBrace, &format!("`{{` after the {word} name"))?;
        let opened = || {
            let Span { line, col, .. } = open.span;
            format!("{word} '{}' (opened at {line}:{col})", name.name)
        };
        let mut body = Vec::new();
        let close = loop {
            match self.current.kind {
                TokenKind::RightBrace => break self.advance()?,
                TokenKind::Semicolon => {
                    self.advance()?;
                }
                TokenKind::End => {
                    let message = format!("unclosed `{{` of {}", opened());
                    return Err(self.error_at(self.current.span, message));
                }
                TokenKind::Keyword(Keyword::Optimizer | Keyword::Schedule) => {
                    return Err(self.expected(&format!("`}}` to close {}", opened())));
                }
                _ => body.push(self.stmt()?),
            }
        };
        Ok(Item {
            kind,
            name,
            body,
            span: join(keyword.span, close.span),
        })
    }

    /// stmt := "hyper" IDENT "=" expr | "state" IDENT [":" ("scalar" | "row" | "col")] "=" expr
    ///       | "alias" IDENT "=" IDENT "when" "rank" "<" NUMBER
    ///       | "let" IDENT "=" expr | IDENT "=" expr
    fn stmt(&mut self) -> Fallible<Stmt> {
        match self.current.kind {
            TokenKind::Keyword(Keyword::Hyper) => {
                self.advance()?;
                let name = self.name_after("hyper")?;
                self.expect(TokenKind::Equals, "`=` after the hyperparameter name")?;
                let value = self.expr()?;
                let domain = match self.current.kind {
                    TokenKind::Keyword(Keyword::In) => {
                        self.advance()?;
                        Some(Box::new(self.interval()?))
                    }
                    _ => None,
                };
                Ok(Stmt::Hyper {
                    name,
                    value,
                    domain,
                })
            }
            TokenKind::Keyword(Keyword::State) => {
                self.advance()?;
                let name = self.name_after("state")?;
                let mut class = Class::Elem;
                if self.current.kind == TokenKind::Colon {
                    self.advance()?;
                    let what = "`scalar`, `row` or `col` after `:`";
                    class = match self.current.kind {
                        TokenKind::Keyword(Keyword::Scalar) => Class::Scalar,
                        TokenKind::Ident if self.text(self.current.span) == "row" => Class::Row,
                        TokenKind::Ident if self.text(self.current.span) == "col" => Class::Col,
                        _ => return Err(self.expected(what)),
                    };
                    self.advance()?;
                    self.expect(TokenKind::Equals, "`=` after the state's class")?;
                } else {
                    self.expect(TokenKind::Equals, "`=` or `: scalar` after the state name")?;
                }
                let init = self.expr()?;
                Ok(Stmt::State { name, class, init })
            }
            TokenKind::Keyword(Keyword::Alias) => {
                self.advance()?;
                let alias = self.name_after("alias")?;
                self.expect(TokenKind::Equals, "`=` after the alias")?;
                let state = self.name_after("=")?;
                for word in ["when", "rank"] {
                    if self.current.kind != TokenKind::Ident || self.text(self.current.span) != word
                    {
                        return Err(
                            self.expected(&format!("`{word}` (alias NAME = STATE when rank < N)"))
                        );
                    }
                    self.advance()?;
                }
                self.expect(TokenKind::Less, "`<` after `rank`")?;
                let below_rank = match self.current.kind {
                    TokenKind::Number(n) if (1.0..=64.0).contains(&n) && n.fract() == 0.0 => {
                        n as usize
                    }
                    _ => return Err(self.expected("a whole number of dimensions from 1 to 64")),
                };
                self.advance()?;
                Ok(Stmt::Alias {
                    alias,
                    state,
                    below_rank,
                })
            }
            TokenKind::Keyword(Keyword::Let) => {
                self.advance()?;
                let name = self.name_after("let")?;
                self.expect(TokenKind::Equals, "`=` after the `let` name")?;
                let value = self.expr()?;
                Ok(Stmt::Let { name, value })
            }
            TokenKind::Ident => {
                let name = self.ident()?;
                if self.current.kind != TokenKind::Equals {
                    return Err(self.expected(&format!("`=` to assign '{}'", name.name)));
                }
                self.advance()?;
                let value = self.expr()?;
                Ok(Stmt::Assign { name, value })
            }
            _ => {
                Err(self
                    .expected("a statement (`hyper`, `state`, `alias`, `let` or NAME `=`) or `}`"))
            }
        }
    }

    /// interval := ("[" | "(") expr "," expr ("]" | ")"), after `in`.
    fn interval(&mut self) -> Fallible<Interval> {
        let what = "`[` or `(` to open the interval (`in [0, 1)`, `in (0, inf)`)";
        let low_inclusive = match self.current.kind {
            TokenKind::LeftBracket => true,
            TokenKind::LeftParen => false,
            _ => return Err(self.expected(what)),
        };
        let open = self.advance()?;
        let low = self.expr()?;
        self.expect(TokenKind::Comma, "`,` between the interval's bounds")?;
        let high = self.expr()?;
        let high_inclusive = match self.current.kind {
            TokenKind::RightBracket => true,
            TokenKind::RightParen => false,
            _ => return Err(self.expected("`]` or `)` to close the interval")),
        };
        let close = self.advance()?;
        Ok(Interval {
            low,
            low_inclusive,
            high,
            high_inclusive,
            span: join(open.span, close.span),
        })
    }

    /// Enters one level of nesting, refusing to go past [`MAX_DEPTH`].
    fn enter(&mut self) -> Fallible<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(self.current.span, too_deep()));
        }
        Ok(())
    }

    /// A node over children of height `child_height`, refused when the tree gets too tall
    /// (`at` is its operator, where the error points).
    fn node(&self, kind: ExprKind, span: Span, child_height: u32, at: Span) -> Fallible<Parsed> {
        let height = child_height + 1;
        if height > MAX_DEPTH {
            return Err(self.error_at(at, too_deep()));
        }
        Ok(Parsed {
            expr: Box::new(Expr { kind, span }),
            height,
        })
    }

    /// A whole expression, as a statement's value.
    fn expr(&mut self) -> Fallible<Expr> {
        Ok(*self.nested_expr()?.expr)
    }

    /// expr := sum [cmpop sum]
    fn nested_expr(&mut self) -> Fallible<Parsed> {
        self.enter()?;
        let left = self.sum()?;
        let Some(op) = comparison_op(self.current.kind) else {
            self.depth -= 1;
            return Ok(left);
        };
        let operator = self.advance()?;
        let right = self.sum()?;
        if comparison_op(self.current.kind).is_some() {
            return Err(self.error_at(
                self.current.span,
                "comparisons do not chain; use parentheses",
            ));
        }
        self.depth -= 1;
        let span = join(left.expr.span, right.expr.span);
        let child_height = left.height.max(right.height);
        self.node(
            ExprKind::Compare(op, left.expr, right.expr),
            span,
            child_height,
            operator.span,
        )
    }

    /// sum := product (("+"|"-") product)*
    fn sum(&mut self) -> Fallible<Parsed> {
        self.chain(Self::product, |kind| match kind {
            TokenKind::Plus => Some(BinOp::Add),
            TokenKind::Minus => Some(BinOp::Sub),
            _ => None,
        })
    }

    /// product := unary (("*"|"/") unary)*
    fn product(&mut self) -> Fallible<Parsed> {
        self.chain(Self::unary, |kind| match kind {
            TokenKind::Star => Some(BinOp::Mul),
            TokenKind::Slash => Some(BinOp::Div),
            _ => None,
        })
    }

    /// `operand (op operand)*` for the operators `op_of` knows: the operand alone, or one
    /// [`ExprKind::Chain`] one level taller than its tallest operand, however many there are.
    fn chain(
        &mut self,
        operand: fn(&mut Self) -> Fallible<Parsed>,
        op_of: fn(TokenKind) -> Option<BinOp>,
    ) -> Fallible<Parsed> {
        let first = operand(self)?;
        let mut rest: Vec<Link> = Vec::new();
        let mut child_height = first.height;
        let mut end = first.expr.span;
        while let Some(op) = op_of(self.current.kind) {
            let at = self.advance()?.span;
            let right = operand(self)?;
            child_height = child_height.max(right.height);
            end = right.expr.span;
            rest.push(Link {
                op,
                at,
                operand: *right.expr,
            });
        }
        let Some(at) = rest.first().map(|link| link.at) else {
            return Ok(first);
        };
        let span = join(first.expr.span, end);
        let kind = ExprKind::Chain {
            first: first.expr,
            rest,
        };
        self.node(kind, span, child_height, at)
    }

    /// unary := "-" unary | primary
    fn unary(&mut self) -> Fallible<Parsed> {
        if self.current.kind != TokenKind::Minus {
            return self.primary();
        }
        self.enter()?;
        let minus = self.advance()?;
        let operand = self.unary()?;
        self.depth -= 1;
        let span = join(minus.span, operand.expr.span);
        self.node(
            ExprKind::Neg(operand.expr),
            span,
            operand.height,
            minus.span,
        )
    }

    /// primary := NUMBER | IDENT | IDENT "(" [expr ("," expr)*] ")" | "(" expr ")"
    fn primary(&mut self) -> Fallible<Parsed> {
        match self.current.kind {
            TokenKind::Number(value) => {
                let token = self.advance()?;
                Ok(Parsed::leaf(ExprKind::Number(value), token.span))
            }
            TokenKind::Ident => {
                let name = self.ident()?;
                if self.current.kind == TokenKind::LeftParen {
                    return self.call(name);
                }
                Ok(Parsed::leaf(ExprKind::Name(name.name), name.span))
            }
            TokenKind::LeftParen => self.parenthesized(),
            _ => Err(self.expected("an expression")),
        }
    }

    /// `( expr )`: the inner expression, its span widened to the parentheses.
    fn parenthesized(&mut self) -> Fallible<Parsed> {
        let open = self.advance()?;
        let mut inner = self.nested_expr()?;
        if self.current.kind != TokenKind::RightParen {
            let Span { line, col, .. } = open.span;
            return Err(self.expected(&format!("`)` to close the `(` opened at {line}:{col}")));
        }
        let close = self.advance()?;
        inner.expr.span = join(open.span, close.span);
        Ok(inner)
    }

    /// The arguments of a call to `func`, from its `(` to its `)`.
    fn call(&mut self, func: Ident) -> Fallible<Parsed> {
        let open = self.advance()?;
        let mut args = Vec::new();
        let mut child_height = 0;
        if self.current.kind != TokenKind::RightParen {
            loop {
                let arg = self.nested_expr()?;
                child_height = child_height.max(arg.height);
                args.push(*arg.expr);
                match self.current.kind {
                    TokenKind::Comma => {
                        self.advance()?;
                    }
                    TokenKind::RightParen => break,
                    _ => {
                        let Span { line, col, .. } = open.span;
                        let what = format!(
                            "`,` or `)` in the arguments of '{}' (opened at {line}:{col})",
                            func.name
                        );
                        return Err(self.expected(&what));
                    }
                }
            }
        }
        let close = self.advance()?;
        let span = join(func.span, close.span);
        self.node(ExprKind::Call { func, args }, span, child_height, open.span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LION: &str = "optimizer lion {
  hyper lr = 1e-4
  hyper beta1 = 0.9
  hyper beta2 = 0.99
  hyper weight_decay = 0.0
  state exp_avg = 0

  let c = beta1 * exp_avg + (1 - beta1) * grad
  param = param * (1 - lr * weight_decay) - lr * sign(c)
  exp_avg = beta2 * exp_avg + (1 - beta2) * grad
}
";

    const WARMUP_COSINE: &str = "schedule warmup_cosine {
  hyper peak = 3e-4
  hyper warmup = 1000
  hyper total = 100000
  let progress = clamp((t - warmup) / max(1, total - warmup), 0, 1)
  lr = peak * where(t < warmup, t / warmup, 0.5 * (1 + cos(pi * progress)))
}
";

    fn num(value: f64) -> ExprKind {
        ExprKind::Number(value)
    }

    fn named(text: &str) -> ExprKind {
        ExprKind::Name(text.to_string())
    }

    /// The expression's shape, spans dropped: numbers and names as themselves, the rest as
    /// `(op a b)`, `(neg a)` and `f(a, b)`.
    fn shape(expr: &Expr) -> String {
        match &expr.kind {
            ExprKind::Number(value) => value.to_string(),
            ExprKind::Name(text) => text.clone(),
            ExprKind::Neg(operand) => format!("(neg {})", shape(operand)),
            ExprKind::Chain { first, rest } => rest.iter().fold(shape(first), |left, link| {
                format!("({:?} {left} {})", link.op, shape(&link.operand))
            }),
            ExprKind::Compare(op, a, b) => format!("({op:?} {} {})", shape(a), shape(b)),
            ExprKind::Call { func, args } => {
                let args: Vec<String> = args.iter().map(shape).collect();
                format!("{}({})", func.name, args.join(", "))
            }
        }
    }

    /// The value of the single statement of `optimizer o { x = SOURCE }`.
    fn value_of(expr_source: &str) -> Expr {
        let program = parse("t.step", &format!("optimizer o {{ x = {expr_source} }}")).unwrap();
        match &program.items[0].body[0] {
            Stmt::Assign { value, .. } => value.clone(),
            other => panic!("not an assignment: {other:?}"),
        }
    }

    /// The message of the error that parsing `source` gives.
    fn message(source: &str) -> String {
        parse("t.step", source).unwrap_err().message
    }

    #[test]
    fn lion_parses_into_its_tree() {
        let program = parse("lion.step", LION).unwrap();
        assert_eq!(program.items.len(), 1);
        let lion = &program.items[0];
        assert_eq!(lion.kind, ItemKind::Optimizer);
        assert_eq!(lion.name.name, "lion");
        assert_eq!(lion.body.len(), 8);
        assert_eq!((lion.span.line, lion.span.col), (1, 1));
        assert_eq!(lion.span.end, LION.trim_end().len());

        let Stmt::Hyper {
            name: lr,
            value,
            domain: None,
        } = &lion.body[0]
        else {
            panic!("{:?}", lion.body[0])
        };
        assert_eq!((lr.name.as_str(), &value.kind), ("lr", &num(1e-4)));
        assert_eq!((lr.span.line, lr.span.col), (2, 9));
        assert_eq!((value.span.line, value.span.col), (2, 14));

        let Stmt::State { name, class, init } = &lion.body[4] else {
            panic!("{:?}", lion.body[4])
        };
        assert_eq!(
            (name.name.as_str(), *class, &init.kind),
            ("exp_avg", Class::Elem, &num(0.0))
        );

        let Stmt::Let { name, value } = &lion.body[5] else {
            panic!("{:?}", lion.body[5])
        };
        assert_eq!(name.name, "c");
        assert_eq!(
            shape(value),
            "(Add (Mul beta1 exp_avg) (Mul (Sub 1 beta1) grad))"
        );
        // The sum spans from `beta1` to `grad`; `(1 - beta1)` keeps its parentheses.
        assert_eq!((value.span.line, value.span.col), (8, 11));
        assert_eq!(
            &LION[value.span.start..value.span.end],
            "beta1 * exp_avg + (1 - beta1) * grad"
        );
        let ExprKind::Chain { rest, .. } = &value.kind else {
            unreachable!()
        };
        let ExprKind::Chain { first: paren, .. } = &rest[0].operand.kind else {
            unreachable!()
        };
        assert_eq!(&LION[paren.span.start..paren.span.end], "(1 - beta1)");
        assert_eq!((paren.span.line, paren.span.col), (8, 29));

        let Stmt::Assign { name, value } = &lion.body[6] else {
            panic!("{:?}", lion.body[6])
        };
        assert_eq!(name.name, "param");
        assert_eq!(
            shape(value),
            "(Sub (Mul param (Sub 1 (Mul lr weight_decay))) (Mul lr sign(c)))"
        );
        let ExprKind::Chain { rest, .. } = &value.kind else {
            unreachable!()
        };
        assert_eq!(rest[0].op, BinOp::Sub);
        let ExprKind::Chain { rest, .. } = &rest[0].operand.kind else {
            unreachable!()
        };
        assert_eq!(rest[0].op, BinOp::Mul);
        let call = &rest[0].operand;
        let ExprKind::Call { func, args } = &call.kind else {
            panic!("{call:?}")
        };
        assert_eq!(
            (func.name.as_str(), args.len(), &args[0].kind),
            ("sign", 1, &named("c"))
        );
        assert_eq!((call.span.line, call.span.col), (9, 50));
        assert_eq!(&LION[call.span.start..call.span.end], "sign(c)");

        assert!(matches!(&lion.body[7], Stmt::Assign { name, .. } if name.name == "exp_avg"));
    }

    #[test]
    fn warmup_cosine_parses_into_its_tree() {
        let program = parse("warmup.step", WARMUP_COSINE).unwrap();
        let schedule = &program.items[0];
        assert_eq!(schedule.kind, ItemKind::Schedule);
        assert_eq!(schedule.name.name, "warmup_cosine");
        assert_eq!(schedule.body.len(), 5);
        let Stmt::Let { value, .. } = &schedule.body[3] else {
            panic!("{:?}", schedule.body[3])
        };
        assert_eq!(
            shape(value),
            "clamp((Div (Sub t warmup) max(1, (Sub total warmup))), 0, 1)"
        );
        let Stmt::Assign { name, value } = &schedule.body[4] else {
            panic!("{:?}", schedule.body[4])
        };
        assert_eq!(name.name, "lr");
        assert_eq!(
            shape(value),
            "(Mul peak where((Lt t warmup), (Div t warmup), (Mul 0.5 (Add 1 cos((Mul pi progress))))))"
        );
    }

    #[test]
    fn both_examples_in_one_file() {
        let program = parse("both.step", &format!("{LION}\n{WARMUP_COSINE}")).unwrap();
        let kinds: Vec<ItemKind> = program.items.iter().map(|item| item.kind).collect();
        assert_eq!(kinds, [ItemKind::Optimizer, ItemKind::Schedule]);
        assert_eq!(program.items[1].name.span.line, 13);
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(shape(&value_of("1 - beta1 * x")), "(Sub 1 (Mul beta1 x))");
        assert_eq!(shape(&value_of("a - b - c")), "(Sub (Sub a b) c)");
        assert_eq!(shape(&value_of("a / b * c")), "(Mul (Div a b) c)");
        assert_eq!(
            shape(&value_of("a + b < c * d")),
            "(Lt (Add a b) (Mul c d))"
        );
        assert_eq!(shape(&value_of("(a < b) < c")), "(Lt (Lt a b) c)");
        assert_eq!(shape(&value_of("f()")), "f()");
    }

    #[test]
    fn unary_minus() {
        assert_eq!(shape(&value_of("-a * b")), "(Mul (neg a) b)");
        assert_eq!(shape(&value_of("a - -b")), "(Sub a (neg b))");
        assert_eq!(shape(&value_of("--2")), "(neg (neg 2))");
        let negation = value_of("-(a)");
        assert_eq!(shape(&negation), "(neg a)");
        // `x = ` ends at column 18: the negation covers `-(a)`, its operand `(a)`.
        assert_eq!(
            (negation.span.col, negation.span.end - negation.span.start),
            (19, 4)
        );
        let ExprKind::Neg(operand) = &negation.kind else {
            unreachable!()
        };
        assert_eq!(
            (operand.span.col, operand.span.end - operand.span.start),
            (20, 3)
        );
    }

    #[test]
    fn every_comparison() {
        for (text, op) in [
            ("<", CmpOp::Lt),
            ("<=", CmpOp::Le),
            (">", CmpOp::Gt),
            (">=", CmpOp::Ge),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
        ] {
            let value = value_of(&format!("a {text} b"));
            let ExprKind::Compare(got, a, b) = &value.kind else {
                panic!("{value:?}")
            };
            assert_eq!((*got, &a.kind, &b.kind), (op, &named("a"), &named("b")));
        }
    }

    #[test]
    fn state_scalar_comments_and_separators() {
        let source = "# a comment\noptimizer o { // another\n state n: scalar = 0; state m = 1;; x = 2 y = 3 }";
        let program = parse("t.step", source).unwrap();
        let body = &program.items[0].body;
        assert_eq!(body.len(), 4);
        assert!(
            matches!(&body[0], Stmt::State { name, class: Class::Scalar, .. } if name.name == "n")
        );
        assert!(matches!(
            &body[1],
            Stmt::State {
                class: Class::Elem,
                ..
            }
        ));
        assert!(matches!(&body[3], Stmt::Assign { name, .. } if name.name == "y"));
        assert_eq!(
            (program.items[0].span.line, program.items[0].span.col),
            (2, 1)
        );
        assert_eq!(program.items[0].name.span.line, 2);
        // A statement may continue on the next line: `x = a` then `(b)` is the call `a(b)`.
        assert_eq!(shape(&value_of("a\n(b)\n- c")), "(Sub a(b) c)");
    }

    #[test]
    fn errors_at_the_start_of_an_item() {
        assert_eq!(
            message(""),
            "expected `optimizer` or `schedule`, found end of input"
        );
        assert_eq!(
            message("  # only a comment\n"),
            "expected `optimizer` or `schedule`, found end of input"
        );
        assert_eq!(
            message("foo"),
            "expected `optimizer` or `schedule`, found `foo`"
        );
        assert_eq!(
            message("optimizer a {} ;"),
            "expected `optimizer` or `schedule`, found `;`"
        );
        assert_eq!(
            message("optimizer {"),
            "expected a name after `optimizer`, found `{`"
        );
        assert_eq!(
            message("schedule hyper {"),
            "expected a name after `schedule`, found the keyword `hyper`"
        );
        assert_eq!(
            message("optimizer a = 1"),
            "expected `{` after the optimizer name, found `=`"
        );
        assert_eq!(
            message("schedule a"),
            "expected `{` after the schedule name, found end of input"
        );
    }

    #[test]
    fn errors_in_a_block() {
        assert_eq!(
            message("optimizer lion {\n  hyper lr = 1e-4\n"),
            "unclosed `{` of optimizer 'lion' (opened at 1:16)"
        );
        assert_eq!(
            message("schedule s {\n  x = 1\nschedule t {}"),
            "expected `}` to close schedule 's' (opened at 1:12), found the keyword `schedule`"
        );
        assert_eq!(
            message("optimizer o { 1 }"),
            "expected a statement (`hyper`, `state`, `alias`, `let` or NAME `=`) or `}`, found `1`"
        );
        assert_eq!(
            message("optimizer o { scalar = 1 }"),
            "expected a statement (`hyper`, `state`, `alias`, `let` or NAME `=`) or `}`, found the keyword `scalar`"
        );
    }

    #[test]
    fn errors_in_statements() {
        let cases = [
            (
                "hyper lr 0.9",
                "expected `=` after the hyperparameter name, found `0.9`",
            ),
            ("hyper = 1", "expected a name after `hyper`, found `=`"),
            (
                "state let = 1",
                "expected a name after `state`, found the keyword `let`",
            ),
            (
                "state m 1",
                "expected `=` or `: scalar` after the state name, found `1`",
            ),
            (
                "state m: vector = 1",
                "expected `scalar`, `row` or `col` after `:`, found `vector`",
            ),
            (
                "state m: scalar 1",
                "expected `=` after the state's class, found `1`",
            ),
            ("let = 1", "expected a name after `let`, found `=`"),
            ("let c := 1", "expected `=` after the `let` name, found `:`"),
            ("param == 1", "expected `=` to assign 'param', found `==`"),
            ("f(x)", "expected `=` to assign 'f', found `(`"),
        ];
        for (statement, expected) in cases {
            assert_eq!(
                message(&format!("optimizer o {{ {statement} }}")),
                expected,
                "{statement}"
            );
        }
    }

    #[test]
    fn errors_in_expressions() {
        let cases = [
            ("}", "expected an expression, found `}`"),
            ("1 +", "expected an expression, found `}`"),
            ("f(a,)", "expected an expression, found `)`"),
            ("let", "expected an expression, found the keyword `let`"),
            (
                "(a + b",
                "expected `)` to close the `(` opened at 1:19, found `}`",
            ),
            (
                "f(a b)",
                "expected `,` or `)` in the arguments of 'f' (opened at 1:20), found `b`",
            ),
            ("a < b < c", "comparisons do not chain; use parentheses"),
            ("a == b != c", "comparisons do not chain; use parentheses"),
            ("1 @ 2", "unexpected character '@'"),
            ("1e999", "number `1e999` is out of range"),
            ("1e+", "malformed number `1e+`"),
        ];
        for (expr_source, expected) in cases {
            assert_eq!(
                message(&format!("optimizer o {{ x = {expr_source} }}")),
                expected,
                "{expr_source}"
            );
        }
        assert_eq!(
            message("optimizer o { x = "),
            "expected an expression, found end of input"
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let parens = format!(
            "optimizer o {{ x = {}1{} }}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        let minuses = format!("optimizer o {{ x = {}1 }}", "-".repeat(100_000));
        let calls = format!("optimizer o {{ x = {}1 }}", "f(".repeat(100_000));
        // Alternating precedence nests: `1 * (1 + 1 * (1 + ...`.
        let mixed = format!("optimizer o {{ x = {}1 }}", "1 + 1 * (".repeat(100_000));
        for source in [parens, minuses, calls, mixed] {
            let message = parse("t.step", &source).unwrap_err().message;
            assert!(
                message.starts_with("expression nested too deeply: more than 200 levels"),
                "{message}"
            );
        }
        // Just under the limit is fine.
        let fine = format!(
            "optimizer o {{ x = {}1{} }}",
            "(".repeat(150),
            ")".repeat(150)
        );
        assert!(parse("t.step", &fine).is_ok());
    }

    #[test]
    fn flat_chains_are_one_level_however_long() {
        for (op, name) in [
            (" + ", "Add"),
            (" - ", "Sub"),
            (" * ", "Mul"),
            (" / ", "Div"),
        ] {
            let terms: Vec<String> = (0..100_000).map(|i| format!("x{i}")).collect();
            let source = format!("optimizer o {{ x = {} }}", terms.join(op));
            let program = parse("t.step", &source).unwrap();
            let Stmt::Assign { value, .. } = &program.items[0].body[0] else {
                unreachable!()
            };
            let ExprKind::Chain { first, rest } = &value.kind else {
                panic!("not a chain")
            };
            assert_eq!(first.kind, named("x0"));
            assert_eq!(rest.len(), 99_999);
            assert_eq!(format!("{:?}", rest[5].op), name);
            assert_eq!(rest[99_998].operand.kind, named("x99999"));
        }
        // A chain inside a chain of the other level is one level deeper: a sum of 100 000
        // products of 3 factors.
        let source = format!("optimizer o {{ x = 1{} }}", " + a * b * c".repeat(100_000));
        assert!(parse("t.step", &source).is_ok());
        assert_eq!(
            shape(&value_of("a + b * c - d")),
            "(Sub (Add a (Mul b c)) d)"
        );
    }

    #[test]
    fn hyperparameter_domains() {
        let source =
            "optimizer o { hyper lr = 1e-3 in [0, inf)  hyper b = 0.9 in (0, 1] hyper c = 1 }";
        let program = parse("t.step", source).unwrap();
        let body = &program.items[0].body;
        let Stmt::Hyper {
            domain: Some(lr), ..
        } = &body[0]
        else {
            panic!("{:?}", body[0])
        };
        assert_eq!((lr.low_inclusive, lr.high_inclusive), (true, false));
        assert_eq!((&lr.low.kind, &lr.high.kind), (&num(0.0), &named("inf")));
        assert_eq!(&source[lr.span.start..lr.span.end], "[0, inf)");
        let Stmt::Hyper {
            domain: Some(b), ..
        } = &body[1]
        else {
            panic!("{:?}", body[1])
        };
        assert_eq!((b.low_inclusive, b.high_inclusive), (false, true));
        assert!(matches!(&body[2], Stmt::Hyper { domain: None, .. }));
        for (statement, expected) in [
            (
                "hyper lr = 1 in 0, 1",
                "expected `[` or `(` to open the interval (`in [0, 1)`, `in (0, inf)`), found `0`",
            ),
            (
                "hyper lr = 1 in [0 1]",
                "expected `,` between the interval's bounds, found `1`",
            ),
            (
                "hyper lr = 1 in [0, 1}",
                "expected `]` or `)` to close the interval, found `}`",
            ),
        ] {
            assert_eq!(
                message(&format!("optimizer o {{ {statement} }}")),
                expected,
                "{statement}"
            );
        }
    }

    #[test]
    fn errors_are_located_and_displayed() {
        let source = "optimizer lion {\n  hyper beta1 0.9\n}";
        let error = parse("lion.step", source).unwrap_err();
        assert_eq!((error.span.line, error.span.col), (2, 15));
        assert_eq!(error.text, "0.9");
        assert_eq!(
            error.to_string(),
            "lion.step:2:15: expected `=` after the hyperparameter name, found `0.9`\n  \
             \x20   hyper beta1 0.9\n                  ^^^"
        );
        // At the end of the input: a zero-width span there, no text.
        let error = parse("", "optimizer o {\n").unwrap_err();
        assert_eq!(error.file, "<input>");
        assert_eq!(
            error.span,
            Span {
                line: 2,
                col: 1,
                start: 14,
                end: 14
            }
        );
        assert_eq!(error.text, "");
        // Errors come in source order: the parse error before the bad character.
        assert_eq!(
            message("optimizer o { x = = @ }"),
            "expected an expression, found `=`"
        );
    }
}
