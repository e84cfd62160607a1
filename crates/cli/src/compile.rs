//! `optjit compile`: runs the pipeline on a built-in and prints a stage's text, or per-phase
//! statistics with `--stats`.

use optjit_ir::{Binary, FusionPlan, Op, Unary};
use optjit_optim::Kwargs;
use optjit_runtime::{CompileOptions, Stage};

/// Every op kind `--stats` reports, in print order.
pub const OP_KINDS: [&str; 18] = [
    "add", "sub", "mul", "div", "fma", "sqrt", "rsqrt", "exp", "log", "pow", "abs", "sign", "min",
    "max", "cmp", "select", "cast", "neg",
];

/// Compiles `optimizer` and returns the text to print.
pub fn run(
    optimizer: &str,
    kwargs: &Kwargs,
    emit: Option<&str>,
    stats: bool,
) -> Result<String, String> {
    let configured = optjit_optim::find(optimizer)
        .and_then(|s| s.configure(kwargs))
        .map_err(|e| e.to_string())?;
    let options = CompileOptions {
        keep_texts: true,
        ..CompileOptions::default()
    };
    let compiled =
        optjit_runtime::compile(&configured.definition, &options).map_err(|e| e.to_string())?;
    if stats {
        return Ok(stats_text(&compiled.plan));
    }
    let stages: Vec<Stage> = match emit {
        None => Stage::ALL.to_vec(),
        Some(name) => vec![Stage::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
            format!(
                "--emit: unknown stage '{name}' (expected one of {})",
                known.join(", ")
            )
        })?],
    };
    let mut out = String::new();
    for stage in stages {
        let text = compiled.text(stage).unwrap_or_default();
        if emit.is_none() {
            out.push_str(&format!(
                "// ----- after {stage} ({}) -----\n",
                compiled.rule
            ));
        }
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Per-element operation counts of one phase, by kind (see [`OP_KINDS`]).
pub fn op_counts(plan: &FusionPlan, phase: usize) -> [usize; OP_KINDS.len()] {
    let mut counts = [0; OP_KINDS.len()];
    for &node in &plan.phases[phase].nodes {
        let kind = match &plan.graph.node(node).op {
            Op::Input(_) | Op::Const(_) | Op::Reduce(_) => continue,
            Op::Binary(b) => match b {
                Binary::Add => "add",
                Binary::Sub => "sub",
                Binary::Mul => "mul",
                Binary::Div => "div",
                Binary::Min => "min",
                Binary::Max => "max",
                Binary::Pow => "pow",
            },
            Op::Unary(u) => match u {
                Unary::Neg => "neg",
                Unary::Sqrt => "sqrt",
                Unary::Rsqrt => "rsqrt",
                Unary::Exp => "exp",
                Unary::Log => "log",
                Unary::Abs => "abs",
                Unary::Sign => "sign",
                Unary::Sin | Unary::Cos | Unary::Floor => continue,
            },
            Op::Fma => "fma",
            Op::Cmp(_) => "cmp",
            Op::Select => "select",
            Op::Cast(_) => "cast",
        };
        let slot = OP_KINDS
            .iter()
            .position(|k| *k == kind)
            .expect("listed kind");
        counts[slot] += 1;
    }
    counts
}

/// The `phase=K ...` lines and the `total ...` line.
pub fn stats_text(plan: &FusionPlan) -> String {
    let elem_bytes = plan.graph.elem_dtype.size_bytes();
    let mut total = [0; OP_KINDS.len()];
    let mut out = String::new();
    let line = |prefix: String, bytes: usize, counts: &[usize]| {
        let ops: Vec<String> = OP_KINDS
            .iter()
            .zip(counts)
            .map(|(k, c)| format!("{k}={c}"))
            .collect();
        format!("{prefix} bytes_per_elem={bytes} {}\n", ops.join(" "))
    };
    for (k, phase) in plan.phases.iter().enumerate() {
        let counts = op_counts(plan, k);
        total.iter_mut().zip(counts).for_each(|(t, c)| *t += c);
        out.push_str(&line(
            format!("phase={k} kernels=1"),
            phase.bytes_per_elem(elem_bytes),
            &counts,
        ));
    }
    out.push_str(&line(
        format!("total kernels={}", plan.phases.len()),
        plan.bytes_per_elem(),
        &total,
    ));
    out
}
