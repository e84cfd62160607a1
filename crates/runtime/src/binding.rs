//! What an optimizer is bound to, whatever the target: the definition, the tensors' shapes, the
//! param groups with their hyperparameters and scalar states, and the step count.

use crate::error::OptimizerError;
use crate::optimizer::{Group, Setup};
use crate::reduce::Reduced;
use crate::scalar_program::{FactorValues, ScalarProgram, StageInputs};
use crate::view::View;
use optjit_ir::Class;
use optjit_trace::Definition;
use std::collections::BTreeMap;

/// One param group's tensors, hyperparameters in force and scalar states.
pub(crate) struct GroupState {
    pub(crate) tensors: Vec<usize>,
    /// Value in force of every declared hyperparameter, in declaration order.
    hypers: Vec<f64>,
    /// Scalar states, indexed like the graph's states (per-element entries unused).
    scalar_states: Vec<f64>,
}

/// The target-independent part of an optimizer (the CPU and the CUDA one hold the same).
pub(crate) struct Binding {
    pub(crate) definition: Definition,
    /// Element count of every tensor.
    pub(crate) lens: Vec<usize>,
    /// Every tensor seen as matrices (for per-row and per-column values).
    pub(crate) views: Vec<View>,
    /// Per tensor, its per-row and per-column states, indexed like the graph's states (other
    /// entries empty; none before [`Binding::allocate_factor_states`]). The host owns them: it
    /// computes them.
    pub(crate) factor_states: Vec<Vec<Vec<f32>>>,
    /// Per tensor, the index of its first row of kernel scalars when rows are per row.
    row_base: Vec<usize>,
    pub(crate) groups: Vec<GroupState>,
    pub(crate) step_count: u64,
}

/// Scalar-state updates of one step, per group, and row- and column-state updates, per
/// tensor, applied by [`Binding::finish_step`].
pub(crate) struct PendingStep(Vec<Vec<(usize, f64)>>, Vec<Vec<(usize, Vec<f32>)>>);

impl Binding {
    /// Checks `setup` against `definition` (groups partition the tensors, every hyperparameter
    /// is declared and inside its domain, shapes are addressable).
    pub(crate) fn new(definition: &Definition, setup: &Setup) -> Result<Binding, OptimizerError> {
        let graph = &definition.graph;
        let rule = graph.name.as_str();
        let n_tensors = setup.shapes.len();
        let groups = if setup.groups.is_empty() {
            vec![Group {
                tensors: (0..n_tensors).collect(),
                hypers: BTreeMap::new(),
                rule: None,
            }]
        } else {
            setup.groups.clone()
        };
        check_partition(rule, &groups, n_tensors)?;
        for list in &definition.per_group {
            if list.values.len() != groups.len() {
                return Err(OptimizerError::PerGroupLength {
                    rule: rule.to_string(),
                    given_by: list.given_by.clone(),
                    got: list.values.len(),
                    n_groups: groups.len(),
                });
            }
        }

        let mut group_states = Vec::with_capacity(groups.len());
        for (g, group) in groups.iter().enumerate() {
            let mut values: Vec<f64> = graph.hypers.iter().map(|h| h.default).collect();
            let place = if groups.len() > 1 {
                format!(" in param group {g}")
            } else {
                String::new()
            };
            // From the least to the most specific: the optimizer's values, a schedule's value
            // for this group, the group's own.
            let scheduled: BTreeMap<String, f64> = (definition.per_group.iter())
                .map(|list| (list.hyper.clone(), list.values[g]))
                .collect();
            let layers = [
                (&setup.hypers, ""),
                (&scheduled, place.as_str()),
                (&group.hypers, place.as_str()),
            ];
            for (layer, place) in layers {
                for (name, &value) in layer {
                    let index = hyper_index(definition, name).map_err(|e| e.at(place))?;
                    check_hyper(definition, name, value, place)?;
                    values[index] = value;
                }
            }
            group_states.push(GroupState {
                tensors: group.tensors.clone(),
                hypers: values,
                scalar_states: graph.states.iter().map(|s| s.init).collect(),
            });
        }
        let lens = tensor_lengths(rule, &setup.shapes)?;
        let views: Vec<View> = setup
            .shapes
            .iter()
            .zip(&lens)
            .map(|(shape, &len)| View::of(shape, len))
            .collect();
        let row_base = views
            .iter()
            .scan(0, |next, view| {
                let base = *next;
                *next += view.total_rows();
                Some(base)
            })
            .collect();
        Ok(Binding {
            definition: definition.clone(),
            lens,
            views,
            factor_states: Vec::new(),
            row_base,
            groups: group_states,
            step_count: 0,
        })
    }

    pub(crate) fn rule(&self) -> &str {
        &self.definition.graph.name
    }

    /// Whether the rule has a hyperparameter `name`.
    pub(crate) fn declares(&self, name: &str) -> bool {
        self.definition.graph.hyper(name).is_some()
    }

    fn group_index(&self, group: usize) -> Result<usize, OptimizerError> {
        if group < self.groups.len() {
            Ok(group)
        } else {
            Err(OptimizerError::NoSuchGroup {
                rule: self.rule().into(),
                group,
                n_groups: self.groups.len(),
            })
        }
    }

    pub(crate) fn hyper(&self, group: usize, name: &str) -> Result<f64, OptimizerError> {
        let g = self.group_index(group)?;
        Ok(self.groups[g].hypers[hyper_index(&self.definition, name)?])
    }

    pub(crate) fn set_hyper(
        &mut self,
        group: Option<usize>,
        name: &str,
        value: f64,
    ) -> Result<(), OptimizerError> {
        let index = hyper_index(&self.definition, name)?;
        let place = group
            .map(|g| format!(" in param group {g}"))
            .unwrap_or_default();
        check_hyper(&self.definition, name, value, &place)?;
        match group {
            Some(g) => {
                let g = self.group_index(g)?;
                self.groups[g].hypers[index] = value;
            }
            None => self.groups.iter_mut().for_each(|g| g.hypers[index] = value),
        }
        Ok(())
    }

    /// Every declared hyperparameter of group `g` with its value, in declaration order.
    pub(crate) fn named_hypers(&self, g: usize) -> impl Iterator<Item = (String, f64)> + '_ {
        let graph = &self.definition.graph;
        (graph.hypers.iter().zip(&self.groups[g].hypers)).map(|(h, &v)| (h.name.clone(), v))
    }

    /// Every scalar state of group `g` with its value, in declaration order.
    pub(crate) fn named_scalar_states(&self, g: usize) -> impl Iterator<Item = (String, f64)> + '_ {
        let graph = &self.definition.graph;
        (graph.states.iter().zip(&self.groups[g].scalar_states))
            .filter(|(s, _)| s.class == Class::Scalar)
            .map(|(s, &v)| (s.name.clone(), v))
    }

    /// Checks that `value` lies in the domain of the hyperparameter `name` (` in param group
    /// 1`, or empty, is `place`).
    pub(crate) fn check_hyper_value(
        &self,
        name: &str,
        value: f64,
        place: &str,
    ) -> Result<(), OptimizerError> {
        hyper_index(&self.definition, name)?;
        check_hyper(&self.definition, name, value, place)
    }

    /// Sets the hyperparameters and scalar states of group `g` that `hypers` and
    /// `scalar_states` name (checked by the caller).
    pub(crate) fn set_named(
        &mut self,
        g: usize,
        hypers: &BTreeMap<String, f64>,
        scalar_states: &BTreeMap<String, f64>,
    ) {
        let graph = &self.definition.graph;
        let group = &mut self.groups[g];
        for (h, value) in graph.hypers.iter().zip(&mut group.hypers) {
            *value = hypers.get(&h.name).copied().unwrap_or(*value);
        }
        for (s, value) in graph.states.iter().zip(&mut group.scalar_states) {
            if s.class == Class::Scalar {
                *value = scalar_states.get(&s.name).copied().unwrap_or(*value);
            }
        }
    }

    /// The index among the graph's states of the state `name` of `class`.
    pub(crate) fn state_index(&self, name: &str, class: Class) -> Option<usize> {
        let states = &self.definition.graph.states;
        states
            .iter()
            .position(|s| s.name == name && s.class == class)
    }

    /// Allocates every tensor's per-row and per-column states at their initial values (a
    /// binding that steps needs them; one that only checks a setup does not).
    pub(crate) fn allocate_factor_states(&mut self) {
        let states = &self.definition.graph.states;
        self.factor_states = self
            .views
            .iter()
            .map(|view| {
                states
                    .iter()
                    .map(|s| match s.class {
                        Class::Row => vec![s.init as f32; view.total_rows()],
                        Class::Col => vec![s.init as f32; view.total_cols()],
                        _ => Vec::new(),
                    })
                    .collect()
            })
            .collect();
    }

    /// The per-row or per-column state `name` of tensor `tensor`.
    pub(crate) fn factor_state(&self, tensor: usize, name: &str) -> Option<&[f32]> {
        let index = self
            .state_index(name, Class::Row)
            .or_else(|| self.state_index(name, Class::Col))?;
        self.factor_states.get(tensor).map(|s| s[index].as_slice())
    }

    pub(crate) fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        let index = self.state_index(name, Class::Scalar)?;
        self.groups.get(group).map(|g| g.scalar_states[index])
    }

    /// Runs stage `stage` of the next step's scalar program for every group (and every tensor,
    /// for per-tensor values). Stage 0 starts the step and sizes `scratch`: one row of
    /// `program.n_kernel_scalars().max(1)` kernel scalars per group, or per tensor when kernels
    /// read per-tensor values (see [`Binding::row_of`]). Each stage fills the row slots it
    /// computes; `reduced` holds the step's reductions finished so far. Nothing is modified
    /// until [`Binding::finish_step`] takes [`Binding::pending_step`].
    pub(crate) fn scalar_stage(
        &self,
        program: &ScalarProgram,
        stage: usize,
        reduced: &Reduced,
        scratch: &mut StageScratch,
    ) {
        let step = (self.step_count + 1) as f64;
        let width = row_width(program);
        let n = program.n_values().max(1);
        let per_tensor = program.rows_per_tensor();
        let per_row = program.rows_per_row();
        if stage == 0 {
            scratch.rows.clear();
            scratch.rows.resize(self.n_rows(program) * width, 0.0);
            scratch.group_values.clear();
            scratch.group_values.resize(self.groups.len() * n, 0.0);
            scratch.tensor_values.clear();
            scratch.tensor_values.resize(self.lens.len() * n, 0.0);
            if per_row {
                let n_tensors = self.lens.len();
                scratch
                    .factors
                    .resize_with(n_tensors, FactorValues::default);
                let n_cols = program.n_col_values();
                scratch.cols.resize_with(n_tensors, Vec::new);
                scratch
                    .cols
                    .iter_mut()
                    .for_each(|c| c.resize(n_cols, Vec::new()));
            }
        }
        let StageScratch {
            rows,
            group_values,
            tensor_values,
            factors,
            cols,
        } = scratch;
        for (g, group) in self.groups.iter().enumerate() {
            let inputs = StageInputs {
                hypers: &group.hypers,
                step,
                states: &group.scalar_states,
                reduced,
            };
            let values = &mut group_values[g * n..(g + 1) * n];
            program.run_group(stage, &inputs, values);
            if per_row {
                for &t in &group.tensors {
                    let view = &self.views[t];
                    let own = &mut tensor_values[t * n..(t + 1) * n];
                    let states = &self.factor_states[t];
                    program.run_factors(
                        stage,
                        t,
                        view,
                        &inputs,
                        values,
                        own,
                        states,
                        &mut factors[t],
                    );
                    let rows = &mut rows[self.row_base[t] * width..];
                    let computed = (&*values, &*own);
                    program.fill_factor_rows(stage, view, computed, &factors[t], rows);
                    program.fill_cols(stage, &factors[t], &mut cols[t]);
                }
                continue;
            }
            if !per_tensor {
                program.fill_row(stage, values, None, &mut rows[g * width..(g + 1) * width]);
                continue;
            }
            for &t in &group.tensors {
                let own = &mut tensor_values[t * n..(t + 1) * n];
                program.run_tensor(stage, t, &inputs, values, own);
                let row = &mut rows[t * width..(t + 1) * width];
                program.fill_row(stage, values, Some(own), row);
            }
        }
    }

    /// How many rows of kernel scalars a step fills (see [`Binding::row_of`]).
    pub(crate) fn n_rows(&self, program: &ScalarProgram) -> usize {
        match (program.rows_per_row(), program.rows_per_tensor()) {
            (true, _) => self.views.iter().map(View::total_rows).sum(),
            (false, true) => self.lens.len(),
            (false, false) => self.groups.len(),
        }
    }

    /// The row of kernel scalars that row `row` (over all matrices) of tensor `tensor` of group
    /// `group` reads: rows are per group unless kernels read per-tensor values (one per tensor)
    /// or the step has per-row values (one per row of every tensor).
    pub(crate) fn row_of(
        &self,
        program: &ScalarProgram,
        group: usize,
        tensor: usize,
        row: usize,
    ) -> usize {
        match (program.rows_per_row(), program.rows_per_tensor()) {
            (true, _) => self.row_base[tensor] + row,
            (false, true) => tensor,
            (false, false) => group,
        }
    }

    /// The scalar-state updates of a step whose every stage ran.
    pub(crate) fn pending_step(
        &self,
        program: &ScalarProgram,
        scratch: &StageScratch,
    ) -> PendingStep {
        let n_values = program.n_values().max(1);
        let factor_updates = match program.rows_per_row() {
            true => scratch
                .factors
                .iter()
                .map(|f| program.factor_updates(f))
                .collect(),
            false => Vec::new(),
        };
        PendingStep(
            scratch
                .group_values
                .chunks(n_values)
                .take(self.groups.len())
                .map(|v| program.state_updates(v))
                .collect(),
            factor_updates,
        )
    }

    /// Runs the metric-driven schedule for every group with `metric`, as PyTorch's
    /// `ReduceLROnPlateau.step(metric)` after a step: its scalar states (and the hyperparameter
    /// values it holds for the next step) take their new values. Nothing changes on an error.
    pub(crate) fn report_metric(&mut self, metric: f64) -> Result<(), OptimizerError> {
        let rule = self.rule().to_string();
        let Some(program) = &self.definition.on_metric else {
            return Err(OptimizerError::NoMetricSchedule { rule });
        };
        let graph = &self.definition.graph;
        let mut updates = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            let mut hypers: BTreeMap<String, f64> = graph
                .hypers
                .iter()
                .zip(&group.hypers)
                .map(|(h, &v)| (h.name.clone(), v))
                .collect();
            hypers.insert("metric".to_string(), metric);
            let scalar_states = graph
                .states
                .iter()
                .zip(&group.scalar_states)
                .filter(|(s, _)| s.class == Class::Scalar)
                .map(|(s, &v)| (s.name.clone(), v))
                .collect();
            let env = optjit_ir::ScalarEnv {
                hypers,
                step: self.step_count as f64,
                scalar_states,
            };
            let out = optjit_ir::interpret(program, &env, &[]).map_err(|e| {
                OptimizerError::MetricSchedule {
                    rule: rule.clone(),
                    message: e.to_string(),
                }
            })?;
            updates.push(out.scalar_states);
        }
        for (group, update) in self.groups.iter_mut().zip(updates) {
            for (state, value) in graph.states.iter().zip(&mut group.scalar_states) {
                if let Some(&new) = update.get(&state.name) {
                    *value = new;
                }
            }
        }
        Ok(())
    }

    /// Commits a step whose kernels ran: scalar states take their new values, the count grows.
    pub(crate) fn finish_step(&mut self, pending: PendingStep) {
        for (group, updates) in self.groups.iter_mut().zip(pending.0) {
            for (state, value) in updates {
                group.scalar_states[state] = value;
            }
        }
        for (states, updates) in self.factor_states.iter_mut().zip(pending.1) {
            for (state, values) in updates {
                states[state] = values;
            }
        }
        self.step_count += 1;
    }
}

/// What the stages of one step fill: the kernel rows and every value of the scalar program.
#[derive(Default)]
pub(crate) struct StageScratch {
    /// The rows of kernel scalars, `row_width` floats each.
    pub(crate) rows: Vec<f32>,
    /// Per group, every instruction's value (per-tensor ones unused).
    group_values: Vec<f64>,
    /// Per tensor, every instruction's value (only per-tensor ones used).
    tensor_values: Vec<f64>,
    /// Per tensor, its per-matrix, per-row and per-column values (steps with per-row values).
    factors: Vec<FactorValues>,
    /// Per tensor, the column-value buffers kernels read (`col<i>` at index i).
    pub(crate) cols: Vec<Vec<Vec<f32>>>,
}

/// Checks the lengths of the tensors handed to a step of rule `rule` over tensors of `lens`
/// elements (of `shapes`): `params[i]` and `grads[i]` are the element counts of tensor i.
pub(crate) fn check_lengths(
    rule: &str,
    lens: &[usize],
    shapes: &[Vec<usize>],
    params: &[usize],
    grads: &[usize],
) -> Result<(), OptimizerError> {
    let rule = rule.to_string();
    for (what, got) in [("param", params.len()), ("grad", grads.len())] {
        if got != lens.len() {
            return Err(OptimizerError::TensorCount {
                rule,
                what,
                expected: lens.len(),
                got,
            });
        }
    }
    for (tensor, &expected) in lens.iter().enumerate() {
        for (what, got) in [("param", params[tensor]), ("grad", grads[tensor])] {
            if got != expected {
                let shape = shapes[tensor].clone();
                return Err(OptimizerError::TensorLength {
                    rule,
                    what,
                    tensor,
                    got,
                    expected,
                    shape,
                });
            }
        }
    }
    Ok(())
}

/// Floats per row of kernel scalars (at least one, so that every row has an address).
pub(crate) fn row_width(program: &ScalarProgram) -> usize {
    program.n_kernel_scalars().max(1)
}

/// Element counts of `shapes`, refusing any that overflow or exceed what memory can address.
pub(crate) fn tensor_lengths(
    rule: &str,
    shapes: &[Vec<usize>],
) -> Result<Vec<usize>, OptimizerError> {
    let limit = isize::MAX as usize / (2 * size_of::<f32>());
    shapes
        .iter()
        .enumerate()
        .map(|(tensor, shape)| {
            let len = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            len.filter(|&n| n <= limit)
                .ok_or_else(|| OptimizerError::BadShape {
                    rule: rule.to_string(),
                    tensor,
                    shape: shape.clone(),
                })
        })
        .collect()
}

fn hyper_index(definition: &Definition, name: &str) -> Result<usize, OptimizerError> {
    let hypers = &definition.graph.hypers;
    hypers
        .iter()
        .position(|h| h.name == name)
        .ok_or_else(|| OptimizerError::UnknownHyper {
            rule: definition.graph.name.clone(),
            name: name.to_string(),
            place: String::new(),
            declared: hypers
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn check_hyper(
    definition: &Definition,
    name: &str,
    value: f64,
    place: &str,
) -> Result<(), OptimizerError> {
    let domain = definition.domain(name);
    if domain.contains(value) {
        return Ok(());
    }
    Err(OptimizerError::BadHyper {
        rule: definition.graph.name.clone(),
        name: name.to_string(),
        value,
        expected: domain.to_string(),
        place: place.to_string(),
    })
}

pub(crate) fn check_partition(
    rule: &str,
    groups: &[Group],
    n_tensors: usize,
) -> Result<(), OptimizerError> {
    let mut owner = vec![None; n_tensors];
    for (g, group) in groups.iter().enumerate() {
        for &t in &group.tensors {
            let problem = match owner.get(t) {
                None => format!("group {g} names tensor {t}, but there are {n_tensors} tensors"),
                Some(Some(first)) => format!("tensor {t} is in group {first} and group {g}"),
                Some(None) => {
                    owner[t] = Some(g);
                    continue;
                }
            };
            return Err(OptimizerError::BadGroups {
                rule: rule.to_string(),
                problem,
            });
        }
    }
    match owner.iter().position(Option::is_none) {
        Some(t) => Err(OptimizerError::BadGroups {
            rule: rule.to_string(),
            problem: format!("tensor {t} is in no group"),
        }),
        None => Ok(()),
    }
}

/// Where a kernel buffer's pointer comes from, resolved once at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Param,
    Grad,
    /// Index into a tensor's buffers: the graph's states, then the plan's scratch buffers
    /// (`tmp<i>` at `states.len() + i`).
    State(usize),
    /// A column-value buffer the host fills (`col<i>`).
    ColValue(usize),
}

/// Per phase of `plan`, the source of each kernel buffer.
pub(crate) fn buffer_sources(
    definition: &Definition,
    plan: &optjit_ir::FusionPlan,
) -> Vec<Vec<Source>> {
    let states = &definition.graph.states;
    let source = |buffer: &optjit_ir::Buffer| match buffer {
        optjit_ir::Buffer::Param => Source::Param,
        optjit_ir::Buffer::Grad => Source::Grad,
        optjit_ir::Buffer::State(name) => Source::State(
            states
                .iter()
                .position(|s| &s.name == name)
                .expect("declared state"),
        ),
        optjit_ir::Buffer::ColValue(i) => Source::ColValue(*i),
        optjit_ir::Buffer::Temp(i) => Source::State(states.len() + i),
    };
    plan.phases
        .iter()
        .map(|phase| phase.buffers.iter().map(|b| source(&b.buffer)).collect())
        .collect()
}
