//! The step graph: one per-element template per update rule, plus its scalar program.

use crate::dtype::{Class, DType};
use crate::op::{Input, Op, OpKey};
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use std::collections::HashMap;

/// A value of the graph: its operation, its storage type and how often it is computed.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// What the node computes; its operands are the incoming edges.
    pub op: Op,
    /// The type of the result.
    pub dtype: DType,
    /// Scalar (per group), tensor (per tensor) or elem (per element).
    pub class: Class,
}

/// A hyperparameter: a runtime scalar with a default, overridable per group, never compiled in.
#[derive(Clone, Debug, PartialEq)]
pub struct HyperDecl {
    /// Name as the user writes it (`lr`, `beta1`).
    pub name: String,
    /// Value used when neither the group nor the user sets one.
    pub default: f64,
}

/// Optimizer state that persists between steps.
#[derive(Clone, Debug, PartialEq)]
pub struct StateDecl {
    /// Name as PyTorch spells it (`exp_avg`).
    pub name: String,
    /// Value of every element (or of the scalar) before the first step.
    pub init: f64,
    /// `Elem` for a per-element buffer, `Scalar` for one value per group.
    pub class: Class,
}

/// What an output writes: the parameter or a state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The parameter tensor.
    Param,
    /// A per-element state buffer.
    State(String),
    /// A per-group scalar state.
    ScalarState(String),
}

impl Target {
    /// The name as written in the text form and in error messages.
    pub fn name(&self) -> &str {
        match self {
            Target::Param => "param",
            Target::State(n) | Target::ScalarState(n) => n,
        }
    }
}

/// An assignment made by the step: `target = value` at the end of the step.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// What is written.
    pub target: Target,
    /// The node whose value is written.
    pub value: NodeIndex,
}

/// The IR of one update rule.
///
/// Nodes are hash-consed: adding an op that already exists with the same operands returns the
/// existing node, so the graph is a DAG with common subexpressions shared. Operands are added
/// before their users, so ascending node index is a topological order ([`Graph::nodes`]).
#[derive(Clone, Debug)]
pub struct Graph {
    /// Name of the update rule (`adamw`).
    pub name: String,
    /// Storage type of parameters, gradients and per-element states.
    pub elem_dtype: DType,
    /// Hyperparameters in declaration order.
    pub hypers: Vec<HyperDecl>,
    /// States in declaration order.
    pub states: Vec<StateDecl>,
    /// Assignments, at most one per target, in the order first assigned.
    pub outputs: Vec<Output>,
    nodes: StableDiGraph<Node, usize>,
    interned: HashMap<(OpKey, Vec<NodeIndex>), NodeIndex>,
}

impl Graph {
    /// An empty graph for f32 tensors.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            elem_dtype: DType::F32,
            hypers: Vec::new(),
            states: Vec::new(),
            outputs: Vec::new(),
            nodes: StableDiGraph::default(),
            interned: HashMap::new(),
        }
    }

    /// Declares a hyperparameter, or replaces the default of an existing one.
    pub fn declare_hyper(&mut self, name: &str, default: f64) {
        match self.hypers.iter_mut().find(|h| h.name == name) {
            Some(h) => h.default = default,
            None => self.hypers.push(HyperDecl {
                name: name.to_string(),
                default,
            }),
        }
    }

    /// Declares a state, or replaces an existing one of the same name.
    pub fn declare_state(&mut self, name: &str, init: f64, class: Class) {
        let decl = StateDecl {
            name: name.to_string(),
            init,
            class,
        };
        match self.states.iter_mut().find(|s| s.name == name) {
            Some(s) => *s = decl,
            None => self.states.push(decl),
        }
    }

    /// The hyperparameter called `name`.
    pub fn hyper(&self, name: &str) -> Option<&HyperDecl> {
        self.hypers.iter().find(|h| h.name == name)
    }

    /// The state called `name`.
    pub fn state(&self, name: &str) -> Option<&StateDecl> {
        self.states.iter().find(|s| s.name == name)
    }

    /// Adds `op` applied to `operands` (or finds the identical node already there).
    ///
    /// Panics if the operand count does not match the op or an operand does not exist: both are
    /// bugs of the caller, which front ends rule out before they get here.
    pub fn add(&mut self, op: Op, operands: &[NodeIndex]) -> NodeIndex {
        assert_eq!(
            op.arity(),
            operands.len(),
            "{op:?} takes {} operand(s)",
            op.arity()
        );
        let key = (op.key(), operands.to_vec());
        if let Some(&existing) = self.interned.get(&key) {
            return existing;
        }
        let (class, dtype) = self.infer(&op, operands);
        let idx = self.nodes.add_node(Node { op, dtype, class });
        for (position, &operand) in operands.iter().enumerate() {
            assert!(
                self.nodes.contains_node(operand),
                "operand {operand:?} does not exist"
            );
            self.nodes.add_edge(operand, idx, position);
        }
        self.interned.insert(key, idx);
        idx
    }

    /// Adds a literal.
    pub fn constant(&mut self, value: f64) -> NodeIndex {
        self.add(Op::Const(value), &[])
    }

    /// Adds (or finds) an input.
    pub fn input(&mut self, input: Input) -> NodeIndex {
        self.add(Op::Input(input), &[])
    }

    /// Sets what `target` is assigned at the end of the step; a later assignment replaces an
    /// earlier one (sequential semantics).
    pub fn set_output(&mut self, target: Target, value: NodeIndex) {
        match self.outputs.iter_mut().find(|o| o.target == target) {
            Some(o) => o.value = value,
            None => self.outputs.push(Output { target, value }),
        }
    }

    /// The value assigned to `target`, if any.
    pub fn output(&self, target: &Target) -> Option<NodeIndex> {
        self.outputs
            .iter()
            .find(|o| &o.target == target)
            .map(|o| o.value)
    }

    /// The node at `idx`.
    pub fn node(&self, idx: NodeIndex) -> &Node {
        &self.nodes[idx]
    }

    /// Whether `idx` names a live node.
    pub fn contains(&self, idx: NodeIndex) -> bool {
        self.nodes.contains_node(idx)
    }

    /// The operands of `idx`, in position order.
    pub fn operands(&self, idx: NodeIndex) -> Vec<NodeIndex> {
        let mut edges: Vec<(usize, NodeIndex)> = self
            .nodes
            .edges_directed(idx, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        edges.sort_unstable();
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// The nodes that use `idx` as an operand (once per use), in ascending order.
    pub fn users(&self, idx: NodeIndex) -> Vec<NodeIndex> {
        let mut users: Vec<NodeIndex> = self
            .nodes
            .edges_directed(idx, Direction::Outgoing)
            .map(|e| e.target())
            .collect();
        users.sort_unstable();
        users
    }

    /// Every live node in topological order (ascending index).
    pub fn nodes(&self) -> Vec<NodeIndex> {
        let mut all: Vec<NodeIndex> = self.nodes.node_indices().collect();
        all.sort_unstable();
        all
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.nodes.node_count()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.node_count() == 0
    }

    /// The underlying petgraph (edge weight = operand position).
    pub fn petgraph(&self) -> &StableDiGraph<Node, usize> {
        &self.nodes
    }

    /// Removes every node that no output depends on and renumbers the rest densely (so that
    /// nodes added later still get larger indices than their operands); returns how many were
    /// removed. Node indices held from before the call are invalidated.
    pub fn prune(&mut self) -> usize {
        let mut live = vec![false; self.nodes.node_bound()];
        let mut stack: Vec<NodeIndex> = self.outputs.iter().map(|o| o.value).collect();
        while let Some(n) = stack.pop() {
            if !std::mem::replace(&mut live[n.index()], true) {
                stack.extend(self.operands(n));
            }
        }
        let before = self.len();
        let mut compact = Graph {
            nodes: StableDiGraph::default(),
            interned: HashMap::new(),
            ..self.clone_decls()
        };
        let mut renamed: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        for n in self.nodes().into_iter().filter(|n| live[n.index()]) {
            let operands: Vec<NodeIndex> = self.operands(n).iter().map(|o| renamed[o]).collect();
            renamed.insert(n, compact.add(self.nodes[n].op.clone(), &operands));
        }
        for o in &self.outputs {
            compact.set_output(o.target.clone(), renamed[&o.value]);
        }
        *self = compact;
        before - self.len()
    }

    /// A graph with the same name, dtype and declarations, and no nodes or outputs.
    pub(crate) fn clone_decls(&self) -> Graph {
        Graph {
            name: self.name.clone(),
            elem_dtype: self.elem_dtype,
            hypers: self.hypers.clone(),
            states: self.states.clone(),
            outputs: Vec::new(),
            nodes: StableDiGraph::default(),
            interned: HashMap::new(),
        }
    }

    /// The class and dtype of `op` applied to `operands` (what `add` records; the verifier
    /// re-derives it to check a graph).
    pub(crate) fn infer(&self, op: &Op, operands: &[NodeIndex]) -> (Class, DType) {
        match op {
            Op::Input(Input::Param | Input::Grad | Input::State(_)) => {
                (Class::Elem, self.elem_dtype)
            }
            Op::Input(Input::RowState(_)) => (Class::Row, DType::F64),
            Op::Input(Input::ColState(_)) => (Class::Col, DType::F64),
            Op::Input(Input::Rank) => (Class::Tensor, DType::F64),
            Op::Input(_) | Op::Const(_) => (Class::Scalar, DType::F64),
            Op::Reduce(r) => (r.result_class(), DType::F64),
            _ => {
                let class = Class::join_all(operands.iter().map(|&o| self.nodes[o].class));
                let dtype = match op {
                    Op::Cmp(_) => DType::Bool,
                    Op::Cast(d) => *d,
                    _ if class == Class::Elem => operands
                        .iter()
                        .map(|&o| &self.nodes[o])
                        .find(|n| n.class == Class::Elem && n.dtype != DType::Bool)
                        .map_or(self.elem_dtype, |n| n.dtype),
                    _ => DType::F64,
                };
                (class, dtype)
            }
        }
    }
}
