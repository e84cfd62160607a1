//! A `schedule` block: the hyperparameter values in force at step `t`, applied to an update rule
//! by computing them in its scalar program (so a schedule never recompiles anything).

use super::ast::{Expr, ExprKind, Ident, Item, Stmt};
use super::block::{self, Assignable};
use super::error::StepError;
use super::limits::list;
use super::scope::{BlockKind, Declared, Scope};
use crate::definition::{Definition, Domain};
use optjit_ir::{Binary, Class, Cmp, Graph, Input, NodeIndex, Op, Target};
use std::collections::{BTreeMap, HashMap, HashSet};

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
    /// The optimizer's hyperparameters and states, by name.
    hypers: HashSet<&'a str>,
    states: HashSet<&'a str>,
}

impl<'a> ScheduleTargets<'a> {
    fn new(optimizer: &'a Graph) -> Self {
        ScheduleTargets {
            optimizer,
            hypers: optimizer.hypers.iter().map(|h| h.name.as_str()).collect(),
            states: optimizer.states.iter().map(|s| s.name.as_str()).collect(),
        }
    }
}

impl Assignable for ScheduleTargets<'_> {
    fn check(&self, scope: &Scope<'_>, name: &Ident, _: NodeIndex) -> Result<(), StepError> {
        let text = name.name.as_str();
        if self.hypers.contains(text) {
            return Ok(());
        }
        let declared = scope.declared.get(text);
        if matches!(declared, Some(Declared::State(_))) && !self.states.contains(text) {
            return Ok(());
        }
        let hypers: Vec<&str> = self
            .optimizer
            .hypers
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        let what = match declared {
            Some(Declared::Hyper) => {
                format!("'{text}' is the schedule's own hyperparameter, read-only")
            }
            _ => format!(
                "'{text}' is not a hyperparameter of optimizer '{}' (it has {}){}",
                self.optimizer.name,
                list(&hypers, 20),
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

    /// `definition` with this schedule in force. A schedule that reads `metric` runs when a
    /// metric is reported after a step (see [`Schedule::reads_metric`]); any other runs inside
    /// every step: every read of a hyperparameter the schedule sets reads the scheduled value
    /// instead (the configured value stays the base the schedule reads), the schedule's own
    /// hyperparameters and scalar states join the rule's, and each scheduled hyperparameter `h`
    /// gets the scalar state [`in_force_state`]`(h)`, its value during the last step.
    pub fn apply(&self, definition: &Definition) -> Result<Definition, StepError> {
        if self.reads_metric() {
            return self.apply_on_metric(definition);
        }
        let source = &definition.graph;
        let mut graph = rule_template(source);
        let names = self.names(source, &mut graph);
        let assigned = self.run(source, &mut graph, names)?;
        let mut scheduled: HashMap<String, NodeIndex> = HashMap::new();
        for (name, value) in &assigned.values {
            match source.hyper(&name.name) {
                Some(_) => {
                    let state = self.in_force_state(source, name)?;
                    graph.declare_state(&state, 0.0, Class::Scalar);
                    graph.set_output(Target::ScalarState(state), *value);
                    scheduled.insert(name.name.clone(), *value);
                }
                None => graph.set_output(Target::ScalarState(name.name.clone()), *value),
            }
        }
        copy_rule(source, &mut graph, &scheduled);
        self.finish(
            definition,
            graph,
            definition.on_metric.clone(),
            &assigned.domains,
        )
    }

    /// Whether the schedule reads `metric`: it then runs on the host each time a metric is
    /// reported after a step (as PyTorch's `ReduceLROnPlateau.step(metric)`), and what it
    /// assigns is in force from the next step on. In such a schedule `t` counts the steps
    /// taken before the one just finished.
    pub fn reads_metric(&self) -> bool {
        fn reads(expr: &Expr) -> bool {
            match &expr.kind {
                ExprKind::Name(name) => name == "metric",
                ExprKind::Number(_) => false,
                ExprKind::Neg(x) => reads(x),
                ExprKind::Chain { first, rest } => {
                    reads(first) || rest.iter().any(|link| reads(&link.operand))
                }
                ExprKind::Compare(_, x, y) => reads(x) || reads(y),
                ExprKind::Call { args, .. } => args.iter().any(reads),
            }
        }
        self.item.body.iter().any(|stmt| match stmt {
            Stmt::Let { value, .. } | Stmt::Assign { value, .. } => reads(value),
            Stmt::Hyper { .. } | Stmt::State { .. } | Stmt::Alias { .. } => false,
        })
    }

    /// The metric-driven form: the schedule becomes the definition's `on_metric` program, and
    /// every step reads each scheduled `h` from the scalar state `h_in_force` (its base value
    /// until the program first sets it).
    fn apply_on_metric(&self, definition: &Definition) -> Result<Definition, StepError> {
        let source = &definition.graph;
        if definition.on_metric.is_some() {
            return Err(self.error(
                &self.item.name,
                format!(
                    "optimizer '{}' already has a metric-driven schedule",
                    source.name
                ),
            ));
        }
        let mut program = rule_template(source);
        let mut names = self.names(source, &mut program);
        program.declare_hyper("metric", 0.0);
        names.insert(
            "metric".into(),
            program.input(Input::Hyper("metric".into())),
        );
        let assigned = self.run(source, &mut program, names)?;

        // The step: the schedule's declarations, and each scheduled hyperparameter read from
        // its state when set (`s != s` holds only for the initial NaN).
        let mut graph = rule_template(source);
        for h in program.hypers.iter().filter(|h| h.name != "metric") {
            graph.declare_hyper(&h.name, h.default);
        }
        for s in &program.states {
            graph.declare_state(&s.name, s.init, s.class);
        }
        let mut scheduled: HashMap<String, NodeIndex> = HashMap::new();
        for (name, value) in &assigned.values {
            let target = match source.hyper(&name.name) {
                Some(_) => {
                    let state = self.in_force_state(source, name)?;
                    for g in [&mut graph, &mut program] {
                        g.declare_state(&state, f64::NAN, Class::Scalar);
                    }
                    let held = graph.input(Input::ScalarState(state.clone()));
                    let base = graph.input(Input::Hyper(name.name.clone()));
                    let unset = graph.add(Op::Cmp(Cmp::Ne), &[held, held]);
                    let in_force = graph.add(Op::Select, &[unset, base, held]);
                    scheduled.insert(name.name.clone(), in_force);
                    state
                }
                None => name.name.clone(),
            };
            program.set_output(Target::ScalarState(target), *value);
        }
        copy_rule(source, &mut graph, &scheduled);
        program.prune();
        optjit_ir::verify(&program).map_err(|e| {
            self.error(
                &self.item.name,
                format!(
                    "schedule '{}' is not a valid metric program: {e}",
                    self.name()
                ),
            )
        })?;
        self.finish(definition, graph, Some(program), &assigned.domains)
    }

    /// The names a schedule sees first: the rule's hyperparameters (base values) and `t`.
    fn names(&self, source: &Graph, graph: &mut Graph) -> HashMap<String, NodeIndex> {
        let mut names = HashMap::new();
        for h in &source.hypers {
            names.insert(h.name.clone(), graph.input(Input::Hyper(h.name.clone())));
        }
        // t = optimizer_step - 1: the 0-based index of the optimizer's step being taken
        // (PyTorch's last_epoch), whatever steps a tensor skipped.
        let step = graph.input(Input::OptimizerStep);
        let one = graph.constant(1.0);
        names.insert("t".into(), graph.add(Op::Binary(Binary::Sub), &[step, one]));
        names
    }

    /// Runs the schedule's statements into `graph`; every assigned value is a scalar.
    fn run(
        &self,
        source: &Graph,
        graph: &mut Graph,
        names: HashMap<String, NodeIndex>,
    ) -> Result<block::Assigned, StepError> {
        let targets = ScheduleTargets::new(source);
        let assigned = block::run(
            &self.file,
            &self.source,
            &self.item,
            BlockKind::Schedule,
            graph,
            names,
            &targets,
        )?;
        // The hyperparameters the rule reads.
        let read: HashSet<&str> = source
            .nodes()
            .into_iter()
            .filter_map(|n| match &source.node(n).op {
                Op::Input(Input::Hyper(h)) => Some(h.as_str()),
                _ => None,
            })
            .collect();
        for (name, value) in &assigned.values {
            if graph.node(*value).class != Class::Scalar {
                return Err(self.error(name, format!("'{}' must be a scalar", name.name)));
            }
            // A hyperparameter the rule never reads was left out by a structural choice (SGD
            // with momentum 0 has no momentum buffer): scheduling it would change nothing here
            // while it changes the update in PyTorch.
            if targets.hypers.contains(name.name.as_str()) && !read.contains(name.name.as_str()) {
                return Err(self.error(
                    name,
                    format!(
                        "optimizer '{}' as configured does not use '{}' (a structural choice, \
                         such as momentum 0), so a schedule cannot set it; configure it nonzero",
                        source.name, name.name
                    ),
                ));
            }
        }
        Ok(assigned)
    }

    /// The in-force state of scheduled hyperparameter `name`, checked to be a new name.
    fn in_force_state(&self, source: &Graph, name: &Ident) -> Result<String, StepError> {
        let state = in_force_state(&name.name);
        match source.state(&state) {
            Some(_) => Err(self.error(name, format!("the rule already has a state '{state}'"))),
            None => Ok(state),
        }
    }

    fn error(&self, at: &Ident, message: String) -> StepError {
        StepError::at(&self.file, &self.source, at.span, message)
    }

    /// Prunes and verifies the scheduled rule; the schedule's own hyperparameters' `domains`
    /// join the rule's.
    fn finish(
        &self,
        definition: &Definition,
        mut graph: Graph,
        on_metric: Option<Graph>,
        domains: &BTreeMap<String, Domain>,
    ) -> Result<Definition, StepError> {
        graph.prune();
        optjit_ir::verify(&graph).map_err(|e| {
            self.error(
                &self.item.name,
                format!("schedule '{}' does not apply: {e}", self.name()),
            )
        })?;
        // The states the schedule added are the param group's, not each tensor's.
        let mut group_states = definition.group_states.clone();
        (graph.states.iter())
            .filter(|s| definition.graph.state(&s.name).is_none())
            .for_each(|s| {
                group_states.insert(s.name.clone());
            });
        Ok(Definition {
            graph,
            domains: definition
                .domains
                .iter()
                .chain(domains)
                .map(|(name, domain)| (name.clone(), *domain))
                .collect(),
            on_metric,
            state_aliases: definition.state_aliases.clone(),
            per_group: definition.per_group.clone(),
            group_states,
        })
    }
}

/// A graph with `source`'s name, dtype and declarations, and no nodes.
fn rule_template(source: &Graph) -> Graph {
    let mut graph = Graph::new(source.name.clone());
    graph.elem_dtype = source.elem_dtype;
    graph.hypers = source.hypers.clone();
    graph.states = source.states.clone();
    graph
}

/// Copies `source`'s nodes and outputs into `graph`, every read of a hyperparameter in
/// `replace` replaced by its node.
fn copy_rule(source: &Graph, graph: &mut Graph, replace: &HashMap<String, NodeIndex>) {
    let mut renamed: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    for n in source.nodes() {
        let op = source.node(n).op.clone();
        let copy = match &op {
            Op::Input(Input::Hyper(h)) if replace.contains_key(h) => replace[h],
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
}
