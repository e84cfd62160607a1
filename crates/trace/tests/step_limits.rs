//! The `.step` front end's limits and the messages past them: programs too large are refused
//! quickly at the statement that crosses a limit, long flat sums are accepted, echoed text is
//! shortened, hyperparameters declare domains, and state class errors speak `.step`.

use optjit_trace::Domain;
use optjit_trace::step::{MAX_GRAPH_NODES, MAX_NAME_CHARS, MAX_SOURCE_BYTES, StepError, load};

fn error(source: &str) -> StepError {
    match load("t.step", source) {
        Err(e) => e,
        Ok(_) => panic!("no error for:\n{}", &source[..source.len().min(500)]),
    }
}

/// `optimizer chain` whose body is a chain of `lines` `let`s, each adding the gradient to the
/// one before: the program that took 28 s to compile at 10 000 lines and 182 s at 20 000.
fn let_chain(lines: usize) -> String {
    let mut source = String::from("optimizer chain {\n  hyper lr = 0.01\n  let x0 = grad\n");
    for i in 1..lines {
        source.push_str(&format!("  let x{i} = x{} + grad\n", i - 1));
    }
    source.push_str(&format!("  param = param - lr * x{}\n}}\n", lines - 1));
    source
}

#[test]
fn a_20k_line_program_is_refused_where_it_crosses_the_graph_limit() {
    let e = error(&let_chain(20_000));
    // `let x{i}` adds one node per line after param, grad, lr and the first lines: the one that
    // would add node 10 001 is refused, pointing at its name.
    assert!(
        (9_990..10_010).contains(&e.span.line),
        "at line {}: {e}",
        e.span.line
    );
    assert_eq!(e.span.col, 7, "{e}");
    assert_eq!(
        e.message,
        format!(
            "this would take the block's graph past {MAX_GRAPH_NODES} nodes (operations, inputs \
             and constants), the most a step may have (docs/step-language.md, \"Limits\")"
        )
    );
    // Under the limit, the same chain loads.
    let loaded = load("t.step", &let_chain(9_000)).unwrap();
    assert!(loaded.optimizer.unwrap().graph.len() > 9_000);
}

#[test]
fn flat_sums_and_products_are_not_nested() {
    // The 200-term sum that used to be "nested too deeply", and longer ones.
    for terms in [200, 4_000] {
        let sum = vec!["grad"; terms].join(" + ");
        let product = vec!["grad"; terms].join(" * ");
        let source =
            format!("optimizer o {{\n  let s = {sum}\n  param = param - s * {product}\n}}");
        let graph = load("t.step", &source).unwrap().optimizer.unwrap().graph;
        // grad, param, (terms - 1) adds and as many multiplies, the final multiply and sub.
        assert_eq!(graph.len(), 2 + 2 * (terms - 1) + 2, "{terms} terms");
    }
    // Left to right, as before: `a - b - c` is `(a - b) - c`.
    let chained = load(
        "t.step",
        "optimizer o { param = param - grad - 2 * grad / 3 * param }",
    )
    .unwrap();
    let nested = load(
        "t.step",
        "optimizer o { param = (param - grad) - (((2 * grad) / 3) * param) }",
    )
    .unwrap();
    assert_eq!(
        chained.optimizer.unwrap().graph.to_string(),
        nested.optimizer.unwrap().graph.to_string()
    );
    // A constant chain is folded left to right too, and each partial result must be finite.
    let e = error("optimizer o { hyper h = 1e300 * 1e300 / 1e300  param = param - h * grad }");
    assert_eq!(e.text, "1e300 * 1e300");
    assert_eq!(e.message, "the constant is inf, not finite");
}

#[test]
fn nesting_past_the_depth_limit_names_it() {
    let source = format!(
        "optimizer o {{ param = {}grad{} }}",
        "(".repeat(300),
        ")".repeat(300)
    );
    assert_eq!(
        error(&source).message,
        "expression nested too deeply: more than 200 levels of parentheses, calls, unary minus \
         and operators of different precedence (docs/step-language.md, \"Limits\")"
    );
}

#[test]
fn a_long_unknown_name_gets_a_short_message() {
    // 10 MB: past the source limit, refused before it is read.
    let name = "n".repeat(10 << 20);
    let e = error(&format!(
        "optimizer o {{\n  param = param - {name} * grad\n}}"
    ));
    assert!(e.to_string().len() < 600, "{e}");
    assert!(
        e.message.starts_with("the source is 10485"),
        "{}",
        e.message
    );
    // 1 MB: a name past the name limit, its text cut.
    let name = "n".repeat(1 << 20);
    let e = error(&format!(
        "optimizer o {{\n  param = param - {name} * grad\n}}"
    ));
    let shown = e.to_string();
    assert!(shown.len() < 600, "{} bytes:\n{shown}", shown.len());
    assert_eq!(
        e.message,
        format!(
            "a name of {} characters; names are at most {MAX_NAME_CHARS}",
            1 << 20
        )
    );
    assert_eq!(e.text, format!("{}…", "n".repeat(64)));
    assert_eq!((e.span.line, e.span.col), (2, 19));
}

#[test]
fn long_lines_are_cut_around_the_error() {
    // An unknown name at the end of a line of 100 000 characters.
    let padding = " ".repeat(100_000);
    let source = format!("optimizer o {{\n  param = grad{padding} + gard\n}}");
    let e = error(&source);
    assert_eq!(e.message, "unknown name 'gard'; did you mean 'grad'?");
    assert!(e.line_text.chars().count() <= 122, "{}", e.line_text);
    assert!(e.line_text.starts_with('…') && e.line_text.contains("+ gard"));
    // The caret is under `gard`.
    let shown = e.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    let caret = lines[2].chars().position(|c| c == '^').unwrap();
    let above: String = lines[1].chars().skip(caret).take(4).collect();
    assert_eq!(above, "gard", "{shown}");
    assert_eq!(lines[2].trim(), "^^^^");
    // A long offending text is cut too: a comparison of 300 characters assigned.
    let spaces = " ".repeat(300);
    let e = error(&format!("optimizer o {{ param = grad <{spaces}1 }}"));
    assert_eq!(
        e.message,
        "a comparison result cannot be assigned; use where(condition, a, b)"
    );
    assert_eq!(e.text, format!("grad <{}…", " ".repeat(58)));
}

#[test]
fn sources_over_4_mib_are_refused_at_once() {
    let source = format!(
        "optimizer o {{ param = param - grad }}\n{}",
        "#".repeat(MAX_SOURCE_BYTES)
    );
    let e = error(&source);
    assert_eq!(
        e.message,
        format!(
            "the source is {} bytes, more than the limit of {MAX_SOURCE_BYTES} bytes (4 MiB) of \
             a .step file",
            source.len()
        )
    );
    assert_eq!((e.span.line, e.span.col), (1, 1));
}

#[test]
fn many_long_names_keep_suggestions_cheap() {
    // 2 000 names of 128 characters, and an unknown one as long: no suggestion is looked for
    // past 32 characters (each candidate would cost 128 × 128).
    let names: Vec<String> = (0..2_000).map(|i| format!("{i:0>128}")).collect();
    let mut source = String::from("optimizer o {\n");
    for name in &names {
        source.push_str(&format!("  let v{} = grad\n", &name[1..]));
    }
    source.push_str(&format!("  param = param - v{}x\n}}", &names[7][2..]));
    let e = error(&source);
    assert_eq!(e.message, format!("unknown name 'v{}x'", &names[7][2..]));
    // Short names still get one.
    let e = error("optimizer o {\n  let velocity = grad\n  param = param - velocty\n}");
    assert_eq!(
        e.message,
        "unknown name 'velocty'; did you mean 'velocity'?"
    );
}

#[test]
fn hyperparameters_declare_domains() {
    let source = "optimizer o {
  hyper lr = 1e-4 in [0, inf)
  hyper beta = 0.9 in [0, 1)
  hyper damp = 0 in [0, 1]
  hyper eps = 1e-8 in (0, inf)
  hyper decay = -0.8 in (-inf, 0]
  hyper k = 2 in [2, 2]
  hyper free = -1
  param = param - lr * (beta + damp + eps + decay + k + free) * grad
}";
    let definition = load("t.step", source).unwrap().optimizer.unwrap();
    let domain = |name: &str| definition.domain(name);
    assert_eq!(domain("lr"), Domain::non_negative());
    assert_eq!(domain("beta"), Domain::unit_half_open());
    assert_eq!(domain("damp"), Domain::unit_closed());
    assert_eq!(domain("eps").to_string(), "a finite number > 0");
    assert_eq!(domain("decay").to_string(), "a finite number <= 0");
    assert_eq!(domain("k").to_string(), "exactly 2");
    assert!(!definition.domains.contains_key("free"));
    // What a setter checks: `lr: -1` is refused now, as by the built-ins.
    assert!(!domain("lr").contains(-1.0));
    assert!(domain("lr").contains(0.0));
    assert!(!domain("eps").contains(0.0));
    assert!(!domain("beta").contains(1.0));
}

#[test]
fn domain_mistakes_are_located() {
    let cases = [
        (
            "hyper lr = -1 in [0, inf)",
            "-1",
            "the default -1 of 'lr' is outside its domain: a finite number >= 0",
        ),
        (
            "hyper b = 1 in [0, 1)",
            "1",
            "the default 1 of 'b' is outside its domain: a number in [0, 1)",
        ),
        (
            "hyper b = 1 in [2, 1]",
            "[2, 1]",
            "the interval [2, 1] holds no value",
        ),
        (
            "hyper b = 1 in [1, 1)",
            "[1, 1)",
            "the interval [1, 1) holds no value",
        ),
        (
            "hyper b = 1 in [inf, 1]",
            "inf",
            "the lower bound cannot be inf",
        ),
        (
            "hyper b = 1 in [0, -inf]",
            "-inf",
            "the upper bound cannot be -inf",
        ),
        (
            "hyper b = 1 in [0, lr]",
            "lr",
            "expected a constant (a number, `pi`, or arithmetic on them)",
        ),
        (
            "state in = 0",
            "in",
            "expected a name after `state`, found the keyword `in`",
        ),
    ];
    for (statement, text, message) in cases {
        let e = error(&format!(
            "optimizer o {{\n  {statement}\n  param = param - grad\n}}"
        ));
        assert_eq!(
            (e.text.as_str(), e.message.as_str()),
            (text, message),
            "{statement}"
        );
        assert_eq!(e.span.line, 2, "{statement}");
    }
}

#[test]
fn schedule_domains_join_the_rule() {
    let loaded = load(
        "t.step",
        "optimizer o {\n  hyper lr = 0.1 in [0, inf)\n  param = param - lr * grad\n}\n\
         schedule s {\n  hyper factor = 0.5 in (0, 1]\n  lr = lr * pow(factor, t)\n}\n",
    )
    .unwrap();
    let rule = loaded.optimizer.unwrap();
    let scheduled = loaded.schedules[0].apply(&rule).unwrap();
    assert_eq!(scheduled.domain("lr"), Domain::non_negative());
    assert_eq!(scheduled.domain("factor").to_string(), "a number in (0, 1]");
}

#[test]
fn state_class_errors_speak_step() {
    let cases = [
        (
            "state v: row = 0\n  v = grad * 2",
            "row state 'v' cannot hold a per-element value; it takes per-row values (row_mean, \
             `: row` states) or ones the same for the whole row (per matrix, per tensor, scalar)",
        ),
        (
            "state c: col = 0\n  c = row_mean(grad)",
            "col state 'c' cannot hold a per-row value; it takes per-column values (col_mean, \
             `: col` states) or ones the same for the whole column (per matrix, per tensor, \
             scalar)",
        ),
        (
            "state m = 0\n  m = norm(grad)",
            "state 'm' cannot hold a per-tensor value; it takes per-element values or scalars \
             (the same for every element)",
        ),
        (
            "state u = 0\n  param = row_mean(grad)",
            "param cannot hold a per-row value; it takes per-element values or scalars (the \
             same for every element)",
        ),
    ];
    for (body, message) in cases {
        let e = error(&format!(
            "optimizer o {{\n  {body}\n  param = param - grad\n}}"
        ));
        assert_eq!(e.message, message, "{body}");
        assert_eq!(e.span.line, 3, "{body}");
    }
    // What fits is accepted: a per-matrix value into a row state, a scalar into a column state.
    let source = "optimizer o {
  state v: row = 0
  state c: col = 0
  v = rows_mean(row_mean(grad * grad)) + 1
  c = 2
  param = param - grad
}";
    assert!(load("t.step", source).is_ok());
}
