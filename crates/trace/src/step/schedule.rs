//! A `schedule` block: the hyperparameter values in force at step `t`, applied to an update rule
//! by computing them in its scalar program (so a schedule never recompiles anything).

use super::ast::{Ident, Item};
use super::block::{self, Assignable};
use super::error::StepError;
use super::scope::{BlockKind, Scope};
use crate::definition::Definition;
use optjit_ir::{Binary, Class, Graph, Input, NodeIndex, Op, Target};
use std::collections::HashMap;

/// A parsed schedule, ready to be applied to any optimizer that has the hyperparameters it sets.
#[derive(Clone, Debug)]
pub struct Schedule {
    file: String,
    source: String,
    item: Item,
}

/// The scalar state that records the value in force of a scheduled hyperparameter during the
/// last step (what PyTorch's `param_groups[g][name]` shows).
pub fn in_force_state(hyper: &str) -> String {
    format!("{hyper}_in_force")
}

/// A schedule assigns the optimizer's hyperparameters and its own scalar states.
struct ScheduleTargets<'a> {
    optimizer: &'a Graph,
}

impl Assignable for ScheduleTargets<'_> {
    fn check(&self, scope: &Scope<'_>, name: &Ident, _: NodeIndex) -> Result<(), StepError> {
        let text = name.name.as_str();
        if self.optimizer.hyper(text).is_some() {
            return Ok(());
        }
        if scope.graph.state(text).is_some() && self.optimizer.state(text).is_none() {
            return Ok(());
        }
        let hypers: Vec<&str> = self
            .optimizer
            .hypers
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        let what = match scope.graph.hyper(text) {
            Some(_) => format!("'{text}' is the schedule's own hyperparameter, read-only"),
            None => format!(
                "'{text}' is not a hyperparameter of optimizer '{}' (it has {}){}",
                self.optimizer.name,
                hypers.join(", "),
                super::scope::suggestion(text, hypers.iter().copied())
            ),
        };
        Err(scope.error(name.span, what))
    }
}

impl Schedule {
    pub(crate) fn new(file: &str, source: &str, item: Item) -> Schedule {
        Schedule {
            file: file.to_string(),
            source: source.to_string(),
            item,
        }
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.item.name.name
    }

    /// `definition` with this schedule in force: every read of a hyperparameter the schedule
    /// sets reads the scheduled value instead (the configured value stays the base the
    /// schedule reads), the schedule's own hyperparameters and scalar states join the rule's,
    /// and each scheduled hyperparameter `h` gets the scalar state [`in_force_state`]`(h)`.
    pub fn apply(&self, definition: &Definition) -> Result<Definition, StepError> {
        let source = &definition.graph;
        let mut graph = Graph::new(source.name.clone());
        graph.elem_dtype = source.elem_dtype;
        graph.hypers = source.hypers.clone();
        graph.states = source.states.clone();
        let mut names = HashMap::new();
        for h in &source.hypers {
            names.insert(h.name.clone(), graph.input(Input::Hyper(h.name.clone())));
        }
        // t = step - 1: the 0-based index of the step being taken (PyTorch's last_epoch).
        let step = graph.input(Input::Step);
        let one = graph.constant(1.0);
        names.insert("t".into(), graph.add(Op::Binary(Binary::Sub), &[step, one]));

        let targets = ScheduleTargets { optimizer: source };
        let assigned = block::run(
            &self.file,
            &self.source,
            &self.item,
            BlockKind::Schedule,
            &mut graph,
            names,
            &targets,
        )?;
        let error = |ident: &Ident, message: String| {
            StepError::at(&self.file, &self.source, ident.span, message)
        };
        let mut scheduled: HashMap<String, NodeIndex> = HashMap::new();
        for (name, value) in &assigned.values {
            if graph.node(*value).class != Class::Scalar {
                return Err(error(name, format!("'{}' must be a scalar", name.name)));
            }
            match source.hyper(&name.name) {
                Some(_) => {
                    let state = in_force_state(&name.name);
                    if source.state(&state).is_some() {
                        return Err(error(
                            name,
                            format!("the rule already has a state '{state}'"),
                        ));
                    }
                    graph.declare_state(&state, 0.0, Class::Scalar);
                    graph.set_output(Target::ScalarState(state), *value);
                    scheduled.insert(name.name.clone(), *value);
                }
                None => graph.set_output(Target::ScalarState(name.name.clone()), *value),
            }
        }

        // The rule itself, each scheduled hyperparameter read replaced by its value in force.
        let mut renamed: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        for n in source.nodes() {
            let op = source.node(n).op.clone();
            let copy = match &op {
                Op::Input(Input::Hyper(h)) if scheduled.contains_key(h) => scheduled[h],
                _ => {
                    let operands: Vec<NodeIndex> =
                        source.operands(n).iter().map(|o| renamed[o]).collect();
                    graph.add(op, &operands)
                }
            };
            renamed.insert(n, copy);
        }
        for output in &source.outputs {
            graph.set_output(output.target.clone(), renamed[&output.value]);
        }
        graph.prune();
        optjit_ir::verify(&graph).map_err(|e| {
            error(
                &self.item.name,
                format!("schedule '{}' does not apply: {e}", self.name()),
            )
        })?;
        Ok(Definition {
            graph,
            domains: definition.domains.clone(),
        })
    }
}
