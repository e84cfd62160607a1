//! Random `.step` optimizer programs and setups for `tests/fuzz_pipeline.rs`, deterministic by
//! seed, with values kept where an f32 run and an f64 run can be compared (see that file).

use optjit::{Definition, Group, Setup};
use std::collections::BTreeMap;
use std::fmt;

/// SplitMix64: small, seedable, good enough to pick programs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `k / denominator` for a uniform integer `k` in `[lo * denominator, hi * denominator]`:
    /// exact in f32 for small denominators.
    pub fn grid(&mut self, lo: f64, hi: f64, denominator: f64) -> f64 {
        let (a, b) = ((lo * denominator) as i64, (hi * denominator) as i64);
        (a + self.below((b - a + 1) as usize) as i64) as f64 / denominator
    }
}

/// What a hyperparameter is for, which decides its values.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A learning rate: in [1/16, 1/2].
    Lr,
    /// A decay: in [1/2, 31/32].
    Beta,
    /// Anything in [-2, 2], a multiple of 1/8.
    Any,
}

struct Hyper {
    name: String,
    kind: Kind,
}

impl Kind {
    fn value(self, rng: &mut Rng) -> f64 {
        match self {
            Kind::Lr => rng.grid(1.0 / 16.0, 0.5, 32.0),
            Kind::Beta => rng.grid(0.5, 31.0 / 32.0, 32.0),
            Kind::Any => rng.grid(-2.0, 2.0, 8.0),
        }
    }

    /// The domain to declare, if any (the values above are inside).
    fn domain(self) -> &'static str {
        match self {
            Kind::Lr => " in (0, inf)",
            Kind::Beta => " in [0, 1)",
            Kind::Any => " in [-2, 2]",
        }
    }
}

/// Value classes, in join order.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
enum Cls {
    Scalar,
    Tensor,
    Elem,
}

/// A name in scope.
#[derive(Clone)]
struct Var {
    name: String,
    cls: Cls,
    /// A bound on its magnitude (a guess that keeps values from growing; not a proof).
    bound: f64,
    /// Whether a group's hyperparameters or scalar states change it (then `global_norm` may
    /// not take it: the reference interprets each group with the other groups' tensors).
    tainted: bool,
}

/// An expression under construction.
struct Expr {
    text: String,
    cls: Cls,
    bound: f64,
    tainted: bool,
}

/// One fuzz case: the program, its setup and its data.
pub struct Case {
    pub seed: u64,
    pub source: String,
    /// `clip_grad_norm`'s `max_norm`, when the program is wrapped in it.
    pub max_norm: Option<f64>,
    pub definition: Definition,
    pub shapes: Vec<Vec<usize>>,
    /// The tensors of each group (every tensor in exactly one).
    pub groups: Vec<Vec<usize>>,
    /// Every hyperparameter's value for the whole optimizer, and the overrides of each group.
    pub hypers: BTreeMap<String, f64>,
    pub group_overrides: Vec<BTreeMap<String, f64>>,
    pub threads: usize,
}

impl Case {
    pub fn setup(&self) -> Setup {
        Setup {
            shapes: self.shapes.clone(),
            groups: match self.groups.len() {
                1 => Vec::new(),
                _ => (self.groups.iter().zip(&self.group_overrides))
                    .map(|(tensors, hypers)| Group {
                        tensors: tensors.clone(),
                        hypers: hypers.clone(),
                        rule: None,
                    })
                    .collect(),
            },
            hypers: self.hypers.clone(),
            threads: self.threads,
            ..Setup::default()
        }
    }

    /// The hyperparameters in force for group `g`.
    pub fn group_hypers(&self, g: usize) -> BTreeMap<String, f64> {
        let mut hypers = self.hypers.clone();
        hypers.extend(self.group_overrides[g].clone());
        hypers
    }

    fn tensor_values(&self, salt: u64) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(self.seed.wrapping_mul(31).wrapping_add(salt));
        (self.shapes.iter())
            .map(|shape| {
                let n = shape.iter().product::<usize>();
                (0..n).map(|_| rng.grid(-2.0, 2.0, 1024.0) as f32).collect()
            })
            .collect()
    }

    pub fn initial_params(&self) -> Vec<Vec<f32>> {
        self.tensor_values(0)
    }

    pub fn grads(&self, step: usize) -> Vec<Vec<f32>> {
        self.tensor_values(1000 + step as u64)
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.source)?;
        if let Some(max_norm) = self.max_norm {
            writeln!(f, "wrapped in clip_grad_norm(max_norm = {max_norm})")?;
        }
        writeln!(f, "shapes {:?}, threads {}", self.shapes, self.threads)?;
        writeln!(f, "hypers {:?}", self.hypers)?;
        for (g, (tensors, overrides)) in self.groups.iter().zip(&self.group_overrides).enumerate() {
            writeln!(f, "group {g}: tensors {tensors:?}, hypers {overrides:?}")?;
        }
        Ok(())
    }
}

/// Builds the program's text statement by statement.
struct Gen<'r> {
    rng: &'r mut Rng,
    /// For the CUDA target: whether the e-graph runs in exact-only mode.
    gpu: Option<bool>,
    lines: Vec<String>,
    vars: Vec<Var>,
    hypers: Vec<Hyper>,
    lets: usize,
    /// The largest tensor, and all elements: bounds of reductions.
    max_len: f64,
    total_len: f64,
    /// Whether this program may take `sqrt` of negative values (NaNs on both sides).
    unsafe_ops: bool,
    /// The largest class of the operands `expr` picks.
    max: Cls,
}

/// A dyadic constant in [-2, 2] (exact in f32), as text.
fn constant(rng: &mut Rng) -> String {
    num(rng.grid(-2.0, 2.0, 4.0))
}

fn num(x: f64) -> String {
    format!("{x}")
}

impl Gen<'_> {
    fn var(&self, name: &str) -> Option<&Var> {
        self.vars.iter().find(|v| v.name == name)
    }

    /// A variable in scope of at most `cls` (recent ones more often).
    fn operand(&mut self, max: Cls) -> Var {
        let fits: Vec<Var> = (self.vars.iter())
            .filter(|v| v.cls <= max)
            .cloned()
            .collect();
        let n = fits.len();
        let i = match self.rng.chance(0.5) {
            true => n - 1 - self.rng.below(n.min(4)),
            false => self.rng.below(n),
        };
        fits[i].clone()
    }

    fn hyper_of(&mut self, kind: Kind) -> Option<String> {
        let names: Vec<String> = (self.hypers.iter())
            .filter(|h| h.kind == kind)
            .map(|h| h.name.clone())
            .collect();
        (!names.is_empty()).then(|| self.rng.pick(&names).clone())
    }

    /// A decay factor: a `Beta` hyperparameter or a constant in (0, 1).
    fn beta(&mut self) -> String {
        match self.hyper_of(Kind::Beta) {
            Some(name) if self.rng.chance(0.8) => name,
            _ => num(self.rng.grid(0.5, 0.9375, 16.0)),
        }
    }

    fn lr(&mut self) -> String {
        match self.hyper_of(Kind::Lr) {
            Some(name) if self.rng.chance(0.8) => name,
            _ => num(self.rng.grid(0.0625, 0.5, 16.0)),
        }
    }

    /// A value computed exactly in f32 and f64 (so that comparing it, its sign or its floor
    /// gives the same answer in both): an input on the grid, a dyadic constant or
    /// hyperparameter, `step`, and one exact operation of them.
    fn exact(&mut self, elem: bool) -> (String, Cls) {
        let any = self.hyper_of(Kind::Any);
        let c = constant(self.rng);
        if elem {
            let text = match self.rng.below(5) {
                0 | 1 => "grad".to_string(),
                2 => format!("grad - {c}"),
                3 => "abs(grad)".to_string(),
                _ => match any {
                    Some(h) => format!("{h} * grad"),
                    None => format!("{c} * grad"),
                },
            };
            return (text, Cls::Elem);
        }
        let text = match (self.rng.below(4), any) {
            (0, Some(h)) => h,
            (1, Some(h)) => format!("{h} * step"),
            (2, _) => format!("step - {}", self.rng.below(4) + 1),
            _ => format!("step * {c}"),
        };
        (text, Cls::Scalar)
    }

    /// A comparison that no rounding flips.
    fn condition(&mut self) -> (String, Cls) {
        let op = *self.rng.pick(&["<", "<=", ">", ">=", "==", "!="]);
        let elem = self.rng.chance(0.8);
        let (a, cls) = self.exact(elem);
        let b = match (self.rng.chance(0.5), self.hyper_of(Kind::Any)) {
            (true, Some(h)) => h,
            _ => constant(self.rng),
        };
        (format!("{a} {op} {b}"), cls)
    }

    fn join(a: &Var, b: &Var) -> (Cls, bool) {
        let cls = if a.cls > b.cls { a.cls } else { b.cls };
        (cls, a.tainted || b.tainted)
    }

    /// One random expression of variables in scope.
    fn expr(&mut self) -> Expr {
        let a = self.operand(self.max);
        let b = self.operand(self.max);
        let (cls, tainted) = Self::join(&a, &b);
        let (an, bn) = (a.name.clone(), b.name.clone());
        let (ab, bb) = (a.bound, b.bound);
        let e = |text: String, bound: f64| Expr {
            text,
            cls,
            bound,
            tainted,
        };
        let one = |text: String, bound: f64| Expr {
            text,
            cls: a.cls,
            bound,
            tainted: a.tainted,
        };
        // At least 1/2: a smaller constant makes `log(abs(x) + c)` and its like amplify rounding
        // enough, over a few steps of a recurrence, to come near the tolerance.
        let c = *self.rng.pick(&[0.5, 1.0, 2.0]);
        match self.rng.below(26) {
            0 => e(format!("{an} + {bn}"), ab + bb),
            1 => e(format!("{an} - {bn}"), ab + bb),
            2 | 3 => e(format!("{an} * {bn}"), ab * bb),
            4 => e(format!("{an} / ({bn} * {bn} + {c})"), ab / c),
            5 => e(format!("{an} / (abs({bn}) + {c})"), ab / c),
            6 => e(format!("min({an}, {bn})"), ab.max(bb)),
            7 => e(format!("max({an}, {bn})"), ab.max(bb)),
            8 => {
                let lo = self.rng.grid(-2.0, 0.0, 4.0);
                let hi = lo + self.rng.grid(0.25, 2.0, 4.0);
                one(format!("clamp({an}, {lo}, {hi})"), lo.abs().max(hi.abs()))
            }
            9 => one(format!("-{an}"), ab),
            10 => one(format!("sqrt({an} * {an} + {c})"), ab + c.sqrt()),
            11 => one(format!("sqrt(abs({an}) + {c})"), (ab + c).sqrt()),
            12 => one(format!("rsqrt({an} * {an} + {c})"), 1.0 / c.sqrt()),
            13 => one(format!("exp(clamp({an}, -2, 2))"), 7.4),
            14 => one(format!("exp({an} / (abs({an}) + 1))"), 2.8),
            15 => one(
                format!("log({an} * {an} + {c})"),
                (ab * ab + c).ln().abs().max(1.4),
            ),
            16 => one(
                format!("log(abs({an}) + {c})"),
                (ab + c).ln().abs().max(1.4),
            ),
            17 => one(format!("abs({an})"), ab),
            18 => {
                let elem = self.rng.chance(0.7);
                let (x, xcls) = self.exact(elem);
                Expr {
                    text: format!("sign({x})"),
                    cls: xcls,
                    bound: 1.0,
                    tainted: true,
                }
            }
            19 | 20 => {
                let (cond, ccls) = self.condition();
                let cls = if ccls > cls { ccls } else { cls };
                Expr {
                    text: format!("where({cond}, {an}, {bn})"),
                    cls,
                    bound: ab.max(bb),
                    tainted: true,
                }
            }
            21 => {
                // `pow` of a positive base: a general exponent runs on the CPU only.
                let exponents: &[&str] = match (self.gpu, a.cls) {
                    (None, _) | (Some(_), Cls::Scalar) => &["0.5", "-0.5", "2", "1.5", "-1", "3"],
                    (Some(_), _) => &[],
                };
                if exponents.is_empty() {
                    return one(format!("sqrt({an} * {an} + {c})"), ab + c.sqrt());
                }
                let p = *self.rng.pick(exponents);
                let x: f64 = p.parse().unwrap();
                let bound = (ab * ab + c).powf(x).max(c.powf(x));
                one(format!("pow({an} * {an} + {c}, {p})"), bound)
            }
            22 => {
                let beta = self.beta();
                Expr {
                    text: format!("{an} / (1 - pow({beta}, step))"),
                    cls: a.cls,
                    bound: ab * 32.0,
                    tainted: true,
                }
            }
            23 => {
                let z = self.operand(self.max);
                let cls = if z.cls > cls { z.cls } else { cls };
                Expr {
                    text: format!("{an} * {bn} + {}", z.name),
                    cls,
                    bound: ab * bb + z.bound,
                    tainted: tainted || z.tainted,
                }
            }
            24 => self.reduction(),
            _ => self.scalar_only(),
        }
    }

    /// A reduction of a per-element value: per tensor, or `global_norm` over all.
    fn reduction(&mut self) -> Expr {
        let elems: Vec<Var> = (self.vars.iter())
            .filter(|v| v.cls == Cls::Elem)
            .cloned()
            .collect();
        let x = self.rng.pick(&elems).clone();
        let untainted: Vec<Var> = elems.iter().filter(|v| !v.tainted).cloned().collect();
        if self.rng.chance(0.25) && !untainted.is_empty() {
            let x = self.rng.pick(&untainted).clone();
            return Expr {
                text: format!("global_norm({})", x.name),
                cls: Cls::Scalar,
                bound: x.bound * self.total_len.sqrt(),
                tainted: false,
            };
        }
        let (f, bound) = match self.rng.below(4) {
            0 => ("norm", x.bound * self.max_len.sqrt()),
            1 => ("sum", x.bound * self.max_len),
            2 => ("mean", x.bound),
            _ => ("max_abs", x.bound),
        };
        Expr {
            text: format!("{f}({})", x.name),
            cls: Cls::Tensor,
            bound,
            tainted: x.tainted,
        }
    }

    /// `sin`, `cos` or `floor` (scalars only).
    fn scalar_only(&mut self) -> Expr {
        let s = self.operand(Cls::Scalar);
        let (text, tainted) = match self.rng.below(3) {
            0 => (format!("sin({})", s.name), s.tainted),
            1 => (format!("cos({})", s.name), s.tainted),
            _ => (format!("floor({})", self.exact(false).0), true),
        };
        Expr {
            text,
            cls: Cls::Scalar,
            bound: 5.0,
            tainted,
        }
    }

    /// `sqrt` of a possibly negative exact value: NaN where it is negative.
    fn nan_maker(&mut self) -> Expr {
        let h = self.hyper_of(Kind::Any).unwrap_or_else(|| "-0.5".into());
        let text = match self.rng.below(3) {
            0 => "sqrt(grad)".to_string(),
            1 => format!("sqrt(grad / {h})"),
            _ => format!("sqrt({h} * grad)"),
        };
        Expr {
            text,
            cls: Cls::Elem,
            bound: 2.0,
            tainted: true,
        }
    }

    /// `let vN = expr`, squashed into [-1, 1] when its bound is large; gives the name.
    fn define(&mut self, expr: Expr) -> Var {
        let name = format!("v{}", self.lets);
        self.lets += 1;
        self.lines.push(format!("let {name} = {}", expr.text));
        let mut var = Var {
            name,
            cls: expr.cls,
            bound: expr.bound,
            tainted: expr.tainted,
        };
        if var.bound > 4.0 {
            let squashed = format!("v{}", self.lets);
            self.lets += 1;
            let n = &var.name;
            self.lines
                .push(format!("let {squashed} = {n} / (abs({n}) + 1)"));
            var.name = squashed;
            var.bound = 1.0;
        }
        self.vars.push(var.clone());
        var
    }

    /// A fresh defined value of at most `max` class and bound 4.
    fn value(&mut self, max: Cls) -> Var {
        self.max = max;
        for _ in 0..20 {
            let expr = match self.unsafe_ops && self.rng.chance(0.1) && max == Cls::Elem {
                true => self.nan_maker(),
                false => self.expr(),
            };
            if expr.cls <= max {
                return self.define(expr);
            }
        }
        self.operand(max)
    }

    /// Replaces `name`'s entry (a state or `param` just assigned).
    fn assigned(&mut self, name: &str, cls: Cls, bound: f64, tainted: bool) {
        self.vars.retain(|v| v.name != name);
        self.vars.push(Var {
            name: name.to_string(),
            cls,
            bound,
            tainted,
        });
    }
}

/// The program and setup of `seed`. With `gpu` (`Some(exact_only)`), only what the CUDA target
/// compiles, and smaller tensors: PTX has no general per-element `pow`, and that is every
/// per-element `pow` the e-graph may leave: `pow(x, 0.5)` and `pow(x, -0.5)` (not `sqrt` and
/// `rsqrt` at -0 and -inf), `pow(x, 2)` and `pow(x, -1)` in exact-only mode (their rewrites to
/// `x * x` and `1 / x` are not exact), and `pow(x, 2)` even by default when `x` is dear:
/// extraction counts `x` twice in `x * x` (`param = pow(exp(grad), 2)` is refused for CUDA:
/// this test found it).
pub fn generate(seed: u64, gpu: Option<bool>) -> Case {
    let mut rng = Rng::new(seed);
    // Shapes: one to four tensors, empty ones and odd lengths, some of two dimensions.
    let lens: &[usize] = match gpu.is_some() {
        true => &[0, 1, 2, 3, 5, 8, 13, 17, 33],
        false => &[0, 1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 31, 33, 64, 100],
    };
    let n_tensors = 1 + rng.below(4);
    let shapes: Vec<Vec<usize>> = (0..n_tensors)
        .map(|_| match rng.chance(0.2) {
            true => vec![1 + rng.below(4), rng.below(9)],
            false => vec![*rng.pick(lens)],
        })
        .collect();
    let sizes: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
    let max_len = sizes.iter().copied().max().unwrap_or(0).max(1) as f64;
    let total_len = sizes.iter().sum::<usize>().max(1) as f64;

    let mut hypers = Vec::new();
    let mut lines = Vec::new();
    for i in 0..rng.below(5) {
        let kind = *rng.pick(&[Kind::Lr, Kind::Beta, Kind::Any]);
        let name = format!("h{i}");
        let domain = if rng.chance(0.5) { kind.domain() } else { "" };
        lines.push(format!(
            "hyper {name} = {}{domain}",
            num(kind.value(&mut rng))
        ));
        hypers.push(Hyper { name, kind });
    }
    let mut vars = vec![
        Var {
            name: "param".into(),
            cls: Cls::Elem,
            bound: 12.0,
            tainted: false,
        },
        Var {
            name: "grad".into(),
            cls: Cls::Elem,
            bound: 2.0,
            tainted: false,
        },
        Var {
            name: "step".into(),
            cls: Cls::Scalar,
            bound: 4.0,
            tainted: false,
        },
    ];
    for h in &hypers {
        vars.push(Var {
            name: h.name.clone(),
            cls: Cls::Scalar,
            bound: 2.0,
            tainted: true,
        });
    }
    let n_states = rng.below(3);
    let n_scalar_states = rng.below(3);
    for i in 0..n_states {
        let name = format!("s{i}");
        lines.push(format!("state {name} = {}", constant(&mut rng)));
        vars.push(Var {
            name,
            cls: Cls::Elem,
            bound: 4.0,
            tainted: false,
        });
    }
    for i in 0..n_scalar_states {
        let name = format!("c{i}");
        lines.push(format!("state {name}: scalar = {}", constant(&mut rng)));
        vars.push(Var {
            name,
            cls: Cls::Scalar,
            bound: 4.0,
            tainted: true,
        });
    }
    let mut g = Gen {
        rng: &mut rng,
        gpu,
        lines,
        vars,
        hypers,
        lets: 0,
        max_len,
        total_len,
        unsafe_ops: false,
        max: Cls::Elem,
    };
    g.unsafe_ops = g.rng.chance(0.1);

    // Statements: values, then assignments to states and scalar states, in random order.
    let n_statements = 2 + g.rng.below(8);
    for _ in 0..n_statements {
        match g.rng.below(6) {
            0 if n_states > 0 => {
                let s = format!("s{}", g.rng.below(n_states));
                let v = g.value(Cls::Elem);
                // Assigned directly only a per-element value: a state holds no per-tensor
                // value, and one holding a scalar would make later reads scalars.
                let direct = v.cls == Cls::Elem;
                let (text, bound, tainted) = match g.rng.below(3) {
                    0 | 2 if !direct || g.rng.chance(0.5) => {
                        let beta = g.beta();
                        (
                            format!("{beta} * {s} + (1 - {beta}) * {}", v.name),
                            4.0,
                            true,
                        )
                    }
                    1 => {
                        let beta = g.beta();
                        (format!("max({beta} * {s}, abs({}))", v.name), 4.0, true)
                    }
                    _ => (v.name.clone(), v.bound, v.tainted),
                };
                g.lines.push(format!("{s} = {text}"));
                let was = g.var(&s).is_some_and(|v| v.tainted);
                g.assigned(&s, Cls::Elem, bound, tainted || was);
            }
            1 if n_scalar_states > 0 => {
                let c = format!("c{}", g.rng.below(n_scalar_states));
                let v = g.value(Cls::Scalar);
                let text = match g.rng.chance(0.5) {
                    true => {
                        let beta = g.beta();
                        format!("{beta} * {c} + (1 - {beta}) * {}", v.name)
                    }
                    false => v.name.clone(),
                };
                g.lines.push(format!("{c} = {text}"));
                g.assigned(&c, Cls::Scalar, 4.0, true);
            }
            _ => {
                g.value(Cls::Elem);
            }
        }
    }
    // The update: sometimes twice (the second reads the first).
    for _ in 0..1 + usize::from(g.rng.chance(0.2)) {
        let v = g.value(Cls::Elem);
        let lr = g.lr();
        let text = match g.rng.below(4) {
            0 if v.cls == Cls::Elem => v.name.clone(),
            1 => {
                let wd = num(g.rng.grid(0.0, 0.5, 8.0));
                format!("param * (1 - {lr} * {wd}) - {lr} * {}", v.name)
            }
            _ => format!("param - {lr} * {}", v.name),
        };
        g.lines.push(format!("param = {text}"));
        g.assigned("param", Cls::Elem, 12.0, true);
    }
    let body = g.lines.join("\n  ");
    let hyper_kinds: Vec<(String, Kind)> =
        g.hypers.iter().map(|h| (h.name.clone(), h.kind)).collect();
    let source = format!("optimizer fuzz {{\n  {body}\n}}\n");

    let loaded = optjit::trace::step::load("fuzz.step", &source).unwrap_or_else(|e| {
        panic!("seed {seed}: the generator wrote a bad program: {e}\n{source}")
    });
    let mut definition = loaded.optimizer.expect("an optimizer block");
    let max_norm = rng.chance(0.25).then(|| rng.grid(0.5, 8.0, 4.0));
    if let Some(max_norm) = max_norm {
        definition = optjit::clip_grad_norm(&definition, max_norm).expect("clip_grad_norm");
    }

    let mut hyper_values = BTreeMap::new();
    for (name, kind) in &hyper_kinds {
        hyper_values.insert(name.clone(), kind.value(&mut rng));
    }
    let groups: Vec<Vec<usize>> = match n_tensors >= 2 && rng.chance(0.4) {
        true => {
            let split = 1 + rng.below(n_tensors - 1);
            vec![(0..split).collect(), (split..n_tensors).collect()]
        }
        false => vec![(0..n_tensors).collect()],
    };
    let group_overrides = (0..groups.len())
        .map(|g| match g {
            0 => BTreeMap::new(),
            _ => {
                let mut overrides = BTreeMap::new();
                for (name, kind) in &hyper_kinds {
                    if rng.chance(0.7) {
                        overrides.insert(name.clone(), kind.value(&mut rng));
                    }
                }
                overrides
            }
        })
        .collect();
    Case {
        seed,
        source,
        max_norm,
        definition,
        shapes,
        groups,
        hypers: hyper_values,
        group_overrides,
        threads: 1 + rng.below(2),
    }
}
