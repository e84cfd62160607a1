//! Running a block's statements in order: declarations, `let`s and assignments, with sequential
//! semantics (a read sees the latest assignment), shared by optimizers and schedules.

use super::ast::{Expr, ExprKind, Ident, Interval, Item, Span, Stmt};
use super::error::StepError;
use super::scope::{BlockKind, Declared, Scope, function_names};
use crate::definition::{Domain, StateAlias};
use optjit_ir::{Class, Graph, Input, NodeIndex};
use std::collections::{BTreeMap, HashMap};

/// Names no declaration may take.
const RESERVED: &[&str] = &["param", "grad", "step", "rank", "t", "pi", "metric"];

/// What a block assigned, in order of first assignment, with each name's final value.
pub(crate) struct Assigned {
    pub(crate) values: Vec<(Ident, NodeIndex)>,
    /// The `alias` statements' names for states.
    pub(crate) aliases: Vec<StateAlias>,
    /// The domains the block's `hyper` statements declare (`in [0, 1)`).
    pub(crate) domains: BTreeMap<String, Domain>,
}

/// Who may be assigned in a block, decided by the block's kind.
pub(crate) trait Assignable {
    /// Checks that `name` (with `value`, already computed in `scope`) may be assigned.
    fn check(&self, scope: &Scope<'_>, name: &Ident, value: NodeIndex) -> Result<(), StepError>;
}

/// Where each name the block declares is first defined, for "used before its definition".
fn definitions(item: &Item) -> HashMap<String, Span> {
    let mut later = HashMap::new();
    for stmt in &item.body {
        if let Stmt::Hyper { name, .. } | Stmt::State { name, .. } | Stmt::Let { name, .. } = stmt {
            later.entry(name.name.clone()).or_insert(name.span);
        }
    }
    later
}

/// Runs `item`'s statements into `graph` with `names` visible from the start; declarations
/// call `graph.declare_*`. Returns the assignments.
pub(crate) fn run(
    file: &str,
    source: &str,
    item: &Item,
    kind: BlockKind,
    graph: &mut Graph,
    names: HashMap<String, NodeIndex>,
    assignable: &dyn Assignable,
) -> Result<Assigned, StepError> {
    let mut scope = Scope {
        file,
        source,
        graph,
        kind,
        names,
        later: definitions(item),
        declared: HashMap::new(),
    };
    let mut declared: HashMap<String, Span> = HashMap::new();
    let mut assigned: Vec<(Ident, NodeIndex)> = Vec::new();
    // Where each assigned name is in `assigned`.
    let mut assigned_at: HashMap<String, usize> = HashMap::new();
    let mut aliases = Vec::new();
    let mut domains = BTreeMap::new();
    for stmt in &item.body {
        let at = match stmt {
            Stmt::Hyper { name, .. }
            | Stmt::State { name, .. }
            | Stmt::Let { name, .. }
            | Stmt::Assign { name, .. } => name.span,
            Stmt::Alias { alias, .. } => alias.span,
        };
        scope.check_room(at)?;
        match stmt {
            Stmt::Hyper {
                name,
                value,
                domain,
            } => {
                declare(&scope, &mut declared, name)?;
                let default = scope.constant(value)?;
                if let Some(interval) = domain {
                    let domain = hyper_domain(&scope, interval)?;
                    if !domain.contains(default) {
                        return Err(scope.error(
                            value.span,
                            format!(
                                "the default {default} of '{}' is outside its domain: {domain}",
                                name.name
                            ),
                        ));
                    }
                    domains.insert(name.name.clone(), domain);
                }
                scope.graph.declare_hyper(&name.name, default);
                scope.declared.insert(name.name.clone(), Declared::Hyper);
                scope.bind_input(&name.name, Input::Hyper(name.name.clone()));
            }
            Stmt::State { name, class, init } => {
                declare(&scope, &mut declared, name)?;
                if kind == BlockKind::Schedule && *class != Class::Scalar {
                    return Err(scope.error(
                        name.span,
                        format!(
                            "a schedule keeps scalar state only: `state {}: scalar = ...`",
                            name.name
                        ),
                    ));
                }
                let init = scope.constant(init)?;
                let state = name.name.clone();
                let input = match class {
                    Class::Scalar => Input::ScalarState(state),
                    Class::Row => Input::RowState(state),
                    Class::Col => Input::ColState(state),
                    _ => Input::State(state),
                };
                scope.graph.declare_state(&name.name, init, *class);
                scope
                    .declared
                    .insert(name.name.clone(), Declared::State(*class));
                scope.bind_input(&name.name, input);
            }
            Stmt::Alias {
                alias,
                state,
                below_rank,
            } => {
                if kind == BlockKind::Schedule {
                    let message = "a schedule keeps no tensor state to alias";
                    return Err(scope.error(alias.span, message));
                }
                match scope.declared.get(&state.name) {
                    Some(Declared::State(Class::Scalar) | Declared::Hyper) | None => {
                        let message = format!(
                            "'{}' is not a per-element, row or column state declared above",
                            state.name
                        );
                        return Err(scope.error(state.span, message));
                    }
                    Some(_) => {}
                }
                declare(&scope, &mut declared, alias)?;
                aliases.push(StateAlias {
                    alias: alias.name.clone(),
                    state: state.name.clone(),
                    below_rank: *below_rank,
                });
            }
            Stmt::Let { name, value } => {
                if RESERVED.contains(&name.name.as_str()) {
                    return Err(scope.error(
                        name.span,
                        format!("'{}' is an input and cannot be redefined", name.name),
                    ));
                }
                let node = scope.expr(value)?;
                scope.names.insert(name.name.clone(), node);
            }
            Stmt::Assign { name, value } => {
                let node = scope.expr(value)?;
                if scope.graph.node(node).dtype == optjit_ir::DType::Bool {
                    return Err(scope.error(
                        value.span,
                        "a comparison result cannot be assigned; use where(condition, a, b)",
                    ));
                }
                assignable.check(&scope, name, node)?;
                scope.names.insert(name.name.clone(), node);
                match assigned_at.get(&name.name) {
                    Some(&at) => assigned[at].1 = node,
                    None => {
                        assigned_at.insert(name.name.clone(), assigned.len());
                        assigned.push((name.clone(), node));
                    }
                }
            }
        }
        if let Stmt::Hyper { name, .. } | Stmt::State { name, .. } | Stmt::Let { name, .. } = stmt {
            scope.later.remove(&name.name);
        }
    }
    Ok(Assigned {
        values: assigned,
        aliases,
        domains,
    })
}

/// A bound of an interval: a constant, `inf` or `-inf`.
fn bound(scope: &Scope<'_>, expr: &Expr) -> Result<f64, StepError> {
    let is_inf = |e: &Expr| matches!(&e.kind, ExprKind::Name(n) if n == "inf");
    match &expr.kind {
        _ if is_inf(expr) => Ok(f64::INFINITY),
        ExprKind::Neg(x) if is_inf(x) => Ok(f64::NEG_INFINITY),
        _ => scope.constant(expr),
    }
}

/// The domain `interval` declares (`in [0, inf)`): infinite bounds allow every finite value on
/// their side; an interval that holds no finite value is refused.
fn hyper_domain(scope: &Scope<'_>, interval: &Interval) -> Result<Domain, StepError> {
    let low = bound(scope, &interval.low)?;
    let high = bound(scope, &interval.high)?;
    if low == f64::INFINITY {
        return Err(scope.error(interval.low.span, "the lower bound cannot be inf"));
    }
    if high == f64::NEG_INFINITY {
        return Err(scope.error(interval.high.span, "the upper bound cannot be -inf"));
    }
    let (min, min_inclusive) = match low {
        f64::NEG_INFINITY => (f64::MIN, true),
        _ => (low, interval.low_inclusive),
    };
    let (max, max_inclusive) = match high {
        f64::INFINITY => (f64::MAX, true),
        _ => (high, interval.high_inclusive),
    };
    if min > max || (min == max && !(min_inclusive && max_inclusive)) {
        let text = scope.source.get(interval.span.start..interval.span.end);
        return Err(scope.error(
            interval.span,
            format!("the interval {} holds no value", text.unwrap_or("").trim()),
        ));
    }
    Ok(Domain {
        min,
        min_inclusive,
        max,
        max_inclusive,
        ..Domain::finite()
    })
}

/// Checks that `name` may be declared here: not reserved, not a function, not declared twice.
fn declare(
    scope: &Scope<'_>,
    declared: &mut HashMap<String, Span>,
    name: &Ident,
) -> Result<(), StepError> {
    let text = name.name.as_str();
    if RESERVED.contains(&text) {
        return Err(scope.error(name.span, format!("'{text}' is reserved (an input)")));
    }
    if function_names().any(|f| f == text) {
        return Err(scope.error(name.span, format!("'{text}' is a function name")));
    }
    if let Some(first) = declared.get(text) {
        return Err(scope.error(
            name.span,
            format!(
                "'{text}' is already declared at {}:{}",
                first.line, first.col
            ),
        ));
    }
    if scope.names.contains_key(text) {
        return Err(scope.error(
            name.span,
            format!(
                "'{text}' is already defined (by a `let`, or as the optimizer's hyperparameter)"
            ),
        ));
    }
    declared.insert(text.to_string(), name.span);
    Ok(())
}
