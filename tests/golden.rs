//! Golden trajectories recorded from PyTorch replayed through compiled steps (the repository's
//! copy of the files, so a clone needs nothing beside it).

mod common;

use common::GOLDEN_CASES as CASES;
use optjit_cli::golden::{Outcome, run_case, run_file};
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
