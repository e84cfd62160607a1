//! The f64 reference interpreter: runs one optimizer step of a graph on plain vectors.

use crate::dtype::{Class, DType};
use crate::graph::{Graph, Target};
use crate::op::{Binary, Cmp, Input, Op, Reduction, Unary};
use crate::verify::{VerifyError, verify};
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, HashMap};

/// The per-element values of one tensor: its parameter, gradient and per-element states.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorValues {
    /// The parameter.
    pub param: Vec<f64>,
    /// Its gradient (same length).
    pub grad: Vec<f64>,
    /// Per-element states by name (each the same length as `param`).
    pub states: BTreeMap<String, Vec<f64>>,
}

impl TensorValues {
    /// A tensor with no states yet.
    pub fn new(param: Vec<f64>, grad: Vec<f64>) -> Self {
        TensorValues {
            param,
            grad,
            states: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the state `name`.
    pub fn with_state(mut self, name: &str, values: Vec<f64>) -> Self {
        self.states.insert(name.to_string(), values);
        self
    }
}

/// The scalars of one parameter group for one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScalarEnv {
    /// Hyperparameter values; a declared hyper missing here takes its declared default.
    pub hypers: BTreeMap<String, f64>,
    /// The 1-based step count, including the step being taken: the tensors' and the
    /// optimizer's (`optimizer_step`, what schedules count) alike, as when every tensor has had
    /// its gradient at every step.
    pub step: f64,
    /// Scalar states before the step; a declared one missing here starts at its declared `init`.
    pub scalar_states: BTreeMap<String, f64>,
}

/// The result of one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Interpreted {
    /// Each tensor after the step, in the order given: `param` and `states` updated (states the
    /// graph does not assign keep their values, and every state the caller gave is kept),
    /// `grad` as given.
    pub tensors: Vec<TensorValues>,
    /// Every scalar state after the step: those of the env, and every declared one.
    pub scalar_states: BTreeMap<String, f64>,
}

/// Why the interpreter could not run a step.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// The graph does not verify.
    #[error("invalid graph: {0}")]
    Invalid(#[from] VerifyError),
    /// A hyper has no value in the env and no declaration (the verifier already rejects reads of
    /// undeclared hypers, so this is a safety net).
    #[error("hyper '{name}' has no value (expected it in the env or declared with a default)")]
    MissingHyper {
        /// The hyper's name.
        name: String,
    },
    /// A scalar state has no value in the env and no declaration (a safety net, as above).
    #[error("scalar state '{name}' has no value (expected it in the env or declared with an init)")]
    MissingScalarState {
        /// The state's name.
        name: String,
    },
    /// The graph reads a per-element state that a tensor does not have.
    #[error("tensor {tensor} has no state '{name}' (expected {len} values for it)")]
    MissingState {
        /// Position of the tensor.
        tensor: usize,
        /// The state's name.
        name: String,
        /// How many values it should have (the length of `param`).
        len: usize,
    },
    /// A tensor's gradient or a state is not as long as its parameter.
    #[error("tensor {tensor}: {what} has {found} values (expected {expected}, as many as param)")]
    LengthMismatch {
        /// Position of the tensor.
        tensor: usize,
        /// `grad` or `state NAME`.
        what: String,
        /// Its length.
        found: usize,
        /// The length of `param`.
        expected: usize,
    },
    /// The graph needs the tensors' shapes (per-row, per-column or per-matrix values, or the
    /// rank), which this interpreter does not take.
    #[error(
        "{node}: the reference interpreter runs on flat tensors, without the shapes that row, column and matrix values need"
    )]
    NeedsShapes {
        /// The first such node, as printed.
        node: String,
    },
}

/// The value of a node: one per group, one per tensor, or one per element of every tensor.
enum Val {
    Scalar(f64),
    PerTensor(Vec<f64>),
    PerElem(Vec<Vec<f64>>),
}

impl Val {
    /// The value at element `e` of tensor `t` (broadcasting scalars and per-tensor values).
    fn at(&self, t: usize, e: usize) -> f64 {
        match self {
            Val::Scalar(x) => *x,
            Val::PerTensor(v) => v[t],
            Val::PerElem(v) => v[t][e],
        }
    }
}

/// Runs one step of `graph` for one parameter group: `env` holds the group's scalars, `tensors`
/// its tensors. The graph is verified first.
///
/// Every value is computed in f64 whatever its dtype: constants as they are, per-element values
/// without rounding to the element dtype. Only explicit casts round: `cast f32` through `f32`,
/// `cast f16` and `cast bf16` to the nearest half-precision value (ties to even, overflow to
/// infinity, subnormals kept), rounded once from the f64 value rather than through f32;
/// `cast f64` is the identity. Comparisons give 1.0 (true) or 0.0 (false) internally and
/// `select` picks by them. `sign` is `jnp.sign` (NaN stays NaN, ±0 stays ±0; `torch.sign` gives
/// 0 for NaN and +0 for -0, which a graph spells with compares and selects), `min` and `max`
/// propagate NaN as `torch.minimum`/`torch.maximum` and order -0 below +0, `rsqrt` is
/// `1 / sqrt`, `pow` is `torch.pow` with a number exponent (C's `powf`, except that `x ^ 0.5`
/// is `sqrt(x)` and `x ^ -0.5` is `1 / sqrt(x)`: `(-inf) ^ 0.5` is NaN), `fma` is
/// `f64::mul_add`. Reductions: `norm`,
/// `sum`, `mean` and `max_abs` over the current tensor (NaN-propagating; `mean` of an empty
/// tensor is NaN, `max_abs` of one is 0), `global_norm` the square root of the sum of squares
/// over every tensor given to [`interpret`].
///
/// Hypers missing from `env` take their declared default and scalar states their declared `init`.
/// A per-element state the graph reads must be present in every tensor
/// ([`InterpError::MissingState`]); one it only writes is created. Each tensor's `grad` and
/// states must be as long as its `param` ([`InterpError::LengthMismatch`]). Outputs are assigned
/// together after every node is evaluated, so every read sees the values before the step; a
/// scalar assigned to `param` or a state is broadcast to every element.
///
/// ```
/// use optjit_ir::{Binary, Graph, Input, Op, ScalarEnv, Target, TensorValues, interpret};
/// let mut g = Graph::new("sgd");
/// g.declare_hyper("lr", 0.5);
/// let p = g.input(Input::Param);
/// let grad = g.input(Input::Grad);
/// let lr = g.input(Input::Hyper("lr".into()));
/// let step = g.add(Op::Binary(Binary::Mul), &[lr, grad]);
/// let new_p = g.add(Op::Binary(Binary::Sub), &[p, step]);
/// g.set_output(Target::Param, new_p);
/// let env = ScalarEnv { step: 1.0, ..ScalarEnv::default() };
/// let out = interpret(&g, &env, &[TensorValues::new(vec![1.0, 2.0], vec![0.5, -1.0])]).unwrap();
/// assert_eq!(out.tensors[0].param, vec![0.75, 2.5]);
/// ```
pub fn interpret(
    graph: &Graph,
    env: &ScalarEnv,
    tensors: &[TensorValues],
) -> Result<Interpreted, InterpError> {
    verify(graph)?;
    for (t, tv) in tensors.iter().enumerate() {
        let expected = tv.param.len();
        let mismatch = |what: String, found: usize| InterpError::LengthMismatch {
            tensor: t,
            what,
            found,
            expected,
        };
        if tv.grad.len() != expected {
            return Err(mismatch("grad".into(), tv.grad.len()));
        }
        if let Some((name, v)) = tv.states.iter().find(|(_, v)| v.len() != expected) {
            return Err(mismatch(format!("state {name}"), v.len()));
        }
    }
    if let Some(n) = graph.nodes().into_iter().find(|&n| {
        let node = graph.node(n);
        matches!(node.class, Class::Matrix | Class::Row | Class::Col)
            || node.op == Op::Input(Input::Rank)
    }) {
        return Err(InterpError::NeedsShapes {
            node: crate::print::node_text(graph, n),
        });
    }
    let lens: Vec<usize> = tensors.iter().map(|t| t.param.len()).collect();

    let mut vals: HashMap<NodeIndex, Val> = HashMap::new();
    for idx in graph.nodes() {
        let node = graph.node(idx);
        let operands = graph.operands(idx);
        let args: Vec<&Val> = operands.iter().map(|o| &vals[o]).collect();
        let val = match &node.op {
            Op::Input(input) => read_input(graph, env, tensors, input)?,
            Op::Const(c) => Val::Scalar(*c),
            Op::Reduce(r) => reduce(*r, args[0], &lens),
            op => elementwise(op, node.class, &args, &lens),
        };
        vals.insert(idx, val);
    }

    let mut out = tensors.to_vec();
    let mut scalar_states = env.scalar_states.clone();
    for s in &graph.states {
        if s.class == Class::Scalar {
            scalar_states.entry(s.name.clone()).or_insert(s.init);
        }
    }
    for o in &graph.outputs {
        let val = &vals[&o.value];
        match &o.target {
            Target::Param => {
                for (t, tv) in out.iter_mut().enumerate() {
                    tv.param = materialize(val, t, lens[t]);
                }
            }
            Target::State(name) => {
                for (t, tv) in out.iter_mut().enumerate() {
                    tv.states.insert(name.clone(), materialize(val, t, lens[t]));
                }
            }
            Target::ScalarState(name) => {
                scalar_states.insert(name.clone(), val.at(0, 0));
            }
        }
    }
    Ok(Interpreted {
        tensors: out,
        scalar_states,
    })
}

fn read_input(
    graph: &Graph,
    env: &ScalarEnv,
    tensors: &[TensorValues],
    input: &Input,
) -> Result<Val, InterpError> {
    Ok(match input {
        Input::Param => Val::PerElem(tensors.iter().map(|t| t.param.clone()).collect()),
        Input::Grad => Val::PerElem(tensors.iter().map(|t| t.grad.clone()).collect()),
        Input::State(name) => Val::PerElem(
            tensors
                .iter()
                .enumerate()
                .map(|(t, tv)| {
                    tv.states
                        .get(name)
                        .cloned()
                        .ok_or_else(|| InterpError::MissingState {
                            tensor: t,
                            name: name.clone(),
                            len: tv.param.len(),
                        })
                })
                .collect::<Result<_, _>>()?,
        ),
        Input::ScalarState(name) => Val::Scalar(
            env.scalar_states
                .get(name)
                .copied()
                .or_else(|| graph.state(name).map(|s| s.init))
                .ok_or_else(|| InterpError::MissingScalarState { name: name.clone() })?,
        ),
        Input::Hyper(name) => Val::Scalar(
            env.hypers
                .get(name)
                .copied()
                .or_else(|| graph.hyper(name).map(|h| h.default))
                .ok_or_else(|| InterpError::MissingHyper { name: name.clone() })?,
        ),
        Input::Step => Val::Scalar(env.step),
        Input::OptimizerStep => Val::Scalar(env.step),
        Input::RowState(_) | Input::ColState(_) | Input::Rank => {
            unreachable!("interpret refuses graphs that need shapes")
        }
    })
}

/// The value for every element of tensor `t` (a scalar or per-tensor value broadcast).
fn materialize(val: &Val, t: usize, len: usize) -> Vec<f64> {
    match val {
        Val::PerElem(v) => v[t].clone(),
        other => vec![other.at(t, 0); len],
    }
}

/// Applies a non-input, non-reduction op at every point of the node's class.
fn elementwise(op: &Op, class: Class, args: &[&Val], lens: &[usize]) -> Val {
    let point = |t: usize, e: usize| {
        let mut x = [0.0; 3];
        for (slot, a) in x.iter_mut().zip(args) {
            *slot = a.at(t, e);
        }
        eval_op(op, &x[..args.len()])
    };
    match class {
        Class::Scalar => Val::Scalar(point(0, 0)),
        Class::Tensor => Val::PerTensor((0..lens.len()).map(|t| point(t, 0)).collect()),
        Class::Elem => Val::PerElem(
            lens.iter()
                .enumerate()
                .map(|(t, &n)| (0..n).map(|e| point(t, e)).collect())
                .collect(),
        ),
        Class::Matrix | Class::Row | Class::Col => {
            unreachable!("interpret refuses graphs that need shapes")
        }
    }
}

fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// One application of an element-wise op in f64 (`x` has the op's arity, checked by the
/// verifier): `jnp.sign` for `sign`, `torch` semantics for `minimum`, `maximum` and `pow`;
/// comparisons give 1 or 0, and
/// `select` takes any nonzero condition as true. Inputs, constants and reductions give NaN (the
/// caller evaluates those). The host scalar program uses this too, so both agree by
/// construction.
pub fn eval_op(op: &Op, x: &[f64]) -> f64 {
    let arg = |i: usize| x.get(i).copied().unwrap_or(f64::NAN);
    let (a, b, c) = (arg(0), arg(1), arg(2));
    match op {
        Op::Unary(u) => match u {
            Unary::Neg => -a,
            Unary::Sqrt => a.sqrt(),
            Unary::Rsqrt => 1.0 / a.sqrt(),
            Unary::Exp => a.exp(),
            Unary::Log => a.ln(),
            Unary::Abs => a.abs(),
            Unary::Sign => sign(a),
            Unary::Sin => a.sin(),
            Unary::Cos => a.cos(),
            Unary::Floor => a.floor(),
        },
        Op::Binary(bin) => match bin {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Min => minimum(a, b),
            Binary::Max => maximum(a, b),
            Binary::Pow => pow(a, b),
        },
        Op::Fma => a.mul_add(b, c),
        Op::Cmp(cmp) => bool_value(match cmp {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
        }),
        Op::Select => {
            if a != 0.0 {
                b
            } else {
                c
            }
        }
        Op::Cast(d) => round_to(*d, a),
        // Inputs, constants and reductions are evaluated by the caller.
        Op::Input(_) | Op::Const(_) | Op::Reduce(_) => f64::NAN,
    }
}

/// `jnp.sign`: -1, 0 or 1; NaN stays NaN and ±0 stays ±0 (`torch.sign` gives 0 and +0).
fn sign(x: f64) -> f64 {
    if x.is_nan() || x == 0.0 {
        x
    } else {
        x.signum()
    }
}

/// `torch.minimum`: NaN if either is NaN; -0 is below +0.
fn minimum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        if a.is_sign_negative() { a } else { b }
    } else {
        a.min(b)
    }
}

/// `torch.maximum`: NaN if either is NaN; +0 is above -0.
fn maximum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        if a.is_sign_positive() { a } else { b }
    } else {
        a.max(b)
    }
}

/// `torch.pow(x, y)` for a number `y`: ATen computes `x ^ 0.5` as `sqrt(x)` and `x ^ -0.5` as
/// `1 / sqrt(x)`, so `(-inf) ^ 0.5` is NaN and `(-0) ^ 0.5` is -0 where C's `pow` gives inf and
/// +0; every other exponent is C's `pow`.
fn pow(x: f64, y: f64) -> f64 {
    if y == 0.5 {
        x.sqrt()
    } else if y == -0.5 {
        1.0 / x.sqrt()
    } else {
        x.powf(y)
    }
}

/// Rounds `x` to the nearest value of `dtype` (ties to even), kept as f64.
fn round_to(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F64 | DType::Bool => x,
        DType::F32 => x as f32 as f64,
        // 11 significant bits, smallest normal exponent -14, largest finite 65504.
        DType::F16 => round_to_format(x, 11, -14, 65504.0),
        // 8 significant bits, the exponent range of f32.
        DType::BF16 => round_to_format(x, 8, -126, f64::from(f32::from_bits(0x7f7f_0000))),
    }
}

/// Rounds `x` to a binary format with `precision` significant bits, smallest normal exponent
/// `emin` (with subnormals below it) and largest finite value `max`.
fn round_to_format(x: f64, precision: i32, emin: i32, max: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    // Exponent of |x| (f64 subnormals are far below every half-precision subnormal).
    let exponent = ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let quantum_exp = exponent.max(emin) - (precision - 1);
    let quantum = f64::from_bits(((quantum_exp + 1023) as u64) << 52);
    let rounded = (x / quantum).round_ties_even() * quantum;
    if rounded.abs() > max {
        f64::INFINITY.copysign(x)
    } else if rounded == 0.0 {
        0.0f64.copysign(x)
    } else {
        rounded
    }
}

/// A reduction of a per-element value.
fn reduce(r: Reduction, v: &Val, lens: &[usize]) -> Val {
    let values = |t: usize| (0..lens[t]).map(move |e| v.at(t, e));
    let per_tensor = |f: &dyn Fn(usize) -> f64| Val::PerTensor((0..lens.len()).map(f).collect());
    match r {
        Reduction::Norm => per_tensor(&|t| values(t).map(|x| x * x).sum::<f64>().sqrt()),
        Reduction::Sum => per_tensor(&|t| values(t).sum()),
        Reduction::Mean => per_tensor(&|t| values(t).sum::<f64>() / lens[t] as f64),
        Reduction::MaxAbs => per_tensor(&|t| {
            values(t).fold(0.0, |acc: f64, x| {
                if acc.is_nan() || x.is_nan() {
                    f64::NAN
                } else {
                    acc.max(x.abs())
                }
            })
        }),
        Reduction::GlobalNorm => Val::Scalar(
            (0..lens.len())
                .flat_map(values)
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt(),
        ),
        Reduction::RowMean | Reduction::ColMean | Reduction::RowsMean => {
            unreachable!("interpret refuses graphs that need shapes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_graph;
    use crate::parse::tests::{adamw, every_op};

    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                "got {got:?}\nwant {want:?}"
            );
        }
    }

    fn run(
        text: &str,
        env: &ScalarEnv,
        tensors: &[TensorValues],
    ) -> Result<Interpreted, InterpError> {
        let g = parse_graph(text).unwrap_or_else(|e| panic!("{e}"));
        interpret(&g, env, tensors)
    }

    fn env(hypers: &[(&str, f64)], step: f64) -> ScalarEnv {
        ScalarEnv {
            hypers: hypers.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
            step,
            scalar_states: BTreeMap::new(),
        }
    }

    const SGD_MOMENTUM: &str = "optimizer sgd {
  dtype f32
  hyper lr = 0.01
  hyper momentum = 0.9
  hyper dampening = 0.0
  state momentum_buffer = 0.0
  %0 = param : elem f32
  %1 = grad : elem f32
  %2 = state momentum_buffer : elem f32
  %3 = hyper lr : scalar f64
  %4 = hyper momentum : scalar f64
  %5 = hyper dampening : scalar f64
  %6 = const 1.0 : scalar f64
  %7 = mul %4, %2 : elem f32
  %8 = sub %6, %5 : scalar f64
  %9 = mul %8, %1 : elem f32
  %10 = add %7, %9 : elem f32
  %11 = mul %3, %10 : elem f32
  %12 = sub %0, %11 : elem f32
  param = %12
  momentum_buffer = %10
}
";

    #[test]
    fn sgd_with_momentum_step() {
        let tensors = [
            TensorValues::new(vec![1.0, -2.0, 0.5], vec![0.1, 0.2, -0.3])
                .with_state("momentum_buffer", vec![0.5, 0.0, -1.0]),
            TensorValues::new(vec![3.0], vec![1.0]).with_state("momentum_buffer", vec![2.0]),
        ];
        // lr from the env, momentum from the env, dampening from its declared default (0).
        let out = run(
            SGD_MOMENTUM,
            &env(&[("lr", 0.1), ("momentum", 0.9)], 1.0),
            &tensors,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // buf = 0.9 * buf + g; p = p - 0.1 * buf
        close(
            &out.tensors[0].states["momentum_buffer"],
            &[0.55, 0.2, -1.2],
        );
        close(&out.tensors[0].param, &[0.945, -2.02, 0.62]);
        close(&out.tensors[1].states["momentum_buffer"], &[2.8]);
        close(&out.tensors[1].param, &[2.72]);
        assert_eq!(out.tensors[0].grad, tensors[0].grad);
        assert!(out.scalar_states.is_empty());

        // With dampening 0.5: buf = 0.9 * buf + 0.5 * g.
        let out = run(
            SGD_MOMENTUM,
            &env(&[("lr", 0.1), ("dampening", 0.5)], 1.0),
            &tensors[..1],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        close(
            &out.tensors[0].states["momentum_buffer"],
            &[0.5, 0.1, -1.05],
        );
        close(&out.tensors[0].param, &[0.95, -2.01, 0.605]);
    }

    #[test]
    fn adam_step() {
        let g = adamw();
        let tensors = [TensorValues::new(vec![1.0, -2.0], vec![0.5, -0.25])
            .with_state("exp_avg", vec![0.1, -0.05])
            .with_state("exp_avg_sq", vec![0.01, 0.04])];
        // Adam (no weight decay), step 2, betas (0.9, 0.999), lr 1e-3, eps 1e-8:
        // m = 0.9 m + 0.1 g = [0.14, -0.07]; v = 0.999 v + 0.001 g^2 = [0.01024, 0.0400225];
        // p -= lr * (m / (1 - 0.9^2)) / (sqrt(v / (1 - 0.999^2)) + eps).
        let adam = env(&[("weight_decay", 0.0)], 2.0);
        let out = interpret(&g, &adam, &tensors).unwrap_or_else(|e| panic!("{e}"));
        close(&out.tensors[0].states["exp_avg"], &[0.14, -0.07]);
        close(&out.tensors[0].states["exp_avg_sq"], &[0.01024, 0.0400225]);
        close(
            &out.tensors[0].param,
            &[0.9996744401411278, -1.999917662300542],
        );
        // AdamW with the declared weight decay 0.01: p is first scaled by 1 - 1e-3 * 0.01.
        let out = interpret(&g, &env(&[], 2.0), &tensors).unwrap_or_else(|e| panic!("{e}"));
        close(
            &out.tensors[0].param,
            &[0.9996644401411279, -1.999897662300542],
        );
    }

    #[test]
    fn scalar_states_start_at_init_and_scalars_broadcast() {
        let text = "optimizer t {
  state n : scalar = 10.0
  state buf = 0.0
  %0 = scalar_state n : scalar f64
  %1 = step : scalar f64
  %2 = add %0, %1 : scalar f64
  %3 = param : elem f32
  %4 = norm %3 : tensor f64
  %5 = global_norm %3 : scalar f64
  n = %2
  param = %5
  buf = %2
}
";
        let tensors = [
            TensorValues::new(vec![3.0, 4.0], vec![0.0; 2]),
            TensorValues::new(vec![12.0], vec![0.0]),
        ];
        let out = run(text, &env(&[], 3.0), &tensors).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.scalar_states["n"], 13.0);
        assert_eq!(out.tensors[0].param, vec![13.0, 13.0]);
        assert_eq!(out.tensors[1].param, vec![13.0]);
        assert_eq!(out.tensors[1].states["buf"], vec![13.0]);
        let mut e = env(&[], 1.0);
        e.scalar_states.insert("n".into(), 0.5);
        e.scalar_states.insert("other".into(), 7.0);
        let out = run(text, &e, &tensors).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.scalar_states["n"], 1.5);
        assert_eq!(out.scalar_states["other"], 7.0);
    }

    #[test]
    fn reductions() {
        let text = "optimizer t {
  %0 = param : elem f32
  %1 = grad : elem f32
  %2 = norm %1 : tensor f64
  %3 = sum %1 : tensor f64
  %4 = mean %1 : tensor f64
  %5 = max_abs %1 : tensor f64
  %6 = global_norm %1 : scalar f64
  %7 = mul %0, %2 : elem f32
  %8 = fma %7, %3, %4 : elem f32
  %9 = fma %8, %5, %6 : elem f32
  param = %9
}
";
        let tensors = [
            TensorValues::new(vec![1.0, 1.0], vec![3.0, -4.0]),
            TensorValues::new(vec![1.0], vec![12.0]),
        ];
        let out = run(text, &ScalarEnv::default(), &tensors).unwrap_or_else(|e| panic!("{e}"));
        // tensor 0: norm 5, sum -1, mean -0.5, max_abs 4; global norm 13.
        // (1 * 5) * -1 + -0.5 = -5.5; -5.5 * 4 + 13 = -9.
        close(&out.tensors[0].param, &[-9.0; 2]);
        // tensor 1: norm 12, sum 12, mean 12, max_abs 12.
        close(&out.tensors[1].param, &[(12.0 * 12.0 + 12.0) * 12.0 + 13.0]);
    }

    #[test]
    fn elementwise_semantics() {
        let nan = f64::NAN;
        assert_eq!(sign(-3.0), -1.0);
        assert_eq!(sign(2.5), 1.0);
        assert!(sign(-0.0) == 0.0 && sign(-0.0).is_sign_negative());
        assert!(sign(0.0).is_sign_positive());
        assert!(sign(nan).is_nan());
        assert!(minimum(nan, 1.0).is_nan() && minimum(1.0, nan).is_nan());
        assert!(maximum(nan, 1.0).is_nan() && maximum(1.0, nan).is_nan());
        assert!(minimum(0.0, -0.0).is_sign_negative() && minimum(-0.0, 0.0).is_sign_negative());
        assert!(maximum(0.0, -0.0).is_sign_positive() && maximum(-0.0, 0.0).is_sign_positive());
        assert_eq!(minimum(2.0, -1.0), -1.0);
        assert_eq!(maximum(2.0, -1.0), 2.0);
        assert_eq!(eval_op(&Op::Unary(Unary::Rsqrt), &[4.0]), 0.5);
        assert_eq!(eval_op(&Op::Binary(Binary::Pow), &[2.0, 0.5]), 2f64.sqrt());
        // torch.pow(x, 0.5) is sqrt(x), torch.pow(x, -0.5) is 1 / sqrt(x), special values
        // included; other exponents are C's pow.
        let pow = |x: f64, y: f64| eval_op(&Op::Binary(Binary::Pow), &[x, y]);
        assert!(pow(f64::NEG_INFINITY, 0.5).is_nan());
        assert!(pow(-0.0, 0.5) == 0.0 && pow(-0.0, 0.5).is_sign_negative());
        assert_eq!(pow(f64::INFINITY, 0.5), f64::INFINITY);
        assert_eq!(pow(-0.0, -0.5), f64::NEG_INFINITY);
        assert!(pow(f64::NEG_INFINITY, -0.5).is_nan());
        assert_eq!(pow(4.0, -0.5), 0.5);
        assert_eq!(pow(f64::NEG_INFINITY, 1.5), f64::INFINITY);
        assert_eq!(pow(f64::NEG_INFINITY, 2.0), f64::INFINITY);
        assert_eq!(pow(nan, 0.0), 1.0);
        assert_eq!(
            eval_op(&Op::Fma, &[0.1, 10.0, -1.0]),
            0.1f64.mul_add(10.0, -1.0)
        );
        assert_eq!(eval_op(&Op::Cmp(Cmp::Ne), &[nan, nan]), 1.0);
        assert_eq!(eval_op(&Op::Cmp(Cmp::Le), &[nan, 1.0]), 0.0);
        assert_eq!(eval_op(&Op::Select, &[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(eval_op(&Op::Select, &[0.0, 2.0, 3.0]), 3.0);
    }

    #[test]
    fn casts_round() {
        assert_eq!(round_to(DType::F64, 0.1), 0.1);
        assert_eq!(round_to(DType::F32, 0.1), 0.1f32 as f64);
        assert_eq!(round_to(DType::F32, 1e300), f64::INFINITY);
        // f16: 1 + 2^-11 is a tie between 1 and 1 + 2^-10: ties to even gives 1.
        assert_eq!(round_to(DType::F16, 1.0 + 2f64.powi(-11)), 1.0);
        assert_eq!(
            round_to(DType::F16, 1.0 + 3.0 * 2f64.powi(-11)),
            1.0 + 2.0 * 2f64.powi(-10)
        );
        assert_eq!(round_to(DType::F16, 0.1), 0.0999755859375);
        assert_eq!(round_to(DType::F16, 65504.0), 65504.0);
        assert_eq!(round_to(DType::F16, 65519.0), 65504.0);
        assert_eq!(round_to(DType::F16, 65520.0), f64::INFINITY);
        assert_eq!(round_to(DType::F16, -1e6), f64::NEG_INFINITY);
        assert_eq!(round_to(DType::F16, 2f64.powi(-24)), 2f64.powi(-24));
        assert_eq!(round_to(DType::F16, 1.4 * 2f64.powi(-24)), 2f64.powi(-24));
        assert!(
            round_to(DType::F16, -1e-10).is_sign_negative() && round_to(DType::F16, -1e-10) == 0.0
        );
        assert!(round_to(DType::F16, nan()).is_nan());
        // bf16: 8 significant bits, f32's range.
        assert_eq!(round_to(DType::BF16, 0.1), 0.10009765625);
        assert_eq!(round_to(DType::BF16, 1.0 + 2f64.powi(-8)), 1.0);
        assert_eq!(round_to(DType::BF16, 1e38), 9.969_209_968_386_869e37);
        assert_eq!(round_to(DType::BF16, 3.4e38), f64::INFINITY);
        assert_eq!(round_to(DType::BF16, 2f64.powi(-133)), 2f64.powi(-133));
    }

    fn nan() -> f64 {
        f64::NAN
    }

    #[test]
    fn every_op_graph_runs() {
        let g = every_op();
        let tensors = [
            TensorValues::new(vec![0.5, -1.0, 2.0], vec![0.25, 0.0, -3.0])
                .with_state("buf", vec![0.0; 3]),
        ];
        let out = interpret(&g, &env(&[], 1.0), &tensors).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.scalar_states["count"], 1.5);
        assert_eq!(out.tensors[0].param.len(), 3);
    }

    #[test]
    fn errors_name_what_is_missing() {
        let g = adamw();
        let no_state = [TensorValues::new(vec![1.0], vec![1.0]).with_state("exp_avg", vec![0.0])];
        let e = interpret(&g, &env(&[], 1.0), &no_state).unwrap_err();
        assert_eq!(
            e,
            InterpError::MissingState {
                tensor: 0,
                name: "exp_avg_sq".into(),
                len: 1
            }
        );
        assert_eq!(
            e.to_string(),
            "tensor 0 has no state 'exp_avg_sq' (expected 1 values for it)"
        );

        let short_grad = [TensorValues::new(vec![1.0, 2.0], vec![1.0])];
        let e = interpret(&g, &env(&[], 1.0), &short_grad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor 0: grad has 1 values (expected 2, as many as param)"
        );

        let short_state = [
            TensorValues::new(vec![1.0, 2.0], vec![1.0, 2.0]).with_state("exp_avg", vec![0.0; 3])
        ];
        let e = interpret(&g, &env(&[], 1.0), &short_state).unwrap_err();
        assert!(
            matches!(e, InterpError::LengthMismatch { ref what, found: 3, expected: 2, .. } if what == "state exp_avg")
        );

        let mut bad = adamw();
        bad.hypers.retain(|h| h.name != "eps");
        let e = interpret(&bad, &env(&[], 1.0), &[]).unwrap_err();
        assert!(matches!(e, InterpError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("hyper 'eps' is not declared"), "{e}");
    }

    #[test]
    fn no_tensors_is_fine() {
        let out = interpret(&adamw(), &env(&[], 1.0), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.tensors.is_empty());
    }
}
