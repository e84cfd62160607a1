//! An `optimizer` block to a [`Definition`]: the same graph the tracing API builds.

use super::ast::{Ident, Item};
use super::block::{self, Assignable};
use super::error::StepError;
use super::scope::{BlockKind, Declared, Scope, class_words};
use crate::definition::Definition;
use optjit_ir::{Class, Graph, Input, NodeIndex, Target};
use std::collections::HashMap;

/// An optimizer assigns `param` and its own states.
struct OptimizerTargets;

impl Assignable for OptimizerTargets {
    fn check(&self, scope: &Scope<'_>, name: &Ident, value: NodeIndex) -> Result<(), StepError> {
        let class = scope.graph.node(value).class;
        let state = match scope.declared.get(&name.name) {
            _ if name.name == "param" => Class::Elem,
            Some(Declared::Hyper) => {
                return Err(scope.error(
                    name.span,
                    format!(
                        "'{}' is a hyperparameter, read-only in an optimizer (a schedule sets it)",
                        name.name
                    ),
                ));
            }
            Some(Declared::State(state)) => *state,
            None => {
                return Err(scope.error(
                    name.span,
                    format!(
                        "assignment to undeclared state '{0}'; declare it first: `state {0} = 0`",
                        name.name
                    ),
                ));
            }
        };
        // What `ir::verify` requires of an output, said in `.step` terms.
        let takes = match state {
            Class::Scalar => "scalar values only (hyperparameters, step, scalar states)",
            Class::Row => {
                "per-row values (row_mean, `: row` states) or ones the same for the whole row \
                 (per matrix, per tensor, scalar)"
            }
            Class::Col => {
                "per-column values (col_mean, `: col` states) or ones the same for the whole \
                 column (per matrix, per tensor, scalar)"
            }
            _ => "per-element values or scalars (the same for every element)",
        };
        let fits = match state {
            Class::Scalar => class == Class::Scalar,
            Class::Row | Class::Col => state.join(class) == state,
            _ => matches!(class, Class::Elem | Class::Scalar),
        };
        if fits {
            return Ok(());
        }
        let target = match state {
            _ if name.name == "param" => "param".to_string(),
            Class::Scalar => format!("scalar state '{}'", name.name),
            Class::Row => format!("row state '{}'", name.name),
            Class::Col => format!("col state '{}'", name.name),
            _ => format!("state '{}'", name.name),
        };
        Err(scope.error(
            name.span,
            format!(
                "{target} cannot hold a {} value; it takes {takes}",
                class_words(class)
            ),
        ))
    }
}

/// Builds the update rule of `item` (an `optimizer` block).
pub(crate) fn build(file: &str, source: &str, item: &Item) -> Result<Definition, StepError> {
    let mut graph = Graph::new(item.name.name.clone());
    let mut names = HashMap::new();
    for (name, input) in [
        ("param", Input::Param),
        ("grad", Input::Grad),
        ("step", Input::Step),
        ("rank", Input::Rank),
    ] {
        names.insert(name.to_string(), graph.input(input));
    }
    let assigned = block::run(
        file,
        source,
        item,
        BlockKind::Optimizer,
        &mut graph,
        names,
        &OptimizerTargets,
    )?;
    if !assigned.values.iter().any(|(n, _)| n.name == "param") {
        return Err(StepError::at(
            file,
            source,
            item.name.span,
            format!("optimizer '{}' never assigns param", item.name.name),
        ));
    }
    for (name, value) in &assigned.values {
        let target = match name.name.as_str() {
            "param" => Target::Param,
            state => match graph.state(state).map(|s| s.class) {
                Some(Class::Scalar) => Target::ScalarState(state.to_string()),
                _ => Target::State(state.to_string()),
            },
        };
        graph.set_output(target, *value);
    }
    graph.prune();
    optjit_ir::verify(&graph).map_err(|e| {
        StepError::at(
            file,
            source,
            item.name.span,
            format!("optimizer '{}' is not a valid step: {e}", item.name.name),
        )
    })?;
    Ok(Definition {
        graph,
        domains: assigned.domains,
        on_metric: None,
        state_aliases: assigned.aliases,
        per_group: Vec::new(),
        group_states: Default::default(),
    })
}
