//! Errors in choosing or configuring a built-in optimizer.

use thiserror::Error;

/// A bad optimizer name, keyword or value.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum OptimError {
    /// No built-in has this name.
    #[error("unknown optimizer '{name}'{suggestion} (available: {available})")]
    UnknownOptimizer {
        /// The name given.
        name: String,
        /// `; did you mean 'AdamW'?` or empty.
        suggestion: String,
        /// Every built-in name.
        available: String,
    },
    /// No built-in scheduler has this name.
    #[error("unknown scheduler '{name}'{suggestion} (available: {available})")]
    UnknownScheduler {
        /// The name given.
        name: String,
        /// `; did you mean 'StepLR'?` or empty.
        suggestion: String,
        /// Every built-in scheduler name.
        available: String,
    },
    /// The optimizer has no keyword of this name.
    #[error("{optimizer}: unknown keyword argument '{name}'{suggestion} (accepted: {accepted})")]
    UnknownKwarg {
        /// The optimizer.
        optimizer: String,
        /// The keyword given.
        name: String,
        /// `; did you mean 'lr'?` or empty.
        suggestion: String,
        /// Every keyword it accepts.
        accepted: String,
    },
    /// The keyword's value has the wrong form or is out of range.
    #[error("{optimizer}: {name} must be {expected}, got {got}{place}")]
    BadValue {
        /// The optimizer.
        optimizer: String,
        /// The keyword.
        name: String,
        /// What is accepted.
        expected: String,
        /// The value given.
        got: String,
        /// ` in param group 1` or empty.
        place: String,
    },
    /// A structural option differs between groups (each variant is its own template, which the
    /// runtime does not launch together yet).
    #[error(
        "{optimizer}: {name}={got} in param group {group} differs from {base} in the defaults: a structural option, so the group needs a rule of its own (Configured::for_group, Group::rule)"
    )]
    StructuralOverride {
        /// The optimizer.
        optimizer: String,
        /// The keyword.
        name: String,
        /// The group's value.
        got: String,
        /// The base value.
        base: String,
        /// The group index.
        group: usize,
    },
    /// The built-in failed to trace (a bug in optjit).
    #[error("{optimizer}: internal tracing error: {message}")]
    Trace {
        /// The optimizer.
        optimizer: String,
        /// The tracer's message.
        message: String,
    },
}

/// `; did you mean 'x'?` for the closest candidate within edit distance 2, or empty.
pub(crate) fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let best = candidates
        .into_iter()
        .map(|c| (edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= 2 => format!("; did you mean '{c}'?"),
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
