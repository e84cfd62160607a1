//! The compile pipeline as an ordered list of named stages:
//! trace → verify → simplify → extract → fuse → lower → clif → load on the CPU, and
//! trace → … → lower → ptx for CUDA (a CUDA step loads its PTX when it meets its device).

use crate::error::CompileError;
use crate::jit::{CpuCodegen, CpuModule};
use crate::scalar_program::ScalarProgram;
use crate::stage::{Dump, Stage};
use crate::target::Target;
use optjit_ir::FusionPlan;
use optjit_kernels_gen::{Kernel, LowerOptions, PtxOptions};
use optjit_rewrite::SimplifyOptions;
use optjit_trace::Definition;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Everything that changes the generated code besides the definition itself.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// E-graph limits and rule selection.
    pub simplify: SimplifyOptions,
    /// Which stage texts to print (`OPTJIT_DUMP`).
    pub dump: Dump,
    /// Keep every stage's text in [`Compiled::texts`] (for `optjit compile` and snapshots).
    pub keep_texts: bool,
    /// Print the per-stage timing table on stderr (`OPTJIT_TIME=1`).
    pub print_times: bool,
    /// Contract multiply-adds into FMA: `None` asks the host (AVX+FMA), `Some` forces it
    /// (snapshots force it so that their text does not depend on the machine).
    pub fma: Option<bool>,
    /// The machine the step is compiled for.
    pub target: Target,
}

impl Default for CompileOptions {
    /// Default limits; dumps and timings as the environment asks.
    fn default() -> Self {
        CompileOptions {
            simplify: SimplifyOptions::default(),
            dump: Dump::from_env(),
            keep_texts: false,
            print_times: std::env::var("OPTJIT_TIME").is_ok_and(|v| v == "1"),
            fma: None,
            target: Target::Cpu,
        }
    }
}

/// A compiled step: the plan, its kernels, the loaded machine code and the host program.
pub struct Compiled {
    /// The update rule's name.
    pub rule: String,
    /// The fusion plan the kernels implement.
    pub plan: FusionPlan,
    /// The kernels, one per phase.
    pub kernels: Vec<Kernel>,
    /// Each stage's text, when [`CompileOptions::keep_texts`] was set.
    pub texts: BTreeMap<Stage, String>,
    /// Wall time per stage.
    pub stage_times: Vec<(Stage, Duration)>,
    pub(crate) code: Code,
    pub(crate) scalar_program: ScalarProgram,
}

/// The target code of a compiled step.
pub(crate) enum Code {
    /// Loaded Cranelift functions, one per kernel.
    Cpu(Box<CpuModule>),
    /// One PTX module per kernel, not yet loaded (a CUDA optimizer loads it on its device).
    Ptx(Vec<String>),
}

impl Compiled {
    /// Total compile time.
    pub fn compile_time(&self) -> Duration {
        self.stage_times.iter().map(|(_, t)| *t).sum()
    }

    /// The text of `stage` (kept only with [`CompileOptions::keep_texts`]).
    pub fn text(&self, stage: Stage) -> Option<&str> {
        self.texts.get(&stage).map(String::as_str)
    }

    /// The PTX module of each kernel, when compiled for CUDA.
    pub fn ptx(&self) -> Option<&[String]> {
        match &self.code {
            Code::Ptx(modules) => Some(modules),
            Code::Cpu(_) => None,
        }
    }

    pub(crate) fn cpu_module(&self) -> Option<&CpuModule> {
        match &self.code {
            Code::Cpu(module) => Some(module),
            Code::Ptx(_) => None,
        }
    }
}

/// Records stage times and texts as the pipeline goes.
struct Recorder<'a> {
    rule: String,
    options: &'a CompileOptions,
    texts: BTreeMap<Stage, String>,
    times: Vec<(Stage, Duration)>,
    started: Instant,
}

impl Recorder<'_> {
    fn finish_stage(&mut self, stage: Stage, text: impl FnOnce() -> String) {
        let now = Instant::now();
        self.times.push((stage, now - self.started));
        if self.options.keep_texts || self.options.dump.wants(stage) {
            let text = text();
            self.options.dump.emit(&self.rule, stage, &text);
            self.texts.insert(stage, text);
        }
        self.started = Instant::now();
    }

    fn fail(&self, stage: Stage, message: impl ToString) -> CompileError {
        CompileError {
            rule: self.rule.clone(),
            stage,
            message: message.to_string(),
        }
    }
}

/// Runs every stage on `definition` for `options.target`.
pub fn compile(
    definition: &Definition,
    options: &CompileOptions,
) -> Result<Compiled, CompileError> {
    let graph = &definition.graph;
    let mut rec = Recorder {
        rule: graph.name.clone(),
        options,
        texts: BTreeMap::new(),
        times: Vec::new(),
        started: Instant::now(),
    };
    rec.finish_stage(Stage::Trace, || graph.to_string());

    optjit_ir::verify(graph).map_err(|e| rec.fail(Stage::Verify, e))?;
    rec.finish_stage(Stage::Verify, || {
        format!(
            "ok: {} nodes, {} outputs\n",
            graph.len(),
            graph.outputs.len()
        )
    });

    let simplified = optjit_rewrite::simplify(graph, &options.simplify)
        .map_err(|e| rec.fail(Stage::Simplify, e))?;
    rec.finish_stage(Stage::Simplify, || simplified.report.to_string());

    let extracted = optjit_rewrite::extract(&simplified);
    if cfg!(debug_assertions) {
        optjit_ir::verify(&extracted)
            .map_err(|e| rec.fail(Stage::Extract, format!("{e}\n{extracted}")))?;
    }
    rec.finish_stage(Stage::Extract, || extracted.to_string());

    let plan = optjit_rewrite::fuse(&extracted).map_err(|e| rec.fail(Stage::Fuse, e))?;
    let scalar_program = ScalarProgram::new(&plan);
    rec.finish_stage(Stage::Fuse, || plan.to_string());

    let codegen = match options.target {
        Target::Cpu => Some(CpuCodegen::host().map_err(|e| rec.fail(Stage::Lower, e))?),
        Target::Cuda { .. } => None,
    };
    let lower_options = LowerOptions {
        // Every CUDA GPU has a fused multiply-add.
        fma: options
            .fma
            .unwrap_or_else(|| codegen.as_ref().is_none_or(CpuCodegen::has_fma)),
    };
    let kernels = (0..plan.phases.len())
        .map(|phase| optjit_kernels_gen::lower(&plan, phase, &lower_options))
        .collect::<Result<Vec<Kernel>, _>>()
        .map_err(|e| rec.fail(Stage::Lower, e))?;
    rec.finish_stage(Stage::Lower, || {
        kernels
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    });

    let code = match (options.target, codegen) {
        (Target::Cuda { arch }, _) => {
            let ptx = kernels
                .iter()
                .map(|k| optjit_kernels_gen::emit_ptx(k, &PtxOptions { arch }))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|e| rec.fail(Stage::Ptx, e))?;
            rec.finish_stage(Stage::Ptx, || ptx.join("\n"));
            Code::Ptx(ptx)
        }
        (Target::Cpu, Some(codegen)) => {
            Code::Cpu(Box::new(emit_and_load(&mut rec, &codegen, &kernels)?))
        }
        (Target::Cpu, None) => unreachable!("the CPU target has a codegen"),
    };

    if options.print_times {
        print_times(&rec.rule, &rec.times);
    }
    Ok(Compiled {
        rule: rec.rule,
        plan,
        kernels,
        texts: rec.texts,
        stage_times: rec.times,
        code,
        scalar_program,
    })
}

/// The `clif` and `load` stages: Cranelift functions for `kernels`, loaded into this process.
fn emit_and_load(
    rec: &mut Recorder,
    codegen: &CpuCodegen,
    kernels: &[Kernel],
) -> Result<CpuModule, CompileError> {
    let functions = codegen
        .emit(kernels)
        .map_err(|e| rec.fail(Stage::Clif, e))?;
    let clif_text = rec.options.keep_texts || rec.options.dump.wants(Stage::Clif);
    let clif = if clif_text {
        functions.iter().map(|f| f.display().to_string()).collect()
    } else {
        Vec::new()
    };
    rec.finish_stage(Stage::Clif, || clif.join("\n"));

    let module = codegen
        .load(functions)
        .map_err(|e| rec.fail(Stage::Load, e))?;
    rec.finish_stage(Stage::Load, || {
        let names: Vec<&str> = kernels.iter().map(|k| k.name.as_str()).collect();
        format!(
            "cranelift jit: {} kernel(s): {}\n",
            names.len(),
            names.join(", ")
        )
    });
    Ok(module)
}

fn print_times(rule: &str, times: &[(Stage, Duration)]) {
    let total: Duration = times.iter().map(|(_, t)| *t).sum();
    eprintln!("optjit: compile times for {rule}");
    for (stage, t) in times {
        eprintln!("  {:<9} {:>9.3} ms", stage.name(), t.as_secs_f64() * 1e3);
    }
    eprintln!("  {:<9} {:>9.3} ms", "total", total.as_secs_f64() * 1e3);
}
