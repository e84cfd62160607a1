//! A built-in configured as the command line and golden files name it: PyTorch class name,
//! keyword arguments, and optional gradient clipping.

use optjit_optim::{Configured, Kwargs, OptimError};

/// The built-in `optimizer` with `kwargs`, and `clip_grad_norm_(max_norm)` fused in front when
/// `clip_grad_norm` is given.
pub fn configure(
    optimizer: &str,
    kwargs: &Kwargs,
    clip_grad_norm: Option<f64>,
) -> Result<Configured, OptimError> {
    let configured = optjit_optim::find(optimizer)?.configure(kwargs)?;
    match clip_grad_norm {
        Some(max_norm) => configured.with_clip_grad_norm(max_norm),
        None => Ok(configured),
    }
}
