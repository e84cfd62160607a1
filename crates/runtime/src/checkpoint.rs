//! `Checkpoint`: everything an optimizer carries from one step to the next (per-element,
//! per-row and per-column states, scalar states, hyperparameters, the step count), the same
//! on every target, so that training resumes bit for bit in a fresh optimizer, on the CPU or
//! on a GPU. Its file format is in `checkpoint_file.rs`.

use crate::checkpoint_file::CheckpointError;
use crate::error::OptimizerError;
use crate::kind_step::KindStep;
use crate::variant::GroupTable;
use optjit_ir::{Class, DType};
use std::collections::BTreeMap;

/// An optimizer's state between two steps (see [`crate::Optimizer::checkpoint`]). States go by
/// PyTorch's names, as [`crate::Optimizer::state`] reads them; values are f32 whatever the
/// optimizer stores (f16 and bf16 values convert exactly).
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The update rule's name.
    pub(crate) rule: String,
    /// How the optimizer stored its tensors and per-element states.
    pub(crate) dtype: DType,
    /// Steps the optimizer took.
    pub(crate) steps: u64,
    pub(crate) shapes: Vec<Vec<usize>>,
    pub(crate) groups: Vec<GroupCheckpoint>,
    /// Per tensor, its states by name.
    pub(crate) tensors: Vec<BTreeMap<String, Vec<f32>>>,
    /// Per tensor, the steps it took (fewer than the optimizer's if it lacked a gradient at
    /// some).
    pub(crate) tensor_steps: Vec<u64>,
    /// Per tensor, its own scalar states by name (NAdam's `mu_product`, ...).
    pub(crate) tensor_scalar_states: Vec<BTreeMap<String, f64>>,
}

/// One param group of a [`Checkpoint`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GroupCheckpoint {
    pub(crate) tensors: Vec<usize>,
    /// Every declared hyperparameter's value (as set, before any schedule).
    pub(crate) hypers: BTreeMap<String, f64>,
    /// Every scalar state's value.
    pub(crate) scalar_states: BTreeMap<String, f64>,
}

impl Checkpoint {
    /// The update rule's name.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// Steps the optimizer took when it was made.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Steps tensor `tensor` took (PyTorch's `state[p]["step"]`).
    pub fn tensor_steps(&self, tensor: usize) -> Option<u64> {
        self.tensor_steps.get(tensor).copied()
    }

    /// The scalar state `name` of tensor `tensor`, when each tensor has its own.
    pub fn tensor_scalar_state(&self, tensor: usize, name: &str) -> Option<f64> {
        self.tensor_scalar_states.get(tensor)?.get(name).copied()
    }

    /// How the optimizer stored its tensors and per-element states.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape of every tensor.
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// How many param groups there are.
    pub fn n_groups(&self) -> usize {
        self.groups.len()
    }

    /// The value of hyperparameter `name` of `group`.
    pub fn hyper(&self, group: usize, name: &str) -> Option<f64> {
        self.groups.get(group)?.hypers.get(name).copied()
    }

    /// The scalar state `name` of `group`: the group's own, or, for one each tensor has, that
    /// of the group's first tensor.
    pub fn scalar_state(&self, group: usize, name: &str) -> Option<f64> {
        let group = self.groups.get(group)?;
        match group.scalar_states.get(name) {
            Some(&value) => Some(value),
            None => self.tensor_scalar_state(*group.tensors.first()?, name),
        }
    }

    /// The state `name` of tensor `tensor` (per element, or per row or column of each matrix).
    pub fn state(&self, tensor: usize, name: &str) -> Option<&[f32]> {
        self.tensors.get(tensor)?.get(name).map(Vec::as_slice)
    }

    /// The names of tensor `tensor`'s states.
    pub fn state_names(&self, tensor: usize) -> impl Iterator<Item = &str> {
        self.tensors
            .get(tensor)
            .into_iter()
            .flatten()
            .map(|(n, _)| n.as_str())
    }

    /// Replaces the values of tensor `tensor`'s state `name`, which it must hold, with as many
    /// `values`. With [`Checkpoint::set_steps`], this brings state from elsewhere (PyTorch's
    /// `optimizer.state_dict()`, whose names these are) into a checkpoint taken from a fresh
    /// optimizer, to [restore](crate::Optimizer::restore).
    pub fn set_state(
        &mut self,
        tensor: usize,
        name: &str,
        values: &[f32],
    ) -> Result<(), CheckpointError> {
        let refuse = |problem: String| CheckpointError {
            origin: "checkpoint".into(),
            problem,
        };
        let n_tensors = self.tensors.len();
        let states = self.tensors.get_mut(tensor).ok_or_else(|| {
            refuse(format!(
                "set_state: tensor {tensor} does not exist ({n_tensors} tensors)"
            ))
        })?;
        let names = states.keys().cloned().collect::<Vec<_>>().join(", ");
        let Some(own) = states.get_mut(name) else {
            return Err(refuse(format!(
                "set_state: tensor {tensor} has no state '{name}' (it has: {names})"
            )));
        };
        if own.len() != values.len() {
            return Err(refuse(format!(
                "set_state: state {name} of tensor {tensor} holds {} values, got {}",
                own.len(),
                values.len()
            )));
        }
        own.copy_from_slice(values);
        Ok(())
    }

    /// Sets the scalar state `name` of `group`, which it must hold: the group's own, or, for
    /// one each tensor has, that of every tensor of the group.
    pub fn set_scalar_state(
        &mut self,
        group: usize,
        name: &str,
        value: f64,
    ) -> Result<(), CheckpointError> {
        let n_groups = self.groups.len();
        let refuse = || CheckpointError {
            origin: "checkpoint".into(),
            problem: format!(
                "set_scalar_state: param group {group} (of {n_groups}) has no scalar state '{name}'"
            ),
        };
        let own = self.groups.get_mut(group).ok_or_else(refuse)?;
        if let Some(slot) = own.scalar_states.get_mut(name) {
            *slot = value;
            return Ok(());
        }
        let tensors = own.tensors.clone();
        let holds = |t: &usize| self.tensor_scalar_states[*t].contains_key(name);
        if tensors.is_empty() || !tensors.iter().all(holds) {
            return Err(refuse());
        }
        for t in tensors {
            self.tensor_scalar_states[t].insert(name.to_string(), value);
        }
        Ok(())
    }

    /// Sets the scalar state `name` of tensor `tensor`, which it must hold as its own.
    pub fn set_tensor_scalar_state(
        &mut self,
        tensor: usize,
        name: &str,
        value: f64,
    ) -> Result<(), CheckpointError> {
        let slot = (self.tensor_scalar_states.get_mut(tensor))
            .and_then(|states| states.get_mut(name))
            .ok_or_else(|| CheckpointError {
                origin: "checkpoint".into(),
                problem: format!(
                    "set_tensor_scalar_state: tensor {tensor} has no scalar state '{name}' of its own"
                ),
            })?;
        *slot = value;
        Ok(())
    }

    /// Sets the count of steps taken, by the optimizer and by every tensor (PyTorch's
    /// `state[p]["step"]`), below 2^53.
    pub fn set_steps(&mut self, steps: u64) -> Result<(), CheckpointError> {
        check_steps("set_steps", steps)?;
        self.steps = steps;
        self.tensor_steps.iter_mut().for_each(|s| *s = steps);
        Ok(())
    }

    /// Sets the count of steps tensor `tensor` took, below 2^53 and at most the optimizer's.
    pub fn set_tensor_steps(&mut self, tensor: usize, steps: u64) -> Result<(), CheckpointError> {
        check_steps("set_tensor_steps", steps)?;
        let optimizer = self.steps;
        let refuse = |problem: String| CheckpointError {
            origin: "checkpoint".into(),
            problem: format!("set_tensor_steps: {problem}"),
        };
        if steps > optimizer {
            return Err(refuse(format!(
                "tensor {tensor} cannot have taken {steps} steps, more than the optimizer's {optimizer}"
            )));
        }
        let n = self.tensor_steps.len();
        let slot = (self.tensor_steps.get_mut(tensor))
            .ok_or_else(|| refuse(format!("tensor {tensor} does not exist ({n} tensors)")))?;
        *slot = steps;
        Ok(())
    }
}

/// Refuses a step count that the scalar program's f64 could not count on from.
fn check_steps(what: &str, steps: u64) -> Result<(), CheckpointError> {
    match steps > MAX_STEPS {
        true => Err(CheckpointError {
            origin: "checkpoint".into(),
            problem: format!(
                "{what}: {steps} is more than the {MAX_STEPS} steps a count may reach"
            ),
        }),
        false => Ok(()),
    }
}

/// The largest step count: it and the count of the step after it are exact in the f64 the
/// scalar program uses.
pub(crate) const MAX_STEPS: u64 = (1 << 53) - 1;

/// Where one state of one tensor lives in an optimizer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot {
    /// A per-element buffer: the part, the tensor's index there, the graph state's index.
    Elem {
        part: usize,
        local: usize,
        state: usize,
    },
    /// A per-row or per-column state, which the part's binding holds on the host.
    Factor {
        part: usize,
        local: usize,
        state: usize,
    },
}

/// Every state of every tensor of an optimizer made of `kinds`: its name and length, and where
/// it lives.
pub(crate) type Layout = Vec<Vec<(String, usize, Slot)>>;

/// The layout of the states of an optimizer over `n_tensors` tensors made of `kinds` (its
/// parts, in order).
pub(crate) fn layout(n_tensors: usize, kinds: &[&KindStep]) -> Layout {
    let mut layout = vec![Vec::new(); n_tensors];
    for (part, kind) in kinds.iter().enumerate() {
        let binding = &kind.binding;
        let definition = &binding.definition;
        for (local, &tensor) in kind.tensors.iter().enumerate() {
            let rank = binding.views[local].rank;
            for (state, s) in definition.graph.states.iter().enumerate() {
                // PyTorch's name: an alias where one applies to this rank.
                let alias = (definition.state_aliases.iter())
                    .find(|a| a.state == s.name && rank < a.below_rank);
                let name = alias.map_or(s.name.clone(), |a| a.alias.clone());
                let (len, slot) = match s.class {
                    Class::Elem => (binding.lens[local], Slot::Elem { part, local, state }),
                    Class::Row | Class::Col => {
                        let len = binding.factor_states[local][state].len();
                        (len, Slot::Factor { part, local, state })
                    }
                    // Scalar states belong to the group; the verifier refuses per-tensor
                    // and per-matrix ones.
                    Class::Scalar | Class::Tensor | Class::Matrix => continue,
                };
                layout[tensor].push((name, len, slot));
            }
        }
    }
    layout
}

/// Makes the checkpoint of an optimizer over `table`'s tensors and groups, made of `kinds`
/// (its parts), stored as `dtype`; `elem` reads a per-element state (see [`Slot::Elem`]).
pub(crate) fn capture(
    table: &GroupTable,
    kinds: &[&KindStep],
    dtype: DType,
    mut elem: impl FnMut(usize, usize, usize) -> Result<Vec<f32>, OptimizerError>,
) -> Result<Checkpoint, OptimizerError> {
    let first = &kinds[0].binding;
    let mut tensors = Vec::with_capacity(table.lens.len());
    for states in layout(table.lens.len(), kinds) {
        let mut values = BTreeMap::new();
        for (name, _, slot) in states {
            let data = match slot {
                Slot::Elem { part, local, state } => elem(part, local, state)?,
                Slot::Factor { part, local, state } => {
                    kinds[part].binding.factor_states[local][state].clone()
                }
            };
            values.insert(name, data);
        }
        tensors.push(values);
    }
    let (tensor_steps, tensor_scalar_states) = tensor_scalars(table.lens.len(), kinds);
    Ok(Checkpoint {
        rule: table.rule.clone(),
        dtype,
        steps: first.step_count,
        shapes: table.shapes.clone(),
        groups: groups(table, kinds),
        tensors,
        tensor_steps,
        tensor_scalar_states,
    })
}

/// Per tensor of an optimizer over `n_tensors` tensors made of `kinds`, its step count and its
/// own scalar states, as a checkpoint holds them.
pub(crate) fn tensor_scalars(
    n_tensors: usize,
    kinds: &[&KindStep],
) -> (Vec<u64>, Vec<BTreeMap<String, f64>>) {
    let mut steps = vec![0; n_tensors];
    let mut scalar_states = vec![BTreeMap::new(); n_tensors];
    for kind in kinds {
        for (local, &t) in kind.tensors.iter().enumerate() {
            steps[t] = kind.binding.tensors[local].steps;
            scalar_states[t] = kind.binding.named_tensor_scalar_states(local).collect();
        }
    }
    (steps, scalar_states)
}

/// The param groups of an optimizer over `table`'s groups made of `kinds`, as a checkpoint
/// holds them.
pub(crate) fn groups(table: &GroupTable, kinds: &[&KindStep]) -> Vec<GroupCheckpoint> {
    (table.tensors.iter().enumerate())
        .map(|(g, tensors)| {
            // Every kind of the group's variant holds the same values.
            let holder = &table.holders(kinds, g).next().expect("a part").binding;
            GroupCheckpoint {
                tensors: tensors.clone(),
                hypers: holder.named_hypers(g).collect(),
                scalar_states: holder.named_scalar_states(g).collect(),
            }
        })
        .collect()
}

/// Checks that `checkpoint` fits an optimizer over `table`'s tensors and groups made of
/// `kinds`: the same rule, shapes and groups, every hyperparameter declared (by the group's
/// rule) and inside its domain, and exactly the states this optimizer holds, each of its
/// length. Returns where each tensor's states go.
pub(crate) fn check(
    checkpoint: &Checkpoint,
    table: &GroupTable,
    kinds: &[&KindStep],
) -> Result<Layout, OptimizerError> {
    let rule = table.rule.as_str();
    let refuse = |problem: String| OptimizerError::Checkpoint {
        rule: rule.to_string(),
        problem,
    };
    if checkpoint.rule != rule {
        return Err(refuse(format!(
            "it was made by optimizer '{}'",
            checkpoint.rule
        )));
    }
    if checkpoint.shapes != table.shapes {
        return Err(refuse(format!(
            "its tensors have shapes {:?}, this optimizer's {:?}",
            checkpoint.shapes, table.shapes
        )));
    }
    if checkpoint.groups.len() != table.n_groups() {
        return Err(refuse(format!(
            "it has {} param group(s), this optimizer {}",
            checkpoint.groups.len(),
            table.n_groups()
        )));
    }
    for (g, (saved, tensors)) in checkpoint.groups.iter().zip(&table.tensors).enumerate() {
        if &saved.tensors != tensors {
            return Err(refuse(format!(
                "its param group {g} holds tensors {:?}, this optimizer's {:?}",
                saved.tensors, tensors
            )));
        }
        let binding = &table.holders(kinds, g).next().expect("a part").binding;
        let declared: Vec<String> = binding.named_hypers(g).map(|(n, _)| n).collect();
        let what = format!("hyperparameters of param group {g}");
        same_names(&what, saved.hypers.keys(), &declared).map_err(refuse)?;
        for (name, &value) in &saved.hypers {
            binding.check_hyper_value(
                name,
                value,
                &format!(" in param group {g} of the checkpoint"),
            )?;
        }
        let declared: Vec<String> = binding.named_scalar_states(g).map(|(n, _)| n).collect();
        let what = format!("scalar states of param group {g}");
        same_names(&what, saved.scalar_states.keys(), &declared).map_err(refuse)?;
    }
    let layout = layout(table.lens.len(), kinds);
    if checkpoint.tensors.len() != layout.len() {
        return Err(refuse(format!(
            "it has the states of {} tensors, this optimizer {}",
            checkpoint.tensors.len(),
            layout.len()
        )));
    }
    for (t, (saved, states)) in checkpoint.tensors.iter().zip(&layout).enumerate() {
        let declared: Vec<String> = states.iter().map(|(n, _, _)| n.clone()).collect();
        let what = format!("states of tensor {t}");
        same_names(&what, saved.keys(), &declared).map_err(refuse)?;
        for (name, len, _) in states {
            let got = saved[name].len();
            if got != *len {
                return Err(refuse(format!(
                    "its state {name} of tensor {t} holds {got} values, this optimizer's {len}"
                )));
            }
        }
    }
    let (_, declared) = tensor_scalars(table.lens.len(), kinds);
    let saved = (checkpoint.tensor_steps.iter()).zip(&checkpoint.tensor_scalar_states);
    if checkpoint.tensor_steps.len() != declared.len() {
        return Err(refuse(format!(
            "it has the step counts of {} tensors, this optimizer {}",
            checkpoint.tensor_steps.len(),
            declared.len()
        )));
    }
    for (t, ((&steps, saved), declared)) in saved.zip(&declared).enumerate() {
        if steps > checkpoint.steps {
            return Err(refuse(format!(
                "its tensor {t} took {steps} steps, more than the optimizer's {}",
                checkpoint.steps
            )));
        }
        let declared: Vec<String> = declared.keys().cloned().collect();
        let what = format!("scalar states of tensor {t}");
        same_names(&what, saved.keys(), &declared).map_err(refuse)?;
    }
    Ok(layout)
}

/// Says which names differ between a checkpoint's `what` (`saved`) and an optimizer's
/// (`declared`).
fn same_names<'a>(
    what: &str,
    saved: impl Iterator<Item = &'a String>,
    declared: &[String],
) -> Result<(), String> {
    let saved: Vec<&String> = saved.collect();
    if let Some(extra) = saved.iter().find(|n| !declared.contains(n)) {
        return Err(format!(
            "its {what} include '{extra}', which this optimizer does not have (it has: {})",
            declared.join(", ")
        ));
    }
    if let Some(missing) = declared.iter().find(|n| !saved.contains(n)) {
        return Err(format!("its {what} lack '{missing}'"));
    }
    Ok(())
}

/// Sets what a checked `checkpoint` holds on the host side of an optimizer over `table`'s
/// groups: hyperparameters and scalar states (in every kind of each group's variant), per-row
/// and per-column states and the step count. The caller writes the per-element states
/// ([`Slot::Elem`] of `layout`).
pub(crate) fn restore_host(
    checkpoint: &Checkpoint,
    layout: &Layout,
    table: &GroupTable,
    kinds: &mut [&mut KindStep],
) {
    for (g, group) in checkpoint.groups.iter().enumerate() {
        for kind in kinds.iter_mut() {
            if kind.variant == table.variant[g] {
                kind.binding
                    .set_named(g, &group.hypers, &group.scalar_states);
            }
        }
    }
    for (saved, states) in checkpoint.tensors.iter().zip(layout) {
        for (name, _, slot) in states {
            if let Slot::Factor { part, local, state } = *slot {
                let values = &mut kinds[part].binding.factor_states[local][state];
                values.copy_from_slice(&saved[name]);
            }
        }
    }
    for kind in kinds.iter_mut() {
        kind.binding.step_count = checkpoint.steps;
        for (local, &t) in kind.tensors.iter().enumerate() {
            kind.binding.tensors[local].steps = checkpoint.tensor_steps[t];
            let own = &checkpoint.tensor_scalar_states[t];
            kind.binding.set_tensor_scalar_states(local, own);
        }
    }
}
