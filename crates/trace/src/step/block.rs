//! Running a block's statements in order: declarations, `let`s and assignments, with sequential
//! semantics (a read sees the latest assignment), shared by optimizers and schedules.

use super::ast::{Ident, Item, Span, Stmt};
use super::error::StepError;
use super::scope::{BlockKind, Scope, function_names};
use crate::definition::StateAlias;
use optjit_ir::{Class, Graph, Input, NodeIndex};
use std::collections::HashMap;

/// Names no declaration may take.
const RESERVED: &[&str] = &["param", "grad", "step", "rank", "t", "pi", "metric"];

/// What a block assigned, in order of first assignment, with each name's final value.
pub(crate) struct Assigned {
    pub(crate) values: Vec<(Ident, NodeIndex)>,
    /// The `alias` statements' names for states.
    pub(crate) aliases: Vec<StateAlias>,
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
    };
    let mut declared: HashMap<String, Span> = HashMap::new();
    let mut assigned: Vec<(Ident, NodeIndex)> = Vec::new();
    let mut aliases = Vec::new();
    for stmt in &item.body {
        match stmt {
            Stmt::Hyper { name, value } => {
                declare(&scope, &mut declared, name)?;
                let default = scope.constant(value)?;
                scope.graph.declare_hyper(&name.name, default);
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
                match scope.graph.state(&state.name).map(|s| s.class) {
                    Some(Class::Scalar) | None => {
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
                match assigned.iter_mut().find(|(n, _)| n.name == name.name) {
                    Some(slot) => slot.1 = node,
                    None => assigned.push((name.clone(), node)),
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
