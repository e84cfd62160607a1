//! Rewrite rules as tables, one file per topic, each rule tagged exact or reassociating.
//!
//! A rule is written as data ([`RuleDef`]): a kebab-case name, the two sides as s-expressions
//! over the language of `lang.rs`, its exactness, and side conditions ([`Req`]) on its pattern
//! variables: on their value classes (where a value is computed, which keeps rules from moving
//! work the wrong way), or on their values, which a rule fires on only where the e-graph's
//! analysis proves them (`value_range.rs`: a hyperparameter is any number unless its domain
//! says otherwise). The tables are turned into egg rewrites by [`rule_set`]; tests evaluate the
//! same tables numerically, a rule with a value condition also where the condition fails.
//!
//! *Exact* means: both sides give the same value for every input, NaN, ±inf, ±0 and subnormals
//! included, in f32 and in f64 (a NaN equals any NaN: payloads and the sign of a NaN are not
//! preserved by IEEE arithmetic anyway). *Reassociating* means: equal in real arithmetic, but
//! rounding (or overflow) may differ; [`crate::SimplifyOptions::exact_only`] drops these.

mod identities;
mod scalar_hoisting;
mod signs;
mod strength_reduction;

use crate::analysis::{ClassAnalysis, OptEGraph};
use crate::error::RewriteError;
use crate::lang::OptLang;
use egg::{Condition, ConditionalApplier, Id, Pattern, Rewrite, Subst, Var};
use optjit_ir::Class;

/// Whether a rule preserves values bit for bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exactness {
    /// Same value for all inputs (NaN, ±inf, ±0, subnormals included).
    Exact,
    /// Same value in real arithmetic; rounding may differ.
    Reassociating,
}

impl Exactness {
    /// `exact` or `reassociating`.
    pub fn name(self) -> &'static str {
        match self {
            Exactness::Exact => "exact",
            Exactness::Reassociating => "reassociating",
        }
    }
}

/// A side condition on one pattern variable: its class, or a proven fact about its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Req {
    /// The variable is Scalar class (computed once per group).
    Scalar(&'static str),
    /// The variable is Tensor or Elem class.
    Varying(&'static str),
    /// The first variable's class is at most the second's.
    ClassAtMost(&'static str, &'static str),
    /// The first variable's class is below the second's (computed less often: a scalar under a
    /// per-tensor or per-element value, a per-tensor value under a per-element one).
    ClassBelow(&'static str, &'static str),
    /// The variable is proven positive: every value `> 0` or NaN (neither zero).
    Positive(&'static str),
    /// The variable is proven positive and finite: every value in `(0, +inf)` or NaN.
    PositiveFinite(&'static str),
}

impl Req {
    /// Whether this is a condition on values (rather than on classes).
    #[cfg(test)]
    pub(crate) fn on_values(self) -> bool {
        matches!(self, Req::Positive(_) | Req::PositiveFinite(_))
    }
}

/// One rule of a table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RuleDef {
    /// Kebab-case name, unique over all tables.
    pub(crate) name: &'static str,
    /// Left-hand side pattern.
    pub(crate) lhs: &'static str,
    /// Right-hand side pattern.
    pub(crate) rhs: &'static str,
    /// Whether the rewrite preserves values exactly.
    pub(crate) exactness: Exactness,
    /// Conditions that must all hold for the rule to fire.
    pub(crate) requires: &'static [Req],
}

/// Shorthand for table rows.
pub(crate) const fn rule(
    name: &'static str,
    lhs: &'static str,
    rhs: &'static str,
    exactness: Exactness,
    requires: &'static [Req],
) -> RuleDef {
    RuleDef {
        name,
        lhs,
        rhs,
        exactness,
        requires,
    }
}

/// Every rule of the first rule set, in table order.
pub(crate) fn all_rules() -> Vec<RuleDef> {
    [
        identities::RULES,
        signs::RULES,
        strength_reduction::RULES,
        scalar_hoisting::RULES,
    ]
    .concat()
}

/// The checks of a rule's [`Req`]s, resolved to pattern variables.
struct SideConditions {
    checks: Vec<(Check, Var, Option<Var>)>,
}

#[derive(Clone, Copy)]
enum Check {
    Scalar,
    Varying,
    AtMost,
    Below,
    Positive,
    PositiveFinite,
}

impl Condition<OptLang, ClassAnalysis> for SideConditions {
    fn check(&self, egraph: &mut OptEGraph, _eclass: Id, subst: &Subst) -> bool {
        self.checks.iter().all(|&(check, v, w)| {
            let data = &egraph[subst[v]].data;
            let class = data.class;
            match check {
                Check::Scalar => class == Class::Scalar,
                Check::Varying => class != Class::Scalar,
                Check::AtMost => w.is_some_and(|w| class <= egraph[subst[w]].data.class),
                Check::Below => w.is_some_and(|w| class < egraph[subst[w]].data.class),
                Check::Positive => data.range.is_positive(),
                Check::PositiveFinite => data.range.is_positive() && data.range.is_finite(),
            }
        })
    }

    fn vars(&self) -> Vec<Var> {
        self.checks
            .iter()
            .flat_map(|&(_, v, w)| std::iter::once(v).chain(w))
            .collect()
    }
}

/// A rewrite that the rule set will run, with its exactness.
pub(crate) type TaggedRewrite = (Rewrite<OptLang, ClassAnalysis>, Exactness);

fn var(rule: &str, name: &str) -> Result<Var, RewriteError> {
    name.parse().map_err(|e| RewriteError::InvalidRule {
        rule: rule.to_string(),
        message: format!("{e}"),
    })
}

fn pattern(rule: &str, text: &str) -> Result<Pattern<OptLang>, RewriteError> {
    text.parse().map_err(|e| RewriteError::InvalidRule {
        rule: rule.to_string(),
        message: format!("{text:?}: {e}"),
    })
}

/// Builds the egg rewrite of one table row.
pub(crate) fn build(def: &RuleDef) -> Result<TaggedRewrite, RewriteError> {
    let lhs = pattern(def.name, def.lhs)?;
    let rhs = pattern(def.name, def.rhs)?;
    let rewrite = if def.requires.is_empty() {
        Rewrite::new(def.name, lhs, rhs)
    } else {
        let mut checks = Vec::with_capacity(def.requires.len());
        for req in def.requires {
            checks.push(match *req {
                Req::Scalar(v) => (Check::Scalar, var(def.name, v)?, None),
                Req::Varying(v) => (Check::Varying, var(def.name, v)?, None),
                Req::ClassAtMost(v, w) => {
                    (Check::AtMost, var(def.name, v)?, Some(var(def.name, w)?))
                }
                Req::ClassBelow(v, w) => (Check::Below, var(def.name, v)?, Some(var(def.name, w)?)),
                Req::Positive(v) => (Check::Positive, var(def.name, v)?, None),
                Req::PositiveFinite(v) => (Check::PositiveFinite, var(def.name, v)?, None),
            });
        }
        let applier = ConditionalApplier {
            condition: SideConditions { checks },
            applier: rhs,
        };
        Rewrite::new(def.name, lhs, applier)
    };
    let rewrite = rewrite.map_err(|message| RewriteError::InvalidRule {
        rule: def.name.to_string(),
        message,
    })?;
    Ok((rewrite, def.exactness))
}

/// The rules to run: every rule, or only the exact ones.
pub(crate) fn rule_set(exact_only: bool) -> Result<Vec<TaggedRewrite>, RewriteError> {
    all_rules()
        .iter()
        .filter(|d| !exact_only || d.exactness == Exactness::Exact)
        .map(build)
        .collect()
}

/// Names and exactness of every rule of the first rule set, in table order.
pub fn rule_names() -> Vec<(&'static str, Exactness)> {
    all_rules().iter().map(|d| (d.name, d.exactness)).collect()
}

#[cfg(test)]
mod tests;
