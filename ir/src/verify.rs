//! The verifier: checks that a graph is well formed (arity, types, declarations, outputs).
//!
//! [`verify`] returns the first problem it finds as a [`VerifyError`]. The error's `Display` is
//! one line naming the offending item as the text form prints it
//! (`` `%4 = mul %1, %3`: operand %3 is a bool (expected a number; ...) ``);
//! [`VerifyError::render`] shows it in context, as Cranelift's pretty verifier errors do: the whole
//! graph text with a `^~~~ error: ...` line under the offending line.

use crate::dtype::{Class, DType};
use crate::graph::{Graph, Target};
use crate::op::{Input, Op};
use crate::print::{format_f64, node_body, numbering};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

/// Which item of the graph a [`VerifyError`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyLocation {
    /// The `dtype` line (the graph's element dtype).
    Dtype,
    /// The hyperparameter declared at this position of [`Graph::hypers`].
    Hyper(usize),
    /// The state declared at this position of [`Graph::states`].
    State(usize),
    /// A node.
    Node(NodeIndex),
    /// The output at this position of [`Graph::outputs`].
    Output(usize),
}

/// A rule of the IR that a graph breaks.
///
/// `Display` is one line: `` `SUBJECT`: MESSAGE (expected EXPECTED) ``; use
/// [`VerifyError::render`] for the graph text with the error marked under the offending line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{subject}`: {message} (expected {expected})")]
pub struct VerifyError {
    /// The offending item.
    pub location: VerifyLocation,
    /// The offending item as the text form prints it: `%4 = mul %1, %3`, `hyper lr = 0.1`,
    /// `exp_avg = %5`.
    pub subject: String,
    /// What is wrong.
    pub message: String,
    /// What was expected instead.
    pub expected: String,
}

impl VerifyError {
    /// The text form of `graph` (the graph this error came from) with a
    /// `^~~~ error: MESSAGE (expected EXPECTED)` line under the offending line:
    ///
    /// ```text
    ///   %3 = mul %2, %1 : elem bool
    ///   ^~~~~~~~~~~~~~~ error: operand %1 is a bool (expected a number; ...)
    /// ```
    ///
    /// If the line cannot be found (another graph was passed), the error is appended at the end.
    pub fn render(&self, graph: &Graph) -> String {
        // `Display for Graph` cannot print an output whose value was removed: leave such outputs
        // out of the listing and show the offending one where the outputs are.
        let mut shown = graph.clone();
        shown.outputs.retain(|o| graph.contains(o.value));
        let dead_output = matches!(self.location, VerifyLocation::Output(k)
            if graph.outputs.get(k).is_some_and(|o| !graph.contains(o.value)));
        let text = shown.to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        if dead_output {
            let end = lines.len().saturating_sub(1);
            lines.insert(end, format!("  {}", self.subject));
        }
        let node_prefix = format!("{} :", self.subject);
        let matches = |i: usize| {
            lines.get(i).is_some_and(|l| {
                let l = l.trim_start();
                l == self.subject || l.starts_with(&node_prefix)
            })
        };
        let at = self
            .line_index(&shown)
            .filter(|&i| matches(i) && !dead_output)
            .or_else(|| (0..lines.len()).find(|&i| matches(i)));
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            out.push_str(line);
            out.push('\n');
            if Some(i) == at {
                let indent = line.len() - line.trim_start().len();
                let width = self.subject.chars().count().max(1);
                out.push_str(&" ".repeat(indent));
                out.push('^');
                out.push_str(&"~".repeat(width - 1));
                out.push_str(&format!(
                    " error: {} (expected {})\n",
                    self.message, self.expected
                ));
            }
        }
        if at.is_none() {
            out.push_str(&format!("error: {self}\n"));
        }
        out
    }

    /// Where `Display for Graph` prints the offending line (0-based).
    fn line_index(&self, graph: &Graph) -> Option<usize> {
        let decls = 2 + graph.hypers.len() + graph.states.len();
        match &self.location {
            VerifyLocation::Dtype => Some(1),
            VerifyLocation::Hyper(k) => Some(2 + k),
            VerifyLocation::State(k) => Some(2 + graph.hypers.len() + k),
            VerifyLocation::Node(idx) => numbering(graph).get(idx).map(|n| decls + n),
            VerifyLocation::Output(k) => Some(decls + graph.len() + k),
        }
    }
}

/// Checks every rule of the IR; returns the first violation.
///
/// * declarations: the element dtype is a float; hyper and state names are single words (the text
///   form must be able to read them back), unique, distinct from each other and from `param`,
///   `grad` and `step`; states are `elem` or `scalar`;
/// * nodes: operand count equals `op.arity()`; operands come before their users; the node's
///   class and dtype equal what inference gives for its operands; `select` takes a bool condition
///   and non-bool values; every other op takes non-bool operands and `cast` does not make bools;
///   `sin`, `cos` and `floor` are not applied to per-element values; reductions take per-element
///   operands; `hyper`, `state` and `scalar_state` inputs name declared hypers, per-element states
///   and scalar states;
/// * outputs: at most one per target; the value is a live node; `param` and per-element states are
///   assigned elem or scalar (broadcast) non-bool values; a per-element state target names a
///   declared per-element state, a scalar state target a declared scalar state and its value is a
///   non-bool scalar.
pub fn verify(graph: &Graph) -> Result<(), VerifyError> {
    let verifier = Verifier {
        graph,
        num: numbering(graph),
    };
    verifier.declarations()?;
    for idx in graph.nodes() {
        verifier.node(idx)?;
    }
    verifier.outputs()
}

/// Whether `name` reads back as one word in the text form.
fn is_word(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with("//")
        && !name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '=' | ':' | ',' | '{' | '}' | '%'))
}

const RESERVED: [&str; 3] = ["param", "grad", "step"];

const NAME_RULE: &str = "a name without whitespace or any of = : , { } %";

struct Verifier<'g> {
    graph: &'g Graph,
    num: HashMap<NodeIndex, usize>,
}

impl Verifier<'_> {
    fn err(
        &self,
        location: VerifyLocation,
        subject: String,
        message: String,
        expected: impl Into<String>,
    ) -> VerifyError {
        VerifyError {
            location,
            subject,
            message,
            expected: expected.into(),
        }
    }

    /// `%4 = mul %1, %3`
    fn node_subject(&self, idx: NodeIndex) -> String {
        format!(
            "%{} = {}",
            self.num[&idx],
            node_body(self.graph, idx, &self.num)
        )
    }

    fn declarations(&self) -> Result<(), VerifyError> {
        let g = self.graph;
        if g.elem_dtype == DType::Bool {
            return Err(self.err(
                VerifyLocation::Dtype,
                format!("dtype {}", g.elem_dtype),
                "the element dtype is bool".into(),
                "a float dtype (f32, f64, f16 or bf16)",
            ));
        }
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (k, h) in g.hypers.iter().enumerate() {
            let subject = format!("hyper {} = {}", h.name, format_f64(h.default));
            self.check_name(VerifyLocation::Hyper(k), &subject, "hyper", &h.name, &seen)?;
            seen.insert(&h.name, format!("hyper {}", h.name));
        }
        for (k, s) in g.states.iter().enumerate() {
            let class = match s.class {
                Class::Elem => String::new(),
                other => format!(": {other} "),
            };
            let subject = format!("state {} {class}= {}", s.name, format_f64(s.init));
            self.check_name(VerifyLocation::State(k), &subject, "state", &s.name, &seen)?;
            if matches!(s.class, Class::Tensor | Class::Matrix) {
                return Err(self.err(
                    VerifyLocation::State(k),
                    subject,
                    format!("state '{}' has class {}", s.name, s.class),
                    "a per-element (elem), per-row (row), per-column (col) or per-group (scalar) state",
                ));
            }
            seen.insert(&s.name, format!("state {}", s.name));
        }
        Ok(())
    }

    fn check_name(
        &self,
        location: VerifyLocation,
        subject: &str,
        what: &str,
        name: &str,
        seen: &HashMap<&str, String>,
    ) -> Result<(), VerifyError> {
        if !is_word(name) {
            return Err(self.err(
                location,
                subject.to_string(),
                format!(
                    "{what} name '{}' cannot be read back from the text form",
                    name.escape_debug()
                ),
                NAME_RULE,
            ));
        }
        if RESERVED.contains(&name) {
            return Err(self.err(
                location,
                subject.to_string(),
                format!("{what} name '{name}' is reserved"),
                "a name other than param, grad and step",
            ));
        }
        if let Some(earlier) = seen.get(name) {
            return Err(self.err(
                location,
                subject.to_string(),
                format!("{what} '{name}' has the same name as `{earlier}`"),
                "hyper and state names to be unique",
            ));
        }
        Ok(())
    }

    fn node(&self, idx: NodeIndex) -> Result<(), VerifyError> {
        let g = self.graph;
        let node = g.node(idx);
        let operands = g.operands(idx);
        let fail = |message: String, expected: String| {
            Err(self.err(
                VerifyLocation::Node(idx),
                self.node_subject(idx),
                message,
                expected,
            ))
        };
        let name = |o: NodeIndex| format!("%{}", self.num[&o]);

        if operands.len() != node.op.arity() {
            return fail(
                format!("'{}' has {} operand(s)", node.op.mnemonic(), operands.len()),
                format!("{} operand(s)", node.op.arity()),
            );
        }
        if let Some(&late) = operands.iter().find(|o| o.index() >= idx.index()) {
            return fail(
                format!("operand {} does not come before its user", name(late)),
                "operands defined before their users, as ascending node order must be topological"
                    .into(),
            );
        }
        let (class, dtype) = g.infer(&node.op, &operands);
        if (class, dtype) != (node.class, node.dtype) {
            return fail(
                format!("the node has type {} {}", node.class, node.dtype),
                format!("{class} {dtype}, which the op gives for its operands"),
            );
        }
        let is_bool = |o: NodeIndex| g.node(o).dtype == DType::Bool;
        match &node.op {
            Op::Input(Input::Hyper(h)) if g.hyper(h).is_none() => {
                return fail(
                    format!("hyper '{h}' is not declared"),
                    self.declared("hyper", None),
                );
            }
            Op::Input(input @ (Input::State(s) | Input::RowState(s) | Input::ColState(s))) => {
                match g.state(s) {
                    Some(decl) if decl.class == node.class => {}
                    Some(decl) => {
                        return fail(
                            format!(
                                "state '{s}' is declared {} but read as `{input}`",
                                decl.class
                            ),
                            format!("`{}`", state_input_text(decl.class, s)),
                        );
                    }
                    None => {
                        return fail(
                            format!("state '{s}' is not declared"),
                            self.declared("state", Some(Class::Elem)),
                        );
                    }
                }
            }
            Op::Input(Input::ScalarState(s)) => match g.state(s) {
                Some(decl) if decl.class == Class::Scalar => {}
                Some(_) => {
                    return fail(
                        format!("state '{s}' is declared per element but read as a scalar state"),
                        format!("`state {s}`"),
                    );
                }
                None => {
                    return fail(
                        format!("scalar state '{s}' is not declared"),
                        self.declared("scalar state", Some(Class::Scalar)),
                    );
                }
            },
            Op::Input(_) | Op::Const(_) => {}
            Op::Select => {
                if !is_bool(operands[0]) {
                    return fail(
                        format!("the condition {} is not a bool", name(operands[0])),
                        "a bool condition, such as a comparison".into(),
                    );
                }
                if let Some(&o) = operands[1..].iter().find(|&&o| is_bool(o)) {
                    return fail(
                        format!("the value {} is a bool", name(o)),
                        "numbers to select between".into(),
                    );
                }
            }
            op => {
                if let Some(&o) = operands.iter().find(|&&o| is_bool(o)) {
                    return fail(
                        format!("operand {} is a bool", name(o)),
                        format!(
                            "a number ('{}' does not take bools; select turns a mask into numbers)",
                            op.mnemonic()
                        ),
                    );
                }
                match op {
                    Op::Cast(DType::Bool) => {
                        return fail(
                            "cast to bool".into(),
                            "a float dtype (a comparison makes a mask)".into(),
                        );
                    }
                    Op::Unary(u) if u.scalar_only() && g.node(operands[0]).class == Class::Elem => {
                        return fail(
                            format!("'{}' is applied to the per-element value {}", u.mnemonic(), name(operands[0])),
                            "a scalar or tensor operand (sin, cos and floor run only in the scalar program)".into(),
                        );
                    }
                    Op::Reduce(r) if g.node(operands[0]).class != r.operand_class() => {
                        return fail(
                            format!(
                                "'{}' reduces {}, which is {}",
                                r.mnemonic(),
                                name(operands[0]),
                                g.node(operands[0]).class
                            ),
                            match r.operand_class() {
                                Class::Row => "a per-row (row) operand".into(),
                                _ => "a per-element (elem) operand".into(),
                            },
                        );
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// `a declared hyper (lr, beta1)` or `... (none is declared)`.
    fn declared(&self, what: &str, class: Option<Class>) -> String {
        let names: Vec<&str> = match class {
            None => self.graph.hypers.iter().map(|h| h.name.as_str()).collect(),
            Some(c) => self
                .graph
                .states
                .iter()
                .filter(|s| s.class == c)
                .map(|s| s.name.as_str())
                .collect(),
        };
        if names.is_empty() {
            format!("a declared {what} (none is declared)")
        } else {
            format!("a declared {what}: {}", names.join(", "))
        }
    }

    fn outputs(&self) -> Result<(), VerifyError> {
        let g = self.graph;
        for (k, o) in g.outputs.iter().enumerate() {
            let value = match self.num.get(&o.value) {
                Some(n) => format!("%{n}"),
                None => format!("<removed node {}>", o.value.index()),
            };
            let subject = format!("{} = {value}", o.target.name());
            let fail = |message: String, expected: &str| {
                Err(self.err(
                    VerifyLocation::Output(k),
                    subject.clone(),
                    message,
                    expected,
                ))
            };
            if g.outputs[..k]
                .iter()
                .any(|e| e.target.name() == o.target.name())
            {
                return fail(
                    format!("'{}' is assigned twice", o.target.name()),
                    "at most one output per target",
                );
            }
            if !g.contains(o.value) {
                return fail(
                    format!("the value {value} is not a live node"),
                    "a node of the graph",
                );
            }
            let node = g.node(o.value);
            match &o.target {
                Target::Param => {}
                Target::State(s) => match g.state(s) {
                    Some(decl) if decl.class != Class::Scalar => {}
                    Some(_) => {
                        return fail(
                            format!(
                                "state '{s}' is declared scalar but assigned as a per-element state"
                            ),
                            "a scalar state target",
                        );
                    }
                    None => {
                        return fail(
                            format!("state '{s}' is not declared"),
                            &self.declared("state", Some(Class::Elem)),
                        );
                    }
                },
                Target::ScalarState(s) => match g.state(s) {
                    Some(decl) if decl.class == Class::Scalar => {}
                    Some(_) => {
                        return fail(
                            format!(
                                "state '{s}' is declared per element but assigned as a scalar state"
                            ),
                            "a per-element state target",
                        );
                    }
                    None => {
                        return fail(
                            format!("scalar state '{s}' is not declared"),
                            &self.declared("scalar state", Some(Class::Scalar)),
                        );
                    }
                },
            }
            if node.dtype == DType::Bool {
                return fail(format!("the value {value} is a bool"), "a number");
            }
            let target_class = match &o.target {
                Target::Param => Class::Elem,
                Target::State(s) => g.state(s).map_or(Class::Elem, |d| d.class),
                Target::ScalarState(_) => Class::Scalar,
            };
            match (target_class, node.class) {
                (Class::Scalar, Class::Scalar) => {}
                (Class::Scalar, class) => {
                    return fail(format!("the value {value} is {class}"), "a scalar value");
                }
                (Class::Elem, Class::Elem | Class::Scalar) => {}
                (Class::Elem, class) => {
                    return fail(
                        format!("the value {value} is {class}"),
                        "a per-element (elem) value or a scalar to broadcast",
                    );
                }
                (target, class) if target.join(class) == target => {}
                (target, class) => {
                    return fail(
                        format!("the value {value} is {class}"),
                        &format!(
                            "a {target} value (or one that is the same for the whole {target})"
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

/// How a graph reads a state of `class` named `name` (`state m`, `row_state row_var`).
fn state_input_text(class: Class, name: &str) -> String {
    match class {
        Class::Scalar => format!("scalar_state {name}"),
        Class::Row => format!("row_state {name}"),
        Class::Col => format!("col_state {name}"),
        _ => format!("state {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Target;
    use crate::op::{Binary, Cmp, Unary};
    use crate::parse::tests::{adamw, every_op};

    #[test]
    fn valid_graphs_pass() {
        for g in [adamw(), every_op(), Graph::new("empty")] {
            if let Err(e) = verify(&g) {
                panic!("{}", e.render(&g));
            }
        }
    }

    /// `param`, `grad` and `hyper lr` (declared) in a fresh graph.
    fn base() -> (Graph, NodeIndex, NodeIndex, NodeIndex) {
        let mut g = Graph::new("t");
        g.declare_hyper("lr", 0.1);
        let p = g.input(Input::Param);
        let grad = g.input(Input::Grad);
        let lr = g.input(Input::Hyper("lr".into()));
        (g, p, grad, lr)
    }

    /// Verifies `g`, expects an error whose one-line form contains every piece of `want`.
    fn fails(g: &Graph, want: &[&str]) -> VerifyError {
        let e = match verify(g) {
            Ok(()) => panic!("accepted:\n{g}"),
            Err(e) => e,
        };
        let msg = e.to_string();
        for w in want {
            assert!(msg.contains(w), "{msg}\nlacks {w}");
        }
        assert!(msg.contains("(expected "), "{msg}");
        let rendered = e.render(g);
        assert!(rendered.contains(" error: "), "{rendered}");
        assert!(rendered.starts_with("optimizer "), "{rendered}");
        e
    }

    #[test]
    fn bool_operand_of_arithmetic() {
        let (mut g, p, grad, lr) = base();
        let m = g.add(Op::Cmp(Cmp::Gt), &[grad, lr]);
        let bad = g.add(Op::Binary(Binary::Mul), &[p, m]);
        g.set_output(Target::Param, bad);
        let e = fails(
            &g,
            &[
                "`%4 = mul %0, %3`",
                "operand %3 is a bool",
                "expected a number",
            ],
        );
        assert_eq!(e.location, VerifyLocation::Node(bad));
        let rendered = e.render(&g);
        assert!(
            rendered.contains("  %4 = mul %0, %3 : elem f32\n  ^~~~~~~~~~~~~~~ error: operand %3 is a bool (expected a number"),
            "{rendered}"
        );
        assert!(rendered.ends_with("  param = %4\n}\n"), "{rendered}");
    }

    #[test]
    fn select_rules() {
        let (mut g, p, grad, _) = base();
        let bad = g.add(Op::Select, &[p, grad, p]);
        g.set_output(Target::Param, bad);
        fails(
            &g,
            &[
                "`%3 = select %0, %1, %0`",
                "condition %0 is not a bool",
                "expected a bool",
            ],
        );

        let (mut g, p, grad, _) = base();
        let m = g.add(Op::Cmp(Cmp::Lt), &[p, grad]);
        let bad = g.add(Op::Select, &[m, m, p]);
        g.set_output(Target::Param, bad);
        fails(&g, &["`%4 = select %3, %3, %0`", "the value %3 is a bool"]);
    }

    #[test]
    fn scalar_only_unary_on_elements() {
        let (mut g, p, _, _) = base();
        let bad = g.add(Op::Unary(Unary::Sin), &[p]);
        g.set_output(Target::Param, bad);
        fails(
            &g,
            &[
                "`%3 = sin %0`",
                "'sin' is applied to the per-element value %0",
                "scalar program",
            ],
        );
    }

    #[test]
    fn reduction_of_a_scalar() {
        let (mut g, p, _, lr) = base();
        let bad = g.add(Op::Reduce(crate::op::Reduction::Norm), &[lr]);
        let y = g.add(Op::Binary(Binary::Mul), &[p, bad]);
        g.set_output(Target::Param, y);
        fails(
            &g,
            &[
                "`%3 = norm %2`",
                "'norm' reduces %2, which is scalar",
                "expected a per-element",
            ],
        );
    }

    #[test]
    fn cast_to_bool() {
        let (mut g, p, _, _) = base();
        g.add(Op::Cast(DType::Bool), &[p]);
        fails(&g, &["`%3 = cast bool %0`", "cast to bool"]);
    }

    #[test]
    fn undeclared_inputs() {
        let (mut g, p, _, _) = base();
        g.add(Op::Input(Input::Hyper("beta".into())), &[]);
        g.set_output(Target::Param, p);
        fails(
            &g,
            &[
                "`%3 = hyper beta`",
                "hyper 'beta' is not declared",
                "a declared hyper: lr",
            ],
        );

        let (mut g, _, _, _) = base();
        g.add(Op::Input(Input::State("buf".into())), &[]);
        fails(
            &g,
            &[
                "`%3 = state buf`",
                "state 'buf' is not declared",
                "(none is declared)",
            ],
        );

        let (mut g, _, _, _) = base();
        g.declare_state("buf", 0.0, Class::Scalar);
        g.add(Op::Input(Input::State("buf".into())), &[]);
        fails(
            &g,
            &["`%3 = state buf`", "declared scalar", "`scalar_state buf`"],
        );

        let (mut g, _, _, _) = base();
        g.declare_state("buf", 0.0, Class::Elem);
        g.add(Op::Input(Input::ScalarState("buf".into())), &[]);
        fails(
            &g,
            &[
                "`%3 = scalar_state buf`",
                "declared per element",
                "`state buf`",
            ],
        );
    }

    #[test]
    fn type_mismatch_after_changing_the_element_dtype() {
        let (mut g, p, _, _) = base();
        g.set_output(Target::Param, p);
        g.elem_dtype = DType::F64;
        fails(
            &g,
            &[
                "`%0 = param`",
                "the node has type elem f32",
                "expected elem f64",
            ],
        );
    }

    #[test]
    fn declaration_rules() {
        let mut g = Graph::new("t");
        g.declare_hyper("lr", 0.1);
        g.declare_state("lr", 0.0, Class::Elem);
        let e = fails(
            &g,
            &[
                "`state lr = 0.0`",
                "state 'lr' has the same name as `hyper lr`",
                "unique",
            ],
        );
        assert_eq!(e.location, VerifyLocation::State(0));
        assert!(
            e.render(&g)
                .contains("  state lr = 0.0\n  ^~~~~~~~~~~~~~ error: "),
            "{}",
            e.render(&g)
        );

        let mut g = Graph::new("t");
        g.declare_hyper("step", 0.1);
        fails(&g, &["`hyper step = 0.1`", "reserved"]);

        let mut g = Graph::new("t");
        g.declare_state("momentum buffer", 0.0, Class::Elem);
        fails(
            &g,
            &["`state momentum buffer = 0.0`", "cannot be read back"],
        );

        let mut g = Graph::new("t");
        g.declare_state("norms", 0.0, Class::Tensor);
        fails(&g, &["`state norms : tensor = 0.0`", "class tensor"]);

        let mut g = Graph::new("t");
        let lr = crate::graph::HyperDecl {
            name: "lr".into(),
            default: 1.0,
        };
        g.hypers.push(lr.clone());
        g.hypers.push(lr);
        let e = fails(
            &g,
            &[
                "`hyper lr = 1.0`",
                "hyper 'lr' has the same name as `hyper lr`",
            ],
        );
        assert_eq!(e.location, VerifyLocation::Hyper(1));

        let mut g = Graph::new("t");
        g.elem_dtype = DType::Bool;
        let e = fails(&g, &["`dtype bool`", "the element dtype is bool"]);
        assert!(
            e.render(&g).contains("  dtype bool\n  ^~~~~~~~~~ error: "),
            "{}",
            e.render(&g)
        );
    }

    #[test]
    fn output_rules() {
        let (mut g, p, _, _) = base();
        g.set_output(Target::State("buf".into()), p);
        fails(&g, &["`buf = %0`", "state 'buf' is not declared"]);

        let (mut g, p, _, _) = base();
        g.declare_state("n", 0.0, Class::Scalar);
        g.set_output(Target::ScalarState("n".into()), p);
        let e = fails(
            &g,
            &[
                "`n = %0`",
                "the value %0 is elem",
                "expected a scalar value",
            ],
        );
        assert_eq!(e.location, VerifyLocation::Output(0));
        assert!(
            e.render(&g)
                .contains("  n = %0\n  ^~~~~~ error: the value %0 is elem"),
            "{}",
            e.render(&g)
        );

        let (mut g, p, _, _) = base();
        g.declare_state("n", 0.0, Class::Scalar);
        g.set_output(Target::State("n".into()), p);
        fails(
            &g,
            &[
                "`n = %0`",
                "declared scalar but assigned as a per-element state",
            ],
        );

        let (mut g, p, grad, _) = base();
        let m = g.add(Op::Cmp(Cmp::Lt), &[p, grad]);
        g.set_output(Target::Param, m);
        fails(&g, &["`param = %3`", "the value %3 is a bool"]);

        let (mut g, p, _, _) = base();
        let n = g.add(Op::Reduce(crate::op::Reduction::Norm), &[p]);
        g.set_output(Target::Param, n);
        fails(
            &g,
            &[
                "`param = %3`",
                "the value %3 is tensor",
                "a scalar to broadcast",
            ],
        );

        let (mut g, p, grad, _) = base();
        g.set_output(Target::Param, p);
        g.outputs.push(crate::graph::Output {
            target: Target::Param,
            value: grad,
        });
        let e = fails(&g, &["`param = %1`", "'param' is assigned twice"]);
        assert_eq!(e.location, VerifyLocation::Output(1));

        let (mut g, p, _, _) = base();
        let dead = g.add(Op::Unary(Unary::Neg), &[p]);
        g.set_output(Target::Param, p);
        g.prune();
        g.set_output(Target::Param, dead);
        let e = fails(&g, &["`param = <removed node 3>`", "not a live node"]);
        assert!(
            e.render(&g).ends_with("  param = <removed node 3>\n  ^~~~~~~~~~~~~~~~~~~~~~~~ error: the value <removed node 3> is not a live node (expected a node of the graph)\n}\n"),
            "{}",
            e.render(&g)
        );

        // A scalar broadcast to the parameter is fine.
        let (mut g, _, _, lr) = base();
        g.set_output(Target::Param, lr);
        assert_eq!(verify(&g), Ok(()));
    }

    #[test]
    fn prune_then_add_keeps_topological_order() {
        // `prune` renumbers densely, so nodes added afterwards still follow their operands.
        let (mut g, p, grad, _) = base();
        let x = g.add(Op::Binary(Binary::Add), &[p, grad]);
        g.add(Op::Unary(Unary::Abs), &[x]);
        let y = g.add(Op::Binary(Binary::Mul), &[x, x]);
        g.set_output(Target::Param, y);
        assert!(g.prune() > 0);
        let y = g.output(&Target::Param).expect("param output");
        let z = g.add(Op::Unary(Unary::Neg), &[y]);
        g.set_output(Target::Param, z);
        assert!(z.index() > y.index());
        for n in g.nodes() {
            assert!(g.operands(n).iter().all(|o| o.index() < n.index()));
        }
        assert_eq!(verify(&g), Ok(()));
    }

    #[test]
    fn render_appends_when_the_line_is_missing() {
        let (mut g, p, grad, lr) = base();
        let m = g.add(Op::Cmp(Cmp::Gt), &[grad, lr]);
        let bad = g.add(Op::Binary(Binary::Mul), &[p, m]);
        g.set_output(Target::Param, bad);
        let e = fails(&g, &["operand %3 is a bool"]);
        let other = Graph::new("other");
        let rendered = e.render(&other);
        assert!(rendered.ends_with(&format!("error: {e}\n")), "{rendered}");
    }
}
