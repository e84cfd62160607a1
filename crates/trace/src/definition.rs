//! A traced update rule: its graph plus the valid range of each hyperparameter.

use optjit_ir::Graph;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The values a hyperparameter may take, checked whenever one is set (never in generated code).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Domain {
    /// Lower bound.
    pub min: f64,
    /// Whether `min` itself is allowed.
    pub min_inclusive: bool,
    /// Upper bound.
    pub max: f64,
    /// Whether `max` itself is allowed.
    pub max_inclusive: bool,
    /// Why the domain is what it is, where the bounds alone do not say (SGD's momentum: zero or
    /// not is chosen when the optimizer is built); printed after them.
    pub note: Option<&'static str>,
}

impl Domain {
    /// Any finite value.
    pub const fn finite() -> Domain {
        Domain {
            min: f64::MIN,
            min_inclusive: true,
            max: f64::MAX,
            max_inclusive: true,
            note: None,
        }
    }

    /// A finite value `>= 0` (learning rates, weight decay, eps).
    pub const fn non_negative() -> Domain {
        Domain {
            min: 0.0,
            min_inclusive: true,
            max: f64::MAX,
            max_inclusive: true,
            note: None,
        }
    }

    /// A value in `[0, 1)` (betas, momentum coefficients that must decay).
    pub const fn unit_half_open() -> Domain {
        Domain {
            min: 0.0,
            min_inclusive: true,
            max: 1.0,
            max_inclusive: false,
            note: None,
        }
    }

    /// A value in `[0, 1]` (dampening).
    pub const fn unit_closed() -> Domain {
        Domain {
            min: 0.0,
            min_inclusive: true,
            max: 1.0,
            max_inclusive: true,
            note: None,
        }
    }

    /// The domain with `note` printed after its bounds.
    pub const fn with_note(self, note: &'static str) -> Domain {
        Domain {
            note: Some(note),
            ..self
        }
    }

    /// Whether `value` lies in the domain (NaN and infinities never do).
    pub fn contains(&self, value: f64) -> bool {
        value.is_finite()
            && (value > self.min || (self.min_inclusive && value == self.min))
            && (value < self.max || (self.max_inclusive && value == self.max))
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = if self.min_inclusive { '[' } else { '(' };
        let close = if self.max_inclusive { ']' } else { ')' };
        let bound = |x: f64| {
            if x == f64::MAX {
                "inf".to_string()
            } else if x == f64::MIN {
                "-inf".to_string()
            } else {
                format!("{x}")
            }
        };
        match (self.min == f64::MIN, self.max == f64::MAX) {
            _ if self.min == self.max && self.min_inclusive && self.max_inclusive => {
                write!(f, "exactly {}", bound(self.min))
            }
            (true, true) => f.write_str("a finite number"),
            (false, true) => {
                let op = if self.min_inclusive { ">=" } else { ">" };
                write!(f, "a finite number {op} {}", bound(self.min))
            }
            (true, false) => {
                let op = if self.max_inclusive { "<=" } else { "<" };
                write!(f, "a finite number {op} {}", bound(self.max))
            }
            _ => write!(
                f,
                "a number in {open}{}, {}{close}",
                bound(self.min),
                bound(self.max)
            ),
        }?;
        match self.note {
            Some(note) => write!(f, " ({note})"),
            None => Ok(()),
        }
    }
}

/// An update rule ready to compile: the verified graph and the hyperparameters' domains.
#[derive(Clone, Debug)]
pub struct Definition {
    /// The traced step.
    pub graph: Graph,
    /// Valid values per hyperparameter; a hyperparameter not listed accepts any finite value.
    pub domains: BTreeMap<String, Domain>,
    /// What runs on the host when a metric is reported after a step (a metric-driven schedule,
    /// ReduceLROnPlateau-style): a scalar-only graph over the step's hyperparameters, the
    /// hyperparameter `metric` and the scalar states, whose outputs are scalar-state updates.
    pub on_metric: Option<Graph>,
    /// Other names PyTorch gives some states on tensors of few dimensions.
    pub state_aliases: Vec<StateAlias>,
    /// Hyperparameters given one value per param group by a schedule's arguments
    /// (`OneCycleLR(max_lr=[...])`): group `g` starts with `values[g]`.
    pub per_group: Vec<PerGroupValues>,
    /// The scalar states kept once per param group (a schedule's, the clipping norm); every
    /// other scalar state is each tensor's own, as PyTorch keeps `mu_product` or `step` per
    /// parameter (a tensor without a gradient keeps its value).
    pub group_states: BTreeSet<String>,
}

/// One value per param group for a hyperparameter, and where the values came from (a
/// scheduler's argument given as a list, as PyTorch takes `OneCycleLR(max_lr=[...])`).
#[derive(Clone, Debug, PartialEq)]
pub struct PerGroupValues {
    /// The hyperparameter they set.
    pub hyper: String,
    /// Group `g`'s value at index `g`; an optimizer refuses a list whose length is not its
    /// number of groups.
    pub values: Vec<f64>,
    /// Who gave them, for errors: `OneCycleLR max_lr`.
    pub given_by: String,
}

/// A name PyTorch gives a state on tensors of fewer than `below_rank` dimensions (Adafactor's
/// `variance` is the column state `col_var` of a tensor seen as one row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateAlias {
    /// PyTorch's name on such tensors.
    pub alias: String,
    /// The state it names.
    pub state: String,
    /// The alias applies to tensors of fewer dimensions than this.
    pub below_rank: usize,
}

impl Definition {
    /// The state that `name` means on a tensor of `rank` dimensions: an alias's state, or
    /// `name` itself.
    pub fn state_name<'a>(&'a self, name: &'a str, rank: usize) -> &'a str {
        self.state_aliases
            .iter()
            .find(|a| a.alias == name && rank < a.below_rank)
            .map_or(name, |a| a.state.as_str())
    }

    /// The domain of hyperparameter `name`.
    pub fn domain(&self, name: &str) -> Domain {
        self.domains
            .get(name)
            .copied()
            .unwrap_or_else(Domain::finite)
    }
}
