//! The `.step` language: a readable front end that produces the same [`Definition`]s as the
//! tracing API (docs/step-language.md).

pub mod ast;
mod error;

pub use error::StepError;
