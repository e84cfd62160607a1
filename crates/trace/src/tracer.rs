//! The tracer: declares inputs, hyperparameters and states, records assignments, and finishes
//! into a verified [`Definition`].

use crate::definition::{Definition, Domain};
use crate::error::TraceError;
use crate::value::{Shared, TraceState, Value};
use optjit_ir::{Class, Graph, Input, Op, Target};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Records one optimizer step. Every handle it returns shares its graph.
pub struct Tracer {
    state: Shared,
}

const RESERVED: &[&str] = &["param", "grad", "step"];

impl Tracer {
    /// Starts tracing the optimizer `name`.
    pub fn new(name: &str) -> Tracer {
        let state = TraceState {
            graph: Graph::new(name),
            errors: Vec::new(),
            domains: BTreeMap::new(),
            aliases: Vec::new(),
        };
        Tracer {
            state: Rc::new(RefCell::new(state)),
        }
    }

    fn value(&self, node: optjit_ir::NodeIndex) -> Value {
        Value::new(self.state.clone(), node)
    }

    fn check_name(&self, what: &'static str, name: &str) {
        let mut s = self.state.borrow_mut();
        let optimizer = s.graph.name.clone();
        if RESERVED.contains(&name) {
            s.errors.push(TraceError::Reserved {
                name: name.to_string(),
                optimizer,
            });
        } else if s.graph.hyper(name).is_some() || s.graph.state(name).is_some() {
            s.errors.push(TraceError::Duplicate {
                what,
                name: name.to_string(),
                optimizer,
            });
        }
    }

    /// Declares a hyperparameter that accepts any finite value; returns its value in force.
    pub fn hyper(&self, name: &str, default: f64) -> Value {
        self.hyper_in(name, default, Domain::finite())
    }

    /// Declares a hyperparameter restricted to `domain` (checked at construction and on every
    /// `set_hyper`, never in generated code); returns its value in force.
    pub fn hyper_in(&self, name: &str, default: f64, domain: Domain) -> Value {
        self.check_name("hyper", name);
        let node = {
            let mut s = self.state.borrow_mut();
            if !domain.contains(default) {
                let optimizer = s.graph.name.clone();
                let expected = domain.to_string();
                s.errors.push(TraceError::BadDefault {
                    name: name.into(),
                    optimizer,
                    value: default,
                    expected,
                });
            }
            s.domains.insert(name.to_string(), domain);
            s.graph.declare_hyper(name, default);
            s.graph.input(Input::Hyper(name.to_string()))
        };
        self.value(node)
    }

    /// Declares a per-element state buffer, every element `init` before the first step; returns
    /// its value at the start of the step.
    pub fn state(&self, name: &str, init: f64) -> Value {
        self.declare_state(name, init, Class::Elem, Input::State(name.to_string()))
    }

    /// Declares a scalar state kept per group (such as NAdam's `mu_product`).
    pub fn scalar_state(&self, name: &str, init: f64) -> Value {
        self.declare_state(
            name,
            init,
            Class::Scalar,
            Input::ScalarState(name.to_string()),
        )
    }

    /// Declares a per-row state: one value per row of each matrix of the tensor, every value
    /// `init` before the first step. A tensor of shape `(..., R, C)` is seen as `prod(...)`
    /// matrices of `R` rows and `C` columns; a tensor of fewer than two dimensions as one row
    /// (as PyTorch's Adafactor factors it).
    pub fn row_state(&self, name: &str, init: f64) -> Value {
        self.declare_state(name, init, Class::Row, Input::RowState(name.to_string()))
    }

    /// Declares a per-column state: one value per column of each matrix (see
    /// [`Tracer::row_state`]).
    pub fn col_state(&self, name: &str, init: f64) -> Value {
        self.declare_state(name, init, Class::Col, Input::ColState(name.to_string()))
    }

    /// Names `state` `alias` on tensors of fewer than `below_rank` dimensions (PyTorch's name
    /// for it there).
    pub fn alias_state(&self, alias: &str, state: &Value, below_rank: usize) {
        let Some(node) = self.adopt(state) else {
            return;
        };
        let mut s = self.state.borrow_mut();
        let name = match &s.graph.node(node).op {
            Op::Input(Input::State(n) | Input::RowState(n) | Input::ColState(n)) => n.clone(),
            other => {
                let got = format!("a '{}' value", other.mnemonic());
                let optimizer = s.graph.name.clone();
                s.errors.push(TraceError::NotAState { optimizer, got });
                return;
            }
        };
        s.aliases.push(crate::StateAlias {
            alias: alias.to_string(),
            state: name,
            below_rank,
        });
    }

    /// The tensor's number of dimensions (per tensor).
    pub fn rank(&self) -> Value {
        self.input(Input::Rank)
    }

    fn declare_state(&self, name: &str, init: f64, class: Class, input: Input) -> Value {
        self.check_name("state", name);
        let node = {
            let mut s = self.state.borrow_mut();
            s.graph.declare_state(name, init, class);
            s.graph.input(input)
        };
        self.value(node)
    }

    fn input(&self, input: Input) -> Value {
        let node = self.state.borrow_mut().graph.input(input);
        self.value(node)
    }

    /// The parameter tensor at the start of the step.
    pub fn param(&self) -> Value {
        self.input(Input::Param)
    }

    /// The gradient.
    pub fn grad(&self) -> Value {
        self.input(Input::Grad)
    }

    /// The 1-based step count, as PyTorch's `state["step"]` after its increment.
    pub fn step(&self) -> Value {
        self.input(Input::Step)
    }

    /// A literal.
    pub fn constant(&self, value: f64) -> Value {
        let node = self.state.borrow_mut().graph.add(Op::Const(value), &[]);
        self.value(node)
    }

    /// Assigns the parameter's new value (a later call replaces an earlier one).
    pub fn set_param(&self, value: impl Into<Value>) {
        let value = value.into();
        if let Some(node) = self.adopt(&value) {
            self.state
                .borrow_mut()
                .graph
                .set_output(Target::Param, node);
        }
    }

    /// Assigns a state's new value; `state` is the handle `state()`/`scalar_state()` returned.
    pub fn set_state(&self, state: &Value, value: impl Into<Value>) {
        let value = value.into();
        let (Some(state_node), Some(node)) = (self.adopt(state), self.adopt(&value)) else {
            return;
        };
        let mut s = self.state.borrow_mut();
        let target = match &s.graph.node(state_node).op {
            Op::Input(Input::State(n) | Input::RowState(n) | Input::ColState(n)) => {
                Target::State(n.clone())
            }
            Op::Input(Input::ScalarState(n)) => Target::ScalarState(n.clone()),
            other => {
                let got = format!("a '{}' value", other.mnemonic());
                let optimizer = s.graph.name.clone();
                s.errors.push(TraceError::NotAState { optimizer, got });
                return;
            }
        };
        s.graph.set_output(target, node);
    }

    /// The node of `value` if it belongs to this tracer; otherwise records an error.
    fn adopt(&self, value: &Value) -> Option<optjit_ir::NodeIndex> {
        if Rc::ptr_eq(value.shared(), &self.state) {
            return Some(value.node());
        }
        let other = value.shared().borrow().graph.name.clone();
        let mut s = self.state.borrow_mut();
        let optimizer = s.graph.name.clone();
        s.errors.push(TraceError::ForeignValue { optimizer, other });
        None
    }

    /// Ends tracing: prunes unused nodes, verifies the graph and returns the definition, or the
    /// first mistake made while tracing.
    pub fn finish(self) -> Result<Definition, TraceError> {
        let s = self.state.borrow();
        if let Some(first) = s.errors.first() {
            return Err(first.clone());
        }
        let optimizer = s.graph.name.clone();
        if s.graph.output(&Target::Param).is_none() {
            return Err(TraceError::NoParamUpdate { optimizer });
        }
        let mut graph = s.graph.clone();
        graph.prune();
        if let Err(e) = optjit_ir::verify(&graph) {
            return Err(TraceError::Invalid {
                optimizer,
                message: e.to_string(),
            });
        }
        Ok(Definition {
            graph,
            domains: s.domains.clone(),
            on_metric: None,
            state_aliases: s.aliases.clone(),
            per_group: Vec::new(),
            group_states: Default::default(),
        })
    }
}
