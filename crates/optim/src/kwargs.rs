//! Keyword arguments as PyTorch spells them: numbers, flags and pairs such as `betas`.

use std::collections::BTreeMap;
use std::fmt;

/// One keyword argument's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kwarg {
    /// A float (`lr=1e-3`).
    Number(f64),
    /// A flag (`amsgrad=True`).
    Bool(bool),
    /// A pair (`betas=(0.9, 0.999)`).
    Pair(f64, f64),
    /// A pair whose first value is Python's `None` (Adafactor's `eps=(None, 1e-3)`).
    NoneFirst(f64),
}

impl fmt::Display for Kwarg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kwarg::Number(x) => write!(f, "{x:?}"),
            Kwarg::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Kwarg::Pair(a, b) => write!(f, "({a:?}, {b:?})"),
            Kwarg::NoneFirst(b) => write!(f, "(None, {b:?})"),
        }
    }
}

/// Keyword arguments by name, in name order.
pub type Kwargs = BTreeMap<String, Kwarg>;
