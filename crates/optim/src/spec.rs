//! The table of built-ins: each optimizer's keyword arguments, their defaults and domains, and
//! how a configured optimizer becomes a definition plus hyperparameter values.

use crate::error::{OptimError, suggest};
use crate::kwargs::{Kwarg, Kwargs};
use optjit_trace::{Definition, Domain};
use std::collections::BTreeMap;

/// What a keyword argument controls.
#[derive(Clone, Copy, Debug)]
pub enum KwargKind {
    /// A runtime hyperparameter of the same name.
    Hyper(Domain),
    /// A pair stored as two hyperparameters (`betas` → `beta1`, `beta2`).
    Pair([&'static str; 2], Domain),
    /// A pair whose first value may be `None`, standing for the number given
    /// (Adafactor's `eps=(None, 1e-3)`: None is f32's machine epsilon).
    PairNoneFirst([&'static str; 2], Domain, f64),
    /// A compile-time option that changes the update's structure.
    Flag,
    /// Accepted for compatibility with PyTorch and ignored (`foreach`, `fused`, ...): it
    /// chooses an implementation, never a result.
    Ignored,
}

/// One keyword argument of a built-in.
#[derive(Clone, Copy, Debug)]
pub struct KwargSpec {
    /// PyTorch's keyword name.
    pub name: &'static str,
    /// What it controls.
    pub kind: KwargKind,
    /// PyTorch's default.
    pub default: Kwarg,
}

impl KwargSpec {
    /// A runtime hyperparameter of the same name, in `domain`.
    pub(crate) const fn hyper(name: &'static str, domain: Domain, default: f64) -> KwargSpec {
        KwargSpec {
            name,
            kind: KwargKind::Hyper(domain),
            default: Kwarg::Number(default),
        }
    }

    /// A runtime hyperparameter of the same name, a finite number `>= 0` (lr, eps, decays).
    pub(crate) const fn non_negative(name: &'static str, default: f64) -> KwargSpec {
        KwargSpec::hyper(name, Domain::non_negative(), default)
    }

    /// `betas`: the pair stored as `beta1`, `beta2`, each in `[0, 1)`.
    pub(crate) const fn betas(beta1: f64, beta2: f64) -> KwargSpec {
        KwargSpec {
            name: "betas",
            kind: KwargKind::Pair(["beta1", "beta2"], Domain::unit_half_open()),
            default: Kwarg::Pair(beta1, beta2),
        }
    }

    /// A compile-time option (`amsgrad`, `maximize`, ...).
    pub(crate) const fn flag(name: &'static str, default: bool) -> KwargSpec {
        KwargSpec {
            name,
            kind: KwargKind::Flag,
            default: Kwarg::Bool(default),
        }
    }
}

/// No cross-keyword check (most built-ins).
pub(crate) fn no_check(_: &Resolved) -> Result<(), Conflict> {
    Ok(())
}

/// A rejected combination of keyword values: (keyword, what is expected, what was given).
pub(crate) type Conflict = (&'static str, String, String);

/// The resolved keyword arguments a built-in is traced from.
pub(crate) type Resolved = BTreeMap<&'static str, Kwarg>;

/// A built-in optimizer.
pub struct Spec {
    /// PyTorch's class name.
    pub name: &'static str,
    /// Where the semantics come from.
    pub reference: &'static str,
    /// Every keyword it accepts, in PyTorch's order.
    pub kwargs: &'static [KwargSpec],
    /// Cross-keyword checks PyTorch makes (e.g. nesterov needs momentum).
    pub(crate) check: fn(&Resolved) -> Result<(), Conflict>,
    pub(crate) trace: fn(&Resolved) -> Result<Definition, optjit_trace::TraceError>,
}

/// A built-in with its keyword arguments resolved: the definition to compile and the
/// hyperparameter values of the default group.
#[derive(Clone, Debug)]
pub struct Configured {
    /// The built-in's name.
    pub name: &'static str,
    /// Every keyword argument, defaults filled in.
    pub kwargs: BTreeMap<&'static str, Kwarg>,
    /// The update rule.
    pub definition: Definition,
    /// Hyperparameter values by hyperparameter name (`betas` appear as `beta1`, `beta2`).
    pub hypers: BTreeMap<String, f64>,
}

/// Every built-in optimizer, in the order `optjit list` prints them.
pub fn builtins() -> &'static [Spec] {
    &BUILTINS
}

static BUILTINS: [Spec; 15] = [
    crate::sgd::SGD,
    crate::adam::ADAM,
    crate::adam::ADAMW,
    crate::adagrad::ADAGRAD,
    crate::rmsprop::RMSPROP,
    crate::adadelta::ADADELTA,
    crate::adamax::ADAMAX,
    crate::nadam::NADAM,
    crate::radam::RADAM,
    crate::rprop::RPROP,
    crate::asgd::ASGD,
    crate::adafactor::ADAFACTOR,
    crate::lion::LION,
    crate::lamb::LAMB,
    crate::lars::LARS,
];

/// The built-in called `name` (PyTorch's class name; case-insensitive).
pub fn find(name: &str) -> Result<&'static Spec, OptimError> {
    BUILTINS
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| OptimError::UnknownOptimizer {
            name: name.to_string(),
            suggestion: suggest(name, BUILTINS.iter().map(|s| s.name)),
            available: BUILTINS
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("name", &self.name)
            .field("kwargs", &self.kwargs)
            .finish_non_exhaustive()
    }
}

impl Spec {
    /// Every keyword accepted: the optimizer's own, then PyTorch's implementation hints.
    pub fn all_kwargs(&self) -> impl Iterator<Item = &KwargSpec> {
        self.kwargs.iter().chain(IMPLEMENTATION_HINTS.iter())
    }

    fn kwarg(&self, name: &str) -> Result<&KwargSpec, OptimError> {
        self.all_kwargs()
            .find(|k| k.name == name)
            .ok_or_else(|| OptimError::UnknownKwarg {
                optimizer: self.name.to_string(),
                name: name.to_string(),
                suggestion: suggest(name, self.all_kwargs().map(|k| k.name)),
                accepted: self
                    .all_kwargs()
                    .map(|k| k.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Checks one keyword's value against its kind and domain; `place` says where it came from.
    fn check_value(&self, spec: &KwargSpec, value: Kwarg, place: &str) -> Result<(), OptimError> {
        let bad = |expected: String| OptimError::BadValue {
            optimizer: self.name.to_string(),
            name: spec.name.to_string(),
            expected,
            got: value.to_string(),
            place: place.to_string(),
        };
        match (spec.kind, value) {
            (KwargKind::Hyper(d), Kwarg::Number(x)) if !d.contains(x) => Err(bad(d.to_string())),
            (KwargKind::Hyper(_), Kwarg::Number(_)) => Ok(()),
            (KwargKind::Hyper(_), _) => Err(bad("a number".into())),
            (KwargKind::Pair(_, d), Kwarg::Pair(a, b)) if !(d.contains(a) && d.contains(b)) => {
                Err(bad(format!("a pair of numbers, each {d}")))
            }
            (KwargKind::Pair(..), Kwarg::Pair(..)) => Ok(()),
            (KwargKind::Pair(..), _) => Err(bad("a pair of numbers".into())),
            (KwargKind::PairNoneFirst(_, d, _), Kwarg::Pair(a, b))
                if !(d.contains(a) && d.contains(b)) =>
            {
                Err(bad(format!("a pair of numbers, each {d}")))
            }
            (KwargKind::PairNoneFirst(_, d, _), Kwarg::NoneFirst(b)) if !d.contains(b) => Err(bad(
                format!("a pair of numbers (the first may be None), each {d}"),
            )),
            (KwargKind::PairNoneFirst(..), Kwarg::Pair(..) | Kwarg::NoneFirst(_)) => Ok(()),
            (KwargKind::PairNoneFirst(..), _) => {
                Err(bad("a pair of numbers (the first may be None)".into()))
            }
            (KwargKind::Flag | KwargKind::Ignored, Kwarg::Bool(_)) => Ok(()),
            (KwargKind::Flag | KwargKind::Ignored, _) => Err(bad("True or False".into())),
        }
    }

    /// Resolves `kwargs` (PyTorch's names; missing ones take PyTorch's defaults), checks every
    /// value, and traces the update rule.
    pub fn configure(&'static self, kwargs: &Kwargs) -> Result<Configured, OptimError> {
        let mut resolved: Resolved = self.all_kwargs().map(|k| (k.name, k.default)).collect();
        for (name, &value) in kwargs {
            let spec = self.kwarg(name)?;
            self.check_value(spec, value, "")?;
            resolved.insert(spec.name, value);
        }
        (self.check)(&resolved).map_err(|(name, expected, got)| OptimError::BadValue {
            optimizer: self.name.to_string(),
            name: name.to_string(),
            expected,
            got,
            place: String::new(),
        })?;
        let definition = (self.trace)(&resolved).map_err(|e| OptimError::Trace {
            optimizer: self.name.to_string(),
            message: e.to_string(),
        })?;
        let mut hypers = BTreeMap::new();
        for spec in self.kwargs {
            hyper_values(spec, resolved[spec.name], &mut hypers);
        }
        Ok(Configured {
            name: self.name,
            kwargs: resolved,
            definition,
            hypers,
        })
    }
}

/// Adds the hyperparameter values `value` of keyword `spec` stands for.
fn hyper_values(spec: &KwargSpec, value: Kwarg, out: &mut BTreeMap<String, f64>) {
    match (spec.kind, value) {
        (KwargKind::Hyper(_), Kwarg::Number(x)) => {
            out.insert(spec.name.to_string(), x);
        }
        (KwargKind::PairNoneFirst([a, b], _, none), Kwarg::NoneFirst(y)) => {
            out.insert(a.to_string(), none);
            out.insert(b.to_string(), y);
        }
        (KwargKind::Pair([a, b], _) | KwargKind::PairNoneFirst([a, b], ..), Kwarg::Pair(x, y)) => {
            out.insert(a.to_string(), x);
            out.insert(b.to_string(), y);
        }
        _ => {}
    }
}

impl Configured {
    /// The spec this configuration came from.
    pub fn spec(&self) -> &'static Spec {
        find(self.name).expect("a configured optimizer names a built-in")
    }

    /// Param group `group` given PyTorch-style `kwargs`: `None` when the group follows this
    /// configuration's rule (its hyperparameter overrides are [`Configured::group_hypers`]),
    /// or this built-in configured with the group's keywords over these when a structural
    /// option differs (`amsgrad=True` in one group of an Adam without it, `momentum` zero or
    /// not for SGD and RMSprop): the group's own rule, as `Group::rule` takes it.
    pub fn for_group(
        &self,
        group: usize,
        kwargs: &Kwargs,
    ) -> Result<Option<Configured>, OptimError> {
        match self.group_hypers(group, kwargs) {
            Ok(_) => Ok(None),
            Err(OptimError::StructuralOverride { .. }) => {
                let mut merged: Kwargs = (self.kwargs.iter())
                    .map(|(&name, &value)| (name.to_string(), value))
                    .collect();
                merged.extend(kwargs.iter().map(|(k, &v)| (k.clone(), v)));
                let place = |e: OptimError| match e {
                    OptimError::BadValue {
                        optimizer,
                        name,
                        expected,
                        got,
                        ..
                    } => OptimError::BadValue {
                        optimizer,
                        name,
                        expected,
                        got,
                        place: format!(" in param group {group}"),
                    },
                    other => other,
                };
                self.spec().configure(&merged).map(Some).map_err(place)
            }
            Err(e) => Err(e),
        }
    }

    /// The hyperparameter overrides of param group `group` given PyTorch-style `kwargs`;
    /// structural options must match the defaults (else see [`Configured::for_group`]).
    pub fn group_hypers(
        &self,
        group: usize,
        kwargs: &Kwargs,
    ) -> Result<BTreeMap<String, f64>, OptimError> {
        let spec = self.spec();
        let mut out = BTreeMap::new();
        for (name, &value) in kwargs {
            let kwarg = spec.kwarg(name)?;
            spec.check_value(kwarg, value, &format!(" in param group {group}"))?;
            let base = self.kwargs[kwarg.name];
            let structural = matches!(kwarg.kind, KwargKind::Flag)
                || (matches!(spec.name, "SGD" | "RMSprop")
                    && kwarg.name == "momentum"
                    && matches!((base, value), (Kwarg::Number(b), Kwarg::Number(v)) if (b == 0.0) != (v == 0.0)));
            if structural && base != value {
                return Err(OptimError::StructuralOverride {
                    optimizer: spec.name.to_string(),
                    name: name.clone(),
                    got: value.to_string(),
                    base: base.to_string(),
                    group,
                });
            }
            let mut values = BTreeMap::new();
            hyper_values(kwarg, value, &mut values);
            // The traced domains can be narrower than the keyword's (Rprop's etas).
            for (hyper, &x) in &values {
                let domain = self.definition.domain(hyper);
                if !domain.contains(x) {
                    return Err(OptimError::BadValue {
                        optimizer: spec.name.to_string(),
                        name: name.clone(),
                        expected: format!("such that {hyper} is {domain}"),
                        got: value.to_string(),
                        place: format!(" in param group {group}"),
                    });
                }
            }
            out.extend(values);
        }
        Ok(out)
    }

    /// This configuration with `clip_grad_norm_(params, max_norm)` applied to the gradients
    /// before every step (see [`optjit_trace::clip_grad_norm`]): the clipping is fused into
    /// the step, `max_norm` becomes a hyperparameter and the total norm of each step is the
    /// scalar state [`optjit_trace::GRAD_NORM`].
    pub fn with_clip_grad_norm(mut self, max_norm: f64) -> Result<Configured, OptimError> {
        let optimizer = self.name.to_string();
        self.definition =
            optjit_trace::clip_grad_norm(&self.definition, max_norm).map_err(|e| match e {
                optjit_trace::TraceError::BadMaxNorm { value, expected } => OptimError::BadValue {
                    optimizer,
                    name: "clip_grad_norm max_norm".to_string(),
                    expected,
                    got: value.to_string(),
                    place: String::new(),
                },
                other => OptimError::Trace {
                    optimizer,
                    message: other.to_string(),
                },
            })?;
        self.hypers
            .insert(optjit_trace::MAX_NORM.to_string(), max_norm);
        Ok(self)
    }

    /// The value of keyword `name` given the hyperparameters in force (`betas` from `beta1` and
    /// `beta2`), as a list of numbers; `None` for flags and unknown names.
    pub fn kwarg_in_force(
        &self,
        name: &str,
        hyper: impl Fn(&str) -> Option<f64>,
    ) -> Option<Vec<f64>> {
        let kwarg = self.spec().all_kwargs().find(|k| k.name == name)?;
        match kwarg.kind {
            KwargKind::Hyper(_) => Some(vec![hyper(kwarg.name)?]),
            KwargKind::Pair([a, b], _) | KwargKind::PairNoneFirst([a, b], ..) => {
                Some(vec![hyper(a)?, hyper(b)?])
            }
            KwargKind::Flag | KwargKind::Ignored => None,
        }
    }
}

/// The number under `name` in a resolved configuration.
pub(crate) fn number(resolved: &Resolved, name: &str) -> f64 {
    match resolved.get(name) {
        Some(Kwarg::Number(x)) => *x,
        other => panic!("built-in reads '{name}' as a number, found {other:?}"),
    }
}

/// The flag under `name` in a resolved configuration.
pub(crate) fn flag(resolved: &Resolved, name: &str) -> bool {
    match resolved.get(name) {
        Some(Kwarg::Bool(b)) => *b,
        other => panic!("built-in reads '{name}' as a flag, found {other:?}"),
    }
}

/// The implementation-choosing keywords PyTorch's optimizers accept; they change no result.
pub(crate) const IMPLEMENTATION_HINTS: [KwargSpec; 4] = [
    KwargSpec {
        name: "foreach",
        kind: KwargKind::Ignored,
        default: Kwarg::Bool(false),
    },
    KwargSpec {
        name: "capturable",
        kind: KwargKind::Ignored,
        default: Kwarg::Bool(false),
    },
    KwargSpec {
        name: "differentiable",
        kind: KwargKind::Ignored,
        default: Kwarg::Bool(false),
    },
    KwargSpec {
        name: "fused",
        kind: KwargKind::Ignored,
        default: Kwarg::Bool(false),
    },
];
