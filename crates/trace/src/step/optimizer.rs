//! An `optimizer` block to a [`Definition`]: the same graph the tracing API builds.

use super::ast::{Ident, Item};
use super::block::{self, Assignable};
use super::error::StepError;
use super::scope::{BlockKind, Scope};
use crate::definition::Definition;
use optjit_ir::{Class, Graph, Input, NodeIndex, Target};
use std::collections::HashMap;

/// An optimizer assigns `param` and its own states.
struct OptimizerTargets;

impl Assignable for OptimizerTargets {
    fn check(&self, scope: &Scope<'_>, name: &Ident, value: NodeIndex) -> Result<(), StepError> {
        let graph = &scope.graph;
        if name.name == "param" {
            return Ok(());
        }
        if graph.hyper(&name.name).is_some() {
            return Err(scope.error(
                name.span,
                format!(
                    "'{}' is a hyperparameter, read-only in an optimizer (a schedule sets it)",
                    name.name
                ),
            ));
        }
        match graph.state(&name.name) {
            Some(s) if s.class == Class::Scalar && graph.node(value).class != Class::Scalar => {
                let what = match graph.node(value).class {
                    Class::Elem => "per-element",
                    _ => "per-tensor",
                };
                Err(scope.error(
                    name.span,
                    format!("scalar state '{}' cannot hold a {what} value", name.name),
                ))
            }
            Some(_) => Ok(()),
            None => Err(scope.error(
                name.span,
                format!(
                    "assignment to undeclared state '{0}'; declare it first: `state {0} = 0`",
                    name.name
                ),
            )),
        }
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
        domains: Default::default(),
        on_metric: None,
        state_aliases: assigned.aliases,
    })
}
