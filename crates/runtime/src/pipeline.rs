//! The compile pipeline as an ordered list of named stages:
//! trace → verify → simplify → extract → fuse → lower → clif → load on the CPU, and
//! trace → … → lower → ptx for CUDA (a CUDA step loads its PTX when it meets its device).

use crate::cache::{
    CacheKey, CacheOptions, CacheUse, DiskCache, Entry, Lookup, MemoryCache, Samples,
    cache_version, check_entry, disk_key, settings,
};
use crate::error::CompileError;
use crate::jit::{CpuCodegen, CpuModule};
use crate::scalar_program::ScalarProgram;
use crate::stage::{Dump, Stage};
use crate::target::Target;
use optjit_ir::DType;
use optjit_ir::{FusionPlan, Graph};
use optjit_kernels_gen::{Kernel, LowerOptions, PtxOptions};
use optjit_rewrite::{SimplifyOptions, SimplifyReport, ValueRange};
use optjit_trace::Definition;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
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
    /// How the kernels store tensors and per-element states: f32, or f16/bf16 (CUDA only;
    /// arithmetic stays f32). An optimizer sets it from its [`Setup::dtype`](crate::Setup).
    pub storage: DType,
    /// The memory and disk caches [`compile_cached`] uses.
    pub cache: CacheOptions,
}

impl Default for CompileOptions {
    /// Default limits; dumps, timings and caches as the environment asks.
    fn default() -> Self {
        CompileOptions {
            simplify: SimplifyOptions::default(),
            dump: Dump::from_env(),
            keep_texts: false,
            print_times: crate::stage::times_from_env(),
            fma: None,
            target: Target::Cpu,
            storage: DType::F32,
            cache: CacheOptions::from_env(),
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
    /// What the e-graph run did; `None` when a disk-cache hit skipped it.
    pub simplify_report: Option<SimplifyReport>,
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
    /// Bytes loaded and stored per element per step over all phases (the static count of the
    /// fusion plan), each buffer counted at the size its kernel stores (2 bytes for f16 and
    /// bf16 tensors and states, 4 for f32 and for column values).
    pub fn bytes_per_elem(&self) -> usize {
        let phases = self.plan.phases.iter().zip(&self.kernels);
        phases
            .map(|(phase, kernel)| {
                let stored = |b: &optjit_ir::BufferUse| match b.buffer {
                    optjit_ir::Buffer::ColValue(_) => 4,
                    _ => kernel.elem_dtype.size_bytes(),
                };
                (phase.buffers.iter())
                    .map(|b| (usize::from(b.read) + usize::from(b.write)) * stored(b))
                    .sum::<usize>()
            })
            .sum()
    }

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

/// Runs every stage on `definition` for `options.target` (no cache: see [`compile_cached`]).
pub fn compile(
    definition: &Definition,
    options: &CompileOptions,
) -> Result<Compiled, CompileError> {
    run(definition, options, None).map(|(compiled, _)| compiled)
}

/// What a disk-cache hit gives the pipeline: the optimized graph, checked against the
/// definition (its code is made again from it).
struct Cached {
    graph: Graph,
}

/// As [`compile`], through the caches of `options.cache`: a step compiled before in this
/// process is returned as is, one found on disk skips the e-graph stages. Asking for stage
/// texts (`keep_texts`, dumps) bypasses the caches, since a cached step has not run them all.
///
/// The disk cache is used only in a directory of this user's that no one else may write, and
/// an entry only if it is such a file and its graph passes [`check_entry`] against the
/// definition; anything else is reported once on stderr and compiled again (docs/cache.md).
pub fn compile_cached(
    definition: &Definition,
    options: &CompileOptions,
) -> Result<(Arc<Compiled>, CacheUse), CompileError> {
    let cache = &options.cache;
    let texts_wanted = options.keep_texts || !options.dump.stages.is_empty();
    if texts_wanted || (!cache.memory && cache.dir.is_none()) {
        return Ok((Arc::new(compile(definition, options)?), CacheUse::Compiled));
    }
    // No verification here: a graph equal to a compiled one was verified then, and a miss runs
    // the whole pipeline, `verify` included.
    let graph = &definition.graph;
    let key = CacheKey {
        settings: settings(
            options.target,
            options.storage,
            &simplify_options(definition, &options.simplify),
            fma_in_force(options),
        ),
        graph: graph.canonical_words(),
    };
    if cache.memory
        && let Some(compiled) = MemoryCache::get(&key)
    {
        return Ok((compiled, CacheUse::MemoryHit));
    }
    let disk = cache.dir.as_ref().and_then(|dir| {
        let disk = DiskCache::new(dir);
        match disk.check_dir() {
            Ok(()) => Some(disk),
            Err(why) => {
                let once = dir.display().to_string();
                report_once(&once, format!("{why}; the disk cache is not used"));
                None
            }
        }
    });
    // An entry is used only once checked against the definition's results on sample inputs:
    // a definition the interpreter cannot run is neither read from nor written to the disk.
    let disk = disk.and_then(|disk| Some((disk, Samples::of(definition)?)));
    let file_key = disk_key(&key.settings, &graph.to_string());
    let mut used = CacheUse::Compiled;
    let mut from_disk = None;
    if let Some((disk, samples)) = &disk {
        match disk.load(&file_key, cache_version()) {
            Lookup::Hit(entry) => match from_entry(definition, options, &entry, samples) {
                Ok(compiled) => (from_disk, used) = (Some(compiled), CacheUse::DiskHit),
                Err(why) => {
                    let path = disk.path(&file_key);
                    report_once(
                        &file_key,
                        format!("{}: {why}; compiling again", path.display()),
                    );
                }
            },
            Lookup::Miss => {}
            Lookup::Corrupt(why) => report_once(&file_key, format!("{why}; compiling again")),
        }
    }
    let compiled = match from_disk {
        Some(compiled) => compiled,
        None => {
            let (compiled, optimized) = run(definition, options, None)?;
            if let Some((disk, _)) = &disk {
                let entry = Entry { graph: optimized };
                if let Err(e) = disk.store(&file_key, cache_version(), &entry) {
                    let path = disk.path(&file_key);
                    report_once(
                        &file_key,
                        format!("cannot write {}: {e}; not cached on disk", path.display()),
                    );
                }
            }
            compiled
        }
    };
    let compiled = Arc::new(compiled);
    Ok(match cache.memory {
        true => (MemoryCache::insert(key, compiled), used),
        false => (compiled, used),
    })
}

/// The step compiled from a disk-cache entry, whose graph must parse and pass [`check_entry`];
/// any failure, a panic of a later stage on a graph that passed included, is the reason not to
/// use the entry (the caller compiles from the definition instead).
fn from_entry(
    definition: &Definition,
    options: &CompileOptions,
    entry: &Entry,
    samples: &Samples,
) -> Result<Compiled, String> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let graph = optjit_ir::parse_graph(&entry.graph)
            .map_err(|e| format!("the cached graph does not parse ({e})"))?;
        check_entry(&definition.graph, &graph, samples)?;
        let (compiled, _) = run(definition, options, Some(Cached { graph }))
            .map_err(|e| format!("the cached graph does not compile ({e})"))?;
        Ok(compiled)
    }));
    attempt.unwrap_or_else(|_| Err("the cached graph made the compiler panic".to_string()))
}

/// The e-graph options for `definition`: `options`, with its hyperparameters' domains (checked
/// whenever a value is set) as the ranges that rules with a side condition may rely on.
fn simplify_options(definition: &Definition, options: &SimplifyOptions) -> SimplifyOptions {
    let mut simplify = options.clone();
    for (name, d) in &definition.domains {
        let range = ValueRange::between(d.min, d.min_inclusive, d.max, d.max_inclusive);
        simplify.hyper_ranges.insert(name.clone(), range);
    }
    simplify
}

/// The FMA contraction a compile uses: the option, else every GPU, else the host CPU's answer.
fn fma_in_force(options: &CompileOptions) -> bool {
    static HOST_FMA: OnceLock<bool> = OnceLock::new();
    options.fma.unwrap_or_else(|| match options.target {
        Target::Cuda { .. } => true,
        Target::Cpu => *HOST_FMA.get_or_init(|| CpuCodegen::host().is_ok_and(|c| c.has_fma())),
    })
}

/// Prints a cache problem on stderr, once per key and process.
fn report_once(key: &str, message: String) {
    static REPORTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    if !reported.iter().any(|k| k == key) {
        reported.push(key.to_string());
        eprintln!("optjit: compile cache: {message}");
    }
}

/// The pipeline; from a disk-cache hit, the e-graph stages are skipped.
/// Returns the step and the optimized graph's text (for the disk cache; empty on a hit).
fn run(
    definition: &Definition,
    options: &CompileOptions,
    cached: Option<Cached>,
) -> Result<(Compiled, String), CompileError> {
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

    let disk_hit = cached.is_some();
    let (extracted, optimized, simplify_report) = match cached {
        Some(Cached { graph }) => (graph, String::new(), None),
        None => {
            let simplify = simplify_options(definition, &options.simplify);
            let simplified = optjit_rewrite::simplify(graph, &simplify)
                .map_err(|e| rec.fail(Stage::Simplify, e))?;
            rec.finish_stage(Stage::Simplify, || simplified.report.to_string());
            let extracted = optjit_rewrite::extract(&simplified);
            rec.finish_stage(Stage::Extract, || extracted.to_string());
            let optimized = match options.cache.dir {
                Some(_) => extracted.to_string(),
                None => String::new(),
            };
            (extracted, optimized, Some(simplified.report))
        }
    };
    if cfg!(debug_assertions) {
        optjit_ir::verify(&extracted)
            .map_err(|e| rec.fail(Stage::Extract, format!("{e}\n{extracted}")))?;
    }

    let plan = optjit_rewrite::fuse(&extracted).map_err(|e| rec.fail(Stage::Fuse, e))?;
    let scalar_program = ScalarProgram::new(&plan);
    rec.finish_stage(Stage::Fuse, || {
        format!("{plan}{}", optjit_rewrite::plan_stats(&plan))
    });

    let codegen = match options.target {
        Target::Cpu => Some(CpuCodegen::host().map_err(|e| rec.fail(Stage::Lower, e))?),
        Target::Cuda { .. } => None,
    };
    // The same answer the cache key was made with.
    let lower_options = LowerOptions {
        fma: fma_in_force(options),
        storage: options.storage,
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
        print_times(&rec.rule, &rec.times, disk_hit);
    }
    let compiled = Compiled {
        rule: rec.rule,
        plan,
        kernels,
        texts: rec.texts,
        stage_times: rec.times,
        simplify_report,
        code,
        scalar_program,
    };
    Ok((compiled, optimized))
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

fn print_times(rule: &str, times: &[(Stage, Duration)], disk_hit: bool) {
    let total: Duration = times.iter().map(|(_, t)| *t).sum();
    eprintln!("optjit: compile times for {rule}");
    if disk_hit {
        eprintln!("  disk cache hit: simplify and extract skipped");
    }
    for (stage, t) in times {
        eprintln!("  {:<9} {:>9.3} ms", stage.name(), t.as_secs_f64() * 1e3);
    }
    eprintln!("  {:<9} {:>9.3} ms", "total", total.as_secs_f64() * 1e3);
}
