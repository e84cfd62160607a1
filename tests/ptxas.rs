//! Generated PTX assembles with NVIDIA's ptxas (found through `OPTJIT_PTXAS`, then PATH): every
//! built-in's kernels (f32, bf16 and f16 storage) and hand-built kernels that use every instruction kind and every reduction
//! op (the block reduction's shuffles, shared memory and barriers) in element and column walks,
//! sm_80 PTX for sm_80 and sm_90, sm_90 PTX for sm_90, with spills and local memory as errors.
//! Without ptxas the tests say so and pass, except under CI (`CI` set), where they fail.

mod common;

use common::kernels;
use optjit::ir::DType;
use optjit::kernels_gen::{Kernel, PtxOptions, emit_ptx};
use optjit::{Arch, CompileOptions, Stage, Target, compile};
use std::path::PathBuf;
use std::process::Command;

/// The ptxas binary, or `None` (a failure under CI).
fn ptxas() -> Option<PathBuf> {
    let candidate = std::env::var_os("OPTJIT_PTXAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ptxas"));
    let found = Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match (found, std::env::var_os("CI").is_some()) {
        (true, _) => Some(candidate),
        (false, true) => panic!(
            "CI is set but ptxas was not found at {} (set OPTJIT_PTXAS; .ci/run installs it)",
            candidate.display()
        ),
        (false, false) => {
            println!("skipped: ptxas not found (set OPTJIT_PTXAS)");
            None
        }
    }
}

/// Assembles `ptx` for `-arch=<gpu>` and returns ptxas's `-v` report, panicking with its
/// stderr (and the PTX) on failure. `tag` makes the temporary file names unique.
fn assemble(ptxas: &PathBuf, ptx: &str, gpu: Arch, tag: &str) -> String {
    let stem = format!("optjit-ptxas-{}-{tag}-{gpu}", std::process::id());
    let input = std::env::temp_dir().join(format!("{stem}.ptx"));
    let output = std::env::temp_dir().join(format!("{stem}.cubin"));
    std::fs::write(&input, ptx).expect("writing the PTX");
    let result = Command::new(ptxas)
        .arg(format!("-arch={gpu}"))
        .args(["-O3", "-v", "--warning-as-error"])
        .args(["--warn-on-spills", "--warn-on-local-memory-usage"])
        .arg("-o")
        .arg(&output)
        .arg(&input)
        .output()
        .expect("running ptxas");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        result.status.success(),
        "ptxas -arch={gpu} failed on {tag} ({}):\n{report}\n--- PTX ---\n{ptx}",
        result.status
    );
    assert!(output.is_file(), "ptxas wrote no {}", output.display());
    // Best effort: a leftover temporary file is harmless.
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    report
}

/// Which GPUs the PTX of each arch must assemble for.
const ARCHES: [(Arch, &[Arch]); 2] = [
    (Arch::Sm80, &[Arch::Sm80, Arch::Sm90]),
    (Arch::Sm90, &[Arch::Sm90]),
];

#[test]
fn every_builtin_assembles_for_sm80_and_sm90() {
    let Some(ptxas) = ptxas() else { return };
    let cases = common::snapshot_cases().into_iter();
    for (case, definition) in cases.chain(common::factored_cases()) {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for (arch, gpus) in ARCHES {
                let options = CompileOptions {
                    target: Target::Cuda { arch },
                    storage: dtype,
                    ..CompileOptions::default()
                };
                let compiled = compile(&definition, &options).expect(case);
                let modules = compiled.ptx().expect("cuda target gives ptx");
                assert_eq!(modules.len(), compiled.kernels.len());
                assert!(compiled.text(Stage::Clif).is_none());
                for (module, kernel) in modules.iter().zip(&compiled.kernels) {
                    assert!(module.contains(&format!(".target {arch}")), "{module}");
                    for &gpu in gpus {
                        let name = kernel.name.replace('.', "_");
                        let tag = format!("{case}-{dtype}-{name}-{arch}");
                        let report = assemble(&ptxas, module, gpu, &tag);
                        let usage = report.lines().find(|l| l.contains("registers"));
                        println!("{tag} on {gpu}: {}", usage.unwrap_or("").trim());
                    }
                }
            }
        }
    }
}

/// Emits a hand-built `kernel` for each arch and assembles it.
fn check(kernel: &Kernel, tag: &str) {
    let Some(ptxas) = ptxas() else { return };
    kernel.validate().expect("a valid kernel");
    for (arch, gpus) in ARCHES {
        let ptx = emit_ptx(kernel, &PtxOptions { arch }).expect("emits");
        for &gpu in gpus {
            let report = assemble(&ptxas, &ptx, gpu, &format!("{tag}-{arch}"));
            assert!(report.contains("Used"), "a -v report\n{report}");
        }
    }
}

#[test]
fn every_instruction_kind_assembles() {
    let kernel = kernels::every_instruction();
    kernel.validate().expect("a valid kernel");
    check(&kernel, "every");
}

#[test]
fn a_kernel_without_scalars_assembles() {
    check(&kernels::no_scalars(), "no_scalars");
}

#[test]
fn adamw_assembles() {
    check(&kernels::adamw(), "adamw");
}

#[test]
fn reductions_assemble() {
    check(&kernels::reductions(), "reductions");
}

#[test]
fn column_walks_assemble() {
    check(&kernels::column_walk(), "column-walk");
}

/// The same kernels with f16 and bf16 storage (16-bit loads and stores, f32 arithmetic).
#[test]
fn half_precision_kernels_assemble() {
    for dtype in [DType::F16, DType::BF16] {
        for (mut kernel, name) in [
            (kernels::every_instruction(), "every-instruction"),
            (kernels::reductions(), "reductions"),
            (kernels::column_walk(), "column-walk"),
        ] {
            kernel.elem_dtype = dtype;
            check(&kernel, &format!("{name}-{dtype}"));
        }
    }
}
