//! Snapshot tests (insta) of every pipeline stage's text, CLIF and PTX included, for every
//! built-in variant and the traced cases of `common::snapshot_cases`. Accept changes with
//! `cargo insta review`; CI never updates snapshots.

mod common;

use optjit::{Arch, CompileOptions, Stage, Target, compile};

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
