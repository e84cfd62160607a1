//! Errors in `.step` sources: where (`file:line:col`), the offending text, and what was expected.

use super::ast::Span;
use super::limits::{ECHO_CHARS, shorten};
use std::fmt;

/// The most characters of a source line an error shows; a longer line is cut around the
/// offending text, with `…` where it was cut.
const LINE_CHARS: usize = 120;

/// How many characters before the offending text a cut line keeps.
const LINE_CONTEXT: usize = 40;

/// A mistake in a `.step` source, located in it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepError {
    /// The file name as given (`<input>` when there is none).
    pub file: String,
    /// Where the offending text is.
    pub span: Span,
    /// The offending text itself (empty at the end of the input), its first 64 characters
    /// and `…` when it is longer.
    pub text: String,
    /// What is wrong and what was expected.
    pub message: String,
    /// The source line, for the caret display: the whole line, or at most 120 characters of it
    /// when it is longer, with `…` where it was cut. When the offending text starts past column
    /// 41 of a cut line, the line starts with `…` and the 40 characters before the text.
    pub line_text: String,
}

/// Whether the line shown for an error at 1-based column `col` was cut before it, given the
/// text shown: then the offending text starts after `…` and [`LINE_CONTEXT`] characters.
fn cut_before(line_text: &str, col: u32) -> bool {
    col.saturating_sub(1) as usize > LINE_CONTEXT && line_text.starts_with('…')
}

/// The line `line` (1-based) of `source` to show for an error at 1-based column `col`.
fn line_window(source: &str, line: u32, col: u32) -> String {
    let whole = source
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .unwrap_or("");
    let long = whole.char_indices().nth(LINE_CHARS).is_some();
    // A line that starts with `…` is cut too, so that `cut_before` never mistakes it.
    let first = match long || whole.starts_with('…') {
        true => (col.saturating_sub(1) as usize).saturating_sub(LINE_CONTEXT),
        false => 0,
    };
    if first == 0 && !long {
        return whole.to_string();
    }
    let start = whole
        .char_indices()
        .nth(first)
        .map_or(whole.len(), |(i, _)| i);
    let mut text = String::new();
    if first > 0 {
        text.push('…');
    }
    text.push_str(&shorten(&whole[start..], LINE_CHARS));
    text
}

impl StepError {
    /// An error at `span` of `source`, with `message`.
    pub fn at(file: &str, source: &str, span: Span, message: impl Into<String>) -> StepError {
        let text = source.get(span.start..span.end).unwrap_or("");
        let line_text = line_window(source, span.line, span.col);
        StepError {
            file: file.to_string(),
            span,
            text: shorten(text, ECHO_CHARS).into_owned(),
            message: message.into(),
            line_text,
        }
    }
}

impl fmt::Display for StepError {
    /// ```text
    /// lion.step:9:40: unknown name 'sgin'; did you mean 'sign'?
    ///     param = param * (1 - lr * weight_decay) - lr * sgin(c)
    ///                                                    ^^^^
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Span { line, col, .. } = self.span;
        writeln!(f, "{}:{line}:{col}: {}", self.file, self.message)?;
        writeln!(f, "    {}", self.line_text)?;
        let before = match cut_before(&self.line_text, col) {
            true => LINE_CONTEXT + 1,
            false => col.saturating_sub(1) as usize,
        };
        let room = self.line_text.chars().count().saturating_sub(before);
        let width = self
            .text
            .chars()
            .take_while(|&c| c != '\n')
            .count()
            .min(room)
            .max(1);
        let pad: String = self
            .line_text
            .chars()
            .take(before)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "    {pad}{}", "^".repeat(width))
    }
}

impl std::error::Error for StepError {}
