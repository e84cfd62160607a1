//! The words of the errors a user meets: schedulers named and configured wrongly, and a
//! hyperparameter whose domain is a choice made when the optimizer was built.

use optjit_optim::{OptimError, RmsProp, SchedulerArg, SchedulerConfig, Sgd, scheduler_source};

/// A scheduler's keyword arguments.
type Kwargs = Vec<(&'static str, SchedulerArg)>;

/// The error of scheduler `name` with `kwargs`, for an optimizer with `lr` and `momentum`.
fn refusal(name: &str, kwargs: Kwargs) -> OptimError {
    let config = SchedulerConfig::new(name, kwargs);
    scheduler_source(&config, &["lr".into(), "momentum".into()])
        .expect_err("the configuration is refused")
}

/// No message shows Rust's debug form of a value (`Some(..)`, `Numbers([..])`, `Text(..)`).
fn assert_reads_well(message: &str) {
    for debug in [
        "Some(",
        "None",
        "Numbers(",
        "Number(",
        "Schedulers(",
        "Text(",
        "Bool(",
    ] {
        assert!(!message.contains(debug), "{debug} in: {message}");
    }
}

#[test]
fn an_unknown_scheduler_is_not_called_an_optimizer() {
    let err = refusal("StepLr", vec![]);
    assert!(
        matches!(&err, OptimError::UnknownScheduler { name, .. } if name == "StepLr"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message
            .starts_with("unknown scheduler 'StepLr'; did you mean 'StepLR'? (available: StepLR, "),
        "{message}"
    );
    assert!(!message.contains("optimizer"), "{message}");
    let far = refusal("Warmup", vec![]).to_string();
    assert!(
        far.starts_with("unknown scheduler 'Warmup' (available: "),
        "{far}"
    );
}

#[test]
fn scheduler_argument_errors_read_as_python_values() {
    use SchedulerArg::{Bool, Number, Numbers, Schedulers, Text};
    let step = || SchedulerConfig::new("StepLR", [("step_size", Number(1.0))]);
    let cases: Vec<(&str, Kwargs, &str)> = vec![
        (
            "SequentialLR",
            vec![
                ("schedulers", Numbers(vec![])),
                ("milestones", Numbers(vec![])),
            ],
            "SequentialLR: schedulers must be a non-empty list of [name, kwargs] schedulers, got an empty list",
        ),
        (
            "SequentialLR",
            vec![("schedulers", Schedulers(vec![]))],
            "SequentialLR: schedulers must be a non-empty list of [name, kwargs] schedulers, got an empty list",
        ),
        (
            "SequentialLR",
            vec![("milestones", Numbers(vec![3.0]))],
            "SequentialLR: schedulers must be a non-empty list of [name, kwargs] schedulers, got nothing",
        ),
        (
            "SequentialLR",
            vec![
                ("schedulers", Schedulers(vec![step(), step()])),
                ("milestones", Numbers(vec![3.0, 6.0])),
            ],
            "SequentialLR: milestones must be a list of 1 number (one per scheduler after the first), got [3, 6]",
        ),
        (
            "StepLR",
            vec![("step_size", Bool(true))],
            "StepLR: step_size must be a finite number, got True",
        ),
        (
            "StepLR",
            vec![("step_size", Text("ten".into()))],
            "StepLR: step_size must be a finite number, got \"ten\"",
        ),
        (
            "StepLR",
            vec![("step_size", Number(f64::NAN))],
            "StepLR: step_size must be a finite number, got NaN",
        ),
        (
            "MultiStepLR",
            vec![("milestones", Text("30".into()))],
            "MultiStepLR: milestones must be a list of finite numbers, got \"30\"",
        ),
        (
            "MultiStepLR",
            vec![],
            "MultiStepLR: milestones must be a list of finite numbers, got nothing",
        ),
        (
            "CyclicLR",
            vec![
                ("base_lr", Number(0.1)),
                ("max_lr", Number(1.0)),
                ("mode", Text("tri".into())),
            ],
            "CyclicLR: mode must be one of triangular, triangular2, exp_range, got \"tri\"",
        ),
        (
            "CyclicLR",
            vec![
                ("base_lr", Number(0.1)),
                ("max_lr", Number(1.0)),
                ("mode", Numbers(vec![1.0])),
            ],
            "CyclicLR: mode must be a string, got [1]",
        ),
        (
            "CyclicLR",
            vec![
                ("base_lr", Number(0.1)),
                ("max_lr", Number(1.0)),
                ("cycle_momentum", Number(1.0)),
            ],
            "CyclicLR: cycle_momentum must be True or False, got 1",
        ),
        (
            "ChainedScheduler",
            vec![("schedulers", Numbers(vec![]))],
            "ChainedScheduler: schedulers must be a non-empty list of [name, kwargs] schedulers, got an empty list",
        ),
    ];
    for (name, kwargs, want) in cases {
        let message = refusal(name, kwargs).to_string();
        assert_eq!(message, want);
        assert_reads_well(&message);
    }
}

#[test]
fn a_momentum_chosen_at_build_time_says_so() {
    for (name, without, with) in [
        (
            "SGD",
            Sgd::new().build().unwrap(),
            Sgd::new().momentum(0.9).build().unwrap(),
        ),
        (
            "RMSprop",
            RmsProp::new().build().unwrap(),
            RmsProp::new().momentum(0.9).build().unwrap(),
        ),
    ] {
        let domain = without.definition.domain("momentum");
        assert!(domain.contains(0.0) && !domain.contains(0.9), "{name}");
        assert_eq!(
            domain.to_string(),
            "exactly 0 (momentum 0 or not is chosen when the optimizer is built: build one \
             with momentum > 0 to use momentum)",
            "{name}"
        );
        let domain = with.definition.domain("momentum");
        assert!(!domain.contains(0.0) && domain.contains(0.5), "{name}");
        assert_eq!(
            domain.to_string(),
            "a finite number > 0 (momentum 0 or not is chosen when the optimizer is built: \
             build one with momentum 0 to leave it out)",
            "{name}"
        );
    }
}
