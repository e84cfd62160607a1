//! `optjit compile`: runs the pipeline on a built-in and prints a stage's text, or per-phase
//! statistics with `--stats`.

use optjit_ir::FusionPlan;
use optjit_optim::Kwargs;
use optjit_rewrite::{SimplifyReport, plan_stats};
use optjit_runtime::{CompileOptions, Stage, Target};

/// Compiles `optimizer` (with `clip_grad_norm_` fused in front when given) for `target` and
/// returns the text to print.
pub fn run(
    optimizer: &str,
    kwargs: &Kwargs,
    clip_grad_norm: Option<f64>,
    target: Target,
    emit: Option<&str>,
    stats: bool,
) -> Result<String, String> {
    let configured = crate::rule::choose(optimizer, kwargs, clip_grad_norm)?;
    let options = CompileOptions {
        keep_texts: true,
        target,
        ..CompileOptions::default()
    };
    let compiled =
        optjit_runtime::compile(&configured.definition, &options).map_err(|e| e.to_string())?;
    if stats {
        return Ok(stats_text(
            &compiled.plan,
            compiled.simplify_report.as_ref(),
        ));
    }
    let stages: Vec<Stage> = match emit {
        None => Stage::ALL
            .into_iter()
            .filter(|&s| compiled.text(s).is_some())
            .collect(),
        Some(name) => {
            let stage = Stage::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
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
