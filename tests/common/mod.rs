//! What several integration tests share: the golden cases the built-ins pass, and one
//! configuration of every built-in variant.
#![allow(dead_code)] // each test crate uses a part

use optjit::optim::{Adam, AdamW, Configured, Sgd};
use std::path::{Path, PathBuf};

/// The golden cases the built-ins of this version must pass.
pub const GOLDEN_CASES: [&str; 11] = [
    "sgd-plain",
    "sgd-momentum-wd",
    "sgd-nesterov",
    "sgd-dampening-maximize",
    "adam-default",
    "adam-l2-amsgrad",
    "adamw-default",
    "adamw-betas-wd",
    "adamw-two-groups",
    "adamw-clip",
    "sgd-clip-momentum",
];

/// The repository's copy of golden case `case`.
pub fn golden_path(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{case}.json"))
}

/// Every built-in variant (each distinct kernel shape), named as in the snapshots.
pub fn builtin_variants() -> Vec<(&'static str, Configured)> {
    vec![
        ("sgd", Sgd::new().lr(0.1).build().expect("SGD")),
        (
            "sgd-momentum",
            Sgd::new()
                .lr(0.1)
                .momentum(0.9)
                .dampening(0.1)
                .weight_decay(1e-4)
                .build()
                .expect("SGD"),
        ),
        (
            "sgd-nesterov-maximize",
            Sgd::new()
                .momentum(0.9)
                .nesterov(true)
                .maximize(true)
                .build()
                .expect("SGD"),
        ),
        ("adam", Adam::new().build().expect("Adam")),
        (
            "adam-amsgrad-maximize",
            Adam::new()
                .amsgrad(true)
                .maximize(true)
                .weight_decay(0.1)
                .build()
                .expect("Adam"),
        ),
        ("adamw", AdamW::new().build().expect("AdamW")),
        (
            "adamw-amsgrad",
            AdamW::new().amsgrad(true).build().expect("AdamW"),
        ),
        (
            "adamw-clip",
            AdamW::new()
                .build()
                .and_then(|c| c.with_clip_grad_norm(1.0))
                .expect("AdamW with clip_grad_norm"),
        ),
        (
            "sgd-momentum-clip",
            Sgd::new()
                .lr(0.05)
                .momentum(0.9)
                .build()
                .and_then(|c| c.with_clip_grad_norm(0.5))
                .expect("SGD with clip_grad_norm"),
        ),
    ]
}
