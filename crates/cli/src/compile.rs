//! `optjit compile`: runs the pipeline on a built-in and prints a stage's text, or per-phase
//! statistics with `--stats`.

use optjit_ir::{DType, FusionPlan};
use optjit_optim::Kwargs;
use optjit_rewrite::{SimplifyReport, plan_stats};
use optjit_runtime::{CompileOptions, CpuCodegen, Stage, Target};
use optjit_trace::Definition;

/// Compiles `optimizer` (with `clip_grad_norm_` fused in front when given) for `target`, its
/// kernels storing tensors as `storage`, and returns the text to print.
pub fn run(
    optimizer: &str,
    kwargs: &Kwargs,
    clip_grad_norm: Option<f64>,
    target: Target,
    storage: DType,
    emit: Option<&str>,
    stats: bool,
) -> Result<String, String> {
    let configured = crate::rule::choose(optimizer, kwargs, clip_grad_norm)?;
    let options = CompileOptions {
        keep_texts: true,
        target,
        storage,
        ..CompileOptions::default()
    };
    let kinds = kinds(&configured.definition);
    let mut out = String::new();
    for (label, definition) in &kinds {
        if kinds.len() > 1 {
            out.push_str(&format!("// ===== step for {label} =====\n"));
        }
        let compiled = optjit_runtime::compile(definition, &options).map_err(|e| e.to_string())?;
        if stats {
            out.push_str(&stats_text(
                &compiled.plan,
                compiled.simplify_report.as_ref(),
            ));
            continue;
        }
        if emit == Some("asm") {
            out.push_str(&machine_code(&compiled, target)?);
            continue;
        }
        out.push_str(&stage_texts(&compiled, target, emit)?);
    }
    Ok(out)
}

/// `--emit asm`: the host machine code of every kernel, as Cranelift prints it.
fn machine_code(compiled: &optjit_runtime::Compiled, target: Target) -> Result<String, String> {
    if target != Target::Cpu {
        return Err(format!(
            "--emit asm: target {target} has no machine code here (asm is the CPU's; for CUDA, \
             assemble --emit ptx with ptxas)"
        ));
    }
    let codegen = CpuCodegen::host().map_err(|e| e.to_string())?;
    let texts = codegen
        .disassemble(&compiled.kernels)
        .map_err(|e| e.to_string())?;
    Ok(texts.join("\n"))
}

/// The steps a definition compiles to, labelled: one, or for a definition that depends on the
/// rank (Adafactor) one for tensors of two or more dimensions and one for vectors, as an
/// optimizer compiles them (a 0-d tensor's step is the vectors' with the rank 0).
pub fn kinds(definition: &Definition) -> Vec<(&'static str, Definition)> {
    if !optjit_ir::depends_on_rank(&definition.graph) {
        return vec![("every tensor", definition.clone())];
    }
    let mut one_row = definition.clone();
    one_row.graph = optjit_ir::specialize_one_row(&definition.graph, 1);
    vec![
        ("tensors of 2 or more dimensions", definition.clone()),
        ("tensors of 1 dimension", one_row),
    ]
}

/// The texts of `emit` (every stage the target has when `None`), each under a header when
/// there are several.
fn stage_texts(
    compiled: &optjit_runtime::Compiled,
    target: Target,
    emit: Option<&str>,
) -> Result<String, String> {
    let stages: Vec<Stage> = match emit {
        None => Stage::ALL
            .into_iter()
            .filter(|&s| compiled.text(s).is_some())
            .collect(),
        Some(name) => {
            let stage = Stage::from_name(name).ok_or_else(|| {
                let mut known: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
                known.push("asm");
                format!(
                    "--emit: unknown stage '{name}' (expected one of {})",
                    known.join(", ")
                )
            })?;
            if compiled.text(stage).is_none() {
                return Err(format!(
                    "--emit {name}: target {target} has no {name} stage \
                     (clif and load are the CPU's, ptx is CUDA's)"
                ));
            }
            vec![stage]
        }
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

/// [`plan_stats`]'s `phase=K ...` and `total ...` lines, then an `egraph ...` line with what the
/// e-graph run did (no timings: the text is deterministic).
pub fn stats_text(plan: &FusionPlan, report: Option<&SimplifyReport>) -> String {
    let mut out = plan_stats(plan);
    if let Some(r) = report {
        out.push_str(&format!(
            "egraph iterations={} nodes={} classes={} stop_reason={} rules={} cost_before={} cost_after={}\n",
            r.iterations,
            r.egraph_nodes,
            r.egraph_classes,
            r.stop_reason.replace(' ', "_"),
            r.rules,
            r.cost_before,
            r.cost_after
        ));
    }
    out
}
