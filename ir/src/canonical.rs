//! The canonical encoding of a graph: what its text form shows (name, element dtype,
//! declarations, nodes in topological order with operands by position, outputs) as a word
//! vector, built without formatting. Equal encodings mean equal graphs; the compile cache keys
//! its in-process map with it.

use crate::graph::{Graph, Target};
use crate::op::{Input, Op};

impl Graph {
    /// The canonical encoding (see the module docs). Node indices are renumbered densely, as
    /// in the text form, so graphs that print alike encode alike.
    pub fn canonical_words(&self) -> Vec<u64> {
        let order = self.nodes();
        let ordinal = |n| order.binary_search(&n).map_or(u64::MAX, |i| i as u64);
        let mut out = Vec::with_capacity(8 * order.len() + 32);
        push_str(&mut out, &self.name);
        out.push(self.elem_dtype as u64);
        out.push(self.hypers.len() as u64);
        for h in &self.hypers {
            push_str(&mut out, &h.name);
            out.push(h.default.to_bits());
        }
        out.push(self.states.len() as u64);
        for s in &self.states {
            push_str(&mut out, &s.name);
            out.extend([s.init.to_bits(), s.class as u64]);
        }
        out.push(order.len() as u64);
        for &n in &order {
            let node = self.node(n);
            push_op(&mut out, &node.op);
            out.extend([node.dtype as u64, node.class as u64]);
            out.extend(self.operands(n).into_iter().map(ordinal));
        }
        out.push(self.outputs.len() as u64);
        for o in &self.outputs {
            match &o.target {
                Target::Param => out.push(0),
                Target::State(name) => {
                    out.push(1);
                    push_str(&mut out, name);
                }
                Target::ScalarState(name) => {
                    out.push(2);
                    push_str(&mut out, name);
                }
            }
            out.push(ordinal(o.value));
        }
        out
    }
}

/// A string as its length, then its bytes eight to a word.
fn push_str(out: &mut Vec<u64>, s: &str) {
    out.push(s.len() as u64);
    out.extend(s.as_bytes().chunks(8).map(|chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        u64::from_le_bytes(word)
    }));
}

/// An op as a tag word and its payload (the operand count follows from the tag).
fn push_op(out: &mut Vec<u64>, op: &Op) {
    match op {
        Op::Input(Input::Param) => out.push(1),
        Op::Input(Input::Grad) => out.push(2),
        Op::Input(Input::State(name)) => {
            out.push(3);
            push_str(out, name);
        }
        Op::Input(Input::ScalarState(name)) => {
            out.push(4);
            push_str(out, name);
        }
        Op::Input(Input::Hyper(name)) => {
            out.push(5);
            push_str(out, name);
        }
        Op::Input(Input::RowState(name)) => {
            out.push(20);
            push_str(out, name);
        }
        Op::Input(Input::ColState(name)) => {
            out.push(21);
            push_str(out, name);
        }
        Op::Input(Input::Rank) => out.push(22),
        Op::Input(Input::Step) => out.push(6),
        Op::Input(Input::OptimizerStep) => out.push(23),
        Op::Const(c) => out.extend([7, c.to_bits()]),
        Op::Unary(u) => out.extend([8, *u as u64]),
        Op::Binary(b) => out.extend([9, *b as u64]),
        Op::Fma => out.push(10),
        Op::Cmp(c) => out.extend([11, *c as u64]),
        Op::Select => out.push(12),
        Op::Cast(d) => out.extend([13, *d as u64]),
        Op::Reduce(r) => out.extend([14, *r as u64]),
    }
}

#[cfg(test)]
mod tests {
    use crate::{Binary, Graph, Input, Op, Target, parse_graph};

    fn sgd(lr_name: &str, constant: f64) -> Graph {
        let mut g = Graph::new("sgd");
        g.declare_hyper(lr_name, 0.01);
        let p = g.input(Input::Param);
        let grad = g.input(Input::Grad);
        let lr = g.input(Input::Hyper(lr_name.into()));
        let c = g.add(Op::Const(constant), &[]);
        let scaled = g.add(Op::Binary(Binary::Mul), &[lr, c]);
        let step = g.add(Op::Binary(Binary::Mul), &[scaled, grad]);
        let new_p = g.add(Op::Binary(Binary::Sub), &[p, step]);
        g.set_output(Target::Param, new_p);
        g
    }

    #[test]
    fn equal_graphs_encode_alike_and_any_difference_shows() {
        let base = sgd("lr", 0.5).canonical_words();
        assert_eq!(base, sgd("lr", 0.5).canonical_words());
        // Through the text form (dense renumbering) the encoding is the same.
        let reparsed = parse_graph(&sgd("lr", 0.5).to_string()).expect("parses");
        assert_eq!(base, reparsed.canonical_words());
        assert_ne!(base, sgd("lr2", 0.5).canonical_words());
        assert_ne!(base, sgd("lr", 0.25).canonical_words());
        assert_ne!(base, sgd("lr", -0.5).canonical_words());
        let mut f64_graph = sgd("lr", 0.5);
        f64_graph.elem_dtype = crate::DType::F64;
        assert_ne!(base, f64_graph.canonical_words());
        let mut renamed = sgd("lr", 0.5);
        renamed.name = "sgd2".into();
        assert_ne!(base, renamed.canonical_words());
    }
}
