//! Splits a `.step` source into located tokens, one at a time, as the parser asks for them.

use super::ast::Span;
use super::error::StepError;
use super::limits::{ECHO_CHARS, MAX_NAME_CHARS, shorten};

/// The reserved words of the language; none of them can be used as a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keyword {
    Optimizer,
    Schedule,
    Hyper,
    State,
    Let,
    Scalar,
    Alias,
    /// `in`, before a hyperparameter's interval.
    In,
}

impl Keyword {
    /// The keyword spelled `word`, if it is one.
    fn from_word(word: &str) -> Option<Keyword> {
        Some(match word {
            "optimizer" => Keyword::Optimizer,
            "schedule" => Keyword::Schedule,
            "hyper" => Keyword::Hyper,
            "state" => Keyword::State,
            "let" => Keyword::Let,
            "scalar" => Keyword::Scalar,
            "alias" => Keyword::Alias,
            "in" => Keyword::In,
            _ => return None,
        })
    }
}

/// What a token is; its text is the source under its span.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum TokenKind {
    /// `[A-Za-z_][A-Za-z0-9_]*` that is not a keyword.
    Ident,
    Keyword(Keyword),
    /// A number literal with its value (finite).
    Number(f64),
    LeftBrace,
    RightBrace,
    LeftParen,
    RightParen,
    /// `[`, opening an interval.
    LeftBracket,
    /// `]`, closing an interval.
    RightBracket,
    Comma,
    Colon,
    Semicolon,
    /// `=`
    Equals,
    Plus,
    Minus,
    Star,
    Slash,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    /// `==`
    EqualEqual,
    /// `!=`
    NotEqual,
    /// The end of the input (a zero-width span there); returned again on every later call.
    End,
}

/// A token and where it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

/// A cursor over the source that hands out tokens on demand, so that errors come in source
/// order: a bad character is reported only once the parser reaches it.
pub(crate) struct Lexer<'s> {
    file: &'s str,
    source: &'s str,
    /// Byte offset of the next character (always on a character boundary).
    pos: usize,
    /// 1-based line of the next character.
    line: u32,
    /// 1-based column, in characters, of the next character.
    col: u32,
}

/// Whether `c` may continue an identifier (or, glued to a number, makes the number malformed).
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'s> Lexer<'s> {
    /// A lexer at the start of `source`; `file` names it in errors.
    pub fn new(file: &'s str, source: &'s str) -> Lexer<'s> {
        Lexer {
            file,
            source,
            pos: 0,
            line: 1,
            col: 1,
        }
    }

    /// The next token, skipping whitespace and comments.
    pub fn next_token(&mut self) -> Result<Token, Box<StepError>> {
        self.skip_blanks();
        let (line, col, start) = (self.line, self.col, self.pos);
        let Some(c) = self.bump() else {
            return Ok(Token {
                kind: TokenKind::End,
                span: self.span_from(line, col, start),
            });
        };
        let kind = match c {
            '{' => TokenKind::LeftBrace,
            '}' => TokenKind::RightBrace,
            '(' => TokenKind::LeftParen,
            ')' => TokenKind::RightParen,
            '[' => TokenKind::LeftBracket,
            ']' => TokenKind::RightBracket,
            ',' => TokenKind::Comma,
            ':' => TokenKind::Colon,
            ';' => TokenKind::Semicolon,
            '+' => TokenKind::Plus,
            '-' => TokenKind::Minus,
            '*' => TokenKind::Star,
            '/' => TokenKind::Slash,
            '<' => self.with_equals(TokenKind::Less, TokenKind::LessEqual),
            '>' => self.with_equals(TokenKind::Greater, TokenKind::GreaterEqual),
            '=' => self.with_equals(TokenKind::Equals, TokenKind::EqualEqual),
            '!' if self.peek() == Some('=') => {
                self.bump();
                TokenKind::NotEqual
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let length = 1 + self.bump_while(is_word_char);
                if length > MAX_NAME_CHARS {
                    let span = self.span_from(line, col, start);
                    return Err(self.error(
                        span,
                        format!(
                            "a name of {length} characters; names are at most {MAX_NAME_CHARS}"
                        ),
                    ));
                }
                let word = self.source.get(start..self.pos).unwrap_or("");
                Keyword::from_word(word).map_or(TokenKind::Ident, TokenKind::Keyword)
            }
            c if c.is_ascii_digit()
                || (c == '.' && self.peek().is_some_and(|d| d.is_ascii_digit())) =>
            {
                return self.number(line, col, start, c);
            }
            other => {
                let span = self.span_from(line, col, start);
                return Err(self.error(
                    span,
                    format!("unexpected character '{}'", other.escape_debug()),
                ));
            }
        };
        Ok(Token {
            kind,
            span: self.span_from(line, col, start),
        })
    }

    /// The rest of a number literal whose first character `first` was just consumed:
    /// `digits [. digits] [e [+-] digits]` or `. digits [e [+-] digits]`.
    fn number(
        &mut self,
        line: u32,
        col: u32,
        start: usize,
        first: char,
    ) -> Result<Token, Box<StepError>> {
        let mut well_formed = true;
        self.bump_while(|c| c.is_ascii_digit());
        if first != '.' && self.peek() == Some('.') {
            self.bump();
            self.bump_while(|c| c.is_ascii_digit());
        }
        let mantissa_end = self.pos;
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            well_formed &= self.bump_while(|c| c.is_ascii_digit()) > 0;
        }
        // Letters, digits or dots glued on (`1x`, `1.2.3`) make the whole run one bad literal.
        well_formed &= self.bump_while(|c| is_word_char(c) || c == '.') == 0;
        let span = self.span_from(line, col, start);
        let whole = self.source.get(start..self.pos).unwrap_or("");
        let text = shorten(whole, ECHO_CHARS);
        let value = match whole.parse::<f64>() {
            Ok(value) if well_formed => value,
            _ => return Err(self.error(span, format!("malformed number `{text}`"))),
        };
        let mantissa = self.source.get(start..mantissa_end).unwrap_or("");
        let underflows = value == 0.0 && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
        if !value.is_finite() || underflows {
            return Err(self.error(span, format!("number `{text}` is out of range")));
        }
        Ok(Token {
            kind: TokenKind::Number(value),
            span,
        })
    }

    /// `double` when the next character is `=` (consuming it), `single` otherwise.
    fn with_equals(&mut self, single: TokenKind, double: TokenKind) -> TokenKind {
        if self.peek() == Some('=') {
            self.bump();
            double
        } else {
            single
        }
    }

    /// Skips whitespace (newlines included) and `#` or `//` comments.
    fn skip_blanks(&mut self) {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\r' | '\n') => {
                    self.bump();
                }
                Some('#') => {
                    self.bump_while(|c| c != '\n');
                }
                Some('/') if self.peek_second() == Some('/') => {
                    self.bump_while(|c| c != '\n');
                }
                _ => return,
            }
        }
    }

    /// The next character, not consumed.
    fn peek(&self) -> Option<char> {
        self.source.get(self.pos..)?.chars().next()
    }

    /// The character after the next one, not consumed.
    fn peek_second(&self) -> Option<char> {
        let mut rest = self.source.get(self.pos..)?.chars();
        rest.next();
        rest.next()
    }

    /// Consumes the next character, keeping line and column up to date.
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line = self.line.saturating_add(1);
            self.col = 1;
        } else {
            self.col = self.col.saturating_add(1);
        }
        Some(c)
    }

    /// Consumes characters while `keep` holds; returns how many.
    fn bump_while(&mut self, keep: impl Fn(char) -> bool) -> usize {
        let mut count = 0;
        while self.peek().is_some_and(&keep) {
            self.bump();
            count += 1;
        }
        count
    }

    /// The span from a recorded start to the current position.
    fn span_from(&self, line: u32, col: u32, start: usize) -> Span {
        Span {
            line,
            col,
            start,
            end: self.pos,
        }
    }

    /// Boxed, as the parser passes errors around: it keeps its recursive frames small.
    fn error(&self, span: Span, message: String) -> Box<StepError> {
        Box::new(StepError::at(self.file, self.source, span, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Result<Vec<TokenKind>, String> {
        let mut lexer = Lexer::new("t.step", source);
        let mut out = Vec::new();
        loop {
            let token = lexer.next_token().map_err(|e| e.message)?;
            if token.kind == TokenKind::End {
                return Ok(out);
            }
            out.push(token.kind);
        }
    }

    #[test]
    fn numbers_in_every_form() {
        for (text, value) in [
            ("3", 3.0),
            ("0.9", 0.9),
            ("1e-4", 1e-4),
            ("2.5E+3", 2.5e3),
            (".5", 0.5),
            ("1.", 1.0),
            ("0e5", 0.0),
            ("1e-300", 1e-300),
        ] {
            assert_eq!(kinds(text), Ok(vec![TokenKind::Number(value)]), "{text}");
        }
    }

    #[test]
    fn bad_numbers() {
        assert_eq!(kinds("1e999"), Err("number `1e999` is out of range".into()));
        assert_eq!(
            kinds("1e-999"),
            Err("number `1e-999` is out of range".into())
        );
        assert_eq!(kinds("1e"), Err("malformed number `1e`".into()));
        assert_eq!(kinds("1e+"), Err("malformed number `1e+`".into()));
        assert_eq!(kinds("1.2.3"), Err("malformed number `1.2.3`".into()));
        assert_eq!(kinds("3x"), Err("malformed number `3x`".into()));
    }

    #[test]
    fn operators_comments_and_keywords() {
        use TokenKind::*;
        assert_eq!(
            kinds("a<=b # c\n!= == = < > >= // d\n state x_1 scalar"),
            Ok(vec![
                Ident,
                LessEqual,
                Ident,
                NotEqual,
                EqualEqual,
                Equals,
                Less,
                Greater,
                GreaterEqual,
                Keyword(super::Keyword::State),
                Ident,
                Keyword(super::Keyword::Scalar),
            ])
        );
    }

    #[test]
    fn unexpected_characters_are_named() {
        assert_eq!(kinds("a @ b"), Err("unexpected character '@'".into()));
        assert_eq!(kinds("é"), Err("unexpected character 'é'".into()));
        assert_eq!(kinds("!"), Err("unexpected character '!'".into()));
        assert_eq!(kinds("."), Err("unexpected character '.'".into()));
        assert_eq!(kinds("\u{0}"), Err("unexpected character '\\0'".into()));
    }

    #[test]
    fn spans_count_characters_and_lines() {
        let mut lexer = Lexer::new("t.step", "é\n  ab");
        assert!(lexer.next_token().is_err());
        let mut lexer = Lexer::new("t.step", "# é\n  ab");
        let token = lexer.next_token().unwrap();
        assert_eq!(
            token.span,
            Span {
                line: 2,
                col: 3,
                start: 7,
                end: 9
            }
        );
        let end = lexer.next_token().unwrap();
        assert_eq!(end.kind, TokenKind::End);
        assert_eq!(
            (end.span.line, end.span.col, end.span.start, end.span.end),
            (2, 5, 9, 9)
        );
    }
}
