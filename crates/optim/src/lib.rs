//! optjit-optim: built-in optimizers with PyTorch's class names, keyword names, defaults and
//! update order, written on the tracing API.
//!
//! ```
//! use optjit_optim::AdamW;
//! let adamw = AdamW::new().lr(3e-4).weight_decay(0.1).build().unwrap();
//! assert_eq!(adamw.hypers["lr"], 3e-4);
//! assert_eq!(adamw.hypers["beta2"], 0.999);
//! ```
#![warn(missing_docs)]

mod adadelta;
mod adafactor;
mod adagrad;
mod adam;
mod adamax;
mod asgd;
mod builders;
mod error;
mod kwargs;
mod lamb;
mod lars;
mod lion;
mod nadam;
mod radam;
mod rmsprop;
mod rprop;
mod schedulers;
mod sgd;
mod spec;
#[cfg(test)]
mod tests;

pub use builders::{
    Adadelta, Adafactor, Adagrad, Adam, AdamW, Adamax, Asgd, Lamb, Lars, Lion, NAdam, RAdam,
    RmsProp, Rprop, Sgd,
};
pub use error::OptimError;
pub use kwargs::{Kwarg, Kwargs};
pub use schedulers::{
    SCHEDULERS, ScheduleSource, SchedulerArg, SchedulerConfig, scheduler_kwargs, scheduler_source,
};
pub use spec::{Configured, KwargKind, KwargSpec, Spec, builtins, find};
