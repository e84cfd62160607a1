//! Every built-in's PTX assembles with NVIDIA's ptxas (found through `OPTJIT_PTXAS`, then
//! PATH): sm_80 PTX for sm_80 and sm_90, sm_90 PTX for sm_90, with no spills and no local
//! memory. Without ptxas the test says so and passes, except under CI (`CI` set), where it fails.

mod common;

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

/// Assembles `ptx` for `gpu` with warnings (spills, local memory) as errors.
fn assemble(ptxas: &PathBuf, name: &str, ptx: &str, gpu: &str) {
    let dir = std::env::temp_dir().join(format!("optjit-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join(format!("{name}.ptx"));
    std::fs::write(&input, ptx).expect("write ptx");
    let output = Command::new(ptxas)
        .args([&format!("-arch={gpu}"), "-O3", "--warning-as-error"])
        .args(["--warn-on-spills", "--warn-on-local-memory-usage", "-v"])
        .arg(&input)
        .arg("-o")
        .arg(dir.join(format!("{name}.{gpu}.cubin")))
        .output()
        .expect("run ptxas");
    assert!(
        output.status.success(),
        "ptxas -arch={gpu} rejected {name}:\n{}\n{ptx}",
        String::from_utf8_lossy(&output.stderr)
    );
    let log = String::from_utf8_lossy(&output.stderr);
    let usage = log.lines().find(|l| l.contains("registers")).unwrap_or("");
    println!("{name} on {gpu}: {}", usage.trim());
}

#[test]
fn every_builtin_assembles_for_sm80_and_sm90() {
    let Some(ptxas) = ptxas() else { return };
    for (case, configured) in common::builtin_variants() {
        for (arch, gpus) in [
            (Arch::Sm80, &["sm_80", "sm_90"][..]),
            (Arch::Sm90, &["sm_90"]),
        ] {
            let options = CompileOptions {
                target: Target::Cuda { arch },
                ..CompileOptions::default()
            };
            let compiled = compile(&configured.definition, &options).expect(case);
            let modules = compiled.ptx().expect("cuda target gives ptx");
            assert_eq!(modules.len(), compiled.kernels.len());
            for (module, kernel) in modules.iter().zip(&compiled.kernels) {
                assert!(module.contains(&format!(".target {arch}")), "{module}");
                for gpu in gpus {
                    let name = format!("{case}-{}-{arch}", kernel.name.replace('.', "_"));
                    assemble(&ptxas, &name, module, gpu);
                }
            }
            assert!(compiled.text(Stage::Clif).is_none());
        }
    }
}
