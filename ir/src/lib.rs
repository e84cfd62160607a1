//! optjit-ir: the step graph (petgraph `StableGraph`), its ops and dtypes, a deterministic text
//! form with a parser that round-trips it, a verifier, the fusion plan types, and an f64
//! reference interpreter.
//!
//! ```
//! use optjit_ir::{Binary, Graph, Input, Op, Target};
//! let mut g = Graph::new("sgd");
//! g.declare_hyper("lr", 0.01);
//! let p = g.input(Input::Param);
//! let grad = g.input(Input::Grad);
//! let lr = g.input(Input::Hyper("lr".into()));
//! let step = g.add(Op::Binary(Binary::Mul), &[lr, grad]);
//! let new_p = g.add(Op::Binary(Binary::Sub), &[p, step]);
//! g.set_output(Target::Param, new_p);
//! let text = g.to_string();
//! assert!(text.contains("%4 = sub %0, %3 : elem f32"));
//! ```
#![warn(missing_docs)]

mod canonical;
mod dtype;
mod graph;
mod interp;
mod op;
mod parse;
mod plan;
mod print;
mod specialize;
mod verify;

pub use dtype::{Class, DType};
pub use graph::{Graph, HyperDecl, Node, Output, StateDecl, Target};
pub use interp::{InterpError, Interpreted, ScalarEnv, TensorValues, eval_op, interpret};
pub use op::{Binary, Cmp, Input, Op, OpKey, Reduction, Unary};
pub use parse::{ParseError, parse_graph};
pub use petgraph::stable_graph::NodeIndex;
pub use plan::{Buffer, BufferUse, FusionPlan, Phase, Walk};
pub use print::{format_f64, node_text, numbering};
pub use specialize::{depends_on_rank, specialize_one_row};
pub use verify::{VerifyError, VerifyLocation, verify};
