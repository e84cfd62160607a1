//! The cost pass of extraction: the cheapest e-node of every e-class under a cost function.
//!
//! It computes exactly what `egg::Extractor` computes — the same costs and the same choice in
//! every class, ties included — in time about linear in the e-graph's size. egg sweeps over all
//! e-classes (in its class order, each class seeing the costs updated earlier in the same sweep)
//! until a sweep changes nothing; in a chain of `n` dependent classes visited in hash order that
//! is of the order of `n` sweeps, each visiting every class (1 112 sweeps for 3 000 classes; 16 s
//! of a 20 000-line `.step` program's compile). This pass replays the same sweeps but visits a
//! class only when one of its children changed since its last visit: a visit that egg makes with
//! no child changed computes what it computed the last time and changes nothing, so skipping it
//! changes nothing either. Every class is visited once at first and then once per change of a
//! child, in the order egg would visit it (by sweep, then by position in the class order).

use egg::{Analysis, CostFunction, EGraph, Id, Language};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// The cheapest node of each e-class of an e-graph, and its cost.
pub(crate) struct Cheapest<'a, L: Language, N: Analysis<L>, C> {
    egraph: &'a EGraph<L, N>,
    /// For each canonical id (as an index), its position in the class order; `u32::MAX` for
    /// non-canonical ids.
    position: Vec<u32>,
    /// For each class position: its best cost and the index of that node in the class.
    best: Vec<Option<(C, usize)>>,
    /// How many times a class's nodes were costed (the work done; egg's is quadratic in depth).
    #[cfg_attr(not(test), allow(dead_code))]
    visits: usize,
}

/// The lower of two costs by `partial_cmp`; incomparable costs (a NaN) count as equal, where egg
/// would panic.
fn less<C: PartialOrd>(a: &C, b: &C) -> bool {
    a.partial_cmp(b) == Some(Ordering::Less)
}

impl<'a, L: Language, N: Analysis<L>, C: PartialOrd + Clone> Cheapest<'a, L, N, C> {
    /// Costs every class of `egraph` with `cost_function`.
    pub(crate) fn new<F: CostFunction<L, Cost = C>>(
        egraph: &'a EGraph<L, N>,
        mut cost_function: F,
    ) -> Self {
        let classes: Vec<_> = egraph.classes().collect();
        let bound = classes
            .iter()
            .map(|c| usize::from(c.id) + 1)
            .max()
            .unwrap_or(0);
        let mut position = vec![u32::MAX; bound];
        for (i, class) in classes.iter().enumerate() {
            position[usize::from(class.id)] = i as u32;
        }
        let place = |id: Id| position[usize::from(egraph.find(id))] as usize;
        // The classes whose nodes read each class, each listed once.
        let mut parents: Vec<Vec<u32>> = vec![Vec::new(); classes.len()];
        for (j, class) in classes.iter().enumerate() {
            for node in class.iter() {
                for &child in node.children() {
                    parents[place(child)].push(j as u32);
                }
            }
        }
        for list in &mut parents {
            list.sort_unstable();
            list.dedup();
        }

        let mut best: Vec<Option<(C, usize)>> = vec![None; classes.len()];
        let mut visits = 0;
        // The sweep under way visits `this_sweep` in ascending position; a class whose child
        // changed at or after its own position waits for the next sweep.
        let mut this_sweep: BinaryHeap<Reverse<u32>> =
            (0..classes.len() as u32).map(Reverse).collect();
        let mut next_sweep: Vec<u32> = Vec::new();
        let mut scheduled = vec![true; classes.len()];
        loop {
            while let Some(Reverse(j)) = this_sweep.pop() {
                let j = j as usize;
                scheduled[j] = false;
                visits += 1;
                // egg's `make_pass`: the first node of least cost among those whose children
                // all have one.
                let mut choice: Option<(C, usize)> = None;
                for (k, node) in classes[j].iter().enumerate() {
                    if !node.all(|c| best[place(c)].is_some()) {
                        continue;
                    }
                    let cost = cost_function.cost(node, |c| {
                        best[place(c)]
                            .as_ref()
                            .map(|(cost, _)| cost.clone())
                            .unwrap()
                    });
                    if choice.as_ref().is_none_or(|(least, _)| less(&cost, least)) {
                        choice = Some((cost, k));
                    }
                }
                let improved = match (&best[j], &choice) {
                    (None, Some(_)) => true,
                    (Some((old, _)), Some((new, _))) => less(new, old),
                    _ => false,
                };
                if !improved {
                    continue;
                }
                best[j] = choice;
                for &p in &parents[j] {
                    if !std::mem::replace(&mut scheduled[p as usize], true) {
                        if p as usize > j {
                            this_sweep.push(Reverse(p));
                        } else {
                            next_sweep.push(p);
                        }
                    }
                }
            }
            if next_sweep.is_empty() {
                break;
            }
            this_sweep = next_sweep.drain(..).map(Reverse).collect();
        }
        Cheapest {
            egraph,
            position,
            best,
            visits,
        }
    }

    /// The cheapest node of the class of `id` and its cost; `None` when no node of the class has
    /// a finite tree (a class only reachable through itself).
    pub(crate) fn best(&self, id: Id) -> Option<(&'a L, &C)> {
        let class = &self.egraph[id];
        let j = self.position[usize::from(class.id)] as usize;
        self.best[j]
            .as_ref()
            .map(|(cost, k)| (&class.nodes[*k], cost))
    }

    /// How many class visits the pass made: the classes, plus one per change of a child.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn visits(&self) -> usize {
        self.visits
    }
}

#[cfg(test)]
mod tests {
    use super::Cheapest;
    use crate::cost::ClassCost;
    use crate::rules::rule_set;
    use crate::simplify::{SimplifyOptions, run_rules};
    use egg::Extractor;
    use optjit_ir::{Binary, Class, Graph, Input, NodeIndex, Op, Target, Unary};

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }
    }

    /// A random step graph of `ops` ops over param, grad, a state, two hyperparameters, the
    /// step and a few constants, with a param and a state output.
    fn random_graph(rng: &mut Rng, ops: usize) -> Graph {
        let mut g = Graph::new("random");
        g.declare_hyper("lr", 0.1);
        g.declare_hyper("beta", 0.9);
        g.declare_state("m", 0.0, Class::Elem);
        let mut values: Vec<NodeIndex> = vec![
            g.input(Input::Param),
            g.input(Input::Grad),
            g.input(Input::State("m".into())),
            g.input(Input::Hyper("lr".into())),
            g.input(Input::Hyper("beta".into())),
            g.input(Input::Step),
            g.constant(1.0),
            g.constant(2.0),
            g.constant(0.5),
        ];
        let binaries = [
            Binary::Add,
            Binary::Sub,
            Binary::Mul,
            Binary::Div,
            Binary::Max,
            Binary::Pow,
        ];
        let unaries = [Unary::Neg, Unary::Sqrt, Unary::Abs, Unary::Exp];
        for _ in 0..ops {
            let a = values[rng.below(values.len())];
            let node = match rng.below(4) {
                0 => g.add(Op::Unary(unaries[rng.below(unaries.len())]), &[a]),
                _ => {
                    let b = values[rng.below(values.len())];
                    g.add(Op::Binary(binaries[rng.below(binaries.len())]), &[a, b])
                }
            };
            values.push(node);
        }
        let last = *values.last().unwrap();
        let other = values[values.len() - 1 - rng.below(ops.min(5))];
        g.set_output(Target::Param, last);
        g.set_output(Target::State("m".into()), other);
        g
    }

    /// The same cost and the same node as egg's `Extractor` in every class of the e-graphs of
    /// many random graphs after the rules ran: ties between equally cheap nodes included.
    #[test]
    fn chooses_what_egg_chooses() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let rules = rule_set(false).unwrap();
        let mut classes = 0;
        for case in 0..400 {
            let graph = random_graph(&mut rng, 4 + case % 60);
            let runner = run_rules(&graph, &SimplifyOptions::default(), &rules);
            let egraph = &runner.egraph;
            let egg = Extractor::new(egraph, ClassCost { egraph });
            let ours = Cheapest::new(egraph, ClassCost { egraph });
            for class in egraph.classes() {
                let (node, cost) = ours.best(class.id).expect("every class has a cost");
                assert_eq!(
                    cost.to_bits(),
                    egg.find_best_cost(class.id).to_bits(),
                    "case {case}:\n{graph}"
                );
                assert_eq!(node, egg.find_best_node(class.id), "case {case}:\n{graph}");
                classes += 1;
            }
        }
        assert!(classes > 4_000, "{classes} classes compared");
    }

    /// A chain of 3 000 dependent adds (a 3 000-line `.step` chain of `let`s) is costed in
    /// about two visits per class; egg's sweeps made 1 112 visits per class (3.3 million).
    #[test]
    fn a_deep_chain_costs_linear_work() {
        let mut g = Graph::new("chain");
        let grad = g.input(Input::Grad);
        let mut x = grad;
        for _ in 0..3_000 {
            x = g.add(Op::Binary(Binary::Add), &[x, grad]);
        }
        g.set_output(Target::Param, x);
        let options = SimplifyOptions {
            iter_limit: 0,
            ..SimplifyOptions::default()
        };
        let runner = run_rules(&g, &options, &[]);
        let egraph = &runner.egraph;
        let cheapest = Cheapest::new(egraph, ClassCost { egraph });
        let classes = egraph.number_of_classes();
        assert_eq!(classes, 3_001);
        assert!(
            cheapest.visits() <= 2 * classes,
            "{} visits for {classes} classes",
            cheapest.visits()
        );
        let (_, cost) = cheapest.best(runner.roots[0]).unwrap();
        assert_eq!(*cost, 3_000.0 * 100.0, "3 000 per-element adds");
    }
}
