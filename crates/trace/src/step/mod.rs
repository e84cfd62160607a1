//! The `.step` language: a readable front end that produces the same
//! [`Definition`]s as the tracing API (docs/step-language.md).
//!
//! ```
//! let source = "
//! optimizer sgd {
//!   hyper lr = 0.1
//!   param = param - lr * grad
//! }";
//! let loaded = optjit_trace::step::load("sgd.step", source).unwrap();
//! let sgd = loaded.optimizer.unwrap();
//! assert_eq!(sgd.graph.hypers[0].name, "lr");
//! ```

pub mod ast;
mod block;
mod error;
mod lexer;
mod limits;
mod optimizer;
mod parser;
mod schedule;
mod scope;

use crate::definition::Definition;
pub use error::StepError;
pub use limits::{MAX_DEPTH, MAX_GRAPH_NODES, MAX_NAME_CHARS, MAX_SOURCE_BYTES};
pub use parser::parse;
pub use schedule::{Schedule, in_force_state};

/// The blocks of a `.step` source, checked and built.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The `optimizer` block's update rule, if the source has one.
    pub optimizer: Option<Definition>,
    /// The `schedule` blocks, in source order.
    pub schedules: Vec<Schedule>,
}

/// Parses `source` (named `file` in errors) and builds its blocks: at most one optimizer, any
/// number of schedules.
pub fn load(file: &str, source: &str) -> Result<Loaded, StepError> {
    let program = parse(file, source)?;
    let mut optimizer: Option<(Definition, ast::Span)> = None;
    let mut schedules = Vec::new();
    for item in program.items {
        match item.kind {
            ast::ItemKind::Optimizer => {
                if let Some((_, first)) = &optimizer {
                    return Err(StepError::at(
                        file,
                        source,
                        item.name.span,
                        format!(
                            "a file holds one optimizer; the first is at {}:{}",
                            first.line, first.col
                        ),
                    ));
                }
                let span = item.name.span;
                optimizer = Some((optimizer::build(file, source, &item)?, span));
            }
            ast::ItemKind::Schedule => schedules.push(Schedule::new(file, source, item)),
        }
    }
    Ok(Loaded {
        optimizer: optimizer.map(|(d, _)| d),
        schedules,
    })
}
