//! Snapshot tests (insta) of every pipeline stage's text, CLIF included, for every built-in
//! variant. Accept changes with `cargo insta review`; CI never updates snapshots.

use optjit::optim::{Adam, AdamW, Configured, Sgd};
use optjit::{CompileOptions, Stage, compile};

fn check(case: &str, configured: Configured) {
    let options = CompileOptions {
        keep_texts: true,
        fma: Some(true),
        ..CompileOptions::default()
    };
    let compiled = compile(&configured.definition, &options).expect("compile");
    for stage in Stage::ALL {
        let text = compiled
            .text(stage)
            .unwrap_or_else(|| panic!("{case}: no text for {stage}"));
        insta::assert_snapshot!(format!("{case}.{:02}-{stage}", stage as usize), text);
    }
}

#[test]
fn sgd() {
    check("sgd", Sgd::new().lr(0.1).build().expect("SGD"));
}

#[test]
fn sgd_momentum() {
    check(
        "sgd-momentum",
        Sgd::new()
            .lr(0.1)
            .momentum(0.9)
            .dampening(0.1)
            .weight_decay(1e-4)
            .build()
            .expect("SGD"),
    );
}

#[test]
fn sgd_nesterov_maximize() {
    check(
        "sgd-nesterov-maximize",
        Sgd::new()
            .momentum(0.9)
            .nesterov(true)
            .maximize(true)
            .build()
            .expect("SGD"),
    );
}

#[test]
fn adam() {
    check("adam", Adam::new().build().expect("Adam"));
}

#[test]
fn adam_amsgrad_maximize() {
    check(
        "adam-amsgrad-maximize",
        Adam::new()
            .amsgrad(true)
            .maximize(true)
            .weight_decay(0.1)
            .build()
            .expect("Adam"),
    );
}

#[test]
fn adamw() {
    check("adamw", AdamW::new().build().expect("AdamW"));
}

#[test]
fn adamw_amsgrad() {
    check(
        "adamw-amsgrad",
        AdamW::new().amsgrad(true).build().expect("AdamW"),
    );
}
