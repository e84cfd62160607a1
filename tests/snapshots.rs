//! Snapshot tests (insta) of every pipeline stage's text, CLIF and PTX included, for every
//! built-in variant and the traced cases of `common::snapshot_cases`. Accept changes with
//! `cargo insta review`; CI never updates snapshots.

mod common;

use optjit::{Arch, CompileOptions, CpuCodegen, Stage, Target, compile};

/// Stage texts of the CPU pipeline, named `<variant>.<index>-<stage>`.
#[test]
fn cpu_stages_of_every_builtin() {
    let cases = common::snapshot_cases().into_iter();
    for (case, definition) in cases.chain(common::factored_cases()) {
        let options = CompileOptions {
            keep_texts: true,
            fma: Some(true),
            ..CompileOptions::default()
        };
        let compiled = compile(&definition, &options).expect("compile");
        let stages = Stage::ALL.into_iter().filter(|&s| s != Stage::Ptx);
        for (index, stage) in stages.enumerate() {
            let text = compiled
                .text(stage)
                .unwrap_or_else(|| panic!("{case}: no text for {stage}"));
            insta::assert_snapshot!(format!("{case}.{index:02}-{stage}"), text);
        }
    }
}

/// x86-64 with AVX2 and FMA, fixed whatever the host, for machine-code snapshots.
const X86_64_AVX2: [&str; 10] = [
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
    "has_avx",
    "has_avx2",
    "has_fma",
    "has_bmi1",
    "has_bmi2",
];

/// The machine code of AdamW (an element walk) and Adafactor (a column walk) for
/// [`X86_64_AVX2`], named `<variant>.asm-x86_64-avx2`; and for every built-in, loops that take
/// their scalars from memory (the record's splatted copy of its scalar row, see
/// `kernels-gen/src/clif.rs`) instead of broadcasting them from a register in every iteration.
#[test]
fn machine_code_of_every_builtin() {
    let codegen = match CpuCodegen::named("x86_64", &X86_64_AVX2) {
        Ok(codegen) => codegen,
        Err(e) if !cfg!(target_arch = "x86_64") => {
            println!("skipped: this Cranelift build has no x86_64 backend ({e})");
            return;
        }
        Err(e) => panic!("x86_64: {e}"),
    };
    let options = CompileOptions {
        fma: Some(true),
        ..CompileOptions::default()
    };
    let cases = common::snapshot_cases().into_iter();
    for (case, definition) in cases.chain(common::factored_cases()) {
        let compiled = compile(&definition, &options).expect("compile");
        let asm = codegen.disassemble(&compiled.kernels).expect("disassemble");
        let asm = asm.join("\n");
        let broadcasts: Vec<&str> = asm
            .lines()
            .filter(|line| line.contains("vbroadcastss %xmm"))
            .collect();
        assert!(broadcasts.is_empty(), "{case}: {broadcasts:?}\n{asm}");
        if ["adamw", "adafactor"].contains(&case) {
            insta::assert_snapshot!(format!("{case}.asm-x86_64-avx2"), asm);
        }
    }
}

/// The PTX of every built-in for each arch, named `<variant>.ptx-<arch>`.
#[test]
fn ptx_of_every_builtin() {
    let cases = common::snapshot_cases().into_iter();
    for (case, definition) in cases.chain(common::factored_cases()) {
        for arch in [Arch::Sm80, Arch::Sm90] {
            let options = CompileOptions {
                keep_texts: true,
                target: Target::Cuda { arch },
                ..CompileOptions::default()
            };
            let compiled = compile(&definition, &options).expect("compile");
            let ptx = compiled.text(Stage::Ptx).expect("ptx text");
            insta::assert_snapshot!(format!("{case}.ptx-{arch}"), ptx);
        }
    }
}

/// The PTX of AdamW with its tensors and states stored as bf16 and as f16 (f32 arithmetic),
/// named `adamw.ptx-<arch>-<dtype>`.
#[test]
fn ptx_of_half_precision_storage() {
    let adamw = optjit::optim::AdamW::new().build().expect("AdamW");
    for storage in [optjit::ir::DType::BF16, optjit::ir::DType::F16] {
        let options = CompileOptions {
            keep_texts: true,
            target: Target::Cuda { arch: Arch::Sm80 },
            storage,
            ..CompileOptions::default()
        };
        let compiled = compile(&adamw.definition, &options).expect("compile");
        let ptx = compiled.text(Stage::Ptx).expect("ptx text");
        insta::assert_snapshot!(format!("adamw.ptx-sm_80-{storage}"), ptx);
    }
}
