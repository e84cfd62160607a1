//! The `optjit` binary: golden, bench, compile, list and demo.

use clap::{Parser, Subcommand, ValueEnum};
use optjit_cli::{bench, compile, demo, golden, list};
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
    Ptx,
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
    },
    /// Time the compiled step of a built-in on a workload.
    Bench {
        #[arg(long)]
        optimizer: String,
        /// big-1x16M | gpt2s-148 | small-1000x4K
        #[arg(long)]
        workload: String,
        #[arg(long, value_enum, default_value = "cpu")]
        target: Target,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Worker threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Keyword arguments as JSON, e.g. '{"amsgrad": true}'.
        #[arg(long)]
        kwargs: Option<String>,
        #[arg(long)]
        clip_grad_norm: Option<f64>,
    },
    /// Compile a built-in and print a stage's text (all stages by default).
    Compile {
        #[arg(long)]
        optimizer: String,
        #[arg(long, value_enum, default_value = "cpu")]
        target: Target,
        /// trace | verify | simplify | extract | fuse | lower | clif | load
        #[arg(long)]
        emit: Option<String>,
        /// Per-phase op counts and bytes per element.
        #[arg(long)]
        stats: bool,
        #[arg(long)]
        arch: Option<String>,
        #[arg(long)]
        kwargs: Option<String>,
        #[arg(long)]
        clip_grad_norm: Option<f64>,
    },
    /// List the built-in optimizers and their hyperparameters.
    List,
    /// Train a small model with compiled AdamW and a custom Lion; print what happened.
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

fn cpu_only(target: Target) -> Result<(), String> {
    match target {
        Target::Cpu => Ok(()),
        Target::Cuda | Target::Ptx => {
            Err("--target cuda: the GPU backend is not built yet (CPU only)".into())
        }
    }
}

fn no_clipping(clip: Option<f64>) -> Result<(), String> {
    match clip {
        None => Ok(()),
        Some(x) => Err(format!(
            "--clip-grad-norm {x}: gradient clipping is not supported yet"
        )),
    }
}

fn parse_kwargs(text: Option<&str>) -> Result<optjit_optim::Kwargs, String> {
    text.map_or(Ok(Default::default()), |t| {
        golden::kwargs_from_json(t).map_err(|e| e.0)
    })
}

fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Golden { files, target } => {
            cpu_only(target)?;
            let (mut passed, mut failed) = (0, 0);
            for file in &files {
                let result = golden::run_file(file, 1).map_err(|e| e.0)?;
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
        } => {
            cpu_only(target)?;
            no_clipping(clip_grad_norm)?;
            let kwargs = parse_kwargs(kwargs.as_deref())?;
            let args = bench::BenchArgs {
                optimizer,
                kwargs,
                workload,
                steps,
                threads,
            };
            println!("{}", bench::run(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Compile {
            optimizer,
            target,
            emit,
            stats,
            arch,
            kwargs,
            clip_grad_norm,
        } => {
            cpu_only(target)?;
            no_clipping(clip_grad_norm)?;
            if let Some(arch) = arch {
                return Err(format!("--arch {arch}: only meaningful with --target cuda"));
            }
            let kwargs = parse_kwargs(kwargs.as_deref())?;
            print!(
                "{}",
                compile::run(&optimizer, &kwargs, emit.as_deref(), stats)?
            );
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
