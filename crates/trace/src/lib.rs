//! optjit-trace: the tracing API. Symbolic handles record an optimizer step into an
//! [`optjit_ir::Graph`] through operator overloading.
//!
//! A custom optimizer (Lion) in a dozen lines:
//!
//! ```
//! use optjit_trace::{Domain, Tracer};
//!
//! let t = Tracer::new("lion");
//! let lr = t.hyper_in("lr", 1e-4, Domain::non_negative());
//! let (beta1, beta2) = (t.hyper("beta1", 0.9), t.hyper("beta2", 0.99));
//! let wd = t.hyper("weight_decay", 0.0);
//! let (param, grad) = (t.param(), t.grad());
//! let exp_avg = t.state("exp_avg", 0.0);
//!
//! let c = &beta1 * &exp_avg + (1.0 - &beta1) * &grad;
//! t.set_param(&param * (1.0 - &lr * &wd) - &lr * c.sign());
//! t.set_state(&exp_avg, &beta2 * &exp_avg + (1.0 - &beta2) * &grad);
//! let definition = t.finish().unwrap();
//! assert_eq!(definition.graph.states.len(), 1);
//! ```
#![warn(missing_docs)]

mod clip;
mod definition;
mod error;
pub mod step;
mod tracer;
mod value;

pub use clip::{GRAD_NORM, MAX_NORM, clip_grad_norm};
pub use definition::{Definition, Domain, PerGroupValues, StateAlias};
pub use error::TraceError;
pub use tracer::Tracer;
pub use value::{Value, select};
