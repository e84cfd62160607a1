//! The `optjit` binary: golden, bench, compile, list and demo.

use clap::{Parser, Subcommand, ValueEnum};
use optjit_cli::stepper::Backend;
use optjit_cli::{bench, compile, demo, golden, list};
use optjit_ir::DType;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "optjit",
    version,
    about = "JIT compiler for deep-learning optimizer steps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Target {
    Cpu,
    Cuda,
    /// A synonym of cuda.
    Ptx,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Cpu => "cpu",
            Target::Cuda | Target::Ptx => "cuda",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Replay golden trajectories (PyTorch/optax recordings) and compare.
    Golden {
        /// Golden JSON files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "cpu")]
        target: Target,
        /// After step K (0-based), save a checkpoint, drop the optimizer and go on in a fresh
        /// one that restores it.
        #[arg(long, value_name = "K")]
        resume_at: Option<usize>,
        /// Where the fresh optimizer of --resume-at runs (default: --target).
        #[arg(long, value_enum, requires = "resume_at")]
        resume_target: Option<Target>,
    },
    /// Time the compiled step of a built-in or a .step file on a workload.
    Bench {
        /// A built-in's name, or a .step file.
        #[arg(long)]
        optimizer: String,
        /// big-1x16M | gpt2s-148 | small-1000x4K
        #[arg(long)]
        workload: String,
        #[arg(long, value_enum, default_value = "cpu")]
        target: Target,
        /// Timed steps (at least 1).
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Worker threads (0: one per core); more than the worker pool holds is refused.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Keyword arguments as JSON, e.g. '{"amsgrad": true}'.
        #[arg(long)]
        kwargs: Option<String>,
        /// Fuse `clip_grad_norm_(params, MAX)` in front of the step.
        #[arg(long, value_name = "MAX", allow_negative_numbers = true)]
        clip_grad_norm: Option<f64>,
        /// A PyTorch LR scheduler in force, as JSON: '{"name": "StepLR", "kwargs": {"step_size": 3}}',
        /// or a .step file of `schedule` blocks.
        #[arg(long, value_name = "JSON|FILE.step")]
        schedule: Option<String>,
        /// How params, grads and states are stored: f32, or bf16 / f16 (with --target cuda).
        #[arg(long, default_value = "f32", value_parser = parse_dtype)]
        dtype: DType,
    },
    /// Compile a built-in or a .step file and print a stage's text (all stages by default).
    Compile {
        /// A built-in's name, or a .step file.
        #[arg(long)]
        optimizer: Option<String>,
        /// A .step file (the same as --optimizer FILE.step).
        #[arg(value_name = "FILE.step")]
        file: Option<String>,
        #[arg(long, value_enum, default_value = "cpu")]
        target: Target,
        /// trace | verify | simplify | extract | fuse | lower | clif | ptx | load, or asm: the
        /// machine code of the CPU kernels
        #[arg(long)]
        emit: Option<String>,
        /// Per-phase op counts and bytes per element.
        #[arg(long)]
        stats: bool,
        /// sm_80 (default) or sm_90; with --target cuda.
        #[arg(long)]
        arch: Option<String>,
        #[arg(long)]
        kwargs: Option<String>,
        /// Fuse `clip_grad_norm_(params, MAX)` in front of the step.
        #[arg(long, value_name = "MAX", allow_negative_numbers = true)]
        clip_grad_norm: Option<f64>,
        /// How the kernels store tensors: f32, or bf16 / f16 (with --target cuda).
        #[arg(long, default_value = "f32", value_parser = parse_dtype)]
        dtype: DType,
    },
    /// List the built-in optimizers and their hyperparameters.
    List,
    /// Train a small model with compiled AdamW, Adafactor and a custom Lion; print what happened.
    Demo,
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("optjit: error: {message}");
            ExitCode::from(2)
        }
    }
}

/// The compile target `--target` and `--arch` name.
fn compile_target(target: Target, arch: Option<&str>) -> Result<optjit_runtime::Target, String> {
    match (target, arch) {
        (Target::Cpu, None) => Ok(optjit_runtime::Target::Cpu),
        (Target::Cpu, Some(arch)) => {
            Err(format!("--arch {arch}: only meaningful with --target cuda"))
        }
        (Target::Cuda | Target::Ptx, arch) => Ok(optjit_runtime::Target::Cuda {
            arch: arch
                .map(str::parse)
                .transpose()
                .map_err(|e| format!("--arch: {e}"))?
                .unwrap_or_default(),
        }),
    }
}

/// `f32`, `bf16` or `f16`.
fn parse_dtype(text: &str) -> Result<DType, String> {
    match text {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        _ => Err(format!("unknown dtype '{text}': expected f32, bf16 or f16")),
    }
}

/// `--kwargs`: a JSON object giving each key once.
fn parse_kwargs(text: Option<&str>) -> Result<optjit_optim::Kwargs, String> {
    let Some(text) = text else {
        return Ok(Default::default());
    };
    let kwargs = golden::kwargs_from_json(text).map_err(|e| e.0)?;
    optjit_cli::rule::refuse_duplicate_keys("--kwargs", text)?;
    Ok(kwargs)
}

fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Golden {
            files,
            target,
            resume_at,
            resume_target,
        } => {
            let backend = Backend::from_target(target.name(), 1)?;
            let resume = match (resume_at, resume_target) {
                (None, _) => None,
                (Some(after_step), None) => Some(golden::Resume {
                    after_step,
                    on: backend.clone(),
                }),
                (Some(after_step), Some(other)) => Some(golden::Resume {
                    after_step,
                    on: Backend::from_target(other.name(), 1)?,
                }),
            };
            let (mut passed, mut failed) = (0, 0);
            for file in &files {
                let result =
                    golden::run_file_resuming(file, &backend, resume.as_ref()).map_err(|e| e.0)?;
                println!("{result}");
                if result.passed() {
                    passed += 1;
                } else {
                    failed += 1;
                }
            }
            println!("{passed} passed, {failed} failed");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Bench {
            optimizer,
            workload,
            target,
            steps,
            threads,
            kwargs,
            clip_grad_norm,
            schedule,
            dtype,
        } => {
            let kwargs = parse_kwargs(kwargs.as_deref())?;
            let args = bench::BenchArgs {
                optimizer,
                kwargs,
                clip_grad_norm,
                dtype,
                schedule,
                workload,
                steps,
                threads,
                backend: Backend::from_target(target.name(), threads)?,
            };
            println!("{}", bench::run(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Compile {
            optimizer,
            file,
            target,
            emit,
            stats,
            arch,
            kwargs,
            clip_grad_norm,
            dtype,
        } => {
            let optimizer = match (optimizer, file) {
                (Some(name), None) | (None, Some(name)) => name,
                (Some(_), Some(file)) => {
                    return Err(format!(
                        "{file}: give --optimizer or a .step file, not both"
                    ));
                }
                (None, None) => return Err("compile needs --optimizer NAME or a .step file".into()),
            };
            let target = compile_target(target, arch.as_deref())?;
            let kwargs = parse_kwargs(kwargs.as_deref())?;
            let text = compile::run(
                &optimizer,
                &kwargs,
                clip_grad_norm,
                target,
                dtype,
                emit.as_deref(),
                stats,
            )?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::List => {
            print!("{}", list::run());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            demo::run()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
