//! What several integration tests share: the golden cases the built-ins pass, and one
//! configuration of every built-in variant.
#![allow(dead_code)] // each test crate uses a part

pub mod kernels;
pub mod sim_gpu;

use optjit::optim::{
    Adadelta, Adagrad, Adam, AdamW, Adamax, Asgd, Configured, Lamb, Lars, Lion, NAdam, RAdam,
    RmsProp, Rprop, Sgd,
};
use optjit::{Definition, Domain, Tracer, select};
use std::path::{Path, PathBuf};

/// The golden cases the built-ins of this version must pass (those in a subfolder extend the
/// format: scheduler arguments per group, param groups with rules of their own).
pub const GOLDEN_CASES: [&str; 46] = [
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
    "custom-lion",
    "custom-schedule-warmup-cosine",
    "sched-constant",
    "sched-cosine-restarts",
    "sched-cosine",
    "sched-cyclic-triangular2",
    "sched-exponential",
    "sched-linear",
    "sched-multistep",
    "sched-onecycle-cos",
    "sched-plateau",
    "sched-polynomial",
    "sched-sequential-warmup-cosine",
    "sched-step",
    "adamw-onecycle-betas",
    "nadam",
    "radam",
    "lion",
    "lamb",
    "lars",
    "adagrad",
    "rmsprop",
    "rmsprop-centered-momentum",
    "adadelta",
    "adamax",
    "rprop",
    "asgd",
    "adafactor",
    "sched-groups/sched-groups-cyclic-lists",
    "sched-groups/sched-groups-onecycle-maxlr-list",
    "sched-groups/sched-groups-plateau-minlr-list",
    "groups/groups-adam-amsgrad-per-group",
    "groups/groups-mixed-adamw-sgd",
    "groups/groups-adamw-none-grads",
    "groups/groups-nadam-none-grads",
];

/// The non-finite cases (`tests/golden/nonfinite/`, recorded by its `gen.py`): inf, -inf and
/// NaN in parameters and gradients, for every built-in.
pub const NONFINITE_CASES: [&str; 36] = [
    "nonfinite/adadelta",
    "nonfinite/adadelta-wd-maximize",
    "nonfinite/adafactor",
    "nonfinite/adafactor-wd-maximize",
    "nonfinite/adagrad",
    "nonfinite/adagrad-wd-maximize",
    "nonfinite/adam",
    "nonfinite/adam-l2-amsgrad",
    "nonfinite/adam-low-beta1",
    "nonfinite/adamax",
    "nonfinite/adamax-wd",
    "nonfinite/adamw",
    "nonfinite/adamw-amsgrad-maximize",
    "nonfinite/adamw-clip",
    "nonfinite/asgd",
    "nonfinite/asgd-wd",
    "nonfinite/lamb",
    "nonfinite/lamb-no-decay",
    "nonfinite/lars",
    "nonfinite/lars-no-decay-nesterov",
    "nonfinite/lion",
    "nonfinite/lion-no-decay",
    "nonfinite/nadam",
    "nonfinite/nadam-decoupled-wd",
    "nonfinite/nadam-l2",
    "nonfinite/radam",
    "nonfinite/radam-decoupled-wd",
    "nonfinite/radam-l2",
    "nonfinite/rmsprop",
    "nonfinite/rmsprop-centered-low-alpha",
    "nonfinite/rmsprop-centered-momentum-wd",
    "nonfinite/rprop",
    "nonfinite/rprop-maximize",
    "nonfinite/sgd",
    "nonfinite/sgd-momentum-wd",
    "nonfinite/sgd-nesterov-maximize",
];

/// The repository's copy of golden case `case`: in the checkout the test was built in, or,
/// for a test binary carried to another machine (`benches/gpu-prepare.sh`), under the current
/// directory.
pub fn golden_path(case: &str) -> PathBuf {
    let file = Path::new("tests/golden").join(format!("{case}.json"));
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).join(&file);
    match built_in.exists() {
        true => built_in,
        false => file,
    }
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
        ("adagrad", Adagrad::new().build().expect("Adagrad")),
        ("rmsprop", RmsProp::new().build().expect("RMSprop")),
        (
            "rmsprop-centered-momentum",
            RmsProp::new()
                .centered(true)
                .momentum(0.9)
                .build()
                .expect("RMSprop"),
        ),
        ("adadelta", Adadelta::new().build().expect("Adadelta")),
        ("adamax", Adamax::new().build().expect("Adamax")),
        ("rprop", Rprop::new().build().expect("Rprop")),
        ("asgd", Asgd::new().build().expect("ASGD")),
        ("nadam", NAdam::new().build().expect("NAdam")),
        ("radam", RAdam::new().build().expect("RAdam")),
        ("lion", Lion::new().build().expect("Lion")),
        ("lamb", Lamb::new().build().expect("LAMB")),
        ("lars", Lars::new().build().expect("LARS")),
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

/// A step that uses every per-tensor reduction: LARS-style trust ratio from two norms, a
/// gradient centred by its mean, scaled by its largest magnitude, and a sum in a state (of
/// magnitudes: kernels sum in f32 lanes, so a sum that cancels to far below its terms' would
/// differ from the f64 reference by more than this test's tolerance).
pub fn per_tensor_reductions() -> Definition {
    let t = Tracer::new("per_tensor");
    let lr = t.hyper_in("lr", 0.05, Domain::non_negative());
    let eps = t.hyper_in("eps", 1e-3, Domain::non_negative());
    let (param, grad) = (t.param(), t.grad());
    let total = t.state("total", 0.0);
    let trust = param.norm() / (grad.norm() + &eps);
    let centred = &grad - grad.mean();
    let scaled = &centred / (centred.max_abs() + &eps);
    t.set_param(&param - &lr * trust * scaled);
    t.set_state(&total, &total + grad.abs().sum());
    t.finish().expect("traces")
}

/// AdamW as a paper writes it: bias-corrected moments per element, the correction of the
/// second moment under the square root, and decoupled weight decay as its own term (the first
/// moment is PyTorch's lerp, as the built-in's, so that both agree on non-finite values).
pub fn adamw_naive() -> Definition {
    let t = Tracer::new("adamw_naive");
    let lr = t.hyper_in("lr", 1e-3, Domain::non_negative());
    let beta1 = t.hyper_in("beta1", 0.9, Domain::unit_half_open());
    let beta2 = t.hyper_in("beta2", 0.999, Domain::unit_half_open());
    let eps = t.hyper_in("eps", 1e-8, Domain::non_negative());
    let wd = t.hyper_in("weight_decay", 1e-2, Domain::non_negative());
    let (param, grad, step) = (t.param(), t.grad(), t.step());
    let exp_avg = t.state("exp_avg", 0.0);
    let exp_avg_sq = t.state("exp_avg_sq", 0.0);

    // PyTorch's `exp_avg.lerp_(grad, 1 - beta1)`, in ATen's two forms (docs/nonfinite.md).
    let w = 1.0 - &beta1;
    let small = w.abs().lt(0.5);
    let m = select(&small, &exp_avg, &grad) + select(&small, &w, &w - 1.0) * (&grad - &exp_avg);
    let v = &beta2 * &exp_avg_sq + (1.0 - &beta2) * grad.pow(2.0);
    let m_hat = &m / (1.0 - beta1.pow(&step));
    let v_hat = &v / (1.0 - beta2.pow(&step));
    let decayed = &param - &lr * &wd * &param;
    t.set_param(decayed - &lr * m_hat / (v_hat.sqrt() + &eps));
    t.set_state(&exp_avg, m);
    t.set_state(&exp_avg_sq, v);
    t.finish().expect("traces")
}

/// AdaBelief written naively: the belief `(g - m)^2` in the second moment, bias corrections per
/// element, the second one under the square root.
pub fn adabelief_naive() -> Definition {
    let t = Tracer::new("adabelief_naive");
    let lr = t.hyper_in("lr", 1e-3, Domain::non_negative());
    let beta1 = t.hyper_in("beta1", 0.9, Domain::unit_half_open());
    let beta2 = t.hyper_in("beta2", 0.999, Domain::unit_half_open());
    let eps = t.hyper_in("eps", 1e-16, Domain::non_negative());
    let wd = t.hyper_in("weight_decay", 0.0, Domain::non_negative());
    let (param, grad, step) = (t.param(), t.grad(), t.step());
    let exp_avg = t.state("exp_avg", 0.0);
    let exp_avg_var = t.state("exp_avg_var", 0.0);

    let m = &beta1 * &exp_avg + (1.0 - &beta1) * &grad;
    let belief = (&grad - &m).pow(2.0);
    let s = &beta2 * &exp_avg_var + (1.0 - &beta2) * belief + &eps;
    let m_hat = &m / (1.0 - beta1.pow(&step));
    let s_hat = &s / (1.0 - beta2.pow(&step));
    let decayed = &param * (1.0 - &lr * &wd);
    t.set_param(decayed - &lr * m_hat / (s_hat.sqrt() + &eps));
    t.set_state(&exp_avg, m);
    t.set_state(&exp_avg_var, s);
    t.finish().expect("traces")
}

/// Adafactor's two compiled steps: for matrices (`adafactor`, with a column walk) and for
/// vectors (`adafactor-1d`, specialized to one row as an optimizer compiles it).
pub fn factored_cases() -> Vec<(&'static str, Definition)> {
    let configured = optjit::optim::Adafactor::new().build().expect("Adafactor");
    let mut one_row = configured.definition.clone();
    one_row.graph = optjit::ir::specialize_one_row(&configured.definition.graph, 1);
    vec![
        ("adafactor", configured.definition),
        ("adafactor-1d", one_row),
    ]
}

/// Every case whose stages are snapshotted and whose PTX is assembled (with
/// [`factored_cases`]): the built-in variants, then definitions traced in the tests (naive
/// forms, per-tensor reductions).
pub fn snapshot_cases() -> Vec<(&'static str, Definition)> {
    let mut cases: Vec<(&'static str, Definition)> = builtin_variants()
        .into_iter()
        .map(|(name, configured)| (name, configured.definition))
        .collect();
    cases.push(("adamw-naive", adamw_naive()));
    cases.push(("adabelief-naive", adabelief_naive()));
    cases.push(("per-tensor-reductions", per_tensor_reductions()));
    cases
}
