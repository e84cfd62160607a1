//! Size limits of the `.step` front end (docs/step-language.md, "Limits"), and the shortening
//! of source text that errors repeat.
//!
//! The front end is linear in the size of its input; these limits bound that input, and the
//! graph a block builds, so that a program is refused with a located error long before a later
//! stage would take long on it.

use std::borrow::Cow;

/// The largest source accepted, in bytes (4 MiB).
pub const MAX_SOURCE_BYTES: usize = 4 << 20;

/// The longest name (of a block, hyperparameter, state, `let`, function), in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// How deeply expressions may nest: parentheses, calls, unary minus, comparisons, and operators
/// of different precedence (`a * (b + c)`). A chain of one precedence level (`a + b - c + ...`,
/// `a * b / c * ...`) is one level however long it is.
pub const MAX_DEPTH: u32 = 200;

/// The most graph nodes (distinct operations, inputs and constants) one block may build: the
/// same number as `optjit_rewrite::MAX_GRAPH_NODES`, which the compiler enforces on every step
/// graph, so that a `.step` program past it is refused at the statement that crosses it.
pub const MAX_GRAPH_NODES: usize = 10_000;

/// How many characters of offending text an error repeats.
pub(crate) const ECHO_CHARS: usize = 64;

/// `text`, cut to its first `max` characters followed by `…` when it is longer.
pub(crate) fn shorten(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
    }
}

/// `names` joined with `, `, at most `max` of them, then how many more there are.
pub(crate) fn list(names: &[&str], max: usize) -> String {
    let shown: Vec<&str> = names.iter().take(max).copied().collect();
    match names.len().saturating_sub(max) {
        0 => shown.join(", "),
        more => format!("{}, and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::{list, shorten};

    #[test]
    fn shorten_cuts_at_characters() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc…");
        assert_eq!(shorten("ééé", 2), "éé…");
        assert_eq!(shorten("", 0), "");
    }

    #[test]
    fn list_names_a_few() {
        assert_eq!(list(&["a", "b"], 3), "a, b");
        assert_eq!(list(&["a", "b", "c", "d"], 2), "a, b, and 2 more");
    }
}
