//! The parser of the text form: turns what `Display for Graph` prints back into a [`Graph`]
//! ([`parse_graph`], `Graph: FromStr`).

use crate::dtype::{Class, DType};
use crate::graph::{Graph, Target};
use crate::op::{Binary, Cmp, Input, Op, Reduction, Unary};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;
use std::str::FromStr;

/// Why text could not be parsed into a graph, and where (1-based line and column, in characters).
///
/// Displays as `3:9: unknown op 'mull' (expected one of param, grad, ...)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}{} (expected {expected})", quoted(.found))]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub col: usize,
    /// What is wrong (`unknown op`, `unexpected end of line`).
    pub message: String,
    /// The offending text (a token, or empty at the end of a line or of the input).
    pub found: String,
    /// What would have been accepted there.
    pub expected: String,
}

fn quoted(found: &str) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!(" '{}'", found.escape_debug())
    }
}

/// Longest offending text kept in a [`ParseError`], in characters.
const MAX_FOUND: usize = 60;

impl ParseError {
    fn new(
        line: usize,
        col: usize,
        message: &str,
        found: &str,
        expected: impl Into<String>,
    ) -> Self {
        let found = if found.chars().count() > MAX_FOUND {
            let mut short: String = found.chars().take(MAX_FOUND).collect();
            short.push_str("...");
            short
        } else {
            found.to_string()
        };
        ParseError {
            line,
            col,
            message: message.to_string(),
            found,
            expected: expected.into(),
        }
    }
}

/// Parses the text form of a graph (what `Display for Graph` prints).
///
/// `parse_graph(&g.to_string())?.to_string() == g.to_string()` for every graph that
/// [`verify`](crate::verify()) accepts, and for invalid graphs too except those listed below.
/// Never panics, whatever the input.
///
/// The grammar, one item per line (blank lines and `//` comments are ignored):
///
/// ```text
/// optimizer NAME {
///   dtype f32                              // optional, before the first node
///   hyper NAME = FLOAT
///   state NAME = FLOAT                     // a per-element state
///   state NAME : scalar = FLOAT            // a per-group scalar state
///   %N = BODY : CLASS DTYPE                // a node
///   TARGET = %N                            // an output: `param` or a state name
/// }
/// ```
///
/// `BODY` is `param`, `grad`, `step`, `state NAME`, `scalar_state NAME`, `hyper NAME`,
/// `const FLOAT`, `cast DTYPE %a`, or `MNEMONIC %a, %b, ...`. Floats are written as `{:?}`
/// prints them (`0.9`, `1e-8`, `inf`, `-inf`, `NaN`). Nodes are rebuilt with [`Graph::add`], so
/// operands must be defined on earlier lines and the `: CLASS DTYPE` annotation must equal the
/// type that `Graph::add` infers. Node numbers need not be dense (printing renumbers them), but
/// each must be defined once, and a node may not repeat an earlier computation (the graph is
/// hash-consed). Names are single words: no whitespace and none of `= : , { } %`. An output
/// target is `param`, a scalar state if a state of that name is declared `: scalar` (anywhere in
/// the text), and otherwise a per-element state (which the verifier checks is declared).
///
/// Semantic rules (declared hypers, types of operands, ...) are the verifier's business
/// ([`crate::verify()`]): the parser accepts what the printer prints for any graph, valid or not
/// (NaN constants with different payloads included), except graphs whose text is ambiguous or
/// inconsistent: a name that is not a single word, a per-element state called `param`, a node
/// whose stored type is not what inference gives now (`elem_dtype` changed after nodes were
/// added), or node indices out of topological order (a node added after [`Graph::prune`] may
/// reuse a removed node's slot). The verifier rejects each of these.
///
/// ```
/// let text = "optimizer sgd {\n  hyper lr = 0.1\n  %0 = param : elem f32\n  %1 = grad : elem f32\n  \
///             %2 = hyper lr : scalar f64\n  %3 = mul %2, %1 : elem f32\n  %4 = sub %0, %3 : elem f32\n  \
///             param = %4\n}\n";
/// let g = optjit_ir::parse_graph(text).unwrap();
/// assert_eq!(g.len(), 5);
/// let err = optjit_ir::parse_graph(&text.replace("mul", "mull")).unwrap_err();
/// assert!(err.to_string().starts_with("6:8: unknown op 'mull' (expected one of"));
/// ```
pub fn parse_graph(text: &str) -> Result<Graph, ParseError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let mut parser = loop {
        let Some((n, line)) = lines.next() else {
            return Err(ParseError::new(
                text.lines().count() + 1,
                1,
                "unexpected end of input",
                "",
                "'optimizer NAME {'",
            ));
        };
        if lex(line).is_empty() {
            continue;
        }
        break Parser::new(header(n, line)?);
    };
    let mut closed = false;
    let mut last = 0;
    for (n, line) in lines {
        last = n;
        let mut cur = Cursor::new(n, line);
        let Some(first) = cur.peek() else {
            continue;
        };
        if closed {
            return Err(cur.error(
                Some(first),
                "unexpected",
                "end of input after the closing '}'",
            ));
        }
        match first.kind {
            Kind::Ref => parser.node(&mut cur)?,
            Kind::RBrace => {
                cur.next();
                cur.finish()?;
                closed = true;
            }
            Kind::Word if cur.peek_at(1).is_some_and(|t| t.kind == Kind::Eq) => {
                parser.output(&mut cur)?
            }
            Kind::Word if first.text == "dtype" => parser.dtype(&mut cur)?,
            Kind::Word if first.text == "hyper" => parser.hyper(&mut cur)?,
            Kind::Word if first.text == "state" => parser.state(&mut cur)?,
            _ => {
                return Err(cur.error(
                    Some(first),
                    "unexpected",
                    "a declaration (dtype, hyper, state), a node '%N = ...', an output \
                     'TARGET = %N' or the closing '}'",
                ));
            }
        }
    }
    if !closed {
        return Err(ParseError::new(
            last + 1,
            1,
            "unexpected end of input",
            "",
            "'}'",
        ));
    }
    Ok(parser.finish())
}

impl FromStr for Graph {
    type Err = ParseError;

    /// Same as [`parse_graph`].
    fn from_str(text: &str) -> Result<Graph, ParseError> {
        parse_graph(text)
    }
}

/// Parses `optimizer NAME {`: the name is everything between the keyword and the last `{`.
fn header(n: usize, line: &str) -> Result<Graph, ParseError> {
    let indent = line.len() - line.trim_start().len();
    let rest = &line[indent..];
    let col = line[..indent].chars().count() + 1;
    let keyword = "optimizer";
    let after = rest
        .strip_prefix(keyword)
        .filter(|r| r.is_empty() || r.starts_with(char::is_whitespace) || r.starts_with('{'));
    let Some(after) = after else {
        let found = rest.split_whitespace().next().unwrap_or_default();
        return Err(ParseError::new(
            n,
            col,
            "unexpected",
            found,
            "'optimizer NAME {'",
        ));
    };
    let Some(brace) = after.rfind('{') else {
        return Err(ParseError::new(
            n,
            line.chars().count() + 1,
            "unexpected end of line",
            "",
            "'{' after the optimizer name",
        ));
    };
    let trailing = after[brace + 1..].trim_start();
    if !trailing.is_empty() && !trailing.starts_with("//") {
        let at = line.len() - trailing.len();
        return Err(ParseError::new(
            n,
            line[..at].chars().count() + 1,
            "unexpected",
            trailing.split_whitespace().next().unwrap_or_default(),
            "end of line after '{'",
        ));
    }
    Ok(Graph::new(after[..brace].trim()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A name, keyword, mnemonic or number.
    Word,
    /// `%` and what follows it up to a delimiter.
    Ref,
    Eq,
    Colon,
    Comma,
    LBrace,
    RBrace,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    /// 1-based column in characters.
    col: usize,
}

fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '=' | ':' | ',' | '{' | '}' | '%')
}

/// Splits one line into tokens, stopping at a `//` comment.
fn lex(line: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut chars = line.char_indices().peekable();
    let mut col = 0;
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            col += 1;
            continue;
        }
        if line[start..].starts_with("//") {
            break;
        }
        let token_col = col + 1;
        chars.next();
        col += 1;
        let punct = match c {
            '=' => Some(Kind::Eq),
            ':' => Some(Kind::Colon),
            ',' => Some(Kind::Comma),
            '{' => Some(Kind::LBrace),
            '}' => Some(Kind::RBrace),
            _ => None,
        };
        if let Some(kind) = punct {
            tokens.push(Token {
                kind,
                text: &line[start..start + c.len_utf8()],
                col: token_col,
            });
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(i, c)) = chars.peek() {
            if is_delimiter(c) {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
            col += 1;
        }
        let kind = if c == '%' { Kind::Ref } else { Kind::Word };
        tokens.push(Token {
            kind,
            text: &line[start..end],
            col: token_col,
        });
    }
    tokens
}

/// The tokens of one line and a position among them.
struct Cursor<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    line: usize,
    end_col: usize,
}

impl<'a> Cursor<'a> {
    fn new(line: usize, text: &'a str) -> Self {
        Cursor {
            tokens: lex(text),
            pos: 0,
            line,
            end_col: text.chars().count() + 1,
        }
    }

    fn peek(&self) -> Option<Token<'a>> {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> Option<Token<'a>> {
        self.tokens.get(self.pos + ahead).copied()
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let token = self.peek();
        if token.is_some() {
            self.pos += 1;
        }
        token
    }

    /// An error at `token`, or at the end of the line when there is none.
    fn error(
        &self,
        token: Option<Token<'_>>,
        message: &str,
        expected: impl Into<String>,
    ) -> ParseError {
        match token {
            Some(t) => ParseError::new(self.line, t.col, message, t.text, expected),
            None => ParseError::new(
                self.line,
                self.end_col,
                "unexpected end of line",
                "",
                expected,
            ),
        }
    }

    /// An error about a token that was accepted syntactically.
    fn error_at(&self, token: Token<'_>, message: &str, expected: impl Into<String>) -> ParseError {
        ParseError::new(self.line, token.col, message, token.text, expected)
    }

    fn expect(&mut self, kind: Kind, expected: &str) -> Result<Token<'a>, ParseError> {
        match self.peek() {
            Some(t) if t.kind == kind => {
                self.pos += 1;
                Ok(t)
            }
            other => Err(self.error(other, "unexpected", expected)),
        }
    }

    fn finish(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            other => Err(self.error(other, "unexpected", "end of line")),
        }
    }

    fn float(&mut self, what: &str) -> Result<f64, ParseError> {
        let token = self.expect(Kind::Word, what)?;
        token.text.parse::<f64>().map_err(|_| {
            self.error_at(
                token,
                "invalid number",
                "a float such as 0.9, 1e-8, -inf or NaN",
            )
        })
    }

    fn dtype(&mut self) -> Result<DType, ParseError> {
        let token = self.expect(Kind::Word, "a dtype (f32, f64, f16, bf16, bool)")?;
        DType::from_name(token.text).ok_or_else(|| {
            self.error_at(token, "unknown dtype", "one of f32, f64, f16, bf16, bool")
        })
    }
}

/// Every word that may start a node body, for error messages.
fn known_ops() -> String {
    let mut names: Vec<&str> = vec![
        "param",
        "grad",
        "step",
        "optimizer_step",
        "state",
        "scalar_state",
        "row_state",
        "col_state",
        "rank",
        "hyper",
        "const",
        "cast",
    ];
    names.extend(Unary::ALL.iter().map(|u| u.mnemonic()));
    names.extend(Binary::ALL.iter().map(|b| b.mnemonic()));
    names.push("fma");
    names.extend(Cmp::ALL.iter().map(|c| c.mnemonic()));
    names.push("select");
    names.extend(Reduction::ALL.iter().map(|r| r.mnemonic()));
    format!("one of {}", names.join(", "))
}

/// The op with operands written `MNEMONIC %a, %b`.
fn op_from_mnemonic(name: &str) -> Option<Op> {
    match name {
        "fma" => Some(Op::Fma),
        "select" => Some(Op::Select),
        _ => Unary::from_mnemonic(name)
            .map(Op::Unary)
            .or_else(|| Binary::from_mnemonic(name).map(Op::Binary))
            .or_else(|| Cmp::from_mnemonic(name).map(Op::Cmp))
            .or_else(|| Reduction::from_mnemonic(name).map(Op::Reduce)),
    }
}

/// An output line waiting for the end of the input (when every state is declared).
struct PendingOutput {
    name: String,
    value: NodeIndex,
}

struct Parser {
    graph: Graph,
    /// Node number of the text → node and the line that defines it.
    nodes: HashMap<usize, (NodeIndex, usize)>,
    /// Node → its number in the text.
    numbers: HashMap<NodeIndex, usize>,
    dtype_line: Option<usize>,
    hyper_lines: HashMap<String, usize>,
    state_lines: HashMap<String, usize>,
    output_lines: HashMap<String, usize>,
    outputs: Vec<PendingOutput>,
}

impl Parser {
    fn new(graph: Graph) -> Self {
        Parser {
            graph,
            nodes: HashMap::new(),
            numbers: HashMap::new(),
            dtype_line: None,
            hyper_lines: HashMap::new(),
            state_lines: HashMap::new(),
            output_lines: HashMap::new(),
            outputs: Vec::new(),
        }
    }

    /// Resolves output targets now that every state is declared, and hands back the graph.
    fn finish(mut self) -> Graph {
        for o in std::mem::take(&mut self.outputs) {
            let target = if o.name == "param" {
                Target::Param
            } else {
                match self.graph.state(&o.name) {
                    Some(s) if s.class == Class::Scalar => Target::ScalarState(o.name),
                    // Undeclared targets are kept as per-element states; the verifier rejects them.
                    _ => Target::State(o.name),
                }
            };
            self.graph.set_output(target, o.value);
        }
        self.graph
    }

    /// The number of a `%N` token.
    fn number(&self, cur: &Cursor<'_>, token: Token<'_>) -> Result<usize, ParseError> {
        let digits = &token.text[1..];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(cur.error_at(
                token,
                "invalid node reference",
                "'%' followed by a number, such as %3",
            ));
        }
        digits.parse::<usize>().map_err(|_| {
            cur.error_at(
                token,
                "node number out of range",
                format!("a number up to {}", usize::MAX),
            )
        })
    }

    /// The node that a `%N` operand refers to.
    fn operand(&self, cur: &mut Cursor<'_>) -> Result<NodeIndex, ParseError> {
        let token = cur.expect(Kind::Ref, "an operand such as %3")?;
        let number = self.number(cur, token)?;
        match self.nodes.get(&number) {
            Some(&(idx, _)) => Ok(idx),
            None => Err(cur.error_at(token, "undefined node", "a node defined on an earlier line")),
        }
    }

    /// `%a, %b, ...` up to the `:` of the annotation (possibly empty).
    fn operands(&self, cur: &mut Cursor<'_>) -> Result<Vec<NodeIndex>, ParseError> {
        let mut operands = Vec::new();
        if cur.peek().is_none_or(|t| t.kind == Kind::Colon) {
            return Ok(operands);
        }
        loop {
            operands.push(self.operand(cur)?);
            match cur.peek() {
                Some(t) if t.kind == Kind::Comma => {
                    cur.next();
                }
                None => return Ok(operands),
                Some(t) if t.kind == Kind::Colon => return Ok(operands),
                other => return Err(cur.error(other, "unexpected", "',' or ':'")),
            }
        }
    }

    /// `%N = BODY : CLASS DTYPE`
    fn node(&mut self, cur: &mut Cursor<'_>) -> Result<(), ParseError> {
        let head = cur.expect(Kind::Ref, "a node '%N = ...'")?;
        let number = self.number(cur, head)?;
        if let Some(&(_, line)) = self.nodes.get(&number) {
            return Err(cur.error_at(
                head,
                "duplicate node",
                format!(
                    "each node defined once ({} is defined on line {line})",
                    head.text
                ),
            ));
        }
        cur.expect(Kind::Eq, "'='")?;
        let op_token = cur.expect(Kind::Word, &format!("an op: {}", known_ops()))?;
        let name = |cur: &mut Cursor<'_>, what: &str| {
            cur.expect(Kind::Word, what).map(|t| t.text.to_string())
        };
        let (op, operands) = match op_token.text {
            "param" => (Op::Input(Input::Param), Vec::new()),
            "grad" => (Op::Input(Input::Grad), Vec::new()),
            "step" => (Op::Input(Input::Step), Vec::new()),
            "optimizer_step" => (Op::Input(Input::OptimizerStep), Vec::new()),
            "state" => (
                Op::Input(Input::State(name(cur, "a state name")?)),
                Vec::new(),
            ),
            "row_state" => (
                Op::Input(Input::RowState(name(cur, "a row state name")?)),
                Vec::new(),
            ),
            "col_state" => (
                Op::Input(Input::ColState(name(cur, "a column state name")?)),
                Vec::new(),
            ),
            "rank" => (Op::Input(Input::Rank), Vec::new()),
            "scalar_state" => (
                Op::Input(Input::ScalarState(name(cur, "a scalar state name")?)),
                Vec::new(),
            ),
            "hyper" => (
                Op::Input(Input::Hyper(name(cur, "a hyper name")?)),
                Vec::new(),
            ),
            "const" => (Op::Const(cur.float("a number")?), Vec::new()),
            "cast" => {
                let dtype = cur.dtype()?;
                (Op::Cast(dtype), self.operands(cur)?)
            }
            mnemonic => match op_from_mnemonic(mnemonic) {
                Some(op) => (op, self.operands(cur)?),
                None => return Err(cur.error_at(op_token, "unknown op", known_ops())),
            },
        };
        if operands.len() != op.arity() {
            let plural = if op.arity() == 1 { "" } else { "s" };
            return Err(cur.error_at(
                op_token,
                "wrong number of operands for",
                format!("{} operand{plural}, found {}", op.arity(), operands.len()),
            ));
        }
        cur.expect(Kind::Colon, "': CLASS DTYPE', such as ': elem f32'")?;
        let class_token = cur.expect(Kind::Word, "a class (scalar, tensor, elem)")?;
        let class = Class::from_name(class_token.text).ok_or_else(|| {
            cur.error_at(class_token, "unknown class", "one of scalar, tensor, elem")
        })?;
        let dtype = cur.dtype()?;
        cur.finish()?;

        let before = self.graph.len();
        let mut idx = self.graph.add(op.clone(), &operands);
        if self.graph.len() == before
            && let Op::Const(c) = op
            && c.is_nan()
        {
            // NaN constants with different payloads all print as `NaN`: give each one its own.
            let sign = c.to_bits() & (1 << 63);
            let mut payload = 1u64;
            while self.graph.len() == before && payload < (1 << 51) {
                let bits = sign | 0x7ff8_0000_0000_0000 | payload;
                idx = self.graph.add(Op::Const(f64::from_bits(bits)), &[]);
                payload += 1;
            }
        }
        if self.graph.len() == before {
            let earlier = self.numbers.get(&idx).copied().unwrap_or_default();
            return Err(cur.error_at(
                head,
                "duplicate computation",
                format!(
                    "a new computation ({} computes the same as %{earlier}; the graph is hash-consed, \
                     so refer to %{earlier} instead)",
                    head.text
                ),
            ));
        }
        let node = self.graph.node(idx);
        if node.class != class || node.dtype != dtype {
            let found = format!("{class} {dtype}");
            return Err(ParseError::new(
                cur.line,
                class_token.col,
                "mismatched type annotation",
                &found,
                format!(
                    "{} {}, which the op gives for its operands",
                    node.class, node.dtype
                ),
            ));
        }
        self.nodes.insert(number, (idx, cur.line));
        self.numbers.insert(idx, number);
        Ok(())
    }

    /// `dtype DTYPE`
    fn dtype(&mut self, cur: &mut Cursor<'_>) -> Result<(), ParseError> {
        let keyword = cur.expect(Kind::Word, "'dtype'")?;
        if let Some(line) = self.dtype_line {
            return Err(cur.error_at(
                keyword,
                "duplicate",
                format!("one dtype line (the first is on line {line})"),
            ));
        }
        if !self.nodes.is_empty() {
            return Err(cur.error_at(keyword, "misplaced", "the dtype line before the first node"));
        }
        let dtype = cur.dtype()?;
        cur.finish()?;
        self.graph.elem_dtype = dtype;
        self.dtype_line = Some(cur.line);
        Ok(())
    }

    /// `hyper NAME = FLOAT`
    fn hyper(&mut self, cur: &mut Cursor<'_>) -> Result<(), ParseError> {
        cur.expect(Kind::Word, "'hyper'")?;
        let name = cur.expect(Kind::Word, "a hyper name")?;
        if let Some(line) = self.hyper_lines.get(name.text) {
            return Err(cur.error_at(
                name,
                "duplicate hyper",
                format!("each hyper declared once (first on line {line})"),
            ));
        }
        cur.expect(Kind::Eq, "'='")?;
        let default = cur.float("a default value")?;
        cur.finish()?;
        self.graph.declare_hyper(name.text, default);
        self.hyper_lines.insert(name.text.to_string(), cur.line);
        Ok(())
    }

    /// `state NAME = FLOAT` or `state NAME : scalar = FLOAT`
    fn state(&mut self, cur: &mut Cursor<'_>) -> Result<(), ParseError> {
        cur.expect(Kind::Word, "'state'")?;
        let name = cur.expect(Kind::Word, "a state name")?;
        if let Some(line) = self.state_lines.get(name.text) {
            return Err(cur.error_at(
                name,
                "duplicate state",
                format!("each state declared once (first on line {line})"),
            ));
        }
        let mut class = Class::Elem;
        if cur.peek().is_some_and(|t| t.kind == Kind::Colon) {
            cur.next();
            let expected = "'scalar', 'row', 'col' or 'elem'";
            let token = cur.expect(Kind::Word, expected)?;
            class = match Class::from_name(token.text) {
                Some(c @ (Class::Scalar | Class::Row | Class::Col | Class::Elem)) => c,
                _ => return Err(cur.error_at(token, "unknown state class", expected)),
            };
        }
        cur.expect(Kind::Eq, "'=' or ': scalar ='")?;
        let init = cur.float("an initial value")?;
        cur.finish()?;
        self.graph.declare_state(name.text, init, class);
        self.state_lines.insert(name.text.to_string(), cur.line);
        Ok(())
    }

    /// `TARGET = %N`
    fn output(&mut self, cur: &mut Cursor<'_>) -> Result<(), ParseError> {
        let name = cur.expect(Kind::Word, "an output target")?;
        if let Some(line) = self.output_lines.get(name.text) {
            return Err(cur.error_at(
                name,
                "duplicate output",
                format!("each target assigned once (first on line {line})"),
            ));
        }
        cur.expect(Kind::Eq, "'='")?;
        let value = self.operand(cur)?;
        cur.finish()?;
        self.output_lines.insert(name.text.to_string(), cur.line);
        self.outputs.push(PendingOutput {
            name: name.text.to_string(),
            value,
        });
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::op::{Binary, Cmp, Reduction, Unary};

    /// An AdamW step as PyTorch's single-tensor implementation computes it.
    pub(crate) fn adamw() -> Graph {
        let mut g = Graph::new("adamw");
        g.declare_hyper("lr", 1e-3);
        g.declare_hyper("beta1", 0.9);
        g.declare_hyper("beta2", 0.999);
        g.declare_hyper("eps", 1e-8);
        g.declare_hyper("weight_decay", 1e-2);
        g.declare_state("exp_avg", 0.0, Class::Elem);
        g.declare_state("exp_avg_sq", 0.0, Class::Elem);
        let bin = |g: &mut Graph, b: Binary, x, y| g.add(Op::Binary(b), &[x, y]);
        let p = g.input(Input::Param);
        let grad = g.input(Input::Grad);
        let m = g.input(Input::State("exp_avg".into()));
        let v = g.input(Input::State("exp_avg_sq".into()));
        let lr = g.input(Input::Hyper("lr".into()));
        let b1 = g.input(Input::Hyper("beta1".into()));
        let b2 = g.input(Input::Hyper("beta2".into()));
        let eps = g.input(Input::Hyper("eps".into()));
        let wd = g.input(Input::Hyper("weight_decay".into()));
        let step = g.input(Input::Step);
        let one = g.constant(1.0);
        // p = p * (1 - lr * wd)
        let lr_wd = bin(&mut g, Binary::Mul, lr, wd);
        let decay = bin(&mut g, Binary::Sub, one, lr_wd);
        let p = bin(&mut g, Binary::Mul, p, decay);
        // m = b1 * m + (1 - b1) * g
        let m_b1 = bin(&mut g, Binary::Mul, b1, m);
        let one_b1 = bin(&mut g, Binary::Sub, one, b1);
        let g_b1 = bin(&mut g, Binary::Mul, one_b1, grad);
        let m = bin(&mut g, Binary::Add, m_b1, g_b1);
        // v = b2 * v + (1 - b2) * g * g
        let v_b2 = bin(&mut g, Binary::Mul, b2, v);
        let one_b2 = bin(&mut g, Binary::Sub, one, b2);
        let g2 = bin(&mut g, Binary::Mul, grad, grad);
        let g2_b2 = bin(&mut g, Binary::Mul, one_b2, g2);
        let v = bin(&mut g, Binary::Add, v_b2, g2_b2);
        // bias corrections
        let b1_t = bin(&mut g, Binary::Pow, b1, step);
        let bc1 = bin(&mut g, Binary::Sub, one, b1_t);
        let b2_t = bin(&mut g, Binary::Pow, b2, step);
        let bc2 = bin(&mut g, Binary::Sub, one, b2_t);
        let step_size = bin(&mut g, Binary::Div, lr, bc1);
        let sqrt_bc2 = g.add(Op::Unary(Unary::Sqrt), &[bc2]);
        let sqrt_v = g.add(Op::Unary(Unary::Sqrt), &[v]);
        let denom = bin(&mut g, Binary::Div, sqrt_v, sqrt_bc2);
        let denom = bin(&mut g, Binary::Add, denom, eps);
        let ratio = bin(&mut g, Binary::Div, m, denom);
        let update = bin(&mut g, Binary::Mul, step_size, ratio);
        let new_p = bin(&mut g, Binary::Sub, p, update);
        g.set_output(Target::Param, new_p);
        g.set_output(Target::State("exp_avg".into()), m);
        g.set_output(Target::State("exp_avg_sq".into()), v);
        g
    }

    /// A graph that uses every op kind, every cast, special constants and a scalar state.
    pub(crate) fn every_op() -> Graph {
        let mut g = Graph::new("everything");
        g.declare_hyper("lr", 0.01);
        g.declare_hyper("huge", 1e300);
        g.declare_state("buf", -0.0, Class::Elem);
        g.declare_state("count", 0.5, Class::Scalar);
        let p = g.input(Input::Param);
        let grad = g.input(Input::Grad);
        let buf = g.input(Input::State("buf".into()));
        let count = g.input(Input::ScalarState("count".into()));
        let lr = g.input(Input::Hyper("lr".into()));
        let huge = g.input(Input::Hyper("huge".into()));
        let step = g.input(Input::Step);
        let consts = [
            0.9,
            1e-8,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -0.0,
            5e-324,
            1e21,
        ];
        let consts: Vec<NodeIndex> = consts.iter().map(|&c| g.constant(c)).collect();
        let mut elem = g.add(Op::Binary(Binary::Add), &[p, buf]);
        for &u in Unary::ALL {
            let x = if u.scalar_only() { count } else { elem };
            let y = g.add(Op::Unary(u), &[x]);
            elem = g.add(Op::Binary(Binary::Add), &[elem, y]);
        }
        for &b in Binary::ALL {
            let y = g.add(Op::Binary(b), &[elem, grad]);
            elem = g.add(Op::Binary(Binary::Mul), &[y, lr]);
        }
        for &c in Cmp::ALL {
            let m = g.add(Op::Cmp(c), &[elem, consts[0]]);
            elem = g.add(Op::Select, &[m, elem, consts[1]]);
        }
        let fma = g.add(Op::Fma, &[elem, lr, grad]);
        for d in [DType::F64, DType::F16, DType::BF16, DType::F32] {
            elem = g.add(Op::Cast(d), &[fma]);
        }
        let mut total = huge;
        // The shape-free reductions (the interpreter runs this graph on flat tensors).
        for &r in Reduction::ALL
            .iter()
            .filter(|r| r.result_class() <= Class::Tensor)
        {
            let red = g.add(Op::Reduce(r), &[elem]);
            total = g.add(Op::Binary(Binary::Add), &[total, red]);
        }
        let scaled = g.add(Op::Binary(Binary::Mul), &[elem, total]);
        for &c in &consts {
            elem = g.add(Op::Binary(Binary::Add), &[elem, c]);
        }
        let new_count = g.add(Op::Binary(Binary::Add), &[count, step]);
        g.set_output(Target::Param, scaled);
        g.set_output(Target::State("buf".into()), elem);
        g.set_output(Target::ScalarState("count".into()), new_count);
        g
    }

    fn roundtrip(g: &Graph) {
        let text = g.to_string();
        let parsed = parse_graph(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed.to_string(), text);
        let again: Graph = text.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.to_string(), text);
    }

    #[test]
    fn adamw_roundtrips() {
        let g = adamw();
        let text = g.to_string();
        assert!(text.contains("state exp_avg = 0.0"), "{text}");
        assert!(text.contains("= pow %5, %9 : scalar f64"), "{text}");
        roundtrip(&g);
    }

    /// A factored second moment, Adafactor-like: row and column states, row and column means,
    /// their mean over rows, and the rank choosing between factored and not.
    pub(crate) fn factored() -> Graph {
        let mut g = Graph::new("factored");
        g.declare_state("row_var", 0.0, Class::Row);
        g.declare_state("col_var", 0.0, Class::Col);
        let p = g.input(Input::Param);
        let grad = g.input(Input::Grad);
        let sq = g.add(Op::Binary(Binary::Mul), &[grad, grad]);
        let rows = g.add(Op::Reduce(Reduction::RowMean), &[sq]);
        let cols = g.add(Op::Reduce(Reduction::ColMean), &[sq]);
        let row_var = g.input(Input::RowState("row_var".into()));
        let col_var = g.input(Input::ColState("col_var".into()));
        let new_row = g.add(Op::Binary(Binary::Add), &[row_var, rows]);
        let new_col = g.add(Op::Binary(Binary::Add), &[col_var, cols]);
        let mean = g.add(Op::Reduce(Reduction::RowsMean), &[new_row]);
        let normalized = g.add(Op::Binary(Binary::Div), &[new_row, mean]);
        let rank = g.input(Input::Rank);
        let one = g.constant(1.0);
        let factored = g.add(Op::Cmp(Cmp::Gt), &[rank, one]);
        let scale = g.add(Op::Select, &[factored, normalized, one]);
        let var = g.add(Op::Binary(Binary::Mul), &[scale, new_col]);
        let new_p = g.add(Op::Binary(Binary::Sub), &[p, var]);
        g.set_output(Target::Param, new_p);
        g.set_output(Target::State("row_var".into()), new_row);
        g.set_output(Target::State("col_var".into()), new_col);
        g
    }

    #[test]
    fn factored_graph_verifies_and_roundtrips() {
        let mut g = factored();
        crate::verify(&g).unwrap_or_else(|e| panic!("{e}\n{g}"));
        let class_of = |op: Op| {
            let n = g.nodes().into_iter().find(|&n| g.node(n).op == op);
            n.map(|n| g.node(n).class)
        };
        let ops = [
            Op::Reduce(Reduction::RowMean),
            Op::Reduce(Reduction::ColMean),
            Op::Reduce(Reduction::RowsMean),
            Op::Input(Input::Rank),
            Op::Select,
        ];
        let classes = [
            Class::Row,
            Class::Col,
            Class::Matrix,
            Class::Tensor,
            Class::Row,
        ];
        for (op, class) in ops.into_iter().zip(classes) {
            assert_eq!(class_of(op.clone()), Some(class), "{op:?}");
        }
        assert_eq!(class_of(Op::Binary(Binary::Sub)), Some(Class::Elem));
        roundtrip(&g);
        // A column value cannot be stored into a row state.
        let new_col = g.output(&Target::State("col_var".into())).expect("col_var");
        g.set_output(Target::State("row_var".into()), new_col);
        let e = crate::verify(&g).expect_err("col value into a row state");
        assert!(
            e.to_string().contains("is col (expected a row value"),
            "{e}"
        );
    }

    #[test]
    fn every_op_roundtrips() {
        let g = every_op();
        let text = g.to_string();
        assert!(text.contains("state count : scalar = 0.5"), "{text}");
        for word in [
            "NaN",
            "-inf",
            "sin",
            "floor",
            "global_norm",
            "max_abs",
            "select",
            "fma",
            "cast bf16",
            "ne",
        ] {
            assert!(text.contains(word), "{word} missing from\n{text}");
        }
        roundtrip(&g);
    }

    #[test]
    fn pruned_and_other_dtype_graphs_roundtrip() {
        let mut g = adamw();
        let unused = g.add(Op::Unary(Unary::Exp), &[NodeIndex::new(0)]);
        assert!(g.contains(unused));
        assert_eq!(g.prune(), 1);
        roundtrip(&g);
        let mut h = Graph::new("half");
        h.elem_dtype = DType::BF16;
        let p = h.input(Input::Param);
        let half = h.constant(0.5);
        let x = h.add(Op::Binary(Binary::Mul), &[p, half]);
        let wide = h.add(Op::Cast(DType::F64), &[x]);
        let y = h.add(Op::Binary(Binary::Add), &[wide, p]);
        h.set_output(Target::Param, y);
        assert!(h.to_string().contains(": elem f64"));
        roundtrip(&h);
        roundtrip(&Graph::new("empty"));
    }

    #[test]
    fn nan_constants_with_different_payloads_roundtrip() {
        let mut g = Graph::new("nans");
        let p = g.input(Input::Param);
        let a = g.constant(f64::NAN);
        let b = g.constant(-f64::NAN);
        let c = g.constant(f64::from_bits(0x7ff0_0000_0000_0001));
        let x = g.add(Op::Binary(Binary::Add), &[p, a]);
        let x = g.add(Op::Binary(Binary::Add), &[x, b]);
        let x = g.add(Op::Binary(Binary::Add), &[x, c]);
        g.set_output(Target::Param, x);
        roundtrip(&g);
    }

    #[test]
    fn hand_written_text_with_comments_and_sparse_numbers() {
        let text = "\n// a comment\noptimizer  sign sgd  { // trailing\n\
            hyper lr = 1e-2\n\
            %10 = param : elem f32\n%20=grad:elem f32 // gradient\n\
            %3 = sign %20 : elem f32\n%7 = hyper lr : scalar f64\n\
            %8 = mul %7, %3 : elem f32\n%9 = sub %10, %8 : elem f32\n\
            param = %9\n\n}\n\n// done\n";
        let g = parse_graph(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.name, "sign sgd");
        let printed = g.to_string();
        assert!(printed.contains("%2 = sign %1 : elem f32"), "{printed}");
        assert!(printed.contains("param = %5"), "{printed}");
        roundtrip(&g);
    }

    fn err(text: &str) -> ParseError {
        match parse_graph(text) {
            Ok(g) => panic!("parsed:\n{g}"),
            Err(e) => e,
        }
    }

    const SGD: &str = "optimizer sgd {\n  dtype f32\n  hyper lr = 0.1\n  %0 = param : elem f32\n  %1 = grad : elem f32\n  \
                       %2 = hyper lr : scalar f64\n  %3 = mul %2, %1 : elem f32\n  %4 = sub %0, %3 : elem f32\n  \
                       param = %4\n}\n";

    #[test]
    fn sgd_text_parses() {
        let g = parse_graph(SGD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.to_string(), SGD);
    }

    #[test]
    fn errors_have_positions_and_expectations() {
        let e = err(&SGD.replace("mul %2", "mull %2"));
        assert_eq!((e.line, e.col), (7, 8));
        assert_eq!(e.found, "mull");
        let msg = e.to_string();
        assert!(
            msg.starts_with("7:8: unknown op 'mull' (expected one of param, grad, step"),
            "{msg}"
        );
        assert!(msg.contains("add, sub, mul"), "{msg}");
        assert!(!msg.ends_with('.'), "{msg}");

        let cases: &[(&str, &str, &str)] = &[
            (
                "%3 = mul %2, %1 : elem f32",
                "%3 = mul %2, %1 : elem f64",
                "7:21: mismatched type annotation 'elem f64' (expected elem f32",
            ),
            (
                "%3 = mul %2, %1 : elem f32",
                "%3 = mul %2 : elem f32",
                "7:8: wrong number of operands for 'mul' (expected 2 operands, found 1)",
            ),
            (
                "%3 = mul %2, %1 : elem f32",
                "%3 = mul %2, %9 : elem f32",
                "7:16: undefined node '%9'",
            ),
            (
                "%3 = mul %2, %1 : elem f32",
                "%3 = mul %2, %1 : elem f8",
                "7:26: unknown dtype 'f8'",
            ),
            (
                "%3 = mul %2, %1 : elem f32",
                "%3 = mul %2, %1 : thing f32",
                "7:21: unknown class 'thing'",
            ),
            (
                "%3 = mul %2, %1 : elem f32",
                "%3 = mul %2 %1 : elem f32",
                "7:15: unexpected '%1' (expected ',' or ':')",
            ),
            (
                "%3 = mul %2, %1 : elem f32",
                "%3 = mul %2, %1",
                "7:18: unexpected end of line (expected ': CLASS DTYPE'",
            ),
            (
                "%3 = mul %2, %1 : elem f32",
                "%2 = mul %2, %1 : elem f32",
                "7:3: duplicate node '%2' (expected each node defined once (%2 is defined on line 6))",
            ),
            (
                "%3 = mul %2, %1 : elem f32",
                "%99999999999999999999 = mul %2, %1 : elem f32",
                "7:3: node number out of range",
            ),
            (
                "%3 = mul %2, %1 : elem f32",
                "%3 = mul %2, %x : elem f32",
                "7:16: invalid node reference '%x'",
            ),
            (
                "%3 = mul %2, %1 : elem f32",
                "%3 = mul %1, %1 : elem f32 extra",
                "7:30: unexpected 'extra' (expected end of line)",
            ),
            (
                "%3 = mul %2, %1 : elem f32",
                "%3 = hyper lr : scalar f64",
                "7:3: duplicate computation '%3' (expected a new computation (%3 computes the same as %2;",
            ),
            (
                "hyper lr = 0.1",
                "hyper lr = 0.1x",
                "3:14: invalid number '0.1x'",
            ),
            (
                "hyper lr = 0.1",
                "hyper lr = 0.1\n  hyper lr = 0.2",
                "4:9: duplicate hyper 'lr' (expected each hyper declared once (first on line 3))",
            ),
            (
                "hyper lr = 0.1",
                "hyper lr = 0.1\n  state m : tensor = 0.0",
                "4:13: unknown state class 'tensor'",
            ),
            (
                "hyper lr = 0.1",
                "bogus lr = 0.1",
                "3:3: unexpected 'bogus' (expected a declaration",
            ),
            (
                "param = %4",
                "param = %4\n  param = %3",
                "10:3: duplicate output 'param'",
            ),
            (
                "param = %4",
                "param = %4\n  dtype f64",
                "10:3: duplicate 'dtype' (expected one dtype line (the first is on line 2))",
            ),
            ("}\n", "", "10:1: unexpected end of input (expected '}')"),
            (
                "}\n",
                "}\n}\n",
                "11:1: unexpected '}' (expected end of input after the closing '}')",
            ),
            (
                "optimizer sgd {",
                "optimiser sgd {",
                "1:1: unexpected 'optimiser' (expected 'optimizer NAME {')",
            ),
            (
                "optimizer sgd {",
                "optimizer sgd",
                "1:14: unexpected end of line (expected '{' after the optimizer name)",
            ),
        ];
        for (from, to, want) in cases {
            let text = SGD.replacen(from, to, 1);
            assert_ne!(text, SGD, "{from}");
            let msg = err(&text).to_string();
            assert!(msg.starts_with(want), "got  {msg}\nwant {want}");
        }
        let late = SGD
            .replace("  dtype f32\n", "")
            .replace("param = %4", "param = %4\n  dtype f64");
        assert_eq!(
            err(&late).to_string(),
            "9:3: misplaced 'dtype' (expected the dtype line before the first node)"
        );
        assert_eq!(
            err("").to_string(),
            "1:1: unexpected end of input (expected 'optimizer NAME {')"
        );
        assert_eq!(
            err("\n \n").to_string(),
            "3:1: unexpected end of input (expected 'optimizer NAME {')"
        );
    }

    #[test]
    fn columns_count_characters() {
        let e = err(&SGD.replace("hyper lr = 0.1", "hyper λr = 0.1 é"));
        assert_eq!((e.line, e.col), (3, 18));
        assert_eq!(e.found, "é");
    }

    #[test]
    fn long_tokens_are_shortened_in_errors() {
        let long = "x".repeat(500);
        let e = err(&SGD.replace("mul %2", &format!("{long} %2")));
        assert!(e.found.len() < 70);
        assert!(e.found.ends_with("..."));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        for text in [
            "optimizer {\n}",
            "optimizer x {\n  %0 = add : elem f32\n}",
            "optimizer x {\n  %0 = const 1e999999 : scalar f64\n}",
            "optimizer x {\n  %0 = cast : elem f32\n}",
            "optimizer x {\n  %0 = cast f32 %0 : elem f32\n}",
            "optimizer x {\n  % = param : elem f32\n}",
            "optimizer x {\n  %%% = = = :::\n}",
            "optimizer x {\n  = %0\n}",
            "optimizer x {\n  state\n}",
            "optimizer x {\n  state s :\n}",
            "optimizer x {\n  hyper\n}",
            "optimizer x {\n  dtype\n}",
            "optimizer x {\n  param =\n}",
            "optimizer x {\n  param = %0\n}",
            "{",
            "}",
            "\u{0}\u{ffff}",
            "optimizer \u{1F600} {\n  %0 = param : elem f32\n  \u{1F600} = %0\n}",
        ] {
            let _ = parse_graph(text);
        }
        let g = parse_graph("optimizer {\n}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.name, "");
        assert_eq!(g.to_string(), "optimizer  {\n  dtype f32\n}\n");
        let g = parse_graph("optimizer x {\n  %0 = const 1e999999 : scalar f64\n}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(g.to_string().contains("const inf"));
    }

    #[test]
    fn outputs_resolve_scalar_states_declared_later() {
        let text = "optimizer x {\n  %0 = step : scalar f64\n  n = %0\n  state n : scalar = 0.0\n}";
        let g = parse_graph(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.outputs[0].target, Target::ScalarState("n".into()));
    }
}
