//! The `optjit` binary's machine-readable lines and exit statuses, as DESIGN.md specifies them.

use std::path::PathBuf;
use std::process::{Command, Output};

fn optjit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_optjit"))
        .args(args)
        .output()
        .expect("optjit runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn golden(case: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
    root.join(format!("{case}.json")).display().to_string()
}

/// `key=value` tokens of a line, by key.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn golden_prints_one_line_per_case_then_the_counts() {
    let out = optjit(&[
        "golden",
        &golden("sgd-nesterov"),
        &golden("adamw-two-groups"),
    ]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        lines[0].starts_with("PASS sgd-nesterov max_abs_err="),
        "{text}"
    );
    assert!(
        lines[1].starts_with("PASS adamw-two-groups max_abs_err="),
        "{text}"
    );
    assert_eq!(lines[2], "2 passed, 0 failed");
}

#[test]
fn golden_exit_statuses_for_failures_and_unreadable_input() {
    let dir = std::env::temp_dir().join(format!("optjit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let text = std::fs::read_to_string(golden("sgd-plain")).expect("read");
    let mut case: serde_json::Value = serde_json::from_str(&text).expect("json");
    case["expected"][2]["params"][0][1] = serde_json::json!(123.0);
    let bad = dir.join("perturbed.json");
    std::fs::write(&bad, case.to_string()).expect("write");
    let out = optjit(&["golden", bad.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let fail = text.lines().next().expect("a line");
    assert!(
        fail.starts_with("FAIL sgd-plain what=params step=2 group=0 tensor=0 index=1 got="),
        "{fail}"
    );
    assert_eq!(field(fail, "want"), Some("1.23e2"));

    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "{not json").expect("write");
    let out = optjit(&["golden", garbage.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not JSON"),
        "{out:?}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn compile_stats_lists_every_op_kind_with_bytes_per_element() {
    let out = optjit(&[
        "compile",
        "--optimizer",
        "AdamW",
        "--target",
        "cpu",
        "--stats",
    ]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("phase=0 kernels=1 bytes_per_elem=28 "),
        "{text}"
    );
    assert_eq!(field(lines[0], "bytes_read"), Some("16"), "{text}");
    assert_eq!(field(lines[0], "bytes_written"), Some("12"), "{text}");
    assert!(lines[2].starts_with("egraph iterations="), "{text}");
    assert_eq!(field(lines[2], "stop_reason"), Some("saturated"), "{text}");
    assert!(
        lines[1].starts_with("total kernels=1 bytes_per_elem=28 "),
        "{text}"
    );
    for kind in [
        "add", "sub", "mul", "div", "fma", "sqrt", "rsqrt", "exp", "log", "pow", "abs", "sign",
        "min", "max",
    ] {
        assert!(field(lines[1], kind).is_some(), "{kind} missing: {text}");
    }
    assert_eq!(
        (
            field(lines[1], "div"),
            field(lines[1], "sqrt"),
            field(lines[1], "pow")
        ),
        (Some("1"), Some("1"), Some("0"))
    );
}

#[test]
fn clip_grad_norm_adds_a_reducing_phase_that_reads_the_gradient_once() {
    let out = optjit(&[
        "compile",
        "--optimizer",
        "AdamW",
        "--clip-grad-norm",
        "1.0",
        "--stats",
    ]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("phase=0 kernels=1 bytes_per_elem=4 "),
        "{text}"
    );
    assert_eq!(field(lines[0], "reduce"), Some("1"), "{text}");
    assert!(
        lines[1].starts_with("phase=1 kernels=1 bytes_per_elem=28 "),
        "{text}"
    );
    assert!(
        lines[2].starts_with("total kernels=2 bytes_per_elem=32 "),
        "{text}"
    );
    // The clipping costs no per-element arithmetic beyond AdamW's own.
    assert_eq!(
        (
            field(lines[1], "mul"),
            field(lines[1], "div"),
            field(lines[1], "sqrt")
        ),
        (Some("8"), Some("1"), Some("1")),
        "{text}"
    );

    let out = optjit(&[
        "compile",
        "--optimizer",
        "SGD",
        "--clip-grad-norm",
        "-1",
        "--stats",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_norm must be a finite number >= 0, got -1"),
        "{err}"
    );
}

#[test]
fn compile_emits_one_stage_and_rejects_unknown_ones() {
    let out = optjit(&["compile", "--optimizer", "SGD", "--emit", "clif"]);
    assert!(
        stdout(&out).starts_with("function %sgd_phase0"),
        "{}",
        stdout(&out)
    );
    let out = optjit(&["compile", "--optimizer", "SGD", "--emit", "ptx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("target cpu has no ptx stage"));
    let bogus = optjit(&["compile", "--optimizer", "SGD", "--emit", "bogus"]);
    assert_eq!(bogus.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bogus.stderr).contains("unknown stage 'bogus'"));
}

#[test]
fn compile_for_cuda_prints_ptx_for_the_requested_arch() {
    let out = optjit(&[
        "compile",
        "--optimizer",
        "AdamW",
        "--target",
        "cuda",
        "--arch",
        "sm_90",
        "--emit",
        "ptx",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("//\n// optjit kernel adamw.phase0 for sm_90"),
        "{text}"
    );
    assert!(text.contains("\n.version 8.0\n.target sm_90\n"), "{text}");
    let out = optjit(&[
        "compile",
        "--optimizer",
        "AdamW",
        "--target",
        "ptx",
        "--emit",
        "clif",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = optjit(&[
        "compile",
        "--optimizer",
        "AdamW",
        "--target",
        "cuda",
        "--arch",
        "sm_75",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown GPU arch 'sm_75'"));
    let out = optjit(&["compile", "--optimizer", "AdamW", "--arch", "sm_90"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only meaningful with --target cuda"));
}

/// Without a driver (this machine, CI) `--target cuda` is a clean error naming the cause.
#[test]
fn running_on_cuda_without_a_driver_is_a_clean_error() {
    if optjit_runtime::CudaDevice::open(0).is_ok() {
        println!("skipped: a CUDA device is present");
        return;
    }
    let golden = optjit(&["golden", "--target", "cuda", "no-such-file.json"]);
    let bench = optjit(&[
        "bench",
        "--optimizer",
        "AdamW",
        "--workload",
        "big-1x16M",
        "--target",
        "cuda",
    ]);
    for out in [golden, bench] {
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--target cuda: no CUDA"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn bench_prints_the_documented_fields() {
    let out = optjit(&[
        "bench",
        "--optimizer",
        "SGD",
        "--workload",
        "small-1000x4K",
        "--target",
        "cpu",
        "--steps",
        "2",
        "--threads",
        "2",
    ]);
    let text = stdout(&out);
    let line = text.lines().next().expect("a line");
    for key in [
        "workload",
        "optimizer",
        "target",
        "tensors",
        "elems",
        "compile_ms",
        "step_ms_median",
        "melem_per_s",
        "bytes_per_elem",
        "kernels_per_step",
        "compiles",
    ] {
        assert!(field(line, key).is_some(), "{key} missing: {line}");
    }
    assert_eq!(field(line, "tensors"), Some("1000"));
    assert_eq!(field(line, "elems"), Some("4096000"));
    assert_eq!(field(line, "bytes_per_elem"), Some("12"));
    assert_eq!(field(line, "kernels_per_step"), Some("1"));
    let out = optjit(&["bench", "--optimizer", "AdamW", "--workload", "huge"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A PyTorch scheduler put in force by `--schedule` adds no kernel and no byte; a bad one is a
/// located error.
#[test]
fn bench_runs_with_a_schedule_in_force() {
    let bench = |schedule: &str| {
        optjit(&[
            "bench",
            "--optimizer",
            "AdamW",
            "--workload",
            "small-1000x4K",
            "--steps",
            "2",
            "--schedule",
            schedule,
        ])
    };
    let out = bench(r#"{"name": "StepLR", "kwargs": {"step_size": 3, "gamma": 0.5}}"#);
    let text = stdout(&out);
    let line = text.lines().next().expect("a line");
    assert_eq!(field(line, "kernels_per_step"), Some("1"), "{line}");
    assert_eq!(field(line, "bytes_per_elem"), Some("28"), "{line}");
    let out = bench(r#"{"name": "StepLR"}"#);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--schedule: StepLR: step_size"), "{stderr}");
}

#[test]
fn list_names_every_builtin_with_defaults() {
    let text = stdout(&optjit(&["list"]));
    assert!(
        text.contains("AdamW") && text.contains("weight_decay=0.01"),
        "{text}"
    );
    assert!(
        text.contains("SGD") && text.contains("nesterov=False"),
        "{text}"
    );
    // Every scheduler, with its defaults read from its implementation.
    for name in optjit_optim::SCHEDULERS {
        assert!(text.contains(&format!("\n  {name} ")), "{name}: {text}");
    }
    assert!(text.contains("step_size=required, gamma=0.1\n"), "{text}");
    assert!(text.contains("patience=10.0"), "{text}");
}

/// Two processes compiling the same step into one cache directory at once both succeed, and a
/// third finds the entry on disk (the e-graph skipped, reported as a disk hit).
#[test]
fn processes_share_the_disk_cache() {
    let dir = std::env::temp_dir().join(format!("optjit-cli-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bench = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_optjit"));
        command
            .args([
                "bench",
                "--optimizer",
                "Adam",
                "--workload",
                "small-1000x4K",
            ])
            .args([
                "--steps",
                "1",
                "--threads",
                "1",
                "--kwargs",
                r#"{"amsgrad": true}"#,
            ])
            .env("OPTJIT_CACHE_DIR", &dir)
            .env_remove("OPTJIT_CACHE");
        command
    };
    let (first, second) = (bench().spawn(), bench().spawn());
    for child in [first, second] {
        let out = child
            .expect("optjit starts")
            .wait_with_output()
            .expect("optjit runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let third = bench()
        .env("OPTJIT_TIME", "1")
        .output()
        .expect("optjit runs");
    let line = stdout(&third);
    assert_eq!(field(&line, "disk_hits"), Some("1"), "{line}");
    assert_eq!(field(&line, "compiles"), Some("0"), "{line}");
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(
        stderr.contains("disk cache hit: simplify and extract skipped"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

fn example(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    root.join(name).display().to_string()
}

#[test]
fn step_files_compile_bench_and_report_located_errors() {
    // A .step file in place of --optimizer, or as the positional argument.
    let lion = example("lion.step");
    for args in [
        vec!["compile", lion.as_str(), "--stats"],
        vec!["compile", "--optimizer", lion.as_str(), "--stats"],
    ] {
        let out = optjit(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = stdout(&out);
        assert!(
            text.starts_with("phase=0 kernels=1 bytes_per_elem=20 "),
            "{text}"
        );
    }
    let out = optjit(&[
        "bench",
        "--optimizer",
        &lion,
        "--workload",
        "small-1000x4K",
        "--steps",
        "2",
        "--kwargs",
        r#"{"lr": 0.001}"#,
    ]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(field(&text, "optimizer"), Some("lion"), "{text}");
    assert_eq!(field(&text, "bytes_per_elem"), Some("20"), "{text}");

    // A mistake: the file, line and column, the line, a caret, what was expected.
    let dir = std::env::temp_dir().join(format!("optjit-cli-step-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.step");
    std::fs::write(
        &bad,
        "optimizer bad {\n  hyper lr = 0.1\n  param = param - lr * gard\n}\n",
    )
    .expect("write");
    let out = optjit(&["compile", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.step:3:24: unknown name 'gard'; did you mean 'grad'?"),
        "{err}"
    );
    assert!(err.contains("param = param - lr * gard\n"), "{err}");
    let out = optjit(&[
        "bench",
        "--optimizer",
        &lion,
        "--workload",
        "small-1000x4K",
        "--kwargs",
        r#"{"lrr": 1}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'lrr' is not a hyperparameter"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
