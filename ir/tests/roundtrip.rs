//! Property tests of the text form: random valid graphs print, parse and print again to the same
//! text and verify; the parser never panics on arbitrary or mutated text, and whatever it accepts
//! prints to text that parses back to the same graph.

use optjit_ir::{
    Binary, Class, Cmp, DType, Graph, Input, Interpreted, NodeIndex, Op, Reduction, ScalarEnv,
    Target, TensorValues, Unary, interpret, parse_graph, verify,
};
use proptest::prelude::*;

/// One random instruction of the graph builder: which op, operand picks, a constant.
type Instr = (u8, u8, u16, u16, u16, f64);

#[derive(Clone, Debug)]
struct Spec {
    name: String,
    dtype: u8,
    hypers: Vec<f64>,
    elem_states: Vec<f64>,
    scalar_states: Vec<f64>,
    instrs: Vec<Instr>,
    /// The value of `param`, then one optional pick per elem state and per scalar state.
    outputs: Vec<Option<u16>>,
    prune: bool,
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -10.0f64..10.0,
        2 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(-f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(1e-8),
        1 => Just(5e-324),
        1 => Just(1e300),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![
            Just("adamw".to_string()),
            "[a-z_][a-z0-9_.]{0,12}",
            Just("sign sgd (v2)".to_string())
        ],
        0u8..4,
        prop::collection::vec(float(), 0..4),
        prop::collection::vec(float(), 0..3),
        prop::collection::vec(float(), 0..3),
        prop::collection::vec(
            (
                0u8..9,
                any::<u8>(),
                any::<u16>(),
                any::<u16>(),
                any::<u16>(),
                float(),
            ),
            0..48,
        ),
        prop::collection::vec(prop::option::weighted(0.7, any::<u16>()), 7),
        any::<bool>(),
    )
        .prop_map(
            |(name, dtype, hypers, elem_states, scalar_states, instrs, outputs, prune)| Spec {
                name,
                dtype,
                hypers,
                elem_states,
                scalar_states,
                instrs,
                outputs,
                prune,
            },
        )
}

const FLOAT_DTYPES: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];

/// Builds a valid graph from `spec`: random ops over random earlier nodes, respecting arity, the
/// bool rules, scalar-only unaries and per-element reductions.
fn build(spec: &Spec) -> Graph {
    let mut g = Graph::new(spec.name.clone());
    g.elem_dtype = FLOAT_DTYPES[spec.dtype as usize % 4];
    for (i, &v) in spec.hypers.iter().enumerate() {
        g.declare_hyper(&format!("h{i}"), v);
    }
    for (i, &v) in spec.elem_states.iter().enumerate() {
        g.declare_state(&format!("s{i}"), v, Class::Elem);
    }
    for (i, &v) in spec.scalar_states.iter().enumerate() {
        g.declare_state(&format!("n{i}"), v, Class::Scalar);
    }
    let mut inputs = vec![Input::Param, Input::Grad, Input::Step];
    inputs.extend((0..spec.hypers.len()).map(|i| Input::Hyper(format!("h{i}"))));
    inputs.extend((0..spec.elem_states.len()).map(|i| Input::State(format!("s{i}"))));
    inputs.extend((0..spec.scalar_states.len()).map(|i| Input::ScalarState(format!("n{i}"))));
    let mut pool: Vec<NodeIndex> = inputs.iter().map(|i| g.input(i.clone())).collect();

    let pick = |g: &Graph, pool: &[NodeIndex], x: u16, ok: &dyn Fn(&Graph, NodeIndex) -> bool| {
        let candidates: Vec<NodeIndex> = pool.iter().copied().filter(|&n| ok(g, n)).collect();
        (!candidates.is_empty()).then(|| candidates[x as usize % candidates.len()])
    };
    let number = |g: &Graph, n: NodeIndex| g.node(n).dtype != DType::Bool;
    let boolean = |g: &Graph, n: NodeIndex| g.node(n).dtype == DType::Bool;
    let not_elem = |g: &Graph, n: NodeIndex| number(g, n) && g.node(n).class != Class::Elem;
    let elem = |g: &Graph, n: NodeIndex| number(g, n) && g.node(n).class == Class::Elem;

    for &(kind, which, a, b, c, value) in &spec.instrs {
        let w = which as usize;
        let made = match kind {
            0 => Some(g.constant(value)),
            1 => {
                let u = Unary::ALL[w % Unary::ALL.len()];
                let ok: &dyn Fn(&Graph, NodeIndex) -> bool =
                    if u.scalar_only() { &not_elem } else { &number };
                pick(&g, &pool, a, ok).map(|x| g.add(Op::Unary(u), &[x]))
            }
            2 => {
                let op = Op::Binary(Binary::ALL[w % Binary::ALL.len()]);
                let (Some(x), Some(y)) = (pick(&g, &pool, a, &number), pick(&g, &pool, b, &number))
                else {
                    continue;
                };
                Some(g.add(op, &[x, y]))
            }
            3 => {
                let picks = [a, b, c].map(|i| pick(&g, &pool, i, &number));
                let [Some(x), Some(y), Some(z)] = picks else {
                    continue;
                };
                Some(g.add(Op::Fma, &[x, y, z]))
            }
            4 => {
                let op = Op::Cmp(Cmp::ALL[w % Cmp::ALL.len()]);
                let (Some(x), Some(y)) = (pick(&g, &pool, a, &number), pick(&g, &pool, b, &number))
                else {
                    continue;
                };
                Some(g.add(op, &[x, y]))
            }
            5 => {
                let picks = [
                    pick(&g, &pool, a, &boolean),
                    pick(&g, &pool, b, &number),
                    pick(&g, &pool, c, &number),
                ];
                let [Some(x), Some(y), Some(z)] = picks else {
                    continue;
                };
                Some(g.add(Op::Select, &[x, y, z]))
            }
            6 => {
                let op = Op::Cast(FLOAT_DTYPES[w % 4]);
                pick(&g, &pool, a, &number).map(|x| g.add(op, &[x]))
            }
            7 => {
                // The shape-free reductions: the interpreter runs these graphs on flat tensors.
                let flat: Vec<Reduction> = Reduction::ALL
                    .iter()
                    .copied()
                    .filter(|r| r.result_class() <= Class::Tensor)
                    .collect();
                let op = Op::Reduce(flat[w % flat.len()]);
                pick(&g, &pool, a, &elem).map(|x| g.add(op, &[x]))
            }
            _ => Some(g.input(inputs[w % inputs.len()].clone())),
        };
        pool.extend(made);
    }

    let assignable = |g: &Graph, n: NodeIndex| number(g, n) && g.node(n).class != Class::Tensor;
    let scalar = |g: &Graph, n: NodeIndex| number(g, n) && g.node(n).class == Class::Scalar;
    let mut outs = spec.outputs.iter().copied();
    let param_pick = outs.next().flatten().unwrap_or(0);
    if let Some(v) = pick(&g, &pool, param_pick, &assignable) {
        g.set_output(Target::Param, v);
    }
    for i in 0..spec.elem_states.len() {
        if let Some(x) = outs.next().flatten()
            && let Some(v) = pick(&g, &pool, x, &assignable)
        {
            g.set_output(Target::State(format!("s{i}")), v);
        }
    }
    for i in 0..spec.scalar_states.len() {
        if let Some(x) = outs.next().flatten()
            && let Some(v) = pick(&g, &pool, x, &scalar)
        {
            g.set_output(Target::ScalarState(format!("n{i}")), v);
        }
    }
    if spec.prune {
        g.prune();
    }
    g
}

/// Runs `g` on two small tensors with every state present.
fn run(g: &Graph) -> Interpreted {
    let tensors: Vec<TensorValues> = [vec![0.5, -1.5, 3.0], vec![-0.25]]
        .into_iter()
        .map(|p| {
            let grad = p.iter().map(|x| x * 0.1 - 0.2).collect();
            let mut t = TensorValues::new(p.clone(), grad);
            for s in g.states.iter().filter(|s| s.class == Class::Elem) {
                t = t.with_state(&s.name, vec![s.init; p.len()]);
            }
            t
        })
        .collect();
    let env = ScalarEnv {
        step: 3.0,
        ..ScalarEnv::default()
    };
    match interpret(g, &env, &tensors) {
        Ok(out) => out,
        Err(e) => panic!("{e}\n{g}"),
    }
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn same_results(a: &Interpreted, b: &Interpreted) -> bool {
    let vecs =
        |x: &[f64], y: &[f64]| x.len() == y.len() && x.iter().zip(y).all(|(&p, &q)| same(p, q));
    a.tensors.len() == b.tensors.len()
        && a.tensors.iter().zip(&b.tensors).all(|(s, t)| {
            vecs(&s.param, &t.param)
                && s.states.len() == t.states.len()
                && s.states
                    .iter()
                    .zip(&t.states)
                    .all(|((k1, v1), (k2, v2))| k1 == k2 && vecs(v1, v2))
        })
        && a.scalar_states.len() == b.scalar_states.len()
        && a.scalar_states
            .iter()
            .zip(&b.scalar_states)
            .all(|((k1, v1), (k2, v2))| k1 == k2 && same(*v1, *v2))
}

/// Parses `text` (must not panic); if it parses, the graph verifies or fails without panicking,
/// and its text parses back to the same text.
fn parse_never_panics(text: &str) {
    let Ok(g) = parse_graph(text) else { return };
    if let Err(e) = verify(&g) {
        let _ = e.render(&g);
    }
    let printed = g.to_string();
    match parse_graph(&printed) {
        Ok(again) => assert_eq!(again.to_string(), printed),
        Err(e) => panic!("accepted text printed to text it rejects: {e}\n{printed}\nfrom\n{text}"),
    }
}

/// Text edits: delete, insert, duplicate or swap lines, truncate.
type Mutation = (u8, usize, usize, String);

fn mutation() -> impl Strategy<Value = Mutation> {
    let snippet = prop_oneof![
        Just(String::new()),
        Just("%".to_string()),
        Just("%99999999999999999999".to_string()),
        Just("%1, ".to_string()),
        Just(" = ".to_string()),
        Just(" : ".to_string()),
        Just("}".to_string()),
        Just("{".to_string()),
        Just("\n".to_string()),
        Just("//".to_string()),
        Just("const NaN".to_string()),
        Just("1e999".to_string()),
        Just("scalar".to_string()),
        Just("elem f64".to_string()),
        Just("select".to_string()),
        Just("global_norm".to_string()),
        Just("state".to_string()),
        Just("param".to_string()),
        "\\PC{0,4}",
        ".{0,3}",
    ];
    (0u8..6, any::<usize>(), any::<usize>(), snippet)
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (kind, x, y, insert) in mutations {
        let n = chars.len();
        let at = if n == 0 { 0 } else { x % (n + 1) };
        match kind {
            0 => {
                let end = (at + y % 8).min(n);
                chars.drain(at..end);
            }
            1 => {
                chars.splice(at..at, insert.chars());
            }
            2 => {
                let end = (at + 1 + y % 4).min(n);
                chars.splice(at..end, insert.chars());
            }
            3 | 4 => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let i = x % lines.len();
                    let j = y % lines.len();
                    if *kind == 3 {
                        lines.insert(j, lines[i]);
                    } else {
                        lines.swap(i, j);
                    }
                }
                chars = lines.join("\n").chars().collect();
            }
            _ => chars.truncate(at),
        }
    }
    chars.into_iter().collect()
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "optimizer",
            "x",
            "{",
            "}",
            "\n",
            "\n",
            "\n",
            "dtype",
            "f32",
            "bf16",
            "bool",
            "hyper",
            "state",
            "lr",
            "=",
            ":",
            ",",
            "scalar",
            "tensor",
            "elem",
            "f64",
            "param",
            "grad",
            "step",
            "scalar_state",
            "const",
            "cast",
            "add",
            "mul",
            "sin",
            "fma",
            "select",
            "lt",
            "norm",
            "global_norm",
            "0.5",
            "NaN",
            "-inf",
            "1e-8",
            "%",
            "%0",
            "%1",
            "%2",
            "%3",
            "%18446744073709551616",
            "//",
        ])
        .prop_map(str::to_string),
        "%[0-9]{1,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_roundtrip_and_verify(spec in spec()) {
        let g = build(&spec);
        if let Err(e) = verify(&g) {
            panic!("{}", e.render(&g));
        }
        let text = g.to_string();
        let parsed = match parse_graph(&text) {
            Ok(p) => p,
            Err(e) => panic!("{e}\n{text}"),
        };
        prop_assert_eq!(parsed.to_string(), text.clone());
        prop_assert_eq!(verify(&parsed), Ok(()));
        let (a, b) = (run(&g), run(&parsed));
        prop_assert!(same_results(&a, &b), "{:?}\n{:?}\n{}", a, b, text);
    }

    #[test]
    fn mutated_texts_never_panic(spec in spec(), mutations in prop::collection::vec(mutation(), 1..6)) {
        let text = build(&spec).to_string();
        parse_never_panics(&mutate(&text, &mutations));
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        parse_never_panics(&text);
        parse_never_panics(&format!("optimizer x {{\n{text}\n}}\n"));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        parse_never_panics(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(token(), 0..60)) {
        let body = tokens.join(" ");
        parse_never_panics(&body);
        parse_never_panics(&format!("optimizer soup {{\n{body}\n}}"));
    }
}
