//! Typed builders for the built-ins, with PyTorch's defaults: `AdamW::new().lr(3e-4).build()`.

use crate::error::OptimError;
use crate::kwargs::{Kwarg, Kwargs};
use crate::spec::{Configured, find};

macro_rules! builder {
    ($(#[$doc:meta])* $ty:ident, $name:literal { $($number:ident),* } { $($flag:ident),* } $({ $($pair:ident),* })?) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default)]
        pub struct $ty {
            kwargs: Kwargs,
        }

        impl $ty {
            /// PyTorch's defaults.
            pub fn new() -> Self {
                Self::default()
            }
            $(
                #[doc = concat!("Sets `", stringify!($number), "`.")]
                pub fn $number(mut self, value: f64) -> Self {
                    self.kwargs.insert(stringify!($number).to_string(), Kwarg::Number(value));
                    self
                }
            )*
            $(
                #[doc = concat!("Sets `", stringify!($flag), "`.")]
                pub fn $flag(mut self, value: bool) -> Self {
                    self.kwargs.insert(stringify!($flag).to_string(), Kwarg::Bool(value));
                    self
                }
            )*
            $($(
                #[doc = concat!("Sets `", stringify!($pair), "`.")]
                pub fn $pair(mut self, first: f64, second: f64) -> Self {
                    self.kwargs.insert(stringify!($pair).to_string(), Kwarg::Pair(first, second));
                    self
                }
            )*)?
            /// Checks every value and traces the update rule.
            pub fn build(&self) -> Result<Configured, OptimError> {
                find($name)?.configure(&self.kwargs)
            }
        }
    };
}

builder!(
    /// `torch.optim.SGD`.
    Sgd, "SGD" { lr, momentum, dampening, weight_decay } { nesterov, maximize }
);
builder!(
    /// `torch.optim.Adam` (L2 weight decay).
    Adam, "Adam" { lr, eps, weight_decay } { amsgrad, maximize, decoupled_weight_decay } { betas }
);
builder!(
    /// `torch.optim.AdamW` (decoupled weight decay).
    AdamW, "AdamW" { lr, eps, weight_decay } { amsgrad, maximize } { betas }
);
builder!(
    /// `torch.optim.NAdam`.
    NAdam, "NAdam" { lr, eps, weight_decay, momentum_decay } { decoupled_weight_decay, maximize } { betas }
);
builder!(
    /// `torch.optim.RAdam`.
    RAdam, "RAdam" { lr, eps, weight_decay } { decoupled_weight_decay, maximize } { betas }
);
builder!(
    /// `optax.lion` (`lr` is optax's `learning_rate`, `betas` its `b1`, `b2`).
    Lion, "Lion" { lr, weight_decay } { mask } { betas }
);
builder!(
    /// `optax.lamb` (`lr` is optax's `learning_rate`, `betas` its `b1`, `b2`).
    Lamb, "LAMB" { lr, eps, eps_root, weight_decay } { mask } { betas }
);
builder!(
    /// `optax.lars` (`lr` is optax's `learning_rate`).
    Lars, "LARS" { lr, weight_decay, trust_coefficient, eps, momentum } { weight_decay_mask, trust_ratio_mask, nesterov }
);
builder!(
    /// `torch.optim.Adagrad`.
    Adagrad, "Adagrad" { lr, lr_decay, weight_decay, initial_accumulator_value, eps } { maximize }
);
builder!(
    /// `torch.optim.RMSprop`.
    RmsProp, "RMSprop" { lr, alpha, eps, weight_decay, momentum } { centered, maximize }
);
builder!(
    /// `torch.optim.Adadelta`.
    Adadelta, "Adadelta" { lr, rho, eps, weight_decay } { maximize }
);
builder!(
    /// `torch.optim.Adamax`.
    Adamax, "Adamax" { lr, eps, weight_decay } { maximize } { betas }
);
builder!(
    /// `torch.optim.Rprop`.
    Rprop, "Rprop" { lr } { maximize } { etas, step_sizes }
);
builder!(
    /// `torch.optim.Adafactor` (`eps` is `(eps1, eps2)`; PyTorch's `eps1 = None` is f32's
    /// machine epsilon, the default).
    Adafactor, "Adafactor" { lr, beta2_decay, d, weight_decay } { maximize } { eps }
);
builder!(
    /// `torch.optim.ASGD`.
    Asgd, "ASGD" { lr, lambd, alpha, t0, weight_decay } { maximize }
);
