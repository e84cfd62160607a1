//! Property: the `.step` front end (parser, then names, types and graphs, then schedules applied)
//! never panics, whatever it is given, and every span it reports, in a tree or in an error,
//! points into the source where its line and column say.

use optjit_trace::Tracer;
use optjit_trace::step::ast::{Expr, ExprKind, Program, Span, Stmt};
use optjit_trace::step::{StepError, load, parse};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};

const LION: &str = "optimizer lion {
  hyper lr = 1e-4
  hyper beta1 = 0.9
  hyper beta2 = 0.99
  hyper weight_decay = 0.0
  state exp_avg = 0

  let c = beta1 * exp_avg + (1 - beta1) * grad
  param = param * (1 - lr * weight_decay) - lr * sign(c)
  exp_avg = beta2 * exp_avg + (1 - beta2) * grad
}
";

const WARMUP_COSINE: &str = "schedule warmup_cosine {
  hyper peak = 3e-4
  hyper warmup = 1000
  hyper total = 100000
  let progress = clamp((t - warmup) / max(1, total - warmup), 0, 1)
  lr = peak * where(t < warmup, t / warmup, 0.5 * (1 + cos(pi * progress)))
}
";

/// Text that mutations insert: tokens, near-tokens and troublemakers.
const INSERTS: &[&str] = &[
    "(",
    ")",
    "{",
    "}",
    "=",
    "==",
    ",",
    ":",
    ";",
    "-",
    "*",
    "/",
    "<",
    "<=",
    "!=",
    "!",
    ".",
    "hyper",
    "state",
    "let",
    "scalar",
    "alias",
    "in",
    "inf",
    "[",
    "]",
    " in [0, inf)",
    "when",
    "rank",
    "optimizer",
    "schedule",
    "x",
    "f(",
    "1e999",
    "1e-999",
    "1e",
    "1.2.3",
    ".5",
    "é",
    "\u{1F600}",
    "@",
    "#",
    "//",
    "\n",
    "\r\n",
    "\t",
    " ",
    "\0",
];

fn config() -> Config {
    Config {
        cases: 2000,
        rng_seed: RngSeed::Fixed(0x57e9_9a25),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Line and column (1-based, columns in characters) of byte `offset` in `source`.
fn line_col(source: &str, offset: usize) -> (u32, u32) {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line as u32, col as u32)
}

/// The span lies in `source`, on character boundaries, and its line and column are its start's.
fn check_span(source: &str, span: Span) -> Result<(), TestCaseError> {
    prop_assert!(
        span.start <= span.end && span.end <= source.len(),
        "{span:?}"
    );
    prop_assert!(
        source.is_char_boundary(span.start) && source.is_char_boundary(span.end),
        "{span:?}"
    );
    prop_assert_eq!(
        (span.line, span.col),
        line_col(source, span.start),
        "{:?}",
        span
    );
    Ok(())
}

fn check_expr(source: &str, expr: &Expr) -> Result<(), TestCaseError> {
    check_span(source, expr.span)?;
    let children: Vec<&Expr> = match &expr.kind {
        ExprKind::Number(value) => {
            prop_assert!(value.is_finite());
            vec![]
        }
        ExprKind::Name(_) => vec![],
        ExprKind::Neg(operand) => vec![operand],
        ExprKind::Chain { first, rest } => {
            prop_assert!(!rest.is_empty());
            for link in rest {
                check_span(source, link.at)?;
            }
            std::iter::once(&**first)
                .chain(rest.iter().map(|link| &link.operand))
                .collect()
        }
        ExprKind::Compare(_, a, b) => vec![a, b],
        ExprKind::Call { func, args } => {
            check_span(source, func.span)?;
            args.iter().collect()
        }
    };
    for child in children {
        prop_assert!(expr.span.start <= child.span.start && child.span.end <= expr.span.end);
        check_expr(source, child)?;
    }
    Ok(())
}

fn check_program(source: &str, program: &Program) -> Result<(), TestCaseError> {
    prop_assert!(!program.items.is_empty());
    for item in &program.items {
        check_span(source, item.span)?;
        check_span(source, item.name.span)?;
        for stmt in &item.body {
            let (name, value) = match stmt {
                Stmt::Hyper {
                    name,
                    value,
                    domain,
                } => {
                    if let Some(interval) = domain {
                        check_span(source, interval.span)?;
                        check_expr(source, &interval.low)?;
                        check_expr(source, &interval.high)?;
                    }
                    (name, value)
                }
                Stmt::Let { name, value } | Stmt::Assign { name, value } => (name, value),
                Stmt::State { name, init, .. } => (name, init),
                Stmt::Alias { alias, state, .. } => {
                    check_span(source, alias.span)?;
                    check_span(source, state.span)?;
                    continue;
                }
            };
            check_span(source, name.span)?;
            check_expr(source, value)?;
        }
    }
    Ok(())
}

fn check_error(source: &str, error: &StepError) -> Result<(), TestCaseError> {
    check_span(source, error.span)?;
    // The offending text, or its first 64 characters and `…` when it is longer.
    let offending = &source[error.span.start..error.span.end];
    match offending.char_indices().nth(64) {
        None => prop_assert_eq!(&error.text, offending),
        Some((cut, _)) => prop_assert_eq!(&error.text, &format!("{}…", &offending[..cut])),
    }
    prop_assert!(!error.message.is_empty());
    let shown = error.to_string();
    prop_assert!(
        shown.starts_with(&format!("t.step:{}:{}: ", error.span.line, error.span.col)),
        "{}",
        shown
    );
    Ok(())
}

/// Parses `source` and checks whatever comes back; then builds it (names, types, graphs) and
/// applies its schedules to its optimizer (or to a plain SGD), which must not panic either and
/// must report errors inside the source.
fn parse_and_check(source: &str) -> Result<(), TestCaseError> {
    match parse("t.step", source) {
        Ok(program) => check_program(source, &program)?,
        Err(error) => return check_error(source, &error),
    }
    let loaded = match load("t.step", source) {
        Ok(loaded) => loaded,
        Err(error) => return check_error(source, &error),
    };
    let optimizer = match loaded.optimizer {
        Some(optimizer) => optimizer,
        None => sgd(),
    };
    for schedule in &loaded.schedules {
        if let Err(error) = schedule.apply(&optimizer) {
            check_error(source, &error)?;
        }
    }
    Ok(())
}

/// `param - lr * grad`, for schedules without an optimizer of their own.
fn sgd() -> optjit_trace::Definition {
    let t = Tracer::new("sgd");
    let lr = t.hyper("lr", 0.1);
    let (param, grad) = (t.param(), t.grad());
    t.set_param(&param - &lr * &grad);
    t.finish().expect("traces")
}

/// One edit of a source, on characters (so never inside one).
#[derive(Clone, Debug)]
enum Mutation {
    Delete(Index, Index),
    Insert(Index, &'static str),
    Duplicate(Index, Index, Index),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), any::<Index>()).prop_map(|(at, len)| Mutation::Delete(at, len)),
        3 => (any::<Index>(), prop::sample::select(INSERTS))
            .prop_map(|(at, text)| Mutation::Insert(at, text)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(at, len, to)| Mutation::Duplicate(at, len, to)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(source: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = source.chars().collect();
    for mutation in mutations {
        let n = chars.len();
        // A range of at most 12 characters starting in the source (or at its end).
        let range = |at: &Index, len: &Index| {
            let start = at.index(n + 1);
            start..start + len.index(13).min(n - start)
        };
        match mutation {
            Mutation::Delete(at, len) => {
                chars.drain(range(at, len));
            }
            Mutation::Insert(at, text) => {
                let at = at.index(n + 1);
                chars.splice(at..at, text.chars());
            }
            Mutation::Duplicate(at, len, to) => {
                let copy: Vec<char> = chars[range(at, len)].to_vec();
                let to = to.index(n + 1);
                chars.splice(to..to, copy);
            }
            Mutation::Truncate(at) => chars.truncate(at.index(n + 1)),
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        parse_and_check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn arbitrary_strings_never_panic(source in any::<String>()) {
        parse_and_check(&source)?;
    }

    #[test]
    fn token_soup_never_panics(
        tokens in prop::collection::vec(prop::sample::select(INSERTS), 0..60),
        separators in prop::collection::vec(prop::sample::select(&["", " ", "\n"][..]), 60),
    ) {
        let mut source = String::from("optimizer o { x = ");
        for (token, separator) in tokens.iter().zip(&separators) {
            source.push_str(token);
            source.push_str(separator);
        }
        parse_and_check(&source)?;
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0..3usize,
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let both = format!("{LION}\n{WARMUP_COSINE}");
        let original = [LION, WARMUP_COSINE, both.as_str()][which];
        parse_and_check(&apply(original, &mutations))?;
    }
}

#[test]
fn the_examples_pass_the_checks() {
    for source in [LION, WARMUP_COSINE] {
        let program = parse("t.step", source).unwrap();
        check_program(source, &program).unwrap();
    }
}
