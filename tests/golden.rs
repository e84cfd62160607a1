//! Golden trajectories recorded from PyTorch replayed through compiled steps (the repository's
//! copy of the files, so a clone needs nothing beside it).

mod common;

use common::GOLDEN_CASES as CASES;
use common::NONFINITE_CASES;
use common::sim_gpu::SimGpu;
use optjit::CudaOptimizer;
use optjit_cli::golden::{Outcome, Resume, run_case, run_file, run_file_resuming};
use optjit_cli::stepper::Backend;
use std::path::{Path, PathBuf};

fn cpu(threads: usize) -> Backend {
    Backend::Cpu { threads }
}

fn path(case: &str) -> PathBuf {
    common::golden_path(case)
}

fn check(case: &str, threads: usize) {
    let result = run_file(&path(case), &cpu(threads)).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert!(result.passed(), "{result}");
}

#[test]
fn sgd_cases_pass() {
    CASES
        .iter()
        .filter(|c| c.starts_with("sgd"))
        .for_each(|c| check(c, 1));
}

#[test]
fn adam_cases_pass() {
    CASES
        .iter()
        .filter(|c| c.starts_with("adam-"))
        .for_each(|c| check(c, 1));
}

#[test]
fn adamw_cases_pass() {
    CASES
        .iter()
        .filter(|c| c.starts_with("adamw"))
        .for_each(|c| check(c, 1));
}

#[test]
fn cases_pass_with_several_threads() {
    CASES.iter().for_each(|c| check(c, 4));
}

/// Non-finite parameters and gradients (inf, -inf, NaN) give what PyTorch (or optax) gives,
/// for every built-in: parameters after every step and the final states, non-finite values
/// matched by class.
#[test]
fn nonfinite_cases_pass() {
    NONFINITE_CASES.iter().for_each(|c| check(c, 1));
}

#[test]
fn nonfinite_cases_pass_with_several_threads() {
    NONFINITE_CASES.iter().for_each(|c| check(c, 4));
}

/// The same cases through the GPU path, its PTX kernels on the interpreter.
#[test]
fn nonfinite_cases_pass_in_the_simulator() {
    let sim = Backend::Other {
        name: "sim",
        open: |definition, setup| {
            let optimizer = CudaOptimizer::new(definition, setup, SimGpu::new())?;
            Ok(Box::new(optimizer))
        },
    };
    for case in NONFINITE_CASES {
        let result = run_file(&path(case), &sim).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(result.passed(), "{result}");
    }
}

/// States holding inf and NaN go through a checkpoint unchanged: a run resumed after step 1
/// ends as the uninterrupted one.
#[test]
fn nonfinite_cases_resume_from_a_checkpoint() {
    for case in NONFINITE_CASES {
        let plain = run_file(&path(case), &cpu(1)).unwrap_or_else(|e| panic!("{case}: {e}"));
        let resume = Resume {
            after_step: 1,
            on: cpu(1),
        };
        let resumed = run_file_resuming(&path(case), &cpu(1), Some(&resume))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(plain.passed(), "{plain}");
        assert_eq!(resumed, plain, "{case}");
    }
}

/// `tests/golden/nonfinite/` holds exactly the listed cases (a new recording is not skipped).
#[test]
fn every_nonfinite_file_is_listed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/nonfinite");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/golden/nonfinite")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            format!(
                "nonfinite/{}",
                p.file_stem().expect("stem").to_string_lossy()
            )
        })
        .collect();
    files.sort();
    let mut listed: Vec<String> = NONFINITE_CASES.iter().map(|c| c.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
}

/// A non-finite expectation matches only its own class: an infinity is not met by a finite
/// value or the other infinity, NaN by no number, and a finite value by no infinity.
#[test]
fn nonfinite_expectations_match_by_class() {
    let text = std::fs::read_to_string(path("nonfinite/adam")).expect("read");
    let case: serde_json::Value = serde_json::from_str(&text).expect("json");
    let last = case["expected"].as_array().expect("steps").len() - 1;
    // Find a +inf, a NaN and a finite value among the expected parameters of the last step.
    let params = &case["expected"][last]["params"];
    let find = |want: &dyn Fn(&serde_json::Value) -> bool| {
        (0..4)
            .flat_map(|t| (0..params[t].as_array().map_or(0, Vec::len)).map(move |i| (t, i)))
            .find(|&(t, i)| want(&params[t][i]))
            .expect("the case holds such a value")
    };
    let inf = find(&|v| v == "inf");
    let nan = find(&|v| v == "nan");
    let finite = find(&|v| v.is_number());
    let finite_value = params[finite.0][finite.1].clone();
    for ((t, i), replacement) in [
        (inf, serde_json::json!(3.0e38)),
        (inf, serde_json::json!("-inf")),
        (inf, serde_json::json!("nan")),
        (nan, finite_value),
        (nan, serde_json::json!("inf")),
        (finite, serde_json::json!("inf")),
        (finite, serde_json::json!("nan")),
    ] {
        let mut changed = case.clone();
        changed["expected"][last]["params"][t][i] = replacement.clone();
        let result = run_case(&changed, &cpu(1)).expect("runs");
        let Outcome::Fail(m) = result.outcome else {
            panic!("{replacement} in place of params[{t}][{i}] not detected: {result}")
        };
        assert_eq!(
            (m.what, m.step, m.tensor, m.index),
            ("params", last, t.to_string(), i),
            "{replacement}"
        );
    }
    // And a file naming a number any other way is refused with the field's name.
    let mut bad = case.clone();
    bad["init"][3][0] = serde_json::json!("Infinity");
    let e = run_case(&bad, &cpu(1)).expect_err("refused");
    assert!(e.to_string().contains("init[3]"), "{e}");
}

/// Scheduler arguments given per param group (`OneCycleLR(max_lr=[...])`, CyclicLR's bounds,
/// ReduceLROnPlateau's `min_lr`): every case in `tests/golden/sched-groups/`.
#[test]
fn per_group_schedule_cases_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sched-groups");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/golden/sched-groups")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "expected 3 cases, found {}", files.len());
    for file in files {
        for threads in [1, 3] {
            let result = run_file(&file, &cpu(threads)).unwrap_or_else(|e| panic!("{e}"));
            assert!(result.passed(), "{}: {result}", file.display());
        }
    }
}

/// Every recorded file is readable by the runner; cases that need later features say so
/// instead of passing or crashing.
#[test]
fn every_golden_file_is_understood() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/golden")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 39,
        "expected the full golden set, found {}",
        files.len()
    );
    for file in files {
        let result = run_file(&file, &cpu(1)).unwrap_or_else(|e| panic!("{e}"));
        if let Outcome::Fail(m) = &result.outcome {
            panic!("{} ran and disagreed: {result} ({m:?})", file.display());
        }
    }
}

/// The comparison can fail: a perturbed recording is caught at the right step and element.
#[test]
fn a_perturbed_recording_fails_where_it_was_perturbed() {
    let text = std::fs::read_to_string(path("adamw-default")).expect("read");
    let mut case: serde_json::Value = serde_json::from_str(&text).expect("json");
    let want = case["expected"][3]["params"][2][5]
        .as_f64()
        .expect("number");
    case["expected"][3]["params"][2][5] = serde_json::json!(want + 1e-3);
    let result = run_case(&case, &cpu(1)).expect("runs");
    let Outcome::Fail(m) = result.outcome else {
        panic!("perturbation not detected: {result}")
    };
    assert_eq!(
        (m.what, m.step, m.tensor.as_str(), m.index),
        ("params", 3, "2", 5)
    );

    let mut case: serde_json::Value = serde_json::from_str(&text).expect("json");
    case["final_state"][1]["exp_avg_sq"][4] = serde_json::json!(1.0);
    let result = run_case(&case, &cpu(1)).expect("runs");
    let Outcome::Fail(m) = result.outcome else {
        panic!("state perturbation not detected: {result}")
    };
    assert_eq!(
        (m.what, m.tensor.as_str(), m.index),
        ("state", "1.exp_avg_sq", 4)
    );

    let mut case: serde_json::Value = serde_json::from_str(&text).expect("json");
    case["expected"][0]["hyper"][0]["lr"] = serde_json::json!(0.002);
    let result = run_case(&case, &cpu(1)).expect("runs");
    let Outcome::Fail(m) = result.outcome else {
        panic!("hyper perturbation not detected: {result}")
    };
    assert_eq!((m.what, m.step), ("hyper", 0));
}

/// Adafactor's factored states are compared too: a matrix's `col_var`, a 3-d tensor's
/// `row_var` (rows of both matrices, row-major) and a vector's `variance`.
#[test]
fn a_perturbed_adafactor_state_fails_where_it_was_perturbed() {
    check("adafactor", 1);
    let text = std::fs::read_to_string(path("adafactor")).expect("read");
    for (tensor, state, index) in [(1, "col_var", 4), (3, "row_var", 5), (0, "variance", 6)] {
        let mut case: serde_json::Value = serde_json::from_str(&text).expect("json");
        let want = case["final_state"][tensor][state][index]
            .as_f64()
            .expect("number");
        case["final_state"][tensor][state][index] = serde_json::json!(want * 1.001);
        let result = run_case(&case, &cpu(1)).expect("runs");
        let Outcome::Fail(m) = result.outcome else {
            panic!("{state} perturbation not detected: {result}")
        };
        let name = format!("{tensor}.{state}");
        assert_eq!(
            (m.what, m.tensor.as_str(), m.index),
            ("state", name.as_str(), index)
        );
    }
}
