//! `optjit golden`: replays a recorded PyTorch/optax trajectory (`optjit-golden/1`) through a
//! compiled step and compares parameters, hyperparameters in force and final state.

use crate::stepper::{Backend, open};
use optjit_optim::{Configured, Kwarg, Kwargs, SchedulerArg, SchedulerConfig};
use optjit_runtime::{Checkpoint, DynOptimizer, Group, Setup};
use optjit_trace::Definition;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The verdict on one case.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Everything matched; the largest errors seen on parameters and state.
    Pass {
        /// Largest `|got - want|`.
        max_abs_err: f64,
        /// Largest `|got - want| / |want|` (over nonzero `want`).
        max_rel_err: f64,
    },
    /// The first mismatch.
    Fail(Mismatch),
    /// The case needs something optjit does not do yet (it counts as a failure).
    Unsupported(String),
}

/// Where a value differed.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// `params`, `hyper`, `grad_norm` or `state`.
    pub what: &'static str,
    /// 0-based index into `expected` (the last step for `state`).
    pub step: usize,
    /// Param group.
    pub group: usize,
    /// Tensor index, or the hyperparameter / state name.
    pub tensor: String,
    /// Element index.
    pub index: usize,
    /// What optjit computed.
    pub got: f64,
    /// What the recording says.
    pub want: f64,
}

/// A case's name and verdict, printed as the CLI's `PASS`/`FAIL` line.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseResult {
    /// The case name (file stem).
    pub name: String,
    /// The verdict.
    pub outcome: Outcome,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Pass { .. })
    }
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Pass {
                max_abs_err,
                max_rel_err,
            } => {
                write!(
                    f,
                    "PASS {} max_abs_err={max_abs_err:.3e} max_rel_err={max_rel_err:.3e}",
                    self.name
                )
            }
            Outcome::Fail(m) => write!(
                f,
                "FAIL {} what={} step={} group={} tensor={} index={} got={:e} want={:e}",
                self.name, m.what, m.step, m.group, m.tensor, m.index, m.got, m.want
            ),
            Outcome::Unsupported(why) => {
                write!(f, "FAIL {} what=unsupported reason=\"{why}\"", self.name)
            }
        }
    }
}

/// An unreadable or malformed golden file (exit status 2).
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a replay stops half-way and goes on from a checkpoint.
#[derive(Clone)]
pub struct Resume {
    /// The 0-based index of the step after which the optimizer is checkpointed (through the
    /// bytes of a checkpoint file) and dropped.
    pub after_step: usize,
    /// Where the fresh optimizer that restores the checkpoint and takes the remaining steps
    /// runs.
    pub on: Backend,
}

/// Reads and runs one golden file on `backend`.
pub fn run_file(path: &Path, backend: &Backend) -> Result<CaseResult, BadInput> {
    run_file_resuming(path, backend, None)
}

/// As [`run_file`], resuming from a checkpoint half-way if `resume` says so.
pub fn run_file_resuming(
    path: &Path,
    backend: &Backend,
    resume: Option<&Resume>,
) -> Result<CaseResult, BadInput> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("{}: cannot read: {e}", path.display())))?;
    let case: Value = serde_json::from_str(&text)
        .map_err(|e| BadInput(format!("{}: not JSON: {e}", path.display())))?;
    run_case_resuming(&case, backend, resume)
        .map_err(|e| BadInput(format!("{}: {}", path.display(), e.0)))
}

/// Runs one parsed golden case on `backend`.
pub fn run_case(case: &Value, backend: &Backend) -> Result<CaseResult, BadInput> {
    run_case_resuming(case, backend, None)
}

/// As [`run_case`], resuming from a checkpoint half-way if `resume` says so.
pub fn run_case_resuming(
    case: &Value,
    backend: &Backend,
    resume: Option<&Resume>,
) -> Result<CaseResult, BadInput> {
    let format = field(case, "format")?.as_str().unwrap_or_default();
    if format != "optjit-golden/1" {
        return Err(BadInput(format!(
            "format is '{format}', expected 'optjit-golden/1'"
        )));
    }
    let name = field(case, "name")?
        .as_str()
        .ok_or_else(|| BadInput("name must be a string".into()))?
        .to_string();
    let outcome = match prepare(case)? {
        Err(why) => Outcome::Unsupported(why),
        Ok(prepared) => replay(case, prepared, backend, resume)?,
    };
    Ok(CaseResult { name, outcome })
}

struct Prepared {
    rule: Rule,
    /// Per param group, its own rule when it follows another (`param_groups[i].optimizer`, or
    /// structural options of its own).
    group_rules: Vec<Option<Rule>>,
    setup: Setup,
    tolerance: (f64, f64),
}

/// The update rule a case runs: a built-in or a `.step` optimizer, with its schedule and
/// clipping applied.
struct Rule {
    /// What the FAIL lines call it.
    name: String,
    definition: Definition,
    /// Hyperparameter values of the default group.
    hypers: BTreeMap<String, f64>,
    /// The built-in's configuration (maps PyTorch keywords such as `betas` to hyperparameters).
    builtin: Option<Configured>,
}

impl Rule {
    /// The built-in `name` with `kwargs`, or the `.step` optimizer of `optimizer.step`.
    fn new(optimizer: &Value) -> Result<Result<Rule, String>, BadInput> {
        let name = field(optimizer, "name")?
            .as_str()
            .ok_or_else(|| BadInput("optimizer.name must be a string".into()))?;
        let base_kwargs = kwargs(optimizer.get("kwargs"), "optimizer.kwargs")?;
        if name != "custom" {
            return Ok(
                match optjit_optim::find(name).and_then(|spec| spec.configure(&base_kwargs)) {
                    Ok(c) => Ok(Rule::configured(c)),
                    Err(e) => Err(e.to_string()),
                },
            );
        }
        let source = field(optimizer, "step")?
            .as_str()
            .ok_or_else(|| BadInput("optimizer.step must be a string".into()))?;
        Ok(
            match crate::rule::from_step_source("optimizer.step", source, &base_kwargs) {
                Ok(chosen) => Ok(Rule {
                    name: chosen.name,
                    definition: chosen.definition,
                    hypers: chosen.hypers,
                    builtin: None,
                }),
                Err(e) => Err(e),
            },
        )
    }

    /// The built-in configured as `c`.
    fn configured(c: Configured) -> Rule {
        Rule {
            name: c.name.to_string(),
            definition: c.definition.clone(),
            hypers: c.hypers.clone(),
            builtin: Some(c),
        }
    }

    /// The case's schedule and clipping applied, as to every rule of the case.
    fn finish(&mut self, case: &Value) -> Result<Result<(), String>, BadInput> {
        if let Some(schedule) = case.get("schedule").filter(|v| !v.is_null())
            && let Err(why) = self.schedule(schedule)?
        {
            return Ok(Err(why));
        }
        if let Some(clip) = case.get("clip_grad_norm").filter(|v| !v.is_null()) {
            let max_norm = number(field(clip, "max_norm")?, "clip_grad_norm.max_norm")?;
            if let Err(why) = self.clip(max_norm) {
                return Ok(Err(why));
            }
        }
        Ok(Ok(()))
    }

    /// Param group `g`'s own rule when its `overrides` change a structural option of this
    /// built-in (`amsgrad`, ...): the built-in configured with them.
    fn structural_variant(&self, g: usize, overrides: &Kwargs) -> Result<Option<Rule>, String> {
        match &self.builtin {
            Some(c) => (c.for_group(g, overrides))
                .map(|own| own.map(Rule::configured))
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// Sets hyperparameters by name (a custom rule's kwargs are its hyperparameters).
    fn set_hypers(&mut self, kwargs: &Kwargs) -> Result<(), String> {
        let values = self.hyper_values(kwargs)?;
        self.hypers.extend(values);
        Ok(())
    }

    /// `kwargs` as hyperparameter values, each checked to name a hyperparameter of the rule.
    fn hyper_values(&self, kwargs: &Kwargs) -> Result<BTreeMap<String, f64>, String> {
        kwargs
            .iter()
            .map(
                |(key, value)| match (value, self.definition.graph.hyper(key)) {
                    (Kwarg::Number(x), Some(_)) => Ok((key.clone(), *x)),
                    _ => Err(format!(
                        "{}: no hyperparameter '{key}' takes {value}",
                        self.name
                    )),
                },
            )
            .collect()
    }

    /// The schedule of `schedule` applied: a built-in scheduler (PyTorch's class name and
    /// keywords, as generated `.step` source) or a custom `.step` schedule, whose kwargs set its
    /// own hyperparameters.
    fn schedule(&mut self, schedule: &Value) -> Result<Result<(), String>, BadInput> {
        let name = field(schedule, "name")?.as_str().unwrap_or_default();
        let hypers: Vec<String> = self
            .definition
            .graph
            .hypers
            .iter()
            .map(|h| h.name.clone())
            .collect();
        let mut generated = None;
        let source = match name {
            "custom" => field(schedule, "step")?
                .as_str()
                .ok_or_else(|| BadInput("schedule.step must be a string".into()))?,
            _ => {
                let config = scheduler_config(name, schedule.get("kwargs"))?;
                match optjit_optim::scheduler_source(&config, &hypers) {
                    Ok(source) => &generated.insert(source).source,
                    Err(e) => return Ok(Err(e.to_string())),
                }
            }
        };
        let applied = optjit_trace::step::load("schedule.step", source).and_then(|loaded| {
            let Some(schedule) = loaded.schedules.first() else {
                return Ok(None);
            };
            schedule.apply(&self.definition).map(Some)
        });
        let definition = match applied {
            Ok(Some(definition)) => match &generated {
                Some(generated) => generated.with_groups(definition),
                None => definition,
            },
            Ok(None) => return Ok(Err("schedule.step has no `schedule` block".into())),
            Err(e) => return Ok(Err(e.to_string())),
        };
        let before: Vec<String> = self
            .definition
            .graph
            .hypers
            .iter()
            .map(|h| h.name.clone())
            .collect();
        for h in &definition.graph.hypers {
            if !before.contains(&h.name) {
                self.hypers.insert(h.name.clone(), h.default);
            }
        }
        self.definition = definition;
        if name != "custom" {
            return Ok(Ok(())); // a built-in's keyword values are in its source
        }
        let overrides = kwargs(schedule.get("kwargs"), "schedule.kwargs")?;
        Ok(self.set_hypers(&overrides))
    }

    /// `clip_grad_norm_(max_norm)` fused in front.
    fn clip(&mut self, max_norm: f64) -> Result<(), String> {
        self.definition =
            optjit_trace::clip_grad_norm(&self.definition, max_norm).map_err(|e| e.to_string())?;
        self.hypers
            .insert(optjit_trace::MAX_NORM.to_string(), max_norm);
        Ok(())
    }

    /// The overrides of param group `g`.
    fn group_hypers(&self, g: usize, overrides: &Kwargs) -> Result<BTreeMap<String, f64>, String> {
        match &self.builtin {
            Some(c) => c.group_hypers(g, overrides).map_err(|e| e.to_string()),
            None => self.hyper_values(overrides),
        }
    }

    /// The value in force during the last step of keyword `key` for group `g`, as numbers.
    fn in_force(&self, opt: &dyn DynOptimizer, g: usize, key: &str) -> Option<Vec<f64>> {
        // A metric-driven schedule's state is NaN until it first sets the value: the base.
        // A hyperparameter without such a state is not scheduled: its value is the configured one.
        let hyper = |name: &str| {
            opt.scalar_state(g, &optjit_trace::step::in_force_state(name))
                .filter(|v| !v.is_nan())
                .or_else(|| opt.hyper(g, name).ok())
        };
        match &self.builtin {
            Some(c) => c.kwarg_in_force(key, hyper),
            None => Some(vec![hyper(key)?]),
        }
    }
}

/// A built-in scheduler's configuration from its JSON form (`SequentialLR` and
/// `ChainedScheduler` list their children as `[name, kwargs]` pairs).
pub fn scheduler_config(name: &str, kwargs: Option<&Value>) -> Result<SchedulerConfig, BadInput> {
    let mut out = BTreeMap::new();
    for (key, value) in kwargs.and_then(Value::as_object).into_iter().flatten() {
        let arg = match value {
            Value::Number(n) => SchedulerArg::Number(n.as_f64().unwrap_or(f64::NAN)),
            Value::Bool(b) => SchedulerArg::Bool(*b),
            Value::String(s) => SchedulerArg::Text(s.clone()),
            Value::Array(items) if items.iter().all(Value::is_number) => {
                SchedulerArg::Numbers(items.iter().filter_map(Value::as_f64).collect())
            }
            Value::Array(items) => SchedulerArg::Schedulers(
                items
                    .iter()
                    .map(|child| match child.as_array().map(Vec::as_slice) {
                        Some([Value::String(n), k]) => scheduler_config(n, Some(k)),
                        _ => Err(BadInput(format!(
                            "schedule.kwargs.{key}: expected [name, kwargs] pairs"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(BadInput(format!(
                    "schedule.kwargs.{key}: unexpected value {other}"
                )));
            }
        };
        out.insert(key.clone(), arg);
    }
    Ok(SchedulerConfig {
        name: name.to_string(),
        kwargs: out,
    })
}

/// Builds the optimizer setup, or says why the case is not supported yet.
fn prepare(case: &Value) -> Result<Result<Prepared, String>, BadInput> {
    let mut rule = match Rule::new(field(case, "optimizer")?)? {
        Ok(rule) => rule,
        Err(why) => return Ok(Err(why)),
    };
    if let Err(why) = rule.finish(case)? {
        return Ok(Err(why));
    }
    let shapes = shapes(field(case, "shapes")?)?;
    let mut groups = Vec::new();
    let mut group_rules = Vec::new();
    if let Some(list) = case.get("param_groups").and_then(Value::as_array) {
        for (g, group) in list.iter().enumerate() {
            let tensors = field(group, "params")?
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|v| v.as_u64().map(|x| x as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| {
                    BadInput(format!(
                        "param_groups[{g}].params must be a list of indices"
                    ))
                })?;
            let overrides = kwargs(group.get("kwargs"), &format!("param_groups[{g}].kwargs"))?;
            // Its own optimizer, or the case's with structural options of its own.
            let own = match group.get("optimizer").filter(|v| !v.is_null()) {
                Some(optimizer) => Rule::new(optimizer)?.map(Some),
                None => rule.structural_variant(g, &overrides),
            };
            let mut own = match own {
                Ok(own) => own,
                Err(why) => return Ok(Err(format!("param group {g}: {why}"))),
            };
            if let Some(own) = &mut own
                && let Err(why) = own.finish(case)?
            {
                return Ok(Err(format!("param group {g}: {why}")));
            }
            let hypers = match &own {
                Some(own) => own.group_hypers(g, &overrides).map(|overrides| {
                    let mut hypers = own.hypers.clone();
                    hypers.extend(overrides);
                    hypers
                }),
                None => rule.group_hypers(g, &overrides),
            };
            match hypers {
                Ok(hypers) => groups.push(Group {
                    tensors,
                    hypers,
                    rule: own.as_ref().map(|own| own.definition.clone()),
                }),
                Err(e) => return Ok(Err(e)),
            }
            group_rules.push(own);
        }
    }
    let tolerance = field(case, "tolerance")?;
    let tol = |k: &str| field(tolerance, k).and_then(|v| number(v, k));
    let setup = Setup {
        shapes,
        groups,
        hypers: rule.hypers.clone(),
        threads: 1,
        ..Setup::default()
    };
    Ok(Ok(Prepared {
        group_rules,
        setup,
        tolerance: (tol("rtol")?, tol("atol")?),
        rule,
    }))
}

/// Tracks the first mismatch and the largest errors.
struct Comparison {
    rtol: f64,
    atol: f64,
    max_abs: f64,
    max_rel: f64,
    first_failure: Option<Mismatch>,
}

impl Comparison {
    fn check(&mut self, got: f64, want: f64, at: impl FnOnce() -> Mismatch) {
        let err = (got - want).abs();
        // A non-finite expectation matches by class only: NaN with NaN, an infinity with the
        // same infinity (the tolerance would let any value match an infinity).
        let ok = match want.is_finite() {
            true => err <= self.atol + self.rtol * want.abs(),
            false => got == want || (got.is_nan() && want.is_nan()),
        };
        if err.is_finite() {
            self.max_abs = self.max_abs.max(err);
            if want != 0.0 {
                self.max_rel = self.max_rel.max(err / want.abs());
            }
        }
        if !ok && self.first_failure.is_none() {
            self.first_failure = Some(Mismatch { got, want, ..at() });
        }
    }

    fn failed(&self) -> bool {
        self.first_failure.is_some()
    }
}

fn replay(
    case: &Value,
    prepared: Prepared,
    backend: &Backend,
    resume: Option<&Resume>,
) -> Result<Outcome, BadInput> {
    let Prepared {
        rule,
        group_rules,
        setup,
        tolerance: (rtol, atol),
    } = prepared;
    let mut params: Vec<Vec<f32>> = tensors(field(case, "init")?, "init")?;
    let grads = field(case, "grads")?
        .as_array()
        .ok_or_else(|| BadInput("grads must be a list".into()))?;
    let expected = field(case, "expected")?
        .as_array()
        .ok_or_else(|| BadInput("expected must be a list".into()))?;
    let metrics: &[Value] = case
        .get("metrics")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    if let Some(resume) = resume
        && resume.after_step >= expected.len().saturating_sub(1)
    {
        return Err(BadInput(format!(
            "cannot resume after step {}: the case has {} steps (0 to {})",
            resume.after_step,
            expected.len(),
            expected.len().saturating_sub(1)
        )));
    }
    let mut opt = match open(&rule.definition, setup.clone(), backend) {
        Ok(opt) => opt,
        Err(e) => return Ok(Outcome::Unsupported(e.to_string())),
    };
    let mut cmp = Comparison {
        rtol,
        atol,
        max_abs: 0.0,
        max_rel: 0.0,
        first_failure: None,
    };
    for (k, (grad, want)) in grads.iter().zip(expected).enumerate() {
        let grad = gradients(grad, &format!("grads[{k}]"))?;
        if let Err(e) = opt.step(&mut params, &grad) {
            return Err(BadInput(format!("step {k}: {e}")));
        }
        // The hyperparameters in force during step k (a schedule's are known once it ran).
        if let Some(hyper) = want.get("hyper").and_then(Value::as_array) {
            for (g, values) in hyper.iter().enumerate() {
                let Some(values) = values.as_object() else {
                    continue;
                };
                for (key, want_value) in values {
                    let wants = numbers(want_value, key)?;
                    let rule = group_rules.get(g).and_then(Option::as_ref).unwrap_or(&rule);
                    let Some(got) = rule.in_force(&*opt, g, key) else {
                        return Ok(Outcome::Unsupported(format!(
                            "hyperparameter '{key}' is not known to {}",
                            rule.name
                        )));
                    };
                    for (i, (&got, &w)) in got.iter().zip(&wants).enumerate() {
                        cmp.check(got, w, || mismatch("hyper", k, g, key.clone(), i));
                    }
                }
            }
        }
        if let Some(want_norm) = want.get("grad_norm").filter(|v| !v.is_null()) {
            let want_norm = number(want_norm, "grad_norm")?;
            let Some(got) = opt.scalar_state(0, optjit_trace::GRAD_NORM) else {
                return Ok(Outcome::Unsupported(
                    "the case records grad_norm but the optimizer does not clip".into(),
                ));
            };
            cmp.check(got, want_norm, || {
                mismatch("grad_norm", k, 0, "total".into(), 0)
            });
        }
        if let Some(metric) = metrics.get(k) {
            let metric = number(metric, &format!("metrics[{k}]"))?;
            if let Err(e) = opt.report_metric(metric) {
                return Ok(Outcome::Unsupported(e.to_string()));
            }
        }
        let want_params = tensors(field(want, "params")?, &format!("expected[{k}].params"))?;
        for (t, (got, want)) in params.iter().zip(&want_params).enumerate() {
            let group = opt.group_of(t).unwrap_or(0);
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                cmp.check(g as f64, w as f64, || {
                    mismatch("params", k, group, t.to_string(), i)
                });
            }
        }
        if cmp.failed() {
            break;
        }
        if let Some(resume) = resume.filter(|r| r.after_step == k) {
            opt = resumed(&*opt, &rule.definition, &setup, resume)
                .map_err(|e| BadInput(format!("resuming after step {k}: {e}")))?;
        }
    }
    let last = expected.len().saturating_sub(1);
    if let (false, Some(states)) = (
        cmp.failed(),
        case.get("final_state").and_then(Value::as_array),
    ) {
        for (t, state) in states.iter().enumerate() {
            let group = opt.group_of(t).unwrap_or(0);
            for (name, want) in state.as_object().into_iter().flatten() {
                match want {
                    Value::Array(_) => {
                        let got = opt.state(t, name).map_err(|e| {
                            BadInput(format!("reading state {name} of tensor {t}: {e}"))
                        })?;
                        let Some(got) = got else {
                            return Ok(Outcome::Unsupported(format!(
                                "no per-element state '{name}'"
                            )));
                        };
                        let want_values = numbers(want, name)?;
                        if got.len() != want_values.len() {
                            return Err(BadInput(format!(
                                "state {name} of tensor {t} holds {} values, the file {}",
                                got.len(),
                                want_values.len()
                            )));
                        }
                        for (i, (&g, w)) in got.iter().zip(want_values).enumerate() {
                            cmp.check(g as f64, w, || {
                                mismatch("state", last, group, format!("{t}.{name}"), i)
                            });
                        }
                    }
                    other => {
                        let w = number(other, name)?;
                        // The tensor's own (PyTorch keeps scalar states per parameter), or its
                        // group's.
                        let got = (opt.tensor_scalar_state(t, name))
                            .or_else(|| opt.scalar_state(group, name));
                        let Some(got) = got else {
                            return Ok(Outcome::Unsupported(format!("no scalar state '{name}'")));
                        };
                        cmp.check(got, w, || {
                            mismatch("state", last, group, format!("{t}.{name}"), 0)
                        });
                    }
                }
            }
        }
    }
    Ok(match cmp.first_failure {
        Some(m) => Outcome::Fail(m),
        None => Outcome::Pass {
            max_abs_err: cmp.max_abs,
            max_rel_err: cmp.max_rel,
        },
    })
}

/// A fresh optimizer on `resume.on` that goes on from `opt`'s checkpoint, saved to the bytes
/// of a file and read back.
fn resumed(
    opt: &dyn DynOptimizer,
    definition: &Definition,
    setup: &Setup,
    resume: &Resume,
) -> Result<Box<dyn DynOptimizer>, String> {
    let bytes = opt.checkpoint().map_err(|e| e.to_string())?.to_bytes();
    let checkpoint = Checkpoint::from_bytes(&bytes).map_err(|e| e.to_string())?;
    let mut fresh = open(definition, setup.clone(), &resume.on).map_err(|e| e.to_string())?;
    fresh.restore(&checkpoint).map_err(|e| e.to_string())?;
    Ok(fresh)
}

fn mismatch(
    what: &'static str,
    step: usize,
    group: usize,
    tensor: String,
    index: usize,
) -> Mismatch {
    Mismatch {
        what,
        step,
        group,
        tensor,
        index,
        got: 0.0,
        want: 0.0,
    }
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, BadInput> {
    v.get(key)
        .ok_or_else(|| BadInput(format!("missing field '{key}'")))
}

/// A number, or one JSON cannot write: the strings `"inf"`, `"-inf"` and `"nan"`.
fn number(v: &Value, what: &str) -> Result<f64, BadInput> {
    let non_finite = |s: &str| match s {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => None,
    };
    v.as_f64()
        .or_else(|| v.as_str().and_then(non_finite))
        .ok_or_else(|| {
            BadInput(format!(
                "{what} must be a number (or \"inf\", \"-inf\", \"nan\"), got {v}"
            ))
        })
}

/// A number or a list of numbers.
fn numbers(v: &Value, what: &str) -> Result<Vec<f64>, BadInput> {
    match v {
        Value::Array(items) => items.iter().map(|x| number(x, what)).collect(),
        other => Ok(vec![number(other, what)?]),
    }
}

fn tensors(v: &Value, what: &str) -> Result<Vec<Vec<f32>>, BadInput> {
    let list = v
        .as_array()
        .ok_or_else(|| BadInput(format!("{what} must be a list of tensors")))?;
    list.iter()
        .enumerate()
        .map(|(t, x)| {
            Ok(numbers(x, &format!("{what}[{t}]"))?
                .into_iter()
                .map(|x| x as f32)
                .collect())
        })
        .collect()
}

/// A step's gradients: `null` for a tensor without one (see `groups/README.md`).
fn gradients(v: &Value, what: &str) -> Result<Vec<Option<Vec<f32>>>, BadInput> {
    let list = v
        .as_array()
        .ok_or_else(|| BadInput(format!("{what} must be a list of tensors")))?;
    list.iter()
        .enumerate()
        .map(|(t, x)| match x {
            Value::Null => Ok(None),
            x => Ok(Some(
                (numbers(x, &format!("{what}[{t}]"))?.into_iter())
                    .map(|x| x as f32)
                    .collect(),
            )),
        })
        .collect()
}

fn shapes(v: &Value) -> Result<Vec<Vec<usize>>, BadInput> {
    let bad = || BadInput("shapes must be a list of lists of sizes".into());
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|s| {
            s.as_array()
                .and_then(|d| d.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
                .ok_or_else(bad)
        })
        .collect()
}

/// PyTorch-style kwargs from JSON: numbers, booleans, and pairs (`betas`).
pub fn kwargs(v: Option<&Value>, what: &str) -> Result<Kwargs, BadInput> {
    let mut out = Kwargs::new();
    let Some(map) = v.and_then(Value::as_object) else {
        return Ok(out);
    };
    for (key, value) in map {
        let parsed = match value {
            Value::Bool(b) => Kwarg::Bool(*b),
            Value::Number(n) => Kwarg::Number(n.as_f64().unwrap_or(f64::NAN)),
            // Python's None first (Adafactor's `eps=(None, 1e-3)`).
            Value::Array(pair) if pair.len() == 2 && pair[0].is_null() => {
                Kwarg::NoneFirst(number(&pair[1], key)?)
            }
            Value::Array(pair) if pair.len() == 2 => {
                Kwarg::Pair(number(&pair[0], key)?, number(&pair[1], key)?)
            }
            other => {
                return Err(BadInput(format!(
                    "{what}.{key}: expected a number, a boolean or a pair, got {other}"
                )));
            }
        };
        out.insert(key.clone(), parsed);
    }
    Ok(out)
}

/// Parses `--kwargs '{"amsgrad": true}'` for the CLI.
pub fn kwargs_from_json(text: &str) -> Result<Kwargs, BadInput> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| BadInput(format!("--kwargs is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(BadInput(format!("--kwargs must be a JSON object, got {v}")));
    }
    kwargs(Some(&v), "--kwargs")
}
