//! Shared helpers of the integration tests: graph builders and an f64 reference evaluator.
#![allow(dead_code)]

use optjit_ir::{Binary, Class, Graph, Input, NodeIndex, Op, Target, Unary};
use std::collections::BTreeMap;

/// A `Graph` with short names for the ops the tests write.
pub struct B {
    pub g: Graph,
}

impl B {
    pub fn new(name: &str) -> B {
        B {
            g: Graph::new(name),
        }
    }
    pub fn hyper(&mut self, name: &str, default: f64) -> NodeIndex {
        self.g.declare_hyper(name, default);
        self.g.input(Input::Hyper(name.into()))
    }
    pub fn state(&mut self, name: &str) -> NodeIndex {
        self.g.declare_state(name, 0.0, Class::Elem);
        self.g.input(Input::State(name.into()))
    }
    pub fn scalar_state(&mut self, name: &str, init: f64) -> NodeIndex {
        self.g.declare_state(name, init, Class::Scalar);
        self.g.input(Input::ScalarState(name.into()))
    }
    pub fn param(&mut self) -> NodeIndex {
        self.g.input(Input::Param)
    }
    pub fn grad(&mut self) -> NodeIndex {
        self.g.input(Input::Grad)
    }
    pub fn step(&mut self) -> NodeIndex {
        self.g.input(Input::Step)
    }
    pub fn c(&mut self, v: f64) -> NodeIndex {
        self.g.constant(v)
    }
    pub fn bin(&mut self, op: Binary, a: NodeIndex, b: NodeIndex) -> NodeIndex {
        self.g.add(Op::Binary(op), &[a, b])
    }
    pub fn un(&mut self, op: Unary, a: NodeIndex) -> NodeIndex {
        self.g.add(Op::Unary(op), &[a])
    }
    pub fn add(&mut self, a: NodeIndex, b: NodeIndex) -> NodeIndex {
        self.bin(Binary::Add, a, b)
    }
    pub fn sub(&mut self, a: NodeIndex, b: NodeIndex) -> NodeIndex {
        self.bin(Binary::Sub, a, b)
    }
    pub fn mul(&mut self, a: NodeIndex, b: NodeIndex) -> NodeIndex {
        self.bin(Binary::Mul, a, b)
    }
    pub fn div(&mut self, a: NodeIndex, b: NodeIndex) -> NodeIndex {
        self.bin(Binary::Div, a, b)
    }
    pub fn pow(&mut self, a: NodeIndex, b: NodeIndex) -> NodeIndex {
        self.bin(Binary::Pow, a, b)
    }
    pub fn sqrt(&mut self, a: NodeIndex) -> NodeIndex {
        self.un(Unary::Sqrt, a)
    }
    /// `1 - x`
    pub fn one_minus(&mut self, x: NodeIndex) -> NodeIndex {
        let one = self.c(1.0);
        self.sub(one, x)
    }
}

/// AdamW written naively, as the brief of the rewrite crate states it:
/// `param*(1 - lr*wd) - (lr / (1 - pow(beta1, step))) * m / (sqrt(v) / sqrt(1 - pow(beta2, step)) + eps)`
/// with `m`, `v` the updated moments.
pub fn adamw_naive() -> Graph {
    let mut b = B::new("adamw");
    let lr = b.hyper("lr", 1e-3);
    let beta1 = b.hyper("beta1", 0.9);
    let beta2 = b.hyper("beta2", 0.999);
    let eps = b.hyper("eps", 1e-8);
    let wd = b.hyper("weight_decay", 1e-2);
    let m = b.state("exp_avg");
    let v = b.state("exp_avg_sq");
    let p = b.param();
    let g = b.grad();
    let step = b.step();

    let b1m = b.mul(beta1, m);
    let one_b1 = b.one_minus(beta1);
    let gm = b.mul(one_b1, g);
    let m_new = b.add(b1m, gm);

    let b2v = b.mul(beta2, v);
    let one_b2 = b.one_minus(beta2);
    let g2 = b.mul(one_b2, g);
    let g2 = b.mul(g2, g);
    let v_new = b.add(b2v, g2);

    let lr_wd = b.mul(lr, wd);
    let decay = b.one_minus(lr_wd);
    let decayed = b.mul(p, decay);

    let pow1 = b.pow(beta1, step);
    let bc1 = b.one_minus(pow1);
    let pow2 = b.pow(beta2, step);
    let bc2 = b.one_minus(pow2);
    let step_size = b.div(lr, bc1);
    let num = b.mul(step_size, m_new);
    let sv = b.sqrt(v_new);
    let sbc2 = b.sqrt(bc2);
    let denom = b.div(sv, sbc2);
    let denom = b.add(denom, eps);
    let update = b.div(num, denom);
    let p_new = b.sub(decayed, update);

    b.g.set_output(Target::Param, p_new);
    b.g.set_output(Target::State("exp_avg".into()), m_new);
    b.g.set_output(Target::State("exp_avg_sq".into()), v_new);
    b.g
}

/// `param = param - lr * grad`
pub fn sgd() -> Graph {
    let mut b = B::new("sgd");
    let lr = b.hyper("lr", 1e-2);
    let p = b.param();
    let g = b.grad();
    let u = b.mul(lr, g);
    let p_new = b.sub(p, u);
    b.g.set_output(Target::Param, p_new);
    b.g
}

/// SGD with momentum and dampening: `buf = momentum * buf + (1 - dampening) * grad`,
/// `param = param - lr * buf`.
pub fn sgd_momentum() -> Graph {
    let mut b = B::new("sgd_momentum");
    let lr = b.hyper("lr", 1e-2);
    let mu = b.hyper("momentum", 0.9);
    let damp = b.hyper("dampening", 0.0);
    let buf = b.state("momentum_buffer");
    let p = b.param();
    let g = b.grad();
    let mb = b.mul(mu, buf);
    let od = b.one_minus(damp);
    let dg = b.mul(od, g);
    let buf_new = b.add(mb, dg);
    let u = b.mul(lr, buf_new);
    let p_new = b.sub(p, u);
    b.g.set_output(Target::Param, p_new);
    b.g.set_output(Target::State("momentum_buffer".into()), buf_new);
    b.g
}

/// Values of every input, for [`eval`].
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub param: f64,
    pub grad: f64,
    pub step: f64,
    pub states: BTreeMap<String, f64>,
    pub scalar_states: BTreeMap<String, f64>,
    pub hypers: BTreeMap<String, f64>,
}

/// Evaluates every node of `graph` in f64 (per-element values for one element) and returns the
/// outputs' values in output order.
pub fn eval(graph: &Graph, env: &Env) -> Vec<(Target, f64)> {
    let mut values: BTreeMap<NodeIndex, f64> = BTreeMap::new();
    for n in graph.nodes() {
        let ops: Vec<f64> = graph.operands(n).iter().map(|o| values[o]).collect();
        let v = match &graph.node(n).op {
            Op::Input(Input::Param) => env.param,
            Op::Input(Input::Grad) => env.grad,
            Op::Input(Input::Step) => env.step,
            Op::Input(Input::State(s)) => env.states[s],
            Op::Input(Input::ScalarState(s)) => env.scalar_states[s],
            Op::Input(Input::Hyper(h)) => env.hypers[h],
            Op::Const(c) => *c,
            Op::Reduce(_) => panic!("the evaluator computes one element; no reductions"),
            // The same f64 semantics as the interpreter and the host scalar program.
            op => optjit_ir::eval_op(op, &ops),
        };
        values.insert(n, v);
    }
    graph
        .outputs
        .iter()
        .map(|o| (o.target.clone(), values[&o.value]))
        .collect()
}

/// The full pipeline of this crate with default options.
pub fn pipeline(graph: &Graph) -> (optjit_rewrite::Simplified, Graph, optjit_ir::FusionPlan) {
    optjit_ir::verify(graph).expect("the test graph verifies");
    let simplified = optjit_rewrite::simplify(graph, &Default::default()).expect("simplify");
    let extracted = optjit_rewrite::extract(&simplified);
    if let Err(e) = optjit_ir::verify(&extracted) {
        panic!("the extracted graph does not verify: {e:?}\n{extracted}");
    }
    let plan = optjit_rewrite::fuse(&extracted).expect("fuse");
    (simplified, extracted, plan)
}
