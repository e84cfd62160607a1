//! Errors in `.step` sources: where (`file:line:col`), the offending text, and what was expected.

use super::ast::Span;
use std::fmt;

/// A mistake in a `.step` source, located in it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepError {
    /// The file name as given (`<input>` when there is none).
    pub file: String,
    /// Where the offending text is.
    pub span: Span,
    /// The offending text itself (empty at the end of the input).
    pub text: String,
    /// What is wrong and what was expected.
    pub message: String,
    /// The whole source line, for the caret display.
    pub line_text: String,
}

impl StepError {
    /// An error at `span` of `source`, with `message`.
    pub fn at(file: &str, source: &str, span: Span, message: impl Into<String>) -> StepError {
        let text = source.get(span.start..span.end).unwrap_or("").to_string();
        let line_text = source
            .lines()
            .nth(span.line.saturating_sub(1) as usize)
            .unwrap_or("")
            .to_string();
        StepError {
            file: file.to_string(),
            span,
            text,
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
        let width = self.text.chars().take_while(|&c| c != '\n').count().max(1);
        let pad: String = self
            .line_text
            .chars()
            .take(col.saturating_sub(1) as usize)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "    {pad}{}", "^".repeat(width))
    }
}

impl std::error::Error for StepError {}
