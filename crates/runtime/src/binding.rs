//! What an optimizer is bound to, whatever the target: the definition, the tensors' shapes, the
//! param groups with their hyperparameters and scalar states, each tensor's step count and
//! scalar states, and the optimizer's step count.

use crate::error::OptimizerError;
use crate::optimizer::{Group, Setup};
use crate::reduce::Reduced;
use crate::scalar_program::{FactorValues, ScalarProgram, StageInputs};
use crate::view::{MAX_VALUES, View};
use optjit_ir::Class;
use optjit_trace::Definition;
use std::collections::BTreeMap;

/// One param group's tensors, hyperparameters in force and scalar states.
pub(crate) struct GroupState {
    pub(crate) tensors: Vec<usize>,
    /// Value in force of every declared hyperparameter, in declaration order.
    hypers: Vec<f64>,
    /// The group's scalar states (`Definition::group_states`: a schedule's, the clipping norm),
    /// indexed like the graph's states (other entries unused).
    scalar_states: Vec<f64>,
}

/// What one tensor carries from step to step on the host, as PyTorch keeps it per parameter:
/// how many steps it took (a step without its gradient does not count) and its own scalar
/// states (`mu_product`, ASGD's `eta` and `mu`).
#[derive(Clone, Debug)]
pub(crate) struct TensorState {
    pub(crate) steps: u64,
    /// Indexed like the graph's states (only the tensor's own scalar states used).
    pub(crate) scalar_states: Vec<f64>,
}

impl TensorState {
    /// Whether `other` is at the same step with the same scalar states, bit for bit (a NaN
    /// state equals itself).
    fn same(&self, other: &TensorState) -> bool {
        self.steps == other.steps
            && (self.scalar_states.iter().zip(&other.scalar_states))
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
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
    /// Per tensor, its step count and scalar states.
    pub(crate) tensors: Vec<TensorState>,
    /// Per graph state, whether it is the group's (else each tensor's, for a scalar state).
    group_level: Vec<bool>,
    /// Steps the optimizer took (what schedules count).
    pub(crate) step_count: u64,
}

/// What one step changes on the host, applied by [`Binding::finish_step`].
pub(crate) struct PendingStep {
    /// Per cohort (see [`Cohort`]), its scalar-state updates: (graph state, value).
    scalar: Vec<Vec<(usize, f64)>>,
    /// Per stepping tensor, its row- and column-state updates.
    factors: Vec<(usize, FactorUpdates)>,
}

/// A tensor's row- and column-state updates: (graph state, values).
type FactorUpdates = Vec<(usize, Vec<f32>)>;

/// The tensors of one param group that take a step with the same step count and scalar states,
/// so with the same scalar program: one per group while every tensor has its gradient at every
/// step; a group splits into more when some of its tensors skipped steps. A group none of whose
/// tensors steps has one cohort without tensors, for its own (schedule) states.
#[derive(Clone, Debug)]
pub(crate) struct Cohort {
    pub(crate) group: usize,
    /// Its stepping tensors (binding indices, ascending).
    pub(crate) tensors: Vec<usize>,
}

/// Marks a tensor that does not step (see `StageScratch::cohort_of`).
const NOT_STEPPING: usize = usize::MAX;

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
        let tensor_state = TensorState {
            steps: 0,
            scalar_states: graph.states.iter().map(|s| s.init).collect(),
        };
        let group_level = (graph.states.iter())
            .map(|s| definition.group_states.contains(&s.name))
            .collect();
        let lens = tensor_lengths(rule, &setup.shapes)?;
        let bad_shape = |tensor: usize| OptimizerError::BadShape {
            rule: rule.to_string(),
            tensor,
            shape: setup.shapes[tensor].clone(),
        };
        let views: Vec<View> = (setup.shapes.iter().zip(&lens).enumerate())
            .map(|(t, (shape, &len))| View::of(shape, len).ok_or_else(|| bad_shape(t)))
            .collect::<Result<_, _>>()?;
        // Per tensor, its first row over all tensors' rows (checked: a tensor may have very
        // many rows of no element).
        let mut row_base = Vec::with_capacity(views.len());
        let mut next = 0usize;
        for (t, view) in views.iter().enumerate() {
            row_base.push(next);
            next = (next.checked_add(view.total_rows()))
                .filter(|&n| n <= MAX_VALUES)
                .ok_or_else(|| bad_shape(t))?;
        }
        Ok(Binding {
            definition: definition.clone(),
            lens,
            views,
            factor_states: Vec::new(),
            row_base,
            groups: group_states,
            tensors: vec![tensor_state; setup.shapes.len()],
            group_level,
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

    /// Every scalar state of group `g` (the group's own: see [`GroupState::scalar_states`])
    /// with its value, in declaration order.
    pub(crate) fn named_scalar_states(&self, g: usize) -> impl Iterator<Item = (String, f64)> + '_ {
        let graph = &self.definition.graph;
        (graph
            .states
            .iter()
            .zip(&self.groups[g].scalar_states)
            .zip(&self.group_level))
        .filter(|((s, _), group)| s.class == Class::Scalar && **group)
        .map(|((s, &v), _)| (s.name.clone(), v))
    }

    /// Every scalar state of tensor `t` (its own: see [`TensorState`]) with its value, in
    /// declaration order.
    pub(crate) fn named_tensor_scalar_states(
        &self,
        t: usize,
    ) -> impl Iterator<Item = (String, f64)> + '_ {
        let graph = &self.definition.graph;
        (graph
            .states
            .iter()
            .zip(&self.tensors[t].scalar_states)
            .zip(&self.group_level))
        .filter(|((s, _), group)| s.class == Class::Scalar && !**group)
        .map(|((s, &v), _)| (s.name.clone(), v))
    }

    /// Sets the scalar states of tensor `t` that `scalar_states` names (checked by the caller).
    pub(crate) fn set_tensor_scalar_states(
        &mut self,
        t: usize,
        scalar_states: &BTreeMap<String, f64>,
    ) {
        let graph = &self.definition.graph;
        let own = &mut self.tensors[t].scalar_states;
        for ((s, value), &group) in graph.states.iter().zip(own).zip(&self.group_level) {
            if s.class == Class::Scalar && !group {
                *value = scalar_states.get(&s.name).copied().unwrap_or(*value);
            }
        }
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
        for ((s, value), &own) in
            (graph.states.iter().zip(&mut group.scalar_states)).zip(&self.group_level)
        {
            if s.class == Class::Scalar && own {
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
    /// binding that steps needs them; one that only checks a setup does not). Fails, with
    /// nothing allocated, when memory cannot hold them.
    pub(crate) fn allocate_factor_states(&mut self) -> Result<(), OptimizerError> {
        let states = &self.definition.graph.states;
        let mut all = Vec::with_capacity(self.views.len());
        for (t, view) in self.views.iter().enumerate() {
            let mut own = Vec::with_capacity(states.len());
            for s in states {
                let (len, what) = match s.class {
                    Class::Row => (view.total_rows(), "row"),
                    Class::Col => (view.total_cols(), "column"),
                    _ => (0, ""),
                };
                let mut values = Vec::new();
                values
                    .try_reserve_exact(len)
                    .map_err(|_| OptimizerError::OutOfMemory {
                        rule: self.rule().to_string(),
                        tensor: t,
                        what: format!("{len} {what} values of state {}", s.name),
                    })?;
                values.resize(len, s.init as f32);
                own.push(values);
            }
            all.push(own);
        }
        self.factor_states = all;
        Ok(())
    }

    /// The per-row or per-column state `name` of tensor `tensor`.
    pub(crate) fn factor_state(&self, tensor: usize, name: &str) -> Option<&[f32]> {
        let index = self
            .state_index(name, Class::Row)
            .or_else(|| self.state_index(name, Class::Col))?;
        self.factor_states.get(tensor).map(|s| s[index].as_slice())
    }

    /// The scalar state `name` of `group`: the group's own, or, for each tensor's own, that of
    /// the group's first tensor.
    pub(crate) fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        let index = self.state_index(name, Class::Scalar)?;
        let group = self.groups.get(group)?;
        match self.group_level[index] {
            true => Some(group.scalar_states[index]),
            false => Some(self.tensors[*group.tensors.first()?].scalar_states[index]),
        }
    }

    /// The scalar state `name` of tensor `t`, when it is each tensor's own.
    pub(crate) fn tensor_scalar_state(&self, t: usize, name: &str) -> Option<f64> {
        let index = self.state_index(name, Class::Scalar)?;
        match self.group_level[index] {
            true => None,
            false => Some(self.tensors.get(t)?.scalar_states[index]),
        }
    }

    /// Runs stage `stage` of the next step's scalar program for every cohort (see [`Cohort`])
    /// in `scratch`, formed for the step by [`Binding::form_cohorts`] (and every tensor, for
    /// per-tensor values). Stage 0 sizes `scratch`: one row of
    /// `program.n_kernel_scalars().max(1)` kernel scalars per cohort, or per tensor when kernels
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
        let width = row_width(program);
        let n = program.n_values().max(1);
        let per_tensor = program.rows_per_tensor();
        let per_row = program.rows_per_row();
        if stage == 0 {
            scratch.rows.clear();
            // At least one row, so that every part has a row buffer to point at.
            let n_rows = self.n_rows(program, scratch).max(1);
            scratch.rows.resize(n_rows * width, 0.0);
            scratch.cohort_values.clear();
            scratch.cohort_values.resize(scratch.cohorts.len() * n, 0.0);
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
            cohorts,
            cohort_states,
            cohort_steps,
            cohort_values,
            tensor_values,
            factors,
            cols,
            ..
        } = scratch;
        let n_states = self.group_level.len();
        for (c, cohort) in cohorts.iter().enumerate() {
            let inputs = StageInputs {
                hypers: &self.groups[cohort.group].hypers,
                step: cohort_steps[c] as f64,
                optimizer_step: (self.step_count + 1) as f64,
                states: &cohort_states[c * n_states..(c + 1) * n_states],
                reduced,
            };
            let values = &mut cohort_values[c * n..(c + 1) * n];
            program.run_group(stage, &inputs, values);
            if per_row {
                for &t in &cohort.tensors {
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
                program.fill_row(stage, values, None, &mut rows[c * width..(c + 1) * width]);
                continue;
            }
            for &t in &cohort.tensors {
                let own = &mut tensor_values[t * n..(t + 1) * n];
                program.run_tensor(stage, t, &inputs, values, own);
                let row = &mut rows[t * width..(t + 1) * width];
                program.fill_row(stage, values, Some(own), row);
            }
        }
    }

    /// Splits each group's tensors marked in `stepping` into cohorts (see [`Cohort`]), with the
    /// step count and scalar states each runs the scalar program with.
    pub(crate) fn form_cohorts(&self, stepping: &[bool], scratch: &mut StageScratch) {
        let n_states = self.group_level.len();
        scratch.cohorts.clear();
        scratch.cohort_states.clear();
        scratch.cohort_steps.clear();
        scratch.cohort_of.clear();
        scratch.cohort_of.resize(self.lens.len(), NOT_STEPPING);
        for (g, group) in self.groups.iter().enumerate() {
            let first = scratch.cohorts.len();
            for &t in group.tensors.iter().filter(|&&t| stepping[t]) {
                let own = &self.tensors[t];
                let same = |c: &Cohort| self.tensors[c.tensors[0]].same(own);
                let c = match scratch.cohorts[first..].iter().position(same) {
                    Some(c) => first + c,
                    None => {
                        scratch.cohorts.push(Cohort {
                            group: g,
                            tensors: Vec::new(),
                        });
                        scratch.cohort_steps.push(own.steps + 1);
                        let states =
                            (self.group_level.iter().enumerate()).map(|(i, &group)| match group {
                                true => self.groups[g].scalar_states[i],
                                false => own.scalar_states[i],
                            });
                        scratch.cohort_states.extend(states);
                        scratch.cohorts.len() - 1
                    }
                };
                scratch.cohorts[c].tensors.push(t);
                scratch.cohort_of[t] = c;
            }
            if scratch.cohorts.len() == first {
                // Nothing of the group steps: its own states still follow the optimizer.
                scratch.cohorts.push(Cohort {
                    group: g,
                    tensors: Vec::new(),
                });
                scratch.cohort_steps.push(self.step_count + 1);
                scratch.cohort_states.extend(&self.groups[g].scalar_states);
            }
        }
        debug_assert_eq!(
            scratch.cohort_states.len(),
            scratch.cohorts.len() * n_states
        );
    }

    /// How many rows of kernel scalars a step fills (see [`Binding::row_of`]).
    pub(crate) fn n_rows(&self, program: &ScalarProgram, scratch: &StageScratch) -> usize {
        match (program.rows_per_row(), program.rows_per_tensor()) {
            (true, _) => self.views.iter().map(View::total_rows).sum(),
            (false, true) => self.lens.len(),
            (false, false) => scratch.cohorts.len(),
        }
    }

    /// The row of kernel scalars that row `row` (over all matrices) of tensor `tensor` reads,
    /// in a step whose stage 0 filled `scratch`: rows are per cohort unless kernels read
    /// per-tensor values (one per tensor) or the step has per-row values (one per row of every
    /// tensor). `None` for a tensor that does not step.
    pub(crate) fn row_of(
        &self,
        program: &ScalarProgram,
        scratch: &StageScratch,
        tensor: usize,
        row: usize,
    ) -> Option<usize> {
        let cohort = scratch.cohort_of[tensor];
        if cohort == NOT_STEPPING {
            return None;
        }
        Some(match (program.rows_per_row(), program.rows_per_tensor()) {
            (true, _) => self.row_base[tensor] + row,
            (false, true) => tensor,
            (false, false) => cohort,
        })
    }

    /// The scalar-state updates of a step whose every stage ran.
    pub(crate) fn pending_step(
        &self,
        program: &ScalarProgram,
        scratch: &StageScratch,
    ) -> PendingStep {
        let n_values = program.n_values().max(1);
        let factor_updates = match program.rows_per_row() {
            true => (scratch.cohorts.iter())
                .flat_map(|c| c.tensors.iter())
                .map(|&t| (t, program.factor_updates(&scratch.factors[t])))
                .collect(),
            false => Vec::new(),
        };
        PendingStep {
            scalar: (scratch.cohort_values.chunks(n_values))
                .take(scratch.cohorts.len())
                .map(|v| program.state_updates(v))
                .collect(),
            factors: factor_updates,
        }
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

    /// Commits a step whose kernels ran over the cohorts of `scratch` (the step's): the
    /// group's scalar states take the values its first cohort computed, each stepping tensor's
    /// its cohort's, and its step count grows, as the optimizer's does.
    pub(crate) fn finish_step(&mut self, pending: PendingStep, scratch: &StageScratch) {
        let mut group_done = vec![false; self.groups.len()];
        for (cohort, updates) in scratch.cohorts.iter().zip(pending.scalar) {
            let first = !std::mem::replace(&mut group_done[cohort.group], true);
            for (state, value) in updates {
                match self.group_level[state] {
                    true if first => self.groups[cohort.group].scalar_states[state] = value,
                    true => {}
                    false => {
                        for &t in &cohort.tensors {
                            self.tensors[t].scalar_states[state] = value;
                        }
                    }
                }
            }
            for &t in &cohort.tensors {
                self.tensors[t].steps += 1;
            }
        }
        for (t, updates) in pending.factors {
            for (state, values) in updates {
                self.factor_states[t][state] = values;
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
    /// The step's cohorts (see [`Cohort`]).
    pub(crate) cohorts: Vec<Cohort>,
    /// Per tensor, its cohort, or `NOT_STEPPING`.
    cohort_of: Vec<usize>,
    /// Per cohort, the scalar states it steps from (indexed like the graph's states).
    cohort_states: Vec<f64>,
    /// Per cohort, the step count it takes (1-based, this step included).
    cohort_steps: Vec<u64>,
    /// Per cohort, every instruction's value (per-tensor ones unused).
    cohort_values: Vec<f64>,
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

#[cfg(test)]
mod tests {
    use super::{Binding, StageScratch};
    use crate::optimizer::{Group, Setup};

    /// A step where every tensor has its gradient runs the scalar program once per group and
    /// fills one row per group, as before tensors could skip steps; a tensor that skipped
    /// steps gets a cohort (and row) of its own, and one that skips this step none.
    #[test]
    fn every_tensor_stepping_means_one_cohort_per_group() {
        let adamw = optjit_optim::AdamW::new().build().expect("AdamW");
        let groups = [vec![0, 1, 2, 3], vec![4, 5], vec![6, 7, 8, 9]]
            .map(|tensors| Group {
                tensors,
                ..Group::default()
            })
            .to_vec();
        let setup = Setup {
            shapes: vec![vec![4]; 10],
            groups,
            hypers: adamw.hypers.clone(),
            ..Setup::default()
        };
        let mut binding = Binding::new(&adamw.definition, &setup).expect("binds");
        let mut scratch = StageScratch::default();
        binding.form_cohorts(&[true; 10], &mut scratch);
        let members: Vec<Vec<usize>> = scratch.cohorts.iter().map(|c| c.tensors.clone()).collect();
        assert_eq!(members, [vec![0, 1, 2, 3], vec![4, 5], vec![6, 7, 8, 9]]);

        binding.tensors[1].steps = 3; // tensor 1 took fewer steps than its group
        let mut stepping = [true; 10];
        stepping[5] = false; // tensor 5 has no gradient this step
        binding.form_cohorts(&stepping, &mut scratch);
        let members: Vec<Vec<usize>> = scratch.cohorts.iter().map(|c| c.tensors.clone()).collect();
        assert_eq!(members, [vec![0, 2, 3], vec![1], vec![4], vec![6, 7, 8, 9]]);
    }
}
