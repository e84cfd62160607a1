//! What a graph read from the disk cache must pass before it is compiled: it verifies, it has the
//! definition's interface (name, element dtype, hyperparameters, states, outputs and their
//! classes, and no input the definition does not read), and it computes what the definition
//! computes on sample inputs, both run by the f64 reference interpreter. The cache only saves
//! the e-graph's search; the definition stays the truth (docs/cache.md).

use optjit_ir::{
    Class, Graph, Input, Interpreted, Op, Reduction, ScalarEnv, StateDecl, TensorValues, interpret,
    verify,
};
use optjit_trace::Definition;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How far a cached graph's sample results may be from the definition's: far above the rounding
/// of reassociated f64 arithmetic, far below what a changed op or operand does.
const TOLERANCE: f64 = 1e-6;

/// The definition's results on the sample inputs, computed once per lookup.
pub(crate) struct Samples {
    /// Whether the graphs are run on one-element tensors, their per-row, per-column and
    /// per-matrix values collapsed to per-element ones (see [`one_element`]).
    collapsed: bool,
    /// The inputs of each sample run, and the definition's results on them.
    runs: Vec<(ScalarEnv, Vec<TensorValues>, Interpreted)>,
}

impl Samples {
    /// The samples of `definition`, or `None` when the interpreter cannot run it (then the disk
    /// cache is not used for it: an entry that cannot be checked is not read).
    pub(crate) fn of(definition: &Definition) -> Option<Samples> {
        let graph = &definition.graph;
        let collapsed = needs_shapes(graph);
        let graph = match collapsed {
            true => one_element(graph),
            false => graph.clone(),
        };
        let lens: &[usize] = match collapsed {
            true => &[1, 1, 1],
            false => &[3, 1, 6],
        };
        let runs = (0..2)
            .map(|run| {
                let env = env(definition, run);
                let tensors = tensors(&graph, lens, run);
                let results = interpret(&graph, &env, &tensors).ok()?;
                Some((env, tensors, results))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Samples { collapsed, runs })
    }
}

/// Checks `cached`, read from the disk cache for `definition`, against it: `Err` says why it
/// must not be used.
pub(crate) fn check_entry(
    definition: &Graph,
    cached: &Graph,
    samples: &Samples,
) -> Result<(), String> {
    verify(cached).map_err(|e| format!("the cached graph does not verify: {e}"))?;
    same_interface(definition, cached)?;
    let cached = match samples.collapsed {
        true => one_element(cached),
        false => cached.clone(),
    };
    for (run, (env, tensors, expected)) in samples.runs.iter().enumerate() {
        let got = interpret(&cached, env, tensors)
            .map_err(|e| format!("the cached graph cannot be checked: {e}"))?;
        if let Some(what) = difference(&got, expected) {
            return Err(format!(
                "the cached graph does not compute what the definition does: {what} (sample {run})"
            ));
        }
    }
    Ok(())
}

/// Whether the graph needs shapes to run (per-matrix, per-row or per-column values, the rank).
fn needs_shapes(graph: &Graph) -> bool {
    graph.nodes().into_iter().any(|n| {
        let node = graph.node(n);
        matches!(node.class, Class::Matrix | Class::Row | Class::Col)
            || node.op == Op::Input(Input::Rank)
    })
}

/// `graph` run on tensors of shape `[1, 1]`: one matrix of one row and one column, so that a
/// row, a column or a matrix is an element and their means are the value itself. Row and
/// column states become per-element states and the rank is 2. What the step does on such
/// tensors is a restriction of what it does on any, so two graphs that compute the same step
/// give the same results here.
fn one_element(graph: &Graph) -> Graph {
    let mut out = Graph::new(graph.name.clone());
    out.elem_dtype = graph.elem_dtype;
    out.hypers = graph.hypers.clone();
    out.states = (graph.states.iter())
        .map(|s| StateDecl {
            class: match s.class {
                Class::Matrix | Class::Row | Class::Col => Class::Elem,
                other => other,
            },
            ..s.clone()
        })
        .collect();
    let mut map = HashMap::new();
    for n in graph.nodes() {
        let operands: Vec<_> = graph.operands(n).iter().map(|o| map[o]).collect();
        let mapped = match &graph.node(n).op {
            Op::Input(Input::RowState(name) | Input::ColState(name)) => {
                out.input(Input::State(name.clone()))
            }
            Op::Input(Input::Rank) => out.constant(2.0),
            Op::Reduce(Reduction::RowMean | Reduction::ColMean | Reduction::RowsMean) => {
                operands[0]
            }
            op => out.add(op.clone(), &operands),
        };
        map.insert(n, mapped);
    }
    for output in &graph.outputs {
        out.set_output(output.target.clone(), map[&output.value]);
    }
    out
}

/// Refuses a cached graph whose interface differs from the definition's: another name, element
/// dtype, hyperparameter (name or default), state (name, initial value or class), output target
/// or order, an output of a finer class than the definition's (a per-element value where the
/// definition assigns a scalar), or an input the definition does not read. The optimizer is
/// bound to the definition's interface, so such a graph cannot run on it.
fn same_interface(definition: &Graph, cached: &Graph) -> Result<(), String> {
    let differ = |what: &str, ours: String, theirs: String| {
        Err(format!(
            "the cached graph has {what} {theirs}, the definition {ours}"
        ))
    };
    if cached.name != definition.name || cached.elem_dtype != definition.elem_dtype {
        return differ(
            "name and dtype",
            format!("'{}' {}", definition.name, definition.elem_dtype),
            format!("'{}' {}", cached.name, cached.elem_dtype),
        );
    }
    let hypers = |g: &Graph| -> Vec<String> {
        (g.hypers.iter())
            .map(|h| format!("{} = {}", h.name, optjit_ir::format_f64(h.default)))
            .collect()
    };
    if hypers(cached) != hypers(definition) {
        let list = |g| format!("{:?}", hypers(g));
        return differ("hyperparameters", list(definition), list(cached));
    }
    let states = |g: &Graph| -> Vec<String> {
        (g.states.iter())
            .map(|s| {
                let init = optjit_ir::format_f64(s.init);
                format!("{} {} = {init}", s.class.name(), s.name)
            })
            .collect()
    };
    if states(cached) != states(definition) {
        let list = |g| format!("{:?}", states(g));
        return differ("states", list(definition), list(cached));
    }
    let targets = |g: &Graph| -> Vec<String> {
        (g.outputs.iter())
            .map(|o| o.target.name().to_string())
            .collect()
    };
    if cached
        .outputs
        .iter()
        .map(|o| &o.target)
        .ne(definition.outputs.iter().map(|o| &o.target))
    {
        let list = |g| format!("{:?}", targets(g));
        return differ("outputs", list(definition), list(cached));
    }
    for (ours, theirs) in definition.outputs.iter().zip(&cached.outputs) {
        let ours_class = definition.node(ours.value).class;
        let theirs_class = cached.node(theirs.value).class;
        if theirs_class.join(ours_class) != ours_class {
            return Err(format!(
                "the cached graph assigns {} a {} value, the definition a {} one",
                ours.target.name(),
                theirs_class.name(),
                ours_class.name()
            ));
        }
    }
    let inputs = |g: &Graph| -> BTreeSet<Input> {
        (g.nodes().into_iter())
            .filter_map(|n| match &g.node(n).op {
                Op::Input(input) => Some(input.clone()),
                _ => None,
            })
            .collect()
    };
    let read = inputs(definition);
    let extra: Vec<String> = (inputs(cached).difference(&read))
        .map(|i| i.to_string())
        .collect();
    match extra.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "the cached graph reads {}, which the definition does not read",
            extra.join(", ")
        )),
    }
}

/// A number in `[0, 1)` that depends only on `i` (a fixed hash: the samples are the same in
/// every process, so a check that passes once always passes).
fn unit(i: u64) -> f64 {
    let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The scalars of sample run `run`: run 0 takes the defaults, the first step and the scalar
/// states' initial values; run 1 other values inside each hyperparameter's domain (a nonzero
/// value for one that defaults to zero, so that the terms it weighs count), a later step and
/// moved scalar states.
fn env(definition: &Definition, run: u64) -> ScalarEnv {
    let graph = &definition.graph;
    let allowed = |name: &str, x: f64| {
        x.is_finite() && definition.domains.get(name).is_none_or(|d| d.contains(x))
    };
    let hypers = (graph.hypers.iter())
        .map(|h| {
            let d = h.default;
            let other = match d == 0.0 {
                true => [0.05, 0.5, -0.05],
                false => [d * 1.25, d * 0.8, d + 0.5],
            };
            let value = match run {
                0 => d,
                _ => (other.into_iter())
                    .find(|&x| allowed(&h.name, x))
                    .unwrap_or(d),
            };
            (h.name.clone(), value)
        })
        .collect();
    let scalar_states = (graph.states.iter())
        .filter(|s| s.class == Class::Scalar)
        .map(|s| {
            let value = match run {
                0 => s.init,
                _ => s.init * 0.75 + 0.125,
            };
            (s.name.clone(), value)
        })
        .collect();
    ScalarEnv {
        hypers,
        step: [1.0, 4.0][run.min(1) as usize],
        scalar_states,
    }
}

/// The sample tensors of run `run`, of lengths `lens`: parameters in `[-1.5, 1.5)`, gradients in
/// `[-1, 1)`, per-element states in `[0.25, 1.25)` (positive, as second moments must be).
fn tensors(graph: &Graph, lens: &[usize], run: u64) -> Vec<TensorValues> {
    let mut i = run << 32;
    let mut next = |lo: f64, hi: f64| {
        i += 1;
        lo + (hi - lo) * unit(i)
    };
    (lens.iter())
        .map(|&n| {
            let param = (0..n).map(|_| next(-1.5, 1.5)).collect();
            let grad = (0..n).map(|_| next(-1.0, 1.0)).collect();
            let states: BTreeMap<String, Vec<f64>> = (graph.states.iter())
                .filter(|s| s.class == Class::Elem)
                .map(|s| (s.name.clone(), (0..n).map(|_| next(0.25, 1.25)).collect()))
                .collect();
            TensorValues {
                param,
                grad,
                states,
            }
        })
        .collect()
}

/// Where `got` differs from `expected` by more than [`TOLERANCE`], in words.
fn difference(got: &Interpreted, expected: &Interpreted) -> Option<String> {
    let close = |a: f64, b: f64| {
        if a.is_nan() || b.is_nan() {
            a.is_nan() && b.is_nan()
        } else if a.is_infinite() || b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= TOLERANCE * (1.0 + a.abs().max(b.abs()))
        }
    };
    let values = |what: String, got: &[f64], want: &[f64]| {
        let at = (got.len() != want.len())
            .then_some(0)
            .or_else(|| (0..got.len()).find(|&e| !close(got[e], want[e])))?;
        let shown = |v: &[f64]| {
            v.get(at)
                .map_or("missing".to_string(), |x| format!("{x:?}"))
        };
        Some(format!(
            "{what}[{at}] is {}, the definition gives {}",
            shown(got),
            shown(want)
        ))
    };
    for (t, (g, w)) in got.tensors.iter().zip(&expected.tensors).enumerate() {
        if let Some(what) = values(format!("tensor {t}'s param"), &g.param, &w.param) {
            return Some(what);
        }
        if g.states.keys().ne(w.states.keys()) {
            return Some(format!("tensor {t}'s states differ in name"));
        }
        for (name, values_got) in &g.states {
            let what = format!("tensor {t}'s {name}");
            if let Some(what) = values(what, values_got, &w.states[name]) {
                return Some(what);
            }
        }
    }
    if got.scalar_states.keys().ne(expected.scalar_states.keys()) {
        return Some("the scalar states differ in name".into());
    }
    (got.scalar_states.iter())
        .find(|&(name, &x)| !close(x, expected.scalar_states[name]))
        .map(|(name, x)| {
            let want = expected.scalar_states[name];
            format!("scalar state {name} is {x:?}, the definition gives {want:?}")
        })
}
