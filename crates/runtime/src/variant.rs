//! Variants: an optimizer's param groups may follow different update rules (another optimizer,
//! or the same one with other structural options such as `amsgrad`). Each distinct rule is a
//! variant; each variant's tensors are split by kind (see [`kinds`]); each (variant, kind) is
//! one compiled step, a *part*, and the parts run in lockstep. [`GroupTable`] knows which parts
//! hold each group.

use crate::binding::check_lengths;
use crate::error::OptimizerError;
use crate::kind_step::KindStep;
use crate::optimizer::{Group, Setup};
use optjit_trace::Definition;

/// What one part steps: a kind of one variant's tensors.
pub(crate) struct PartPlan {
    /// The part's rule: its variant's, specialized to its kind.
    pub(crate) definition: Definition,
    /// The part's setup: its tensors (renumbered `0..`) and every param group of the optimizer
    /// by its own index, those of other variants empty (see [`part_setup`]).
    pub(crate) setup: Setup,
    /// The optimizer's index of each of its tensors (ascending).
    pub(crate) tensors: Vec<usize>,
    /// Its variant.
    pub(crate) variant: usize,
}

/// An optimizer's tensors and param groups, and the variant each group follows.
pub(crate) struct GroupTable {
    /// The optimizer's own rule's name.
    pub(crate) rule: String,
    pub(crate) shapes: Vec<Vec<usize>>,
    /// Element count of every tensor.
    pub(crate) lens: Vec<usize>,
    /// Per group, its tensors.
    pub(crate) tensors: Vec<Vec<usize>>,
    /// Per group, its variant.
    pub(crate) variant: Vec<usize>,
}

impl GroupTable {
    /// Splits `setup` by variant and kind: one [`PartPlan`] per part, variants in order of
    /// their first group (the optimizer's own rule first when a group follows it), kinds as
    /// [`kinds`] orders them.
    pub(crate) fn plan(
        definition: &Definition,
        setup: &Setup,
    ) -> Result<(GroupTable, Vec<PartPlan>), OptimizerError> {
        let rule = definition.graph.name.clone();
        let lens = crate::binding::tensor_lengths(&rule, &setup.shapes)?;
        let groups = match setup.groups.is_empty() {
            true => vec![Group {
                tensors: (0..setup.shapes.len()).collect(),
                ..Group::default()
            }],
            false => setup.groups.clone(),
        };
        crate::binding::check_partition(&rule, &groups, setup.shapes.len())?;
        // Distinct rules, the optimizer's own first.
        let mut rules: Vec<&Definition> = Vec::new();
        let mut variant = Vec::with_capacity(groups.len());
        for group in &groups {
            let own = group.rule.as_ref().unwrap_or(definition);
            let index = match rules.iter().position(|r| same_rule(r, own)) {
                Some(index) => index,
                None => {
                    rules.push(own);
                    rules.len() - 1
                }
            };
            variant.push(index);
        }
        if rules.is_empty() {
            rules.push(definition);
        }
        let mut parts = Vec::new();
        for (v, &rule_v) in rules.iter().enumerate() {
            let tensors: Vec<usize> = (groups.iter().zip(&variant))
                .filter(|&(_, &gv)| gv == v)
                .flat_map(|(g, _)| g.tensors.iter().copied())
                .collect();
            let own_rule = same_rule(rule_v, definition);
            for (kind, kind_tensors) in kinds(rule_v, &setup.shapes, &tensors) {
                let setup = part_setup(setup, &groups, &variant, v, own_rule, &kind, &kind_tensors);
                parts.push(PartPlan {
                    definition: kind,
                    setup,
                    tensors: kind_tensors,
                    variant: v,
                });
            }
        }
        let table = GroupTable {
            rule,
            shapes: setup.shapes.clone(),
            lens,
            tensors: groups.into_iter().map(|g| g.tensors).collect(),
            variant,
        };
        Ok((table, parts))
    }

    /// How many param groups there are.
    pub(crate) fn n_groups(&self) -> usize {
        self.tensors.len()
    }

    /// `group`, if there is such a group.
    pub(crate) fn group(&self, group: usize) -> Result<usize, OptimizerError> {
        match group < self.n_groups() {
            true => Ok(group),
            false => Err(OptimizerError::NoSuchGroup {
                rule: self.rule.clone(),
                group,
                n_groups: self.n_groups(),
            }),
        }
    }

    /// The parts among `kinds` that hold group `group` (those of its variant).
    pub(crate) fn holders<'k, K: AsRef<KindStep>>(
        &self,
        kinds: &'k [K],
        group: usize,
    ) -> impl Iterator<Item = &'k KindStep> {
        let variant = self.variant[group];
        kinds
            .iter()
            .map(AsRef::as_ref)
            .filter(move |k| k.variant == variant)
    }

    /// The value of hyperparameter `name` in force for `group`.
    pub(crate) fn hyper<K: AsRef<KindStep>>(
        &self,
        kinds: &[K],
        group: usize,
        name: &str,
    ) -> Result<f64, OptimizerError> {
        let g = self.group(group)?;
        let holder = self
            .holders(kinds, g)
            .next()
            .expect("every variant has a part");
        holder.binding.hyper(g, name)
    }

    /// The scalar state `name` of `group`.
    pub(crate) fn scalar_state<K: AsRef<KindStep>>(
        &self,
        kinds: &[K],
        group: usize,
        name: &str,
    ) -> Option<f64> {
        let g = self.group(group).ok()?;
        self.holders(kinds, g).next()?.binding.scalar_state(g, name)
    }

    /// Sets hyperparameter `name` to `value` for one group (`Some(g)`), or for every group
    /// whose rule has it (`None`; at least one must). Checks everything before writing.
    pub(crate) fn set_hyper<K: AsRef<KindStep> + AsMut<KindStep>>(
        &self,
        kinds: &mut [K],
        group: Option<usize>,
        name: &str,
        value: f64,
    ) -> Result<(), OptimizerError> {
        let declares = |g: usize| {
            let holder = self
                .holders(kinds, g)
                .next()
                .expect("every variant has a part");
            holder.binding.declares(name)
        };
        let mut targets: Vec<usize> = match group {
            Some(g) => vec![self.group(g)?],
            None => (0..self.n_groups()).filter(|&g| declares(g)).collect(),
        };
        if targets.is_empty() {
            // No rule has it: group 0's check says so, naming its hyperparameters.
            targets.push(0);
        }
        let place = group
            .map(|g| format!(" in param group {g}"))
            .unwrap_or_default();
        for &g in &targets {
            let holder = self
                .holders(kinds, g)
                .next()
                .expect("every variant has a part");
            holder.binding.check_hyper_value(name, value, &place)?;
        }
        for kind in kinds.iter_mut() {
            let kind = kind.as_mut();
            for &g in targets.iter().filter(|&&g| self.variant[g] == kind.variant) {
                kind.binding.set_hyper(Some(g), name, value)?;
            }
        }
        Ok(())
    }

    /// Checks the lengths of the tensors handed to a step (see `binding::check_lengths`): a
    /// missing gradient (`None`) has no length to check.
    pub(crate) fn check_lengths(
        &self,
        params: &[usize],
        grads: &[Option<usize>],
    ) -> Result<(), OptimizerError> {
        let grads: Vec<usize> = (grads.iter().enumerate())
            .map(|(t, g)| g.unwrap_or_else(|| self.lens.get(t).copied().unwrap_or(0)))
            .collect();
        check_lengths(&self.rule, &self.lens, &self.shapes, params, &grads)
    }
}

/// Whether two rules compile to the same step with the same hyperparameters and domains.
fn same_rule(a: &Definition, b: &Definition) -> bool {
    a.graph.to_string() == b.graph.to_string()
        && a.domains == b.domains
        && a.on_metric.as_ref().map(ToString::to_string)
            == b.on_metric.as_ref().map(ToString::to_string)
        && a.state_aliases == b.state_aliases
        && a.per_group == b.per_group
        && a.group_states == b.group_states
}

/// Splits the tensors `tensors` (of shapes `shapes`) by the step they need: one kind for all
/// of them, unless the definition reads per-column values or the rank, whose steps differ
/// between tensors of two or more dimensions (the definition as it is) and tensors of fewer
/// (one row each: see [`optjit_ir::specialize_one_row`]), as PyTorch's Adafactor groups its
/// tensors. Returns each kind's definition and tensors (ascending), kinds with no tensor left
/// out (but at least one kind).
pub(crate) fn kinds(
    definition: &Definition,
    shapes: &[Vec<usize>],
    tensors: &[usize],
) -> Vec<(Definition, Vec<usize>)> {
    let mut tensors = tensors.to_vec();
    tensors.sort_unstable();
    if !optjit_ir::depends_on_rank(&definition.graph) {
        return vec![(definition.clone(), tensors)];
    }
    let of_rank = |keep: &dyn Fn(usize) -> bool| -> Vec<usize> {
        tensors
            .iter()
            .copied()
            .filter(|&t| keep(shapes[t].len()))
            .collect()
    };
    let mut kinds = vec![(definition.clone(), of_rank(&|rank| rank >= 2))];
    for rank in 0..2 {
        let mut one_row = definition.clone();
        one_row.graph = optjit_ir::specialize_one_row(&definition.graph, rank);
        kinds.push((one_row, of_rank(&|r| r == rank)));
    }
    kinds.retain(|(_, tensors)| !tensors.is_empty());
    if kinds.is_empty() {
        kinds.push((definition.clone(), Vec::new()));
    }
    kinds
}

/// The setup of the part of variant `v` (whose rule is `kind`) holding `tensors`
/// (renumbered `0..`): their shapes, and every param group by the optimizer's index, with its
/// tensors among them (groups of other variants are empty, with no hyperparameters of their
/// own: they step nothing). The optimizer-wide values of `setup.hypers` apply to the
/// optimizer's own rule (`own_rule`) as given, and to another rule where it declares them.
fn part_setup(
    setup: &Setup,
    groups: &[Group],
    variant: &[usize],
    v: usize,
    own_rule: bool,
    kind: &Definition,
    tensors: &[usize],
) -> Setup {
    let mut local = vec![None; setup.shapes.len()];
    for (i, &t) in tensors.iter().enumerate() {
        local[t] = Some(i);
    }
    let groups = (groups.iter().zip(variant))
        .map(|(g, &gv)| match gv == v {
            true => Group {
                tensors: g.tensors.iter().filter_map(|&t| local[t]).collect(),
                hypers: g.hypers.clone(),
                rule: None,
            },
            false => Group::default(),
        })
        .collect();
    let hypers = (setup.hypers.iter())
        .filter(|(name, _)| own_rule || kind.graph.hyper(name).is_some())
        .map(|(name, &value)| (name.clone(), value))
        .collect();
    Setup {
        shapes: tensors.iter().map(|&t| setup.shapes[t].clone()).collect(),
        groups,
        hypers,
        threads: setup.threads,
        dtype: setup.dtype,
    }
}
