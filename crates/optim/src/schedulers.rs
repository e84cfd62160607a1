//! PyTorch's LR schedulers (`torch.optim.lr_scheduler`), each written as a `.step` schedule:
//! a configuration becomes schedule source text (its keyword values as constants), which the
//! `.step` front end applies to any optimizer. A schedule computes the values in force in the
//! step's scalar program, so changing a scheduled hyperparameter never recompiles.
//!
//! Every formula is a closed form in `t` (PyTorch's `last_epoch`, 0 for the first step) that
//! gives the values PyTorch's `step()` gives (the golden recordings replay `step()`).

use crate::error::OptimError;
use optjit_trace::PerGroupValues;
use std::collections::BTreeMap;
use std::fmt::Write;

/// A keyword value of a scheduler.
#[derive(Clone, Debug, PartialEq)]
pub enum SchedulerArg {
    /// A number.
    Number(f64),
    /// `True` or `False`.
    Bool(bool),
    /// A string (`"triangular2"`, `"cos"`, `"min"`).
    Text(String),
    /// A list of numbers (`milestones`).
    Numbers(Vec<f64>),
    /// Child schedulers (`SequentialLR`, `ChainedScheduler`).
    Schedulers(Vec<SchedulerConfig>),
}

/// As Python writes the value: `0.5`, `True`, `"cos"`, `[30, 80]`, `[StepLR, ExponentialLR]`.
impl std::fmt::Display for SchedulerArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |f: &mut std::fmt::Formatter<'_>, items: Vec<String>| {
            write!(f, "[{}]", items.join(", "))
        };
        match self {
            SchedulerArg::Number(x) => write!(f, "{x}"),
            SchedulerArg::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            SchedulerArg::Text(s) => write!(f, "{s:?}"),
            SchedulerArg::Numbers(v) => list(f, v.iter().map(f64::to_string).collect()),
            SchedulerArg::Schedulers(v) => list(f, v.iter().map(|c| c.name.clone()).collect()),
        }
    }
}

/// A keyword's value in an error message: `nothing` when it is missing, `an empty list`.
fn given(arg: Option<&SchedulerArg>) -> String {
    match arg {
        None => "nothing".into(),
        Some(SchedulerArg::Numbers(v)) if v.is_empty() => "an empty list".into(),
        Some(SchedulerArg::Schedulers(v)) if v.is_empty() => "an empty list".into(),
        Some(arg) => arg.to_string(),
    }
}

/// A scheduler by PyTorch's class name, with its keyword arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// The class name (`StepLR`).
    pub name: String,
    /// Keyword arguments by name.
    pub kwargs: BTreeMap<String, SchedulerArg>,
}

/// The scheduler class names this module knows, in PyTorch's order.
pub const SCHEDULERS: &[&str] = &[
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "OneCycleLR",
    "SequentialLR",
    "ChainedScheduler",
    "ReduceLROnPlateau",
];

/// Reads the keyword arguments of one scheduler, checking names and types.
struct Args<'a> {
    config: &'a SchedulerConfig,
    /// The optimizer's hyperparameters (a per-group argument must not take one's name).
    hypers: &'a [String],
    used: Vec<&'static str>,
    /// Every keyword read, with its default in words (`required` without one).
    defaults: Vec<(&'static str, String)>,
    /// The arguments given one value per group, each a hyperparameter of the schedule.
    per_group: Vec<PerGroupValues>,
}

impl<'a> Args<'a> {
    fn new(config: &'a SchedulerConfig, hypers: &'a [String]) -> Args<'a> {
        Args {
            config,
            hypers,
            used: Vec::new(),
            defaults: Vec::new(),
            per_group: Vec::new(),
        }
    }

    /// A number, or a list of one number per param group (as PyTorch takes `max_lr=[...]`): the
    /// number, or a hyperparameter of the schedule (named as the argument) that every group
    /// sets to its own value.
    fn per_group(&mut self, name: &'static str, default: Option<f64>) -> Result<Bound, OptimError> {
        let default_text = default.map_or("required".into(), |d| format!("{d:?}"));
        self.read(name, format!("{default_text} (or a list: one per group)"));
        let Some(SchedulerArg::Numbers(values)) = self.config.kwargs.get(name) else {
            return self.number(name, default).map(Bound::Number);
        };
        if values.is_empty() || values.iter().any(|x| !x.is_finite()) {
            let got = format!("{values:?}");
            return Err(self.error(
                name,
                "a finite number or a list of one per param group",
                got,
            ));
        }
        if self.hypers.iter().any(|h| h == name) {
            return Err(self.error(
                name,
                "a number (the optimizer has a hyperparameter of that name, so one per group cannot be given)",
                format!("{values:?}"),
            ));
        }
        self.per_group.push(PerGroupValues {
            hyper: name.to_string(),
            values: values.clone(),
            given_by: format!("{} {name}", self.config.name),
        });
        Ok(Bound::Expr(name.to_string()))
    }

    /// Notes that keyword `name` was read, with `default`.
    fn read(&mut self, name: &'static str, default: String) {
        self.used.push(name);
        if !self.defaults.iter().any(|(n, _)| *n == name) {
            self.defaults.push((name, default));
        }
    }

    fn error(&self, name: &str, expected: &str, got: String) -> OptimError {
        OptimError::BadValue {
            optimizer: self.config.name.clone(),
            name: name.to_string(),
            expected: expected.to_string(),
            got,
            place: String::new(),
        }
    }

    fn number(&mut self, name: &'static str, default: Option<f64>) -> Result<f64, OptimError> {
        self.read(
            name,
            default.map_or("required".into(), |d| format!("{d:?}")),
        );
        match (self.config.kwargs.get(name), default) {
            (Some(SchedulerArg::Number(x)), _) if x.is_finite() => Ok(*x),
            (Some(other), _) => Err(self.error(name, "a finite number", given(Some(other)))),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.error(name, "a number (it has no default)", "nothing".into())),
        }
    }

    /// A number > 0 (a length or a period: 0 would divide by zero, as PyTorch refuses).
    fn positive(&mut self, name: &'static str, default: Option<f64>) -> Result<f64, OptimError> {
        let x = self.number(name, default)?;
        match x > 0.0 {
            true => Ok(x),
            false => Err(self.error(name, "a number > 0", format!("{x}"))),
        }
    }

    fn optional(&mut self, name: &'static str) -> Result<Option<f64>, OptimError> {
        match self.config.kwargs.get(name) {
            None => {
                self.read(name, "None".into());
                Ok(None)
            }
            Some(_) => self.number(name, None).map(Some),
        }
    }

    fn flag(&mut self, name: &'static str, default: bool) -> Result<bool, OptimError> {
        let words = if default { "True" } else { "False" };
        self.read(name, words.into());
        match self.config.kwargs.get(name) {
            None => Ok(default),
            Some(SchedulerArg::Bool(b)) => Ok(*b),
            Some(other) => Err(self.error(name, "True or False", given(Some(other)))),
        }
    }

    fn text(
        &mut self,
        name: &'static str,
        default: &str,
        allowed: &[&str],
    ) -> Result<String, OptimError> {
        self.read(name, format!("{default:?} ({})", allowed.join("|")));
        let text = match self.config.kwargs.get(name) {
            None => default.to_string(),
            Some(SchedulerArg::Text(s)) => s.clone(),
            Some(other) => return Err(self.error(name, "a string", given(Some(other)))),
        };
        match allowed.contains(&text.as_str()) {
            true => Ok(text),
            false => Err(self.error(
                name,
                &format!("one of {}", allowed.join(", ")),
                format!("{text:?}"),
            )),
        }
    }

    fn numbers(&mut self, name: &'static str) -> Result<Vec<f64>, OptimError> {
        self.read(name, "required (a list)".into());
        match self.config.kwargs.get(name) {
            Some(SchedulerArg::Numbers(v)) if v.iter().all(|x| x.is_finite()) => Ok(v.clone()),
            Some(SchedulerArg::Number(x)) if x.is_finite() => Ok(vec![*x]),
            other => Err(self.error(name, "a list of finite numbers", given(other))),
        }
    }

    fn children(&mut self, name: &'static str) -> Result<Vec<SchedulerConfig>, OptimError> {
        self.read(name, "required (a list of schedulers)".into());
        match self.config.kwargs.get(name) {
            Some(SchedulerArg::Schedulers(v)) if !v.is_empty() => Ok(v.clone()),
            other => Err(self.error(
                name,
                "a non-empty list of [name, kwargs] schedulers",
                given(other),
            )),
        }
    }

    /// Refuses keyword arguments the scheduler does not take.
    fn finish(self) -> Result<(), OptimError> {
        match self
            .config
            .kwargs
            .keys()
            .find(|k| !self.used.contains(&k.as_str()))
        {
            None => Ok(()),
            Some(k) => Err(OptimError::UnknownKwarg {
                optimizer: self.config.name.clone(),
                name: k.clone(),
                suggestion: crate::error::suggest(k, self.used.iter().copied()),
                accepted: self.used.join(", "),
            }),
        }
    }
}

/// A number as `.step` source text (always parseable, exact).
fn num(x: f64) -> String {
    let text = format!("{x:?}");
    match x < 0.0 {
        true => format!("({text})"),
        false => text,
    }
}

/// What a scheduler assigns: (hyperparameter, expression of `base` names and `t`).
type Assignments = Vec<(String, String)>;

/// A value a schedule computes with: a number, or an expression of the schedule's own
/// hyperparameters (an argument given per param group).
#[derive(Clone, Debug)]
enum Bound {
    Number(f64),
    Expr(String),
}

impl Bound {
    /// As `.step` source.
    fn text(&self) -> String {
        match self {
            Bound::Number(x) => num(*x),
            Bound::Expr(e) => e.clone(),
        }
    }

    /// `self / by`, computed now when `self` is a number.
    fn divided(&self, by: f64) -> Bound {
        match self {
            Bound::Number(x) => Bound::Number(x / by),
            Bound::Expr(e) => Bound::Expr(format!("({e} / {})", num(by))),
        }
    }
}

/// The momentum-like hyperparameter a cycling scheduler drives: `momentum` (SGD, RMSprop) or
/// `beta1` (Adam-style `betas`), as PyTorch picks `betas[0]` when the optimizer has betas.
fn momentum_name(config: &SchedulerConfig, hypers: &[String]) -> Result<String, OptimError> {
    for name in ["beta1", "momentum"] {
        if hypers.iter().any(|h| h == name) {
            return Ok(name.to_string());
        }
    }
    Err(OptimError::BadValue {
        optimizer: config.name.clone(),
        name: "cycle_momentum".into(),
        expected: "False for an optimizer without momentum or betas".into(),
        got: "True".into(),
        place: String::new(),
    })
}

/// The closed form of `config` at step `t` (an expression) for an optimizer whose
/// hyperparameters are `hypers`: what each scheduled hyperparameter is, in terms of its base
/// value (the name itself) and `t`; and the arguments given per param group, which the
/// expressions read as the schedule's own hyperparameters.
fn assignments(
    config: &SchedulerConfig,
    t: &str,
    hypers: &[String],
) -> Result<(Assignments, Vec<PerGroupValues>), OptimError> {
    let mut a = Args::new(config, hypers);
    let out = read_assignments(&mut a, t, hypers)?;
    let per_group = std::mem::take(&mut a.per_group);
    a.finish()?;
    Ok((out, per_group))
}

/// [`assignments`] of a child scheduler, its per-group arguments joining `a`'s.
fn child_assignments(
    a: &mut Args<'_>,
    child: &SchedulerConfig,
    t: &str,
    hypers: &[String],
) -> Result<Assignments, OptimError> {
    let (out, per_group) = assignments(child, t, hypers)?;
    for list in per_group {
        if a.per_group.iter().any(|l| l.hyper == list.hyper) {
            return Err(a.error(
                &list.hyper,
                "one value per group in at most one child scheduler",
                list.given_by,
            ));
        }
        a.per_group.push(list);
    }
    Ok(out)
}

/// [`assignments`], reading the keyword arguments through `a`.
fn read_assignments(
    a: &mut Args<'_>,
    t: &str,
    hypers: &[String],
) -> Result<Assignments, OptimError> {
    let config = a.config;
    let lr = |e: String| vec![("lr".to_string(), e)];
    let out = match config.name.as_str() {
        "StepLR" => {
            let step_size = a.positive("step_size", None)?;
            let gamma = a.number("gamma", Some(0.1))?;
            lr(format!(
                "lr * pow({}, floor({t} / {}))",
                num(gamma),
                num(step_size)
            ))
        }
        "MultiStepLR" => {
            let mut milestones = a.numbers("milestones")?;
            milestones.sort_by(f64::total_cmp);
            let gamma = a.number("gamma", Some(0.1))?;
            let passed: Vec<String> = milestones
                .iter()
                .map(|m| format!("where({t} >= {}, 1, 0)", num(*m)))
                .collect();
            // No milestone: the rate never decays (PyTorch accepts `milestones=[]`).
            let passed = match passed.is_empty() {
                true => "0".to_string(),
                false => passed.join(" + "),
            };
            lr(format!("lr * pow({}, {passed})", num(gamma)))
        }
        "ConstantLR" => {
            let factor = a.number("factor", Some(1.0 / 3.0))?;
            let total = a.number("total_iters", Some(5.0))?;
            lr(format!(
                "lr * where({t} < {}, {}, 1)",
                num(total),
                num(factor)
            ))
        }
        "LinearLR" => {
            let start = a.number("start_factor", Some(1.0 / 3.0))?;
            let end = a.number("end_factor", Some(1.0))?;
            let total = a.positive("total_iters", Some(5.0))?;
            lr(format!(
                "lr * ({s} + ({e} - {s}) * min({t}, {n}) / {n})",
                s = num(start),
                e = num(end),
                n = num(total)
            ))
        }
        "ExponentialLR" => {
            let gamma = a.number("gamma", None)?;
            lr(format!("lr * pow({}, {t})", num(gamma)))
        }
        "PolynomialLR" => {
            let total = a.positive("total_iters", Some(5.0))?;
            let power = a.number("power", Some(1.0))?;
            lr(format!(
                "lr * pow(1 - min({t}, {n}) / {n}, {p})",
                n = num(total),
                p = num(power)
            ))
        }
        "CosineAnnealingLR" => {
            let t_max = a.positive("T_max", None)?;
            let eta_min = a.number("eta_min", Some(0.0))?;
            lr(format!(
                "{m} + (lr - {m}) * (1 + cos(pi * {t} / {tm})) / 2",
                m = num(eta_min),
                tm = num(t_max)
            ))
        }
        "CosineAnnealingWarmRestarts" => {
            let t0 = a.positive("T_0", None)?;
            let mult = a.number("T_mult", Some(1.0))?;
            let eta_min = a.number("eta_min", Some(0.0))?;
            // The cycle n, the position in it and its length, as PyTorch's closed form.
            let (t_cur, t_i) = match mult == 1.0 {
                true => (
                    format!("({t} - {t0} * floor({t} / {t0}))", t0 = num(t0)),
                    num(t0),
                ),
                false => {
                    if mult < 1.0 || mult.fract() != 0.0 {
                        return Err(a.error("T_mult", "an integer >= 1", format!("{mult}")));
                    }
                    // The cycle from logarithms, corrected by one either way where rounding
                    // put it past a cycle boundary (the start of cycle n is T_0 (m^n - 1) / (m - 1)).
                    let estimate = format!(
                        "floor(log({t} / {t0} * ({m} - 1) + 1) / log({m}))",
                        t0 = num(t0),
                        m = num(mult)
                    );
                    let start = |n: &str| {
                        format!(
                            "{t0} * (pow({m}, {n}) - 1) / ({m} - 1)",
                            t0 = num(t0),
                            m = num(mult)
                        )
                    };
                    let n = format!(
                        "({estimate} + where({t} >= {}, 1, 0) - where({t} < {}, 1, 0))",
                        start(&format!("({estimate} + 1)")),
                        start(&estimate),
                    );
                    (
                        format!(
                            "({t} - {t0} * (pow({m}, {n}) - 1) / ({m} - 1))",
                            t0 = num(t0),
                            m = num(mult)
                        ),
                        format!("({t0} * pow({m}, {n}))", t0 = num(t0), m = num(mult)),
                    )
                }
            };
            lr(format!(
                "{e} + (lr - {e}) * (1 + cos(pi * {t_cur} / {t_i})) / 2",
                e = num(eta_min)
            ))
        }
        "CyclicLR" => cyclic(a, t, hypers)?,
        "OneCycleLR" => one_cycle(a, t, hypers)?,
        "SequentialLR" => {
            let children = a.children("schedulers")?;
            let mut milestones = a.numbers("milestones")?;
            milestones.sort_by(f64::total_cmp);
            if milestones.len() + 1 != children.len() {
                let n = children.len() - 1;
                return Err(a.error(
                    "milestones",
                    &format!(
                        "a list of {n} number{} (one per scheduler after the first)",
                        if n == 1 { "" } else { "s" }
                    ),
                    given(Some(&SchedulerArg::Numbers(milestones))),
                ));
            }
            // Child k runs from milestone k - 1 on, with its own t counted from there.
            let mut by_hyper: BTreeMap<String, String> = BTreeMap::new();
            for (k, child) in children.iter().enumerate().rev() {
                let start = if k == 0 { 0.0 } else { milestones[k - 1] };
                let child_t = format!("({t} - {})", num(start));
                for (hyper, expr) in child_assignments(a, child, &child_t, hypers)? {
                    let later = by_hyper.remove(&hyper).unwrap_or_else(|| hyper.clone());
                    let combined = match k == children.len() - 1 {
                        true => expr,
                        false => format!("where({t} < {}, {expr}, {later})", num(milestones[k])),
                    };
                    by_hyper.insert(hyper, combined);
                }
            }
            by_hyper.into_iter().collect()
        }
        "ChainedScheduler" => {
            // The product of the children's factors: only multiplicative schedulers chain.
            let children = a.children("schedulers")?;
            let mut expr = "lr".to_string();
            for child in &children {
                if ![
                    "StepLR",
                    "MultiStepLR",
                    "ConstantLR",
                    "LinearLR",
                    "ExponentialLR",
                    "PolynomialLR",
                ]
                .contains(&child.name.as_str())
                {
                    return Err(a.error(
                        "schedulers",
                        "multiplicative schedulers (StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR)",
                        child.name.clone(),
                    ));
                }
                for (hyper, e) in child_assignments(a, child, t, hypers)? {
                    if hyper == "lr" {
                        expr = e.replacen("lr", &format!("({expr})"), 1);
                    }
                }
            }
            lr(expr)
        }
        "LambdaLR" | "MultiplicativeLR" => {
            return Err(a.error(
                "lr_lambda",
                "a .step schedule (Python lambdas have no equivalent; write the formula as a schedule)",
                config.name.clone(),
            ));
        }
        other => {
            return Err(OptimError::UnknownScheduler {
                name: other.to_string(),
                suggestion: crate::error::suggest(other, SCHEDULERS.iter().copied()),
                available: SCHEDULERS.join(", "),
            });
        }
    };
    Ok(out)
}

/// `CyclicLR`: lr between base_lr and max_lr (the optimizer's configured lr is ignored), and
/// by default momentum cycling the opposite way between max_momentum and base_momentum.
fn cyclic(a: &mut Args<'_>, t: &str, hypers: &[String]) -> Result<Assignments, OptimError> {
    let base_lr = a.per_group("base_lr", None)?;
    let max_lr = a.per_group("max_lr", None)?;
    let up = a.positive("step_size_up", Some(2000.0))?;
    let down = a.optional("step_size_down")?.unwrap_or(up);
    let mode = a.text(
        "mode",
        "triangular",
        &["triangular", "triangular2", "exp_range"],
    )?;
    let gamma = a.number("gamma", Some(1.0))?;
    let cycle_momentum = a.flag("cycle_momentum", true)?;
    let base_m = a.per_group("base_momentum", Some(0.8))?;
    let max_m = a.per_group("max_momentum", Some(0.9))?;
    let total = up + down;
    let ratio = up / total;
    let cycle = format!("floor(1 + {t} / {})", num(total));
    let x = format!("(1 + {t} / {} - {cycle})", num(total));
    let factor = format!(
        "where({x} <= {r}, {x} / {r}, ({x} - 1) / ({r} - 1))",
        r = num(ratio)
    );
    let scale = match mode.as_str() {
        "triangular" => "1".to_string(),
        "triangular2" => format!("1 / pow(2, {cycle} - 1)"),
        _ => format!("pow({}, {t})", num(gamma)),
    };
    let mut out = vec![(
        "lr".to_string(),
        format!(
            "{b} + ({m} - {b}) * {factor} * {scale}",
            b = base_lr.text(),
            m = max_lr.text()
        ),
    )];
    if cycle_momentum {
        let name = momentum_name(a.config, hypers)?;
        out.push((
            name,
            format!(
                "{mx} - ({mx} - {b}) * {factor} * {scale}",
                mx = max_m.text(),
                b = base_m.text()
            ),
        ));
    }
    Ok(out)
}

/// One phase of `OneCycleLR`: the step it ends at, and (from, to) of lr and momentum.
struct Phase {
    end: f64,
    lr: (Bound, Bound),
    momentum: (Bound, Bound),
}

/// `OneCycleLR`: warm up from max_lr / div_factor to max_lr, then anneal to
/// initial / final_div_factor (three_phase: back to the initial value first), with momentum
/// (or beta1) annealed the opposite way; the optimizer's configured lr is ignored.
fn one_cycle(a: &mut Args<'_>, t: &str, hypers: &[String]) -> Result<Assignments, OptimError> {
    let max_lr = a.per_group("max_lr", None)?;
    let total = match a.optional("total_steps")? {
        Some(n) if n > 0.0 => n,
        Some(n) => return Err(a.error("total_steps", "a number > 0", format!("{n}"))),
        None => {
            let epochs = a.positive("epochs", None)?;
            let per_epoch = a.positive("steps_per_epoch", None)?;
            epochs * per_epoch
        }
    };
    let pct = a.number("pct_start", Some(0.3))?;
    let strategy = a.text("anneal_strategy", "cos", &["cos", "linear"])?;
    let cycle_momentum = a.flag("cycle_momentum", true)?;
    let base_m = a.per_group("base_momentum", Some(0.85))?;
    let max_m = a.per_group("max_momentum", Some(0.95))?;
    let div = a.number("div_factor", Some(25.0))?;
    let final_div = a.number("final_div_factor", Some(1e4))?;
    let three_phase = a.flag("three_phase", false)?;
    let initial = max_lr.divided(div);
    let min_lr = initial.divided(final_div);
    // As PyTorch's _schedule_phases.
    let phase = |end, lr, momentum| Phase { end, lr, momentum };
    let c = Clone::clone;
    let phases: Vec<Phase> = match three_phase {
        false => vec![
            phase(
                pct * total - 1.0,
                (c(&initial), c(&max_lr)),
                (c(&max_m), c(&base_m)),
            ),
            phase(total - 1.0, (c(&max_lr), min_lr), (c(&base_m), c(&max_m))),
        ],
        true => vec![
            phase(
                pct * total - 1.0,
                (c(&initial), c(&max_lr)),
                (c(&max_m), c(&base_m)),
            ),
            phase(
                2.0 * pct * total - 2.0,
                (c(&max_lr), c(&initial)),
                (base_m, c(&max_m)),
            ),
            phase(total - 1.0, (initial, min_lr), (c(&max_m), max_m)),
        ],
    };
    let anneal = |from: &Bound, to: &Bound, p: &str| match strategy.as_str() {
        "cos" => format!(
            "{e} + ({s} - {e}) / 2 * (cos(pi * {p}) + 1)",
            s = from.text(),
            e = to.text()
        ),
        _ => format!("({e} - {s}) * {p} + {s}", s = from.text(), e = to.text()),
    };
    let piecewise = |value: fn(&Phase) -> &(Bound, Bound)| {
        let mut expr = String::new();
        let mut start = 0.0;
        for (k, phase) in phases.iter().enumerate() {
            let (from, to) = value(phase);
            let p = format!("(({t} - {}) / {})", num(start), num(phase.end - start));
            let here = anneal(from, to, &p);
            match k + 1 == phases.len() {
                true => expr.push_str(&here),
                false => {
                    write!(expr, "where({t} <= {}, {here}, ", num(phase.end)).expect("string");
                }
            }
            start = phase.end;
        }
        expr.push_str(&")".repeat(phases.len() - 1));
        expr
    };
    let mut out = vec![("lr".to_string(), piecewise(|p| &p.lr))];
    if cycle_momentum {
        let name = momentum_name(a.config, hypers)?;
        out.push((name, piecewise(|p| &p.momentum)));
    }
    Ok(out)
}

/// `ReduceLROnPlateau`, a metric-driven schedule (see examples/plateau.step).
fn plateau(config: &SchedulerConfig, hypers: &[String]) -> Result<ScheduleSource, OptimError> {
    let mut a = Args::new(config, hypers);
    let body = read_plateau(&mut a)?;
    let per_group = std::mem::take(&mut a.per_group);
    a.finish()?;
    Ok(ScheduleSource::new(
        "reduce_lr_on_plateau",
        &body,
        per_group,
    ))
}

/// [`plateau`], reading the keyword arguments through `a`.
fn read_plateau(a: &mut Args<'_>) -> Result<String, OptimError> {
    let config = a.config;
    let mode = a.text("mode", "min", &["min", "max"])?;
    let factor = a.number("factor", Some(0.1))?;
    let patience = a.number("patience", Some(10.0))?;
    let threshold = a.number("threshold", Some(1e-4))?;
    let threshold_mode = a.text("threshold_mode", "rel", &["rel", "abs"])?;
    let cooldown = a.number("cooldown", Some(0.0))?;
    let min_lr = a.per_group("min_lr", Some(0.0))?;
    let eps = a.number("eps", Some(1e-8))?;
    if factor >= 1.0 {
        return Err(OptimError::BadValue {
            optimizer: config.name.clone(),
            name: "factor".into(),
            expected: "a number < 1".into(),
            got: factor.to_string(),
            place: String::new(),
        });
    }
    let th = num(threshold);
    let (worst, better) = match (mode.as_str(), threshold_mode.as_str()) {
        ("min", "rel") => ("1e308", format!("metric < best * (1 - {th})")),
        ("min", _) => ("1e308", format!("metric < best - {th}")),
        (_, "rel") => ("-1e308", format!("metric > best * (1 + {th})")),
        _ => ("-1e308", format!("metric > best + {th}")),
    };
    Ok(format!(
        "  state best: scalar = {worst}
  state bad: scalar = 0
  state cooling: scalar = 0
  state current: scalar = -1
  let now = where(current < 0, lr, current)
  let improved = {better}
  best = where(improved, metric, best)
  bad = where(improved, 0, bad + 1)
  bad = where(cooling > 0, 0, bad)
  cooling = where(cooling > 0, cooling - 1, cooling)
  let reduced = max(now * {factor}, {min_lr})
  current = where(bad > {patience}, where(now - reduced > {eps}, reduced, now), now)
  cooling = where(bad > {patience}, {cooldown}, cooling)
  bad = where(bad > {patience}, 0, bad)
  lr = current
",
        factor = num(factor),
        min_lr = min_lr.text(),
        patience = num(patience),
        eps = num(eps),
        cooldown = num(cooldown),
    ))
}

/// The `.step` schedule source of `config` for an optimizer with hyperparameters `hypers`.
pub fn scheduler_source(
    config: &SchedulerConfig,
    hypers: &[String],
) -> Result<ScheduleSource, OptimError> {
    if config.name == "ReduceLROnPlateau" {
        return plateau(config, hypers);
    }
    let (assigned, per_group) = assignments(config, "t", hypers)?;
    let mut body = String::new();
    for (hyper, expr) in assigned {
        if !hypers.contains(&hyper) {
            return Err(OptimError::BadValue {
                optimizer: config.name.clone(),
                name: hyper.clone(),
                expected: "a hyperparameter of the optimizer".into(),
                got: "absent".into(),
                place: String::new(),
            });
        }
        writeln!(body, "  {hyper} = {expr}").expect("string");
    }
    let name = config.name.to_lowercase();
    Ok(ScheduleSource::new(&name, &body, per_group))
}

/// A built-in scheduler as `.step` schedule source, with the values of its arguments given
/// per param group (the source declares each as a hyperparameter of the schedule).
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleSource {
    /// The `schedule` block.
    pub source: String,
    /// The arguments given one value per group, to put on the scheduled definition
    /// (`Definition::per_group`).
    pub per_group: Vec<PerGroupValues>,
}

impl ScheduleSource {
    /// `schedule name { hyper ...; body }`, a hyperparameter declared for each argument given
    /// per group (group 0's value as its default).
    fn new(name: &str, body: &str, per_group: Vec<PerGroupValues>) -> ScheduleSource {
        let mut source = format!("schedule {name} {{\n");
        for list in &per_group {
            writeln!(source, "  hyper {} = {}", list.hyper, num(list.values[0])).expect("string");
        }
        source.push_str(body);
        source.push_str("}\n");
        ScheduleSource { source, per_group }
    }

    /// `scheduled` (this source applied to a definition) with the per-group values in force.
    pub fn with_groups(&self, mut scheduled: optjit_trace::Definition) -> optjit_trace::Definition {
        scheduled.per_group.extend(self.per_group.iter().cloned());
        scheduled
    }
}

impl SchedulerConfig {
    /// The scheduler `name` with keyword arguments `kwargs`.
    pub fn new<'k>(
        name: &str,
        kwargs: impl IntoIterator<Item = (&'k str, SchedulerArg)>,
    ) -> SchedulerConfig {
        SchedulerConfig {
            name: name.to_string(),
            kwargs: kwargs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    /// `definition` with this scheduler in force (see `optjit_trace::step::Schedule::apply`):
    /// the scheduled values are computed in the step's scalar program, or, for
    /// `ReduceLROnPlateau`, when a metric is reported.
    pub fn apply(
        &self,
        definition: &optjit_trace::Definition,
    ) -> Result<optjit_trace::Definition, OptimError> {
        let hypers: Vec<String> = definition
            .graph
            .hypers
            .iter()
            .map(|h| h.name.clone())
            .collect();
        let source = scheduler_source(self, &hypers)?;
        let trace_error = |e: optjit_trace::step::StepError| OptimError::Trace {
            optimizer: self.name.clone(),
            message: e.to_string(),
        };
        let loaded = optjit_trace::step::load(&self.name, &source.source).map_err(trace_error)?;
        let schedule = loaded.schedules.first().ok_or_else(|| OptimError::Trace {
            optimizer: self.name.clone(),
            message: "generated source has no schedule".into(),
        })?;
        let scheduled = schedule.apply(definition).map_err(trace_error)?;
        Ok(source.with_groups(scheduled))
    }
}

/// The keyword arguments of scheduler `name` with PyTorch's defaults (`required` where there is
/// none), in the order the scheduler reads them; empty for an unknown name.
pub fn scheduler_kwargs(name: &str) -> Vec<(&'static str, String)> {
    use SchedulerArg::{Number, Numbers, Schedulers};
    let constant = || SchedulerConfig::new("ConstantLR", []);
    // Just the required keywords, so that every optional one reports its default.
    let required: Vec<(&str, SchedulerArg)> = match name {
        "StepLR" => vec![("step_size", Number(1.0))],
        "MultiStepLR" => vec![("milestones", Numbers(vec![1.0]))],
        "ExponentialLR" => vec![("gamma", Number(0.5))],
        "CosineAnnealingLR" => vec![("T_max", Number(1.0))],
        "CosineAnnealingWarmRestarts" => vec![("T_0", Number(1.0))],
        "CyclicLR" => vec![("base_lr", Number(0.1)), ("max_lr", Number(1.0))],
        "OneCycleLR" => vec![("max_lr", Number(1.0)), ("total_steps", Number(10.0))],
        "SequentialLR" => vec![
            ("schedulers", Schedulers(vec![constant(), constant()])),
            ("milestones", Numbers(vec![1.0])),
        ],
        "ChainedScheduler" => vec![("schedulers", Schedulers(vec![constant()]))],
        _ => Vec::new(),
    };
    let config = SchedulerConfig::new(name, required);
    let hypers = ["lr".to_string(), "momentum".to_string()];
    let mut a = Args::new(&config, &hypers);
    let read = match name {
        "ReduceLROnPlateau" => read_plateau(&mut a).map(|_| ()),
        _ => read_assignments(&mut a, "t", &hypers).map(|_| ()),
    };
    match read {
        Ok(()) => a.defaults,
        Err(_) => Vec::new(),
    }
}
