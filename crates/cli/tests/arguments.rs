//! What the command line refuses with a reason (no steps to time, more threads than the pool
//! holds, a JSON key given twice, an unknown `OPTJIT_TIME`), and `--schedule` given a `.step`
//! file, which puts its schedules in force as the JSON form puts a PyTorch scheduler.

use optjit_cli::rule::{choose, refuse_duplicate_keys, with_schedule};
use optjit_optim::Kwargs;
use optjit_runtime::{Optimizer, Setup};
use std::path::PathBuf;
use std::process::{Command, Output};

fn optjit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_optjit"))
        .args(args)
        .output()
        .expect("optjit runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `optjit bench` of SGD on the small workload with `extra` arguments.
fn bench(extra: &[&str]) -> Output {
    let mut args = vec!["bench", "--optimizer", "SGD", "--workload", "small-1000x4K"];
    args.extend_from_slice(extra);
    optjit(&args)
}

/// A refusal: exit status 2, `message` on stderr, nothing on stdout.
fn assert_refused(out: &Output, message: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(message), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn example(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    root.join(name).display().to_string()
}

/// A fresh directory of this process's for files a test writes.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("optjit-args-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn bench_refuses_zero_steps_instead_of_printing_nan() {
    let out = bench(&["--steps", "0"]);
    assert_refused(
        &out,
        "optjit: error: --steps 0: nothing to time (give at least 1 step)",
    );
}

#[test]
fn bench_refuses_more_threads_than_the_pool_names_the_cap() {
    let cap = optjit_runtime::max_threads();
    let out = bench(&["--steps", "1", "--threads", "1000"]);
    assert_refused(
        &out,
        &format!("--threads 1000: at most {cap} here (the size of the worker pool"),
    );
    // The cap itself is accepted, and reported as used.
    let out = bench(&["--steps", "1", "--threads", &cap.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!(" threads={cap} ")), "{text}");
}

#[test]
fn a_json_key_given_twice_is_refused_by_name() {
    let out = bench(&[
        "--steps",
        "1",
        "--kwargs",
        r#"{"lr": 0.1, "momentum": 0.9, "lr": 0.2}"#,
    ]);
    assert_refused(
        &out,
        "optjit: error: --kwargs: the key \"lr\" is given twice",
    );
    let out = optjit(&[
        "compile",
        "--optimizer",
        "AdamW",
        "--stats",
        "--kwargs",
        r#"{"betas": [0.9, 0.99], "\u0062etas": [0.8, 0.9]}"#,
    ]);
    assert_refused(&out, "--kwargs: the key \"betas\" is given twice");
    let out = bench(&[
        "--steps",
        "1",
        "--schedule",
        r#"{"name": "StepLR", "kwargs": {"step_size": 2, "gamma": 0.5, "step_size": 3}}"#,
    ]);
    assert_refused(
        &out,
        "--schedule: the key \"step_size\" in kwargs is given twice",
    );

    // The same key in different objects, and strings that look like keys, are not twice.
    for fine in [
        r#"{"name": "SequentialLR", "kwargs": {"schedulers": [["StepLR", {"step_size": 1}], ["StepLR", {"step_size": 2}]], "milestones": [3]}}"#,
        r#"{"a": "b", "b": {"a": "\"a\", \"a\": 1"}, "c": ["a", "a"]}"#,
        "{}",
    ] {
        assert_eq!(refuse_duplicate_keys("--schedule", fine), Ok(()), "{fine}");
    }
    assert_eq!(
        refuse_duplicate_keys(
            "--schedule",
            r#"{"kwargs": {"schedulers": [["StepLR", {"gamma": 1, "gamma": 2}]]}}"#
        ),
        Err("--schedule: the key \"gamma\" in kwargs.schedulers is given twice".into())
    );
}

/// A schedule from a `.step` file changes the step as the JSON form of the same schedule does.
#[test]
fn a_step_file_schedule_is_applied_like_the_json_form() {
    let dir = temp_dir("schedule");
    let file = dir.join("halve.step");
    std::fs::write(
        &file,
        "# lr halves every step, as ExponentialLR(gamma=0.5)\nschedule halve {\n  lr = lr * pow(0.5, t)\n}\n",
    )
    .expect("write");
    let mut kwargs = Kwargs::new();
    kwargs.insert("lr".into(), optjit_optim::Kwarg::Number(1.0));
    let trajectory = |schedule: &str| -> Vec<f32> {
        let chosen = choose("SGD", &kwargs, None).expect("SGD");
        let chosen = with_schedule(chosen, schedule).expect("the schedule applies");
        let setup = Setup {
            shapes: vec![vec![1]],
            hypers: chosen.hypers.clone(),
            threads: 1,
            ..Setup::default()
        };
        let mut opt = Optimizer::new(&chosen.definition, setup).expect("compile");
        let mut params = vec![vec![0.0f32]];
        (0..4)
            .map(|_| {
                opt.step(&mut params, &[vec![1.0f32]]).expect("step");
                params[0][0]
            })
            .collect()
    };
    let from_file = trajectory(file.to_str().expect("utf8"));
    let from_json = trajectory(r#"{"name": "ExponentialLR", "kwargs": {"gamma": 0.5}}"#);
    assert_eq!(from_file, vec![-1.0, -1.5, -1.75, -1.875]);
    assert_eq!(from_file, from_json);

    // A schedule's own hyperparameters come in at the values it declares.
    let chosen = choose("AdamW", &Kwargs::new(), None).expect("AdamW");
    let chosen = with_schedule(chosen, &example("warmup_cosine.step")).expect("applies");
    assert_eq!(chosen.hypers["warmup"], 1000.0);
    assert_eq!(chosen.hypers["lr"], 1e-3);

    // From the command line: no kernel and no byte more.
    let out = optjit(&[
        "bench",
        "--optimizer",
        "AdamW",
        "--workload",
        "small-1000x4K",
        "--steps",
        "2",
        "--schedule",
        &example("warmup_cosine.step"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" kernels_per_step=1 "), "{text}");
    assert!(text.contains(" bytes_per_elem=28 "), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_schedule_file_must_hold_schedules_only() {
    let dir = temp_dir("schedule-refused");
    let lion = example("lion.step");
    let out = bench(&["--steps", "1", "--schedule", &lion]);
    assert_refused(
        &out,
        &format!("--schedule {lion}: the file has an `optimizer` block; give it as --optimizer"),
    );
    let empty = dir.join("empty.step");
    std::fs::write(&empty, "# nothing\n").expect("write");
    let empty = empty.display().to_string();
    let out = bench(&["--steps", "1", "--schedule", &empty]);
    assert_refused(
        &out,
        &format!("{empty}:2:1: expected `optimizer` or `schedule`"),
    );
    let missing = dir.join("missing.step").display().to_string();
    let out = bench(&["--steps", "1", "--schedule", &missing]);
    assert_refused(&out, &format!("--schedule {missing}: cannot read"));
    // A mistake in the file is located in it.
    let bad = dir.join("bad.step");
    std::fs::write(&bad, "schedule bad {\n  lr = lr * gama\n}\n").expect("write");
    let out = bench(&["--steps", "1", "--schedule", bad.to_str().expect("utf8")]);
    assert_refused(&out, "bad.step:2:13: unknown name 'gama'");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unknown_optjit_time_is_reported_once() {
    // Adafactor compiles two steps (matrices and vectors): one report for both.
    let out = Command::new(env!("CARGO_BIN_EXE_optjit"))
        .args(["compile", "--optimizer", "Adafactor", "--stats"])
        .env("OPTJIT_TIME", "yes")
        .env("OPTJIT_CACHE", "off")
        .output()
        .expect("optjit runs");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let warning = "optjit: OPTJIT_TIME=\"yes\" is not one of 0, 1: stage times are not printed\n";
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    assert_eq!(err, warning, "no timing table either");
}
